"""`classify`: a label per document (or an inventory of the labels it contains), with evidence.

Zero-shot: each label's description is embedded like a question; a document is scored against it
through its segment vectors (the whole document through the long-context encoder, mean-pooled per
segment, ``Engine.passages``) and its document vector (the normalised mean of the segment vectors).

- ``mode="single"`` (a document is one of the labels, e.g. a contract type): the whole-document score
  of label l is ``cos(doc, l)`` plus the mean of its ``TOP_SEGMENTS`` best segment cosines; a softmax
  with temperature ``SINGLE_TEMPERATURE`` turns scores into probabilities that sum to one. A document
  that names its kind in its title ("DISTRIBUTOR AGREEMENT", "Outsourcing Contract": ``find_title``)
  adds ``TITLE_WEIGHT`` times the cosine between that title and "<label name> <kind>" (both embedded
  alone, like questions), and the sum goes through the softmax at ``TITLE_TEMPERATURE``.
- ``mode="multi"`` (which labels occur, e.g. CUAD's clause categories): each label's best segment
  cosine, centred on that label's median over the document's segments (so a description that
  resembles every clause does not fire everywhere), through a logistic ``MULTI_SLOPE`` /
  ``MULTI_OFFSET``; present when the probability is at least 0.5.

Trained: ``train_head`` fits a multinomial logistic regression on document vectors (folder of
labelled examples), saved as safetensors (weights + labels in the metadata, never pickle);
``classify(..., head=...)`` uses it. With ``mode="multi"`` a label's probability is the head's
highest for it on the whole document or on any one segment (a softmax gives at most one label 0.5
or more per vector, so the document vector alone can never name two); present at 0.5 or more.

Evidence: the segments that contribute most to the label; zero-shot in mode "single", first the
title when it names the chosen label best (so a title that decided is shown).
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from longdoc.errors import LongdocError

PRESETS_DIR = Path(__file__).resolve().parents[1] / "presets"
PRESETS = {"cuad-types": ("cuad_types.tsv", "single"), "cuad-clauses": ("cuad_clauses.tsv", "multi")}

TOP_SEGMENTS = 3
# Calibration constants, fitted on the CUAD dev contracts with the bundled MiniLM (python -m
# longdoc.eval.classify --calibrate prints them): the softmax temperature that minimises the negative
# log-likelihood of the true contract type, and the logistic on (best - median) segment cosine that
# best predicts "this contract contains category X".
# Measured 2026-11-22 on the 80 dev contracts (docs/classify_xref.md): best NLL at T=0.1 of the grid
# 0.005..0.2; logistic fit slope 11.7, offset 0.2655.
SINGLE_TEMPERATURE = 0.1
MULTI_SLOPE = 11.7
MULTI_OFFSET = 0.2655
# The title's part of a single-label score (a document whose opening names its kind): score(l) =
# whole-document score + TITLE_WEIGHT * cos(title, "<l> <kind>"), probability = softmax(score /
# TITLE_TEMPERATURE). Both from one fit, a conditional logit on the two scores (2 parameters, L2 1e-3),
# on the 79 CUAD dev contracts that have such a title; python -m longdoc.eval.classify prints the fit
# and the accuracy with the weights refitted 5-fold by contract. Measured 2026-11-23 (docs/
# classify_xref.md): logit weights 3.05 (document) and 29.2 (title), so 29.2 / 3.05 and 1 / 3.05.
# Dev accuracy is 0.950 at this weight and at any from 10 to 50, 0.938 at 5, 0.888 at 2.
TITLE_WEIGHT = 9.57
TITLE_TEMPERATURE = 0.328
TITLE_CHARS = 3000  # the opening searched for the title: about a contract's first page (~500 words)
EVIDENCE = 3
PRESENT = 0.5  # mode "multi": a label is present at this probability or more


@dataclass(frozen=True)
class Label:
    name: str
    description: str

    @property
    def query(self) -> str:
        """The text embedded for this label."""
        if self.description and self.description != self.name:
            return f"{self.name}: {self.description}"
        return self.name


@dataclass
class Evidence:
    label: str
    char_start: int
    char_end: int
    page: int | None
    line_start: int
    line_end: int
    score: float
    text: str

    def to_json(self) -> dict:
        d = {"label": self.label, "char_start": self.char_start, "char_end": self.char_end,
             "line_start": self.line_start, "line_end": self.line_end, "score": self.score, "text": self.text}
        if self.page is not None:
            d["page"] = self.page
        return d


@dataclass
class LabelScore:
    label: str
    score: float  # calibrated probability
    raw: float  # the uncalibrated score it came from
    present: bool
    evidence: list[Evidence] = field(default_factory=list)


@dataclass
class Classification:
    path: str
    mode: str  # "single" | "multi"
    labels: list[LabelScore]  # in the order the labels were given

    @property
    def best(self) -> LabelScore:
        return max(self.labels, key=lambda s: (s.score, -self.labels.index(s)))

    @property
    def present(self) -> list[LabelScore]:
        return [s for s in self.labels if s.present]

    def to_json(self) -> dict:
        def one(s: LabelScore) -> dict:
            return {"label": s.label, "score": round(s.score, 4), "raw": round(s.raw, 4),
                    "evidence": [e.to_json() for e in s.evidence]}

        if self.mode == "single":
            b = self.best
            return {"path": self.path, "label": b.label, "score": round(b.score, 4),
                    "evidence": [e.to_json() for e in b.evidence],
                    "scores": {s.label: round(s.score, 4) for s in self.labels}}
        return {"path": self.path, "labels": [one(s) for s in self.present],
                "scores": {s.label: round(s.score, 4) for s in self.labels}}


# ---------------------------------------------------------------------------------------------
# Labels


def parse_labels(spec: str) -> list[Label]:
    """``"a,b,c"`` -> labels described by their names."""
    names = [n.strip() for n in spec.split(",")]
    if not names or any(not n for n in names):
        raise LongdocError(f"--labels {spec!r}: expected comma-separated non-empty labels")
    return _unique([Label(n, n) for n in names])


def read_labels_file(path: str | os.PathLike) -> list[Label]:
    """A label per line: ``name``, ``name<TAB>description[<TAB>...]`` or ``name: description``; ``#``
    comments; a first line ``name<TAB>description...`` is a header."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise LongdocError(f"{path}: no such labels file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise LongdocError(f"{path}: cannot read labels file: {e}") from None
    out = []
    for line in lines:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if "\t" in line:
            name, desc = line.split("\t")[:2]
        elif ":" in line:
            name, desc = line.split(":", 1)
        else:
            name, desc = line, ""
        name, desc = name.strip(), " ".join(desc.split())
        if name.lower() == "name" and desc.lower() == "description":
            continue
        if not name:
            raise LongdocError(f"{path}: a line has a description but no label name")
        out.append(Label(name, desc or name))
    if not out:
        raise LongdocError(f"{path}: no labels")
    return _unique(out)


def preset(name: str) -> tuple[list[Label], str]:
    """The labels of a preset and its mode ("single" or "multi")."""
    if name not in PRESETS:
        raise LongdocError(f"unknown preset {name!r} (choose from {', '.join(sorted(PRESETS))})")
    file, mode = PRESETS[name]
    return read_labels_file(PRESETS_DIR / file), mode


def _unique(labels: list[Label]) -> list[Label]:
    seen = set()
    for lab in labels:
        if lab.name in seen:
            raise LongdocError(f"label {lab.name!r} given twice")
        seen.add(lab.name)
    return labels


# ---------------------------------------------------------------------------------------------
# Title: where a contract says what kind it is


@dataclass(frozen=True)
class Title:
    """The phrase in a document's opening that names its kind: "RESELLER AGREEMENT"."""

    start: int
    end: int
    text: str  # whitespace collapsed
    kind: str  # the noun that names the document's kind, lower case: "agreement" or "contract"


_KIND = re.compile(r"(AGREEMENT|Agreement|CONTRACT|Contract)[Ss]?")
_TITLE_WORD = re.compile(r"[A-Z][\w&'’-]*,?")  # a capitalised word, perhaps ending a list item
_CONNECTIVES = frozenset({"and", "&", "of", "for", "to", "the", "on"})  # may stand lower case in a title
_AFTER_KIND = frozenset({"for", "of", "on", "regarding"})  # "AGREEMENT FOR THE SUPPLY OF GOODS"
# Words that do not say which kind: a phrase of these alone ("This Agreement") is not a title.
_NOT_KIND = _CONNECTIVES | {"this", "that", "such", "said", "a", "an", "regarding", "agreement", "agreements",
                            "contract", "contracts"}
TITLE_MAX_WORDS = 8  # words before the kind noun: "AMENDED AND RESTATED STRATEGIC LICENSING, DISTRIBUTION ..."


def _title_word(w: str) -> bool:
    return bool(_TITLE_WORD.fullmatch(w)) or w.lower() in _CONNECTIVES


def _names_a_kind(words: list[str]) -> bool:
    return any(w.rstrip(",").lower() not in _NOT_KIND for w in words)


def find_title(text: str, limit: int = TITLE_CHARS) -> Title | None:
    """The first phrase of capitalised words ending in Agreement or Contract (or opening with it and
    going on with "for", "of", "on" or "regarding") in the first ``limit`` characters that holds a word
    other than "this", "the" and the like; None when there is none. A title may wrap onto a second
    line, never across a blank line or a sentence end."""
    opening = text[:limit]
    spans = [(m.start(), m.end()) for m in re.finditer(r"\S+", opening)]
    words = [opening[a:b] for a, b in spans]

    def joined(a: int) -> bool:  # words a and a + 1 can sit in one title
        return opening.count("\n", spans[a][1], spans[a + 1][0]) <= 1

    for i, w in enumerate(words):
        kind = _KIND.fullmatch(w.rstrip(",.;:)\"'”"))
        if not kind:
            continue
        end = spans[i][0] + len(kind.group(0))
        j = i  # walk back over the title's words
        while j > 0 and i - j < TITLE_MAX_WORDS and joined(j - 1) and _title_word(words[j - 1]):
            j -= 1
        while j < i and words[j].lower() in _NOT_KIND:
            j += 1  # "This RESELLER AGREEMENT" -> "RESELLER AGREEMENT"
        if not _names_a_kind(words[j:i]):
            j, tail = i, []  # or the kind comes first: "AGREEMENT FOR THE SUPPLY OF GOODS"
            if i + 1 < len(words) and joined(i) and words[i + 1].lower() in _AFTER_KIND:
                for k in range(i + 2, min(len(words), i + 2 + TITLE_MAX_WORDS)):
                    core = words[k].rstrip(".;:")
                    if not joined(k - 1) or not _title_word(core):
                        break
                    tail.append((core.rstrip(","), spans[k][0] + len(core.rstrip(","))))
                    if core != words[k]:
                        break  # a sentence or clause ends with this word
            while tail and tail[-1][0].lower() in _NOT_KIND:
                tail.pop()  # "... SUPPLY OF goods" ends at SUPPLY
            if not _names_a_kind([t for t, _ in tail]):
                continue
            end = tail[-1][1]
        start = spans[j][0]
        return Title(start, end, " ".join(opening[start:end].split()), kind.group(1).lower())
    return None


def title_similarities(engine, title: Title, labels: list[Label]) -> np.ndarray:
    """(L,) cosine between the title and each label named as the title names its kind ("Distributor
    agreement"), both embedded alone, as questions are."""
    named = [lab.name if title.kind in re.findall(r"\w+", lab.name.lower()) else f"{lab.name} {title.kind}"
             for lab in labels]
    vecs = engine.question_vectors([title.text] + named)
    return vecs[1:] @ vecs[0]


# ---------------------------------------------------------------------------------------------
# Scoring


def document_vector(segment_vectors: np.ndarray, spans: list[tuple[int, int]] | None = None) -> np.ndarray:
    """The document's vector: the mean of its segment vectors weighted by their length, normalised."""
    V = np.asarray(segment_vectors, dtype=np.float32)
    w = np.ones(len(V), dtype=np.float32) if spans is None else np.array([e - s for s, e in spans], np.float32)
    v = (V * w[:, None]).sum(0) / max(w.sum(), 1.0)
    n = np.linalg.norm(v)
    return v / n if n > 0 else v


def _softmax(x: np.ndarray) -> np.ndarray:
    """Over the last axis (each row of a matrix)."""
    z = np.exp(x - x.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def zero_shot_scores(seg_vecs: np.ndarray, spans, label_vecs: np.ndarray, mode: str,
                     title_sims: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(raw scores (L,), calibrated probabilities (L,)) from segment and label vectors, and in mode
    "single" the title's similarity to each label (``title_similarities``) when the document has one."""
    sims = np.asarray(label_vecs, np.float32) @ np.asarray(seg_vecs, np.float32).T  # (L, S)
    if mode == "single":
        doc = document_vector(seg_vecs, spans)
        k = min(TOP_SEGMENTS, sims.shape[1])
        top = -np.sort(-sims, axis=1)[:, :k].mean(1)
        raw = np.asarray(label_vecs, np.float32) @ doc + top
        if title_sims is None:
            return raw, _softmax(raw / SINGLE_TEMPERATURE)
        raw = raw + TITLE_WEIGHT * np.asarray(title_sims, np.float32)
        return raw, _softmax(raw / TITLE_TEMPERATURE)
    raw = sims.max(1) - np.median(sims, axis=1)
    return raw, _sigmoid(MULTI_SLOPE * (raw - MULTI_OFFSET))


def _evidence(doc, passages, label: str, contrib: np.ndarray, n: int) -> list[Evidence]:
    out = []
    for p in np.argsort(-contrib, kind="stable")[:n]:
        s, e = passages.spans[p]
        out.append(Evidence(label, s, e, doc.page_of(s), doc.line_of(s), doc.line_of(max(s, e - 1)),
                            round(float(contrib[p]), 4), doc.text[s:e]))
    return out


def classify(doc, labels: list[Label] | None = None, *, engine, mode: str = "single", head: "Head | None" = None,
             evidence: int = EVIDENCE, use_title: bool = True) -> Classification:
    """Score ``doc`` against ``labels`` zero-shot (or with a trained ``head``). ``use_title=False``
    leaves the title out of single-label scores: for labels that are not kinds of document (say
    "high risk, low risk"), where "<label> agreement" means nothing and the title would only add noise."""
    if head is None and not labels:
        raise LongdocError("no labels given")
    if mode not in ("single", "multi"):
        raise LongdocError(f"unknown mode {mode!r}")
    passages = engine.passages(doc)
    seg = passages.vectors
    if head is not None:
        head.check(seg.shape[1])
        logits = head.logits(document_vector(seg, passages.spans)[None])[0]
        probs = _softmax(logits)
        contrib = head.weight @ seg.T  # (L, S): how much each segment pushes towards each label
        if mode == "single":
            best = int(np.argmax(probs))
            present = [i == best for i in range(len(head.labels))]
        else:
            # The head's softmax over the document vector gives at most one label >= 0.5, so, as the
            # zero-shot inventory scores a label by its best segment, each segment is read too and a
            # label keeps its highest probability (and that vector's logit) over the document and them.
            seg_logits = head.logits(seg)  # (S, L)
            seg_probs = _softmax(seg_logits)
            top = seg_probs.argmax(0)  # (L,) the segment where each label is likeliest
            cols = np.arange(len(head.labels))
            from_seg = seg_probs[top, cols] > probs
            logits = np.where(from_seg, seg_logits[top, cols], logits)
            probs = np.where(from_seg, seg_probs[top, cols], probs)
            present = [bool(p >= PRESENT) for p in probs]
        out = [LabelScore(name, float(probs[i]), float(logits[i]), present[i],
                          _evidence(doc, passages, name, contrib[i], evidence) if present[i] else [])
               for i, name in enumerate(head.labels)]
        return Classification(doc.path, mode, out)
    label_vecs = engine.question_vectors([lab.query for lab in labels])
    title = find_title(doc.text) if mode == "single" and use_title else None
    title_sims = title_similarities(engine, title, labels) if title is not None else None
    raw, probs = zero_shot_scores(seg, passages.spans, label_vecs, mode, title_sims)
    sims = label_vecs @ seg.T
    if mode == "single":
        best = int(np.argmax(probs))
        present = [i == best for i in range(len(labels))]
    else:
        present = [bool(p >= PRESENT) for p in probs]

    def shown(i: int, name: str) -> list[Evidence]:
        if not present[i]:
            return []
        if title_sims is not None and evidence > 0 and int(np.argmax(title_sims)) == i:
            # The title names this label best: it is the first evidence, then the passages.
            first = Evidence(name, title.start, title.end, doc.page_of(title.start), doc.line_of(title.start),
                             doc.line_of(title.end - 1), round(float(title_sims[i]), 4),
                             doc.text[title.start:title.end])
            return [first] + _evidence(doc, passages, name, sims[i], evidence - 1)
        return _evidence(doc, passages, name, sims[i], evidence)

    out = [LabelScore(lab.name, float(probs[i]), float(raw[i]), present[i], shown(i, lab.name))
           for i, lab in enumerate(labels)]
    return Classification(doc.path, mode, out)


# ---------------------------------------------------------------------------------------------
# Trained head


@dataclass
class Head:
    """Multinomial logistic regression on document vectors."""

    labels: list[str]
    weight: np.ndarray  # (L, dim) float32
    bias: np.ndarray  # (L,) float32
    model: str = ""  # identity of the encoder whose vectors it was fitted on
    cv_accuracy: float | None = None

    def logits(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(X, np.float32) @ self.weight.T + self.bias

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.argmax(self.logits(X), axis=1)

    def check(self, dim: int) -> None:
        if self.weight.shape[1] != dim:
            raise LongdocError(f"the head was trained on {self.weight.shape[1]}-dim vectors; this model gives {dim} "
                               "(use the --model it was trained with)")

    def save(self, path: str | os.PathLike) -> None:
        from safetensors.numpy import save

        meta = {"labels": json.dumps(self.labels), "model": self.model, "format": "longdoc-head-v1"}
        if self.cv_accuracy is not None:
            meta["cv_accuracy"] = f"{self.cv_accuracy:.6f}"
        data = save({"weight": np.ascontiguousarray(self.weight, np.float32),
                     "bias": np.ascontiguousarray(self.bias, np.float32)}, metadata=meta)
        # safetensors' save_file renames a temp file made with mode 0600, so heads came out unreadable
        # to others; a file we create with 0666 gets the umask applied, as any new file. It is written
        # beside the target and renamed over it: a reader sees the old head or the new one, whole.
        path = os.fspath(path)
        tmp = os.path.join(os.path.dirname(os.path.abspath(path)),
                           f".{os.path.basename(path)}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # O_EXCL: a new file, so the mode applies
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())  # the bytes are on disk before the name points at them
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Head":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="numpy") as f:
                meta = f.metadata() or {}
                if meta.get("format") != "longdoc-head-v1":
                    raise LongdocError(f"{path}: not a longdoc classification head")
                w, b = f.get_tensor("weight"), f.get_tensor("bias")
        except FileNotFoundError:
            raise LongdocError(f"{path}: no such head file") from None
        except LongdocError:
            raise
        except Exception as e:  # safetensors raises its own error types for malformed files
            raise LongdocError(f"{path}: not a safetensors head ({type(e).__name__})") from None
        try:
            labels = json.loads(meta["labels"])
        except (KeyError, ValueError):
            raise LongdocError(f"{path}: not a longdoc classification head (its labels are unreadable)") from None
        if (not isinstance(labels, list) or len(labels) < 1 or not all(isinstance(x, str) for x in labels)
                or w.ndim != 2 or w.shape[0] != len(labels) or b.shape != (len(labels),)):
            raise LongdocError(f"{path}: weight and labels disagree")
        if not (np.isfinite(w).all() and np.isfinite(b).all()):
            raise LongdocError(f"{path}: the head's weights are not finite")
        cv = meta.get("cv_accuracy")
        return cls(labels, w, b, meta.get("model", ""), float(cv) if cv else None)


def fit_logistic(X: np.ndarray, y: np.ndarray, n_classes: int, *, l2: float = 1e-2, steps: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression by full-batch L-BFGS (torch), L2 on the weights; (W, b)."""
    import torch

    Xt = torch.as_tensor(np.asarray(X, np.float32))
    yt = torch.as_tensor(np.asarray(y, np.int64))
    W = torch.zeros(n_classes, Xt.shape[1], requires_grad=True)
    b = torch.zeros(n_classes, requires_grad=True)
    # Unit-norm inputs give small logits; a fixed scale lets a modest weight norm separate classes.
    scale = 10.0
    opt = torch.optim.LBFGS([W, b], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(scale * Xt @ W.T + b, yt) + l2 * (W * W).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return (scale * W).detach().numpy().astype(np.float32), b.detach().numpy().astype(np.float32)


def cross_validated_accuracy(X: np.ndarray, y: np.ndarray, n_classes: int, folds: int | None = None) -> float:
    """Leave-one-out accuracy (k-fold with ``folds`` when given, in a fixed order)."""
    n = len(y)
    folds = n if folds is None or folds >= n else folds
    idx = np.arange(n)
    correct = 0
    for f in range(folds):
        test = idx[idx % folds == f]
        train = idx[idx % folds != f]
        W, b = fit_logistic(X[train], y[train], n_classes)
        correct += int((np.argmax(X[test] @ W.T + b, axis=1) == y[test]).sum())
    return correct / n


TRAIN_SUFFIXES = (".pdf", ".txt", ".md", ".markdown")


def training_files(root: str | os.PathLike) -> list[tuple[str, str]]:
    """(path, label) for ``root/<label>/*.pdf|txt|md``, sorted; an error when fewer than 2 labels."""
    root = Path(root)
    if not root.is_dir():
        raise LongdocError(f"{root}: not a directory (expected DIR/<label>/*.pdf|txt)")
    out = []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for f in sorted(d.iterdir()):
            if f.is_file() and f.suffix.lower() in TRAIN_SUFFIXES:
                out.append((str(f), d.name))
    labels = sorted({lab for _, lab in out})
    if len(labels) < 2:
        raise LongdocError(f"{root}: need labelled examples of at least 2 labels in DIR/<label>/ folders")
    return out


def train_head(root: str | os.PathLike, *, engine, folds: int | None = None, progress=None) -> Head:
    """Fit a head on the document vectors of ``root/<label>/*`` and measure its cross-validated
    accuracy (leave-one-out up to 50 documents, else 5-fold)."""
    files = training_files(root)
    labels = sorted({lab for _, lab in files})
    X, y = [], []
    for i, (path, lab) in enumerate(files):
        if progress:
            progress(i, len(files), path)
        doc = engine.load(path)
        p = engine.passages(doc)
        X.append(document_vector(p.vectors, p.spans))
        y.append(labels.index(lab))
    X, y = np.stack(X), np.array(y)
    if folds is None:
        folds = len(y) if len(y) <= 50 else 5
    cv = cross_validated_accuracy(X, y, len(labels), folds)
    W, b = fit_logistic(X, y, len(labels))
    return Head(labels, W, b, model=engine.identity, cv_accuracy=cv)
