"""`longdoc classify` on the CUAD dev contracts, against the baselines, in one run.

    python -m longdoc.eval.classify [--data ../shared/data/cuad] [--limit N] [--model PATH]

1. Contract type (25 classes, one per contract): accuracy of the zero-shot choice from the
   ``cuad-types`` descriptions (with the title's score, and from the whole document alone, as before
   the title was read), and of a logistic-regression head trained leave-one-out over the dev
   contracts; the softmax temperature minimising the NLL of the true type from the whole document
   (``SINGLE_TEMPERATURE``); the fit of the title's weight and temperature (``TITLE_WEIGHT``,
   ``TITLE_TEMPERATURE``: a conditional logit on the two scores) and its accuracy with the weights
   refitted 5-fold by contract, so that no contract is scored with weights it helped choose.
2. Clause inventory ("does this contract contain category X", 41 categories x 80 contracts, CUAD's
   positives and negatives): per-category average precision, and precision / recall at a global
   threshold chosen on the other half of the contracts (2-fold by document, so no contract chooses its
   own threshold); the logistic calibration of the longdoc score (``MULTI_SLOPE`` / ``MULTI_OFFSET``).

Systems, all with the same label texts: longdoc (whole document through the long-context encoder,
segment vectors from ``Engine.passages``); BM25 over 120-word windows (30 overlap); MiniLM over the
same windows, each window embedded alone (the chunked baseline). Vectors are kept under
``$LONGDOC_HOME/cache/eval`` (as ``longdoc.eval.cuad`` keeps them), so a rerun of the scoring does
not encode the contracts again.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from longdoc.eval.cuad import _cached_vectors, default_data_dir, load_contracts, word_windows
from longdoc.tasks import classify as C
from longdoc.tasks import retrieve


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    order = np.argsort(-scores, kind="stable")
    y = labels[order].astype(float)
    if y.sum() == 0:
        return float("nan")
    prec = np.cumsum(y) / np.arange(1, len(y) + 1)
    return float((prec * y).sum() / y.sum())


def best_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The score cut maximising F1 (present when score >= cut)."""
    best, cut = -1.0, float(scores.max()) + 1
    for t in np.unique(scores):
        pred = scores >= t
        tp = (pred & labels).sum()
        f1 = 2 * tp / max(pred.sum() + labels.sum(), 1)
        if f1 > best:
            best, cut = f1, float(t)
    return cut


def two_fold_predictions(S: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """(D, L) bool: each half of the documents thresholded at the cut chosen on the other half."""
    D = S.shape[0]
    pred = np.zeros_like(Y)
    for half in (0, 1):
        test = np.arange(D) % 2 == half
        cut = best_threshold(S[~test].ravel(), Y[~test].ravel())
        pred[test] = S[test] >= cut
    return pred


def inventory_report(name: str, S: np.ndarray, Y: np.ndarray, cats: list[str]) -> dict:
    pred = two_fold_predictions(S, Y)
    per = {}
    for j, c in enumerate(cats):
        tp = int((pred[:, j] & Y[:, j]).sum())
        per[c] = {"ap": average_precision(S[:, j], Y[:, j]), "p": tp / max(pred[:, j].sum(), 1),
                  "r": tp / max(Y[:, j].sum(), 1), "pos": int(Y[:, j].sum())}
    tp = (pred & Y).sum()
    micro = {"p": tp / max(pred.sum(), 1), "r": tp / max(Y.sum(), 1)}
    aps = [v["ap"] for v in per.values() if not np.isnan(v["ap"])]
    return {"name": name, "per": per, "micro": micro, "map": float(np.mean(aps)),
            "ap_all": average_precision(S.ravel(), Y.ravel())}


def fit_logistic_1d(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """slope, offset of p = sigmoid(slope * (x - offset)) by Newton's method on the log-likelihood."""
    a, b = 1.0, 0.0  # p = sigmoid(a x + b)
    X = np.stack([x, np.ones_like(x)], 1)
    w = np.array([a, b])
    for _ in range(50):
        p = 1 / (1 + np.exp(-X @ w))
        g = X.T @ (p - y)
        H = (X * (p * (1 - p))[:, None]).T @ X + 1e-6 * np.eye(2)
        w -= np.linalg.solve(H, g)
    return float(w[0]), float(-w[1] / w[0])


def fit_conditional_logit(F: np.ndarray, y: np.ndarray, l2: float = 1e-3, steps: int = 50) -> np.ndarray:
    """theta (K,) of P(label l | document d) = softmax_l(F[d, l] . theta), F (D, L, K), by Newton's
    method on the log-likelihood (concave) with a small L2 penalty."""
    theta = np.zeros(F.shape[2])
    rows = np.arange(len(y))
    for _ in range(steps):
        p = C._softmax(F @ theta)  # (D, L)
        mean = (p[:, :, None] * F).sum(1)  # (D, K): each document's expected features
        grad = (F[rows, y] - mean).sum(0) - 2 * l2 * theta
        dev = F - mean[:, None]  # (D, L, K)
        hess = -np.einsum("dl,dlk,dlj->kj", p, dev, dev) - 2 * l2 * np.eye(len(theta))
        theta -= np.linalg.solve(hess, grad)
    return theta


def title_fit(R: np.ndarray, S: np.ndarray, titled: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(TITLE_WEIGHT, TITLE_TEMPERATURE) fitted on the documents with a title: R (D, L) whole-document
    scores, S (D, L) title similarities."""
    theta = fit_conditional_logit(np.stack([R, S], 2)[titled], y[titled])
    return float(theta[1] / theta[0]), float(1 / theta[0])


def title_cross_validated(R, S, titled, y, folds: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """(predictions (D,), probabilities (D, L)) with the title's weights refitted on the other folds
    (document i in fold i % folds); a document without a title is scored as without the title."""
    pred = np.zeros(len(y), dtype=int)
    probs = np.zeros(R.shape)
    fold = np.arange(len(y)) % folds
    for k in range(folds):
        w, t = title_fit(R[fold != k], S[fold != k], titled[fold != k], y[fold != k])
        test = fold == k
        logits = np.where(titled[test, None], (R[test] + w * S[test]) / t, R[test] / C.SINGLE_TEMPERATURE)
        probs[test] = C._softmax(logits)
        pred[test] = logits.argmax(1)
    return pred, probs


def _nll(probs: np.ndarray, y: np.ndarray) -> float:
    return float(-np.mean(np.log(probs[np.arange(len(y)), y] + 1e-12)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=default_data_dir())
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--model", default=None)
    args = ap.parse_args(argv)
    from longdoc.tasks.ask import Engine

    contracts, _ = load_contracts(args.data, args.limit)
    types, _ = C.preset("cuad-types")
    clauses, _ = C.preset("cuad-clauses")
    cats = [c.name for c in clauses]
    type_names = [t.name for t in types]
    engine = Engine(model=args.model)
    t0 = time.time()
    tvec = engine.question_vectors([t.query for t in types])
    cvec = engine.question_vectors([c.query for c in clauses])
    from longdoc.segment import segment
    from longdoc.sources.document import Document

    sys_names = ["longdoc", "BM25 chunks", "MiniLM chunks"]
    raw_types = {n: [] for n in sys_names + ["longdoc + title", "MiniLM chunks + title"]}
    shipped_probs = []
    docvecs = {"longdoc": [], "MiniLM chunks": []}
    inv = {n: [] for n in sys_names}
    Y = np.zeros((len(contracts), len(cats)), dtype=bool)
    y_type, title_sims, titled, titles = [], [], [], []
    fp = engine.encoder.fingerprint
    for i, c in enumerate(contracts):
        # the CUAD label vocabulary says "Cap On Liability" where the descriptions file says "Cap on ..."
        gold = {k.lower() for k in c.gold}
        Y[i] = [k.lower() in gold for k in cats]
        y_type.append(type_names.index(c.contract_type))
        doc = Document(c.doc, c.text, "text")
        spans = [(s.start, s.end) for s in segment(doc)]  # Engine.passages' segments
        vecs = _cached_vectors(f"long|{fp}", c.text, spans,
                               lambda: engine.encoder.embed_spans(c.text, spans).float().numpy())
        title = C.find_title(c.text)
        sims = C.title_similarities(engine, title, types) if title else None
        titled.append(title is not None)
        titles.append(title.text if title else None)
        title_sims.append(sims if title else np.zeros(len(types), np.float32))
        raw, _ = C.zero_shot_scores(vecs, spans, tvec, "single")
        raw_types["longdoc"].append(raw)
        shipped = C.zero_shot_scores(vecs, spans, tvec, "single", sims)  # what `longdoc classify` gives
        raw_types["longdoc + title"].append(shipped[0])
        shipped_probs.append(shipped[1])
        docvecs["longdoc"].append(C.document_vector(vecs, spans))
        inv["longdoc"].append(C.zero_shot_scores(vecs, spans, cvec, "multi")[0])
        chunks = word_windows(c.text)
        ctexts = [c.text[s:e] for s, e in chunks]
        cv = _cached_vectors(f"iso|{fp}", c.text, chunks, lambda: engine.encoder.embed_texts(ctexts).float().numpy())
        raw_types["MiniLM chunks + title"].append(C.zero_shot_scores(cv, chunks, tvec, "single", sims)[0])
        raw, _ = C.zero_shot_scores(cv, chunks, tvec, "single")
        raw_types["MiniLM chunks"].append(raw)
        docvecs["MiniLM chunks"].append(C.document_vector(cv, chunks))
        inv["MiniLM chunks"].append(C.zero_shot_scores(cv, chunks, cvec, "multi")[0])
        lex_t = retrieve.lexical_scores(ctexts, [t.query for t in types])  # (25, P)
        raw_types["BM25 chunks"].append(np.sort(lex_t, 1)[:, -3:].mean(1))
        inv["BM25 chunks"].append(retrieve.lexical_scores(ctexts, [q.query for q in clauses]).max(1))
        print(f"[{i + 1}/{len(contracts)}] {time.time() - t0:.0f}s {Path(c.doc).name[:60]}", file=sys.stderr)
    y_type, S, titled = np.array(y_type), np.stack(title_sims), np.array(titled)

    print(f"# classify on CUAD dev: {len(contracts)} contracts, {len(type_names)} types, {len(cats)} categories")
    print(f"# model: {engine.model_dir}; {time.time() - t0:.0f}s\n")
    print("## Contract type (accuracy)\n")
    print(f"{int(titled.sum())} of {len(y_type)} contracts have a title naming their kind (longdoc.tasks.classify."
          "find_title); the others are scored from the whole document alone.\n")
    print("| system | zero-shot | title weights refitted 5-fold by contract | trained head, leave-one-out |")
    print("| --- | --- | --- | --- |")
    n_cls = len(type_names)

    for n in ["longdoc", "MiniLM chunks"]:
        zs = float((np.stack(raw_types[f"{n} + title"]).argmax(1) == y_type).mean())
        cv = float((title_cross_validated(np.stack(raw_types[n]), S, titled, y_type)[0] == y_type).mean())
        print(f"| {n} + title | {zs:.3f} | {cv:.3f} | |")
    for n in sys_names:
        R = np.stack(raw_types[n])
        zs = float((R.argmax(1) == y_type).mean())
        loo = "n/a"
        if n in docvecs:
            loo = f"{C.cross_validated_accuracy(np.stack(docvecs[n]), y_type, n_cls):.3f}"
        print(f"| {n}, whole document only{' (before)' if n == 'longdoc' else ''} | {zs:.3f} | | {loo} |")
    title_only = float(((S.argmax(1) == y_type) & titled).mean())
    print(f"| title alone (none without a title) | {title_only:.3f} | | |")
    print(f"| majority class | {np.bincount(y_type).max() / len(y_type):.3f} | | |")
    R = np.stack(raw_types["longdoc"])
    w, t = title_fit(R, S, titled, y_type)
    shipped = np.stack(shipped_probs)
    print(f"\ntitle weight and temperature fitted on the {int(titled.sum())} titled contracts: TITLE_WEIGHT={w:.2f}, "
          f"TITLE_TEMPERATURE={t:.3f} (shipped {C.TITLE_WEIGHT}, {C.TITLE_TEMPERATURE}); NLL of the true type "
          f"with the title: {_nll(shipped, y_type):.3f} shipped, "
          f"{_nll(title_cross_validated(R, S, titled, y_type)[1], y_type):.3f} refitted 5-fold")
    pred = np.stack(raw_types["longdoc + title"]).argmax(1)
    print("\nlongdoc + title, the contracts it gets wrong (true -> chosen: title):" + ("" if (pred != y_type).any()
                                                                                   else " none"))
    for i in np.flatnonzero(pred != y_type):
        print(f"- {type_names[y_type[i]]} -> {type_names[pred[i]]}: {titles[i] or '(no title)'}")
    temps = [0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2]
    nll = [float(-np.mean([np.log(C._softmax(r / t)[y] + 1e-12) for r, y in zip(R, y_type)])) for t in temps]
    print(f"\nsoftmax temperature by NLL: " + ", ".join(f"T={t}: {v:.3f}" for t, v in zip(temps, nll))
          + f" -> best T={temps[int(np.argmin(nll))]}\n")

    print("## Clause inventory: contains category X? (2-fold thresholds by document)\n")
    reps = [inventory_report(n, np.stack(inv[n]), Y, cats) for n in sys_names]
    print("| system | mean AP over categories | AP all pairs | micro precision | micro recall |")
    print("| --- | --- | --- | --- | --- |")
    for r in reps:
        print(f"| {r['name']} | {r['map']:.3f} | {r['ap_all']:.3f} | {r['micro']['p']:.3f} | {r['micro']['r']:.3f} |")
    print(f"| always 'present' | {Y.mean(0).mean():.3f} | {Y.mean():.3f} | {Y.mean():.3f} | 1.000 |")
    print("\nPer category (AP / precision / recall), positives out of", len(contracts), "\n")
    print("| category | pos | " + " | ".join(sys_names) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in sys_names) + " |")
    for c in cats:
        cells = [f"{r['per'][c]['ap']:.2f} / {r['per'][c]['p']:.2f} / {r['per'][c]['r']:.2f}" for r in reps]
        print(f"| {c} | {reps[0]['per'][c]['pos']} | " + " | ".join(cells) + " |")
    S = np.stack(inv["longdoc"])
    slope, offset = fit_logistic_1d(S.ravel(), Y.ravel().astype(float))
    print(f"\nlogistic calibration of the longdoc inventory score: slope {slope:.2f}, offset {offset:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
