"""Clause finding on the CUAD dev split: longdoc against the baselines, in one run.

    python -m longdoc.eval.cuad [--data ../shared/data/cuad] [--limit N] [--systems ...] [--attention NAME]

For each of the dev contracts and each of CUAD's 41 categories, the query is
``"<category in lower case> clause?"`` (``--queries description``: CUAD's description of the
category, words the ranker was not fitted on). A hit is a returned span overlapping a gold span. Reported:
Recall@1/3/5 and MRR@10 over the positive (contract, category) pairs, the mean length of the top-5
returned spans, and on the negative pairs how often the top result clears the threshold.

Baselines (as in BENCHMARKS.md): passages of at most 120 words with 30 words of overlap, scored by
BM25, by all-MiniLM-L6-v2 over each passage alone, and by reciprocal-rank fusion of the two; the
"floor" returns the first passages whatever the question.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from longdoc.segment import word_windows
from longdoc.tasks import retrieve

K_MAX = 10


def default_data_dir() -> Path:
    return Path(__file__).resolve().parents[2].parent / "shared" / "data" / "cuad"


@dataclass
class Contract:
    doc: str
    text: str
    contract_type: str
    gold: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # category -> spans
    negatives: list[str] = field(default_factory=list)


def load_contracts(data: Path, limit: int | None = None) -> tuple[list[Contract], list[str]]:
    by_doc: dict[str, Contract] = {}
    categories: list[str] = []
    with open(data / "labels.dev.jsonl", encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            if r["category"] not in categories:
                categories.append(r["category"])
            c = by_doc.get(r["doc"])
            if c is None:
                if limit is not None and len(by_doc) >= limit:
                    continue
                text = open(data / r["doc"], encoding="utf-8").read()
                c = by_doc[r["doc"]] = Contract(r["doc"], text, r["contract_type"])
            if r["is_impossible"]:
                c.negatives.append(r["category"])
            else:
                c.gold[r["category"]] = [(s["start"], s["end"]) for s in r["spans"]]
    return list(by_doc.values()), categories


def query_for(category: str) -> str:
    return f"{category.lower()} clause?"


def _category_table(data: Path) -> list[list[str]]:
    """category_descriptions.csv's rows as (category, description, answer format, group), each cell
    without the label CUAD writes into it ("Category: Parties", "Description: The two or ...")."""
    import csv

    with open(data / "category_descriptions.csv", encoding="utf-8-sig", newline="") as f:
        return [[cell.split(": ", 1)[-1].strip() for cell in r] for r in list(csv.reader(f))[1:]]


def descriptions(data: Path) -> dict[str, str]:
    """CUAD's own description of each category ("Which state/country's law governs the
    interpretation of the contract?"), by category name in lower case: the same clauses asked in
    other words than the ones the ranker was fitted on."""
    return {r[0].lower(): r[1] for r in _category_table(data)}


def category_folds(data: Path, categories: list[str]) -> list[int]:
    """A fold per category that keeps CUAD's groups of related categories together (Agreement,
    Effective and Expiration Date and the renewal terms are group 1; both liability caps group 6;
    group "-" is categories related to no other, each on its own), so a head scored on a fold saw
    no question of the same kind."""
    group = {r[0].lower(): r[3] for r in _category_table(data)}
    units = [c.lower() if group.get(c.lower(), "-") == "-" else group[c.lower()] for c in categories]
    order = list(dict.fromkeys(units))
    return [order.index(u) % FOLDS for u in units]


class Tally:
    """Accumulates hit ranks for the positive pairs and top scores for the negative pairs."""

    def __init__(self):
        self.first_hit: list[int | None] = []  # rank (0-based) of the first hit within top K_MAX
        self.span_chars: list[int] = []
        self.neg_top: list[float] = []
        self.pos_top: list[float] = []

    def add(self, spans, order, gold, top_score=None):
        hit = None
        for rank, p in enumerate(order[:K_MAX]):
            s, e = spans[p]
            if any(s < ge and gs < e for gs, ge in gold):
                hit = rank
                break
        self.first_hit.append(hit)
        self.span_chars.extend(spans[p][1] - spans[p][0] for p in order[:5])
        if top_score is not None:
            self.pos_top.append(top_score)

    def row(self) -> dict:
        n = len(self.first_hit)
        rec = lambda k: sum(1 for h in self.first_hit if h is not None and h < k) / max(n, 1)
        mrr = sum(1.0 / (h + 1) for h in self.first_hit if h is not None) / max(n, 1)
        return {"R@1": rec(1), "R@3": rec(3), "R@5": rec(5), "MRR@10": mrr,
                "span_chars": float(np.mean(self.span_chars)) if self.span_chars else 0.0, "pairs": n}


def _cached_vectors(tag: str, text: str, spans, compute) -> np.ndarray:
    """Vectors of ``spans`` of ``text`` under ``tag`` (model fingerprint + method), kept on disk so
    that variants of scoring and fusion rerun without re-encoding 80 contracts on two cores."""
    import hashlib

    from longdoc.cache import cache_dir

    key = hashlib.sha256(f"{tag}|{spans}|".encode() + text.encode()).hexdigest()[:32]
    path = cache_dir() / "eval" / f"{key}.npy"
    if path.exists():
        return np.load(path, allow_pickle=False)
    vecs = np.asarray(compute(), dtype=np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, vecs, allow_pickle=False)
    return vecs


FOLDS = 5  # contract-level cross-validation of the ranker head
META = frozenset({"Document Name", "Parties", "Agreement Date", "Effective Date"})


@dataclass
class Scored:
    """One contract's candidate spans and (Q, S) scores under one system."""

    spans: list
    scores: np.ndarray


def _score_contract(c: Contract, queries, systems, encoder, qvecs, ident, seg_opts=None) -> dict[str, Scored]:
    base = word_windows(c.text)
    base_txt = [c.text[s:e] for s, e in base]
    out: dict[str, Scored] = {}
    if "floor" in systems:
        out["floor"] = Scored(base, np.tile(-np.arange(len(base), dtype=np.float32), (len(queries), 1)))
    if "bm25-plain" in systems:
        out["bm25-plain"] = Scored(base, retrieve.lexical_scores(base_txt, queries, stem=False))
    if {"bm25", "rrf"} & set(systems):
        out["bm25"] = Scored(base, retrieve.lexical_scores(base_txt, queries))
    if {"minilm", "rrf"} & set(systems):
        vecs = _cached_vectors(f"iso|{encoder.fingerprint}", c.text, base,
                               lambda: encoder.embed_texts(base_txt).numpy())
        out["minilm"] = Scored(base, retrieve.dense_scores(vecs, qvecs))
    if "rrf" in systems:
        out["rrf"] = Scored(base, retrieve.rank_fusion(out["bm25"].scores, out["minilm"].scores))
    if any(s.startswith("longdoc") for s in systems):
        from longdoc.segment import segment
        from longdoc.sources.document import Document
        from longdoc.tasks import rank

        segs = [(s.start, s.end) for s in segment(Document(path=c.doc, text=c.text, kind="text"), **(seg_opts or {}))]
        seg_txt = [c.text[s:e] for s, e in segs]
        vecs = _cached_vectors(f"long|{encoder.fingerprint}", c.text, segs,
                               lambda: encoder.embed_spans(c.text, segs).numpy())
        dense = retrieve.dense_scores(vecs, qvecs)
        lex = retrieve.lexical_scores(seg_txt, queries)
        if "longdoc-iso" in systems:
            iso = _cached_vectors(f"iso|{encoder.fingerprint}", c.text, segs,
                                  lambda: encoder.embed_texts(seg_txt).numpy())
            out["longdoc-iso"] = Scored(segs, retrieve.dense_scores(iso, qvecs))
        out["longdoc-dense"] = Scored(segs, dense)
        out["longdoc-bm25"] = Scored(segs, lex)
        out["longdoc-rrf"] = Scored(segs, retrieve.rank_fusion(dense, lex))
        out["features"] = Scored(segs, rank.features(dense, lex, segs, len(c.text), ident))
    return out


THIRDS = ("first", "middle", "last")


def third_of(gold, n_chars: int) -> str:
    """Where a clause sits ("lost in the middle"): the third of the document holding the start of its
    first gold span."""
    start = min(gs for gs, _ in gold)
    return THIRDS[min(2, 3 * start // max(n_chars, 1))]


def _labels(spans, gold) -> np.ndarray:
    return np.array([any(s < ge and gs < e for gs, ge in gold) for s, e in spans], dtype=np.float64)


def _training_rows(items, categories, skip=frozenset()):
    """Positive pairs' (passage features, overlaps-gold label) rows of the given contracts, leaving out
    the categories in ``skip``."""
    X, y = [], []
    for c, sc in items:
        f = sc["features"]
        for qi, cat in enumerate(categories):
            if cat in c.gold and cat not in skip:
                X.append(f.scores[qi])
                y.append(_labels(f.spans, c.gold[cat]))
    return np.concatenate(X), np.concatenate(y)


def _auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U over ranks)."""
    from scipy.stats import rankdata

    r = rankdata(scores)
    n1, n0 = labels.sum(), (1 - labels).sum()
    return float((r[labels == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


EXCERPT_SEGMENTS = (1, 2, 3, 4)  # lengths, in the contract's passages, of the short documents cut from it


def _excerpt(c: Contract, segs, cat: str, ci: int, qi: int) -> str | None:
    """A short document cut from contract ``c`` for the pair (c, cat): a few consecutive passages (how
    many drawn from EXCERPT_SEGMENTS by a generator seeded with the pair), holding the first passage
    that overlaps the clause when the contract has it, anywhere otherwise. None when no passage
    overlaps the gold spans."""
    rng = np.random.default_rng([ci, qi])
    n = min(int(rng.choice(EXCERPT_SEGMENTS)), len(segs))
    if cat in c.gold:
        g = next((i for i, (s, e) in enumerate(segs) if any(s < ge and gs < e for gs, ge in c.gold[cat])), None)
        if g is None:
            return None
        lo = int(rng.integers(max(0, g - n + 1), min(g, len(segs) - n) + 1))
    else:
        lo = int(rng.integers(0, len(segs) - n + 1))
    return c.text[segs[lo][0]:segs[lo + n - 1][1]]


def _excerpt_scores(text: str, query: str, qvec: np.ndarray, ident: float, encoder):
    """(1, S) dense cosines, BM25 and passage features of a short document, scored on its own as
    ``ask`` scores a file: its own passages, its own encoder pass, BM25 over its own passages."""
    from longdoc.segment import segment
    from longdoc.sources.document import Document
    from longdoc.tasks import rank

    segs = [(s.start, s.end) for s in segment(Document(path="excerpt", text=text, kind="text"))]
    vecs = _cached_vectors(f"long|{encoder.fingerprint}", text, segs,
                           lambda: encoder.embed_spans(text, segs).numpy())
    dense = retrieve.dense_scores(vecs, qvec[None])
    lex = retrieve.lexical_scores([text[s:e] for s, e in segs], [query])
    return dense, lex, rank.features(dense, lex, segs, len(text), np.array([ident]))


def _pick_threshold(pos_top: list[float], neg_top: list[float], keep: float = 0.9) -> float:
    """The no-answer cut on the top passage's probability: the highest that still lets the top result
    through on ``keep`` of the pairs that do have a clause. Reviewers would rather read a weak
    passage than miss a clause, so recall on positives sets it; the negatives' rate is reported."""
    return float(np.quantile(np.asarray(pos_top), 1.0 - keep))


def evaluate(data: Path, limit: int | None, systems: list[str], encoder=None, log=print, *,
             window: int | None = None, positions: str | None = None, attention: str | None = None, train_out: Path | None = None,
             seg_opts: dict | None = None, short_head: bool = True, query_style: str = "clause"):
    """Rows of the results table, by system. The "longdoc" system is the ranker head fitted on the
    other folds of contracts (FOLDS-fold cross-validation by contract), so no contract is scored by
    a head that saw it; "longdoc (new questions)" also folds by groups of related categories, so neither
    the contract nor the kind of question was seen; "longdoc (shipped head)" uses
    longdoc/tasks/ranker.json as shipped."""
    from longdoc.tasks import rank

    contracts, categories = load_contracts(data, limit)
    if query_style == "description":
        described = descriptions(data)
        queries = [described[c.lower()] for c in categories]
    else:
        queries = [query_for(c) for c in categories]
    need_model = any(s not in ("floor", "bm25", "bm25-plain") for s in systems)
    if need_model and encoder is None:
        from longdoc.model import load_encoder

        encoder = load_encoder(window=window, positions=positions, attention=attention)
    qvecs = encoder.embed_texts(queries).numpy() if need_model else None
    ident = rank.identity(qvecs, encoder.embed_texts(list(rank.IDENTITY_QUESTIONS)).numpy()) if need_model else None
    t0 = time.time()
    scored = []
    for ci, c in enumerate(contracts):
        scored.append((c, _score_contract(c, queries, systems, encoder, qvecs, ident, seg_opts)))
        log(f"[{ci + 1}/{len(contracts)}] {c.doc[4:60]}  {time.time() - t0:.0f}s", file=sys.stderr)

    if "longdoc" in systems:  # cross-validated heads: each contract scored by heads fitted on the others
        # Answer-head rows: every (contract, category) pair asked of the whole contract, and asked of a
        # short excerpt cut from it (_excerpt), scored on its own as `ask` scores a short file. A row's
        # document of at most rank.SHORT_SEGMENTS passages is judged by the short-document head, which
        # is fitted on such rows only (rank.py says why); the cut is set on whole contracts, as before.
        pair_fold, pair_pos, pair_x, pair_excerpt, pair_nseg = [], [], [], [], []
        for k in range(FOLDS):
            train = [x for i, x in enumerate(scored) if i % FOLDS != k]
            w, b = rank.fit(*_training_rows(train, categories))
            for i, (c, sc) in enumerate(scored):
                if i % FOLDS == k:
                    prob = 1.0 / (1.0 + np.exp(-(sc["features"].scores @ w + b)))
                    sc["longdoc"] = Scored(sc["features"].spans, prob)
                    ax = rank.answer_features(prob, sc["longdoc-dense"].scores, sc["longdoc-bm25"].scores, ident)
                    for qi, cat in enumerate(categories):
                        rows = [(ax[qi], False, prob.shape[1])]
                        if (text := _excerpt(c, sc["features"].spans, cat, i, qi)) is not None:
                            d, lx, f = _excerpt_scores(text, queries[qi], qvecs[qi], ident[qi], encoder)
                            p = 1.0 / (1.0 + np.exp(-(f @ w + b)))
                            rows.append((rank.answer_features(p, d, lx, ident[qi:qi + 1])[0], True, p.shape[1]))
                        for x, excerpt, nseg in rows:
                            pair_fold.append(k)
                            pair_pos.append(cat in c.gold)
                            pair_x.append(x)
                            pair_excerpt.append(excerpt)
                            pair_nseg.append(nseg)
        pair_fold, pair_pos, pair_x = np.array(pair_fold), np.array(pair_pos, dtype=np.float64), np.array(pair_x)
        pair_excerpt, short = np.array(pair_excerpt, dtype=bool), np.array(pair_nseg) <= rank.SHORT_SEGMENTS
        if short_head:  # (fitted on, judged) rows of each head
            heads = [(~short, ~short), (short, short)]
        else:  # one head fitted on whole contracts judges every length (as before the short head)
            heads = [(~pair_excerpt, np.ones(len(pair_pos), dtype=bool))]
        answer = np.zeros(len(pair_pos))
        for k in range(FOLDS):
            for fit_on, judged in heads:
                aw, ab = rank.fit(pair_x[fit_on & (pair_fold != k)], pair_pos[fit_on & (pair_fold != k)])
                m = judged & (pair_fold == k)
                answer[m] = 1.0 / (1.0 + np.exp(-(pair_x[m] @ aw + ab)))
        whole = ~pair_excerpt
        pos_top, neg_top = answer[whole & (pair_pos == 1)], answer[whole & (pair_pos == 0)]
        threshold = _pick_threshold(list(pos_top), list(neg_top))
        no_answer = {"threshold": threshold, "positives_cleared": float(np.mean(pos_top >= threshold)),
                     "negatives_cleared": float(np.mean(neg_top >= threshold)), "negatives": len(neg_top),
                     "auc_answer_head": _auc(answer[whole], pair_pos[whole]),
                     "auc_top_probability": _auc(pair_x[whole, 0], pair_pos[whole])}
        sp, sn = answer[pair_excerpt & (pair_pos == 1)], answer[pair_excerpt & (pair_pos == 0)]
        no_answer["excerpts"] = {"positives_cleared": float(np.mean(sp >= threshold)),
                                 "negatives_cleared": float(np.mean(sn >= threshold)),
                                 "positives": len(sp), "negatives": len(sn),
                                 "auc_answer_head": _auc(answer[pair_excerpt], pair_pos[pair_excerpt])}
    if "longdoc (new questions)" in systems:
        # Users ask what they like, not CUAD's 41 questions: each (contract, category) pair is scored
        # by a passage head fitted on the other folds of contracts *and* of categories (related
        # categories fold together: category_folds), so neither the contract nor the kind of question
        # was seen (FOLDS x FOLDS heads).
        cat_fold = category_folds(data, categories)
        for kc in range(FOLDS):
            for kq in range(FOLDS):
                held = {cat for qi, cat in enumerate(categories) if cat_fold[qi] == kq}
                train = [x for i, x in enumerate(scored) if i % FOLDS != kc]
                w, b = rank.fit(*_training_rows(train, categories, skip=held))
                for i, (c, sc) in enumerate(scored):
                    if i % FOLDS == kc:
                        prob = sc.setdefault("longdoc (new questions)", Scored(
                            sc["features"].spans, np.zeros(sc["features"].scores.shape[:2]))).scores
                        rows = [qi for qi, cat in enumerate(categories) if cat in held]
                        prob[rows] = 1.0 / (1.0 + np.exp(-(sc["features"].scores[rows] @ w + b)))
    if "longdoc (shipped head)" in systems:
        shipped = rank.Ranker.load()
        for c, sc in scored:
            sc["longdoc (shipped head)"] = Scored(sc["features"].spans, shipped.probability(sc["features"].scores))

    rows, by_group, by_third = {}, {}, {}
    for name in systems:
        t, tg = Tally(), {"metadata": Tally(), "other": Tally()}
        tt = {third: Tally() for third in THIRDS}
        for c, sc in scored:
            spans, s = sc[name].spans, sc[name].scores
            for qi, cat in enumerate(categories):
                if cat in c.gold:
                    order = np.argsort(-s[qi], kind="stable")
                    t.add(spans, order, c.gold[cat])
                    tg["metadata" if cat in META else "other"].add(spans, order, c.gold[cat])
                    tt[third_of(c.gold[cat], len(c.text))].add(spans, order, c.gold[cat])
        rows[name] = t.row()
        by_group[name] = {g: x.row() for g, x in tg.items()}
        by_third[name] = {g: x.row() for g, x in tt.items()}
    extra = {"by_group": by_group, "by_third": by_third}
    if "longdoc" in systems:
        extra["no_answer"] = no_answer
    if train_out is not None:
        w, b = rank.fit(*_training_rows(scored, categories))
        fit_on = [f for f, _ in heads]
        aw, ab = rank.fit(pair_x[fit_on[0]], pair_pos[fit_on[0]])
        sw, sb = rank.fit(pair_x[fit_on[1]], pair_pos[fit_on[1]]) if len(heads) > 1 else (None, 0.0)
        rank.Ranker(w, b, aw, ab, threshold, {
            "trained_on": f"CUAD dev, {len(contracts)} contracts, queries '<category> clause?'; short-document "
                          f"answer head: an excerpt of 1-{max(EXCERPT_SEGMENTS)} passages per pair",
            "cv": {"R@5": rows["longdoc"]["R@5"], **no_answer}}, sw, sb).save(train_out)
    return rows, extra


def format_table(rows: dict[str, dict]) -> str:
    lines = ["| system | R@1 | R@3 | R@5 | MRR@10 | mean span chars |", "| --- | --- | --- | --- | --- | --- |"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['R@1']:.3f} | {r['R@3']:.3f} | {r['R@5']:.3f} | {r['MRR@10']:.3f} | {r['span_chars']:.0f} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=default_data_dir())
    ap.add_argument("--limit", type=int, default=None, help="first N contracts only")
    ap.add_argument("--systems", default="floor,bm25-plain,bm25,minilm,rrf,longdoc-dense,longdoc-bm25,longdoc-rrf,longdoc,"
                                        "longdoc (new questions)")
    ap.add_argument("--window", type=int, default=None, help="encoder radius (default: the model's)")
    ap.add_argument("--positions", choices=["tile", "restart"], default=None)
    ap.add_argument("--attention", default=None,
                    help="attention variant of the long encoder (docs/attention.md), e.g. lsh or sinks:sinks=8")
    ap.add_argument("--max-chars", type=int, default=None, help="segmenter's passage cap (default: its own)")
    ap.add_argument("--min-chars", type=int, default=None, help="segmenter's merge floor (default: its own)")
    ap.add_argument("--queries", choices=["clause", "description"], default="clause",
                    help="'<category> clause?' (what the ranker is fitted on) or CUAD's description of the "
                         "category; with --systems '...,longdoc (shipped head)' the shipped head on questions "
                         "worded otherwise")
    ap.add_argument("--train-ranker", action="store_true",
                    help="refit the ranker head on all the contracts given and write longdoc/tasks/ranker.json")
    ap.add_argument("--no-short-head", action="store_true",
                    help="one answer head, fitted on whole contracts, judges documents of every length "
                         "(as before the short-document head); for comparison")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    if a.train_ranker and a.queries != "clause":
        ap.error("--train-ranker fits the shipped head on the clause queries only")
    from longdoc.tasks import rank

    rows, extra = evaluate(a.data, a.limit, a.systems.split(","), window=a.window, positions=a.positions,
                           attention=a.attention, short_head=not a.no_short_head, query_style=a.queries,
                           train_out=rank.WEIGHTS_FILE if a.train_ranker else None,
                           seg_opts={k: v for k, v in (("max_chars", a.max_chars), ("min_chars", a.min_chars)) if v})
    if a.json:
        print(json.dumps({"systems": rows, **extra}, indent=2))
        return
    print(format_table(rows))
    for group in ("metadata", "other"):
        print(f"\n{group} categories:\n" + format_table({n: g[group] for n, g in extra["by_group"].items()}))
    print("\nR@5 by where the gold clause starts (third of the document):")
    print("| system | " + " | ".join(f"{t} (pairs)" for t in THIRDS) + " |\n|" + " --- |" * (len(THIRDS) + 1))
    for name, th in extra["by_third"].items():
        print(f"| {name} | " + " | ".join(f"{th[t]['R@5']:.3f} ({th[t]['pairs']})" for t in THIRDS) + " |")
    if "no_answer" in extra:
        na = extra["no_answer"]
        print(f"\nno answer (cross-validated answer head): cut {na['threshold']:.3f} passes "
              f"{na['positives_cleared']:.1%} of positive pairs and {na['negatives_cleared']:.1%} of the "
              f"{na['negatives']} negative pairs; ROC AUC {na['auc_answer_head']:.3f} "
              f"(top passage probability alone: {na['auc_top_probability']:.3f})")
        sh = na["excerpts"]
        print(f"short documents (per pair, an excerpt of 1-{max(EXCERPT_SEGMENTS)} passages cut from the "
              f"contract, asked on its own), same cut: passes {sh['positives_cleared']:.1%} of the "
              f"{sh['positives']} positive and {sh['negatives_cleared']:.1%} of the {sh['negatives']} negative "
              f"pairs; ROC AUC {sh['auc_answer_head']:.3f}")


if __name__ == "__main__":
    main()
