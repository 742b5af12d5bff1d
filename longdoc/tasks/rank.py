"""The ranker: turns dense and lexical evidence about each passage into one calibrated probability,
and judges whether the document answers the question at all.

For every (question, passage) pair a handful of features is computed from the dense cosine
(long-context encoder), the BM25 score, and where the passage sits in the document; a
logistic-regression head maps them to P(passage overlaps an answer). Where a passage sits counts
through how much the question asks about the document itself (``identity``): the opening passages
hold a document's name, parties and date, not its answer to any other question. The head's weights
live in ``ranker.json`` beside this file (named weights, no pickle) and were fitted on the CUAD dev split by
``python -m longdoc.eval.cuad --train-ranker``, which also reports the contract-level
cross-validated figures (docs/eval.md). Because the output is a probability, it is also what the
``--threshold`` of ``ask`` cuts on.

Whether a document answers a question at all is a second, question-level head: the passage
probabilities are relative (a document's best passage scores well even when nothing fits), so the
shape of the whole score distribution (best and second probability, best dense cosine and its margin
over the mean, best BM25 and its z-score) is what tells an absent clause from a present one, with
the question's identity score: every document has a name, parties or a date to point at. Without
``--threshold``, ``ask`` returns nothing for a question this head scores below its cut. A document of
at most SHORT_SEGMENTS passages has hardly any such shape, and is judged by a head of its own (below).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from longdoc.tasks import retrieve

WEIGHTS_FILE = Path(__file__).with_name("ranker.json")

# Feature names, in column order. "lead" marks the first passages of a document (title, parties,
# dates live there in most contracts and reports) and counts only times the question's identity
# score (below), as "*_identity" says; "position" is the start offset over the length.
FEATURES = ("lex_z", "dense_z", "lex_rr", "dense_rr", "lex_rel", "dense", "position", "lead_identity",
            "log_len", "dense_z_lead_identity", "position_identity")
LEAD_PASSAGES = 2
# Questions about the document itself. A question's identity score is its best cosine with these.
# The lead prior acts only through it (the position prior partly): fitted on its own, it gave the
# first two passages of every document the same bonus whatever was asked, 2.7 logits (CUAD's
# title, party and date questions are 28% of its answerable pairs), which made an earnings
# release's first page the top answer to most FinanceBench questions. Through the score the bonus
# follows the question: about 1-2.5 logits for questions about clauses or figures, 4-5 for
# questions about the document itself (CUAD dev, 5-fold by contract: R@1 0.404 -> 0.492, R@5 0.745
# -> 0.776; folded by CUAD's groups of related categories too, so no head saw a question of the
# kind it scores: R@5 0.726 -> 0.776; docs/eval.md). Short questions for any kind of document, not
# CUAD's category names; worded without "this document", whose words alone made "which law
# governs this agreement?" score like a question about the document.
IDENTITY_QUESTIONS = ("What is the document called?", "Who are the parties?", "When was it signed?",
                      "When does it take effect?", "Who wrote it?")
ANSWER_FEATURES = ("top_prob", "second_prob", "top_prob_margin", "dense_max", "dense_margin", "lex_max_log",
                   "lex_max_z", "identity")
# Documents of at most this many passages are judged by the short-document answer head. The answer
# features describe the shape of a document's score distribution, which a document of a few passages
# barely has: with one passage there is no second probability and every margin and z-score is 0, with
# two the best BM25's z-score is always 1, and BM25's IDF is computed over those few passages, so its
# best score is small. A head fitted on whole contracts reads these values as "nothing stands out"
# and dropped the answer of a one-line note or a three-paragraph memo (CV on excerpts of 1-4 passages
# cut from the CUAD contracts: 35% of the answerable ones passed its cut, against 90% of whole
# contracts). The short head has the same features and the same cut, but is fitted on such excerpts
# (eval/cuad.py), so it weighs them as they behave on short documents: the degenerate ones carry no
# weight there and the bias absorbs their constant values. 4 is the longest excerpt it was fitted on.
SHORT_SEGMENTS = 4


def _z(x: np.ndarray) -> np.ndarray:
    """Per-row z-score (a document's passages are the population)."""
    return (x - x.mean(1, keepdims=True)) / (x.std(1, keepdims=True) + 1e-6)


def identity(question_vecs: np.ndarray, identity_vecs: np.ndarray) -> np.ndarray:
    """(Q,) how much each question asks about the document itself: its best cosine with the
    IDENTITY_QUESTIONS' vectors (both L2-normalised, from the same model)."""
    return (np.asarray(question_vecs, dtype=np.float64) @ np.asarray(identity_vecs, dtype=np.float64).T).max(1)


def features(dense: np.ndarray, lexical: np.ndarray, spans: list[tuple[int, int]], text_len: int,
             identity: np.ndarray) -> np.ndarray:
    """(Q, S, F) features from the (Q, S) dense cosines and BM25 scores of a document's passages and
    the (Q,) identity scores of the questions."""
    Q, S = dense.shape
    starts = np.array([s for s, _ in spans], dtype=np.float64)
    lengths = np.array([e - s for s, e in spans], dtype=np.float64)
    lead = (np.arange(S) < LEAD_PASSAGES).astype(np.float64)
    row = lambda v: np.broadcast_to(v, (Q, S))
    ident = np.asarray(identity, dtype=np.float64).reshape(Q, 1)
    position = row(starts / max(text_len, 1))
    dense_z = _z(dense)
    cols = {
        "lex_z": _z(lexical),
        "dense_z": dense_z,
        "lex_rr": 10.0 / (10.0 + retrieve.ranks(lexical)),
        "dense_rr": 10.0 / (10.0 + retrieve.ranks(dense)),
        "lex_rel": lexical / (lexical.max(1, keepdims=True) + 1e-6),
        "dense": dense,
        "position": position,
        "lead_identity": lead * ident,
        "log_len": row(np.log(lengths + 1.0) - 6.0),
        "dense_z_lead_identity": dense_z * lead * ident,
        "position_identity": position * ident,
    }
    return np.stack([cols[f] for f in FEATURES], axis=-1).astype(np.float64)


def answer_features(prob: np.ndarray, dense: np.ndarray, lexical: np.ndarray,
                    identity: np.ndarray) -> np.ndarray:
    """(Q, len(ANSWER_FEATURES)) question-level features from the (Q, S) passage probabilities, dense
    cosines and BM25 scores of one document and the (Q,) identity scores of the questions."""
    top2 = -np.sort(-prob, axis=1)[:, :2]
    second = top2[:, 1] if prob.shape[1] > 1 else np.zeros(len(prob))
    lmax = lexical.max(1)
    return np.stack([
        top2[:, 0], second, top2[:, 0] - prob.mean(1),
        dense.max(1), dense.max(1) - dense.mean(1),
        np.log1p(lmax), (lmax - lexical.mean(1)) / (lexical.std(1) + 1e-6),
        np.asarray(identity, dtype=np.float64).reshape(len(prob)),
    ], axis=1)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


@dataclass(frozen=True)
class Ranker:
    weights: np.ndarray  # (F,) passage head
    bias: float
    answer_weights: np.ndarray  # (len(ANSWER_FEATURES),) question-level "is it answered here" head
    answer_bias: float
    answer_threshold: float  # default no-answer cut on answerable()
    meta: dict
    short_answer_weights: np.ndarray | None = None  # the same head for documents of <= SHORT_SEGMENTS passages
    short_answer_bias: float = 0.0

    @classmethod
    def load(cls, path: Path = WEIGHTS_FILE) -> "Ranker":
        d = json.loads(Path(path).read_text(encoding="utf-8"))
        if (tuple(d["features"]) != FEATURES or tuple(d["answer"]["features"]) != ANSWER_FEATURES
                or tuple(d.get("identity_questions", ())) != IDENTITY_QUESTIONS):
            raise ValueError(f"{path}: ranker features do not match this version of longdoc")
        a, sh = d["answer"], d.get("answer_short")
        return cls(np.array([d["weights"][f] for f in FEATURES]), float(d["bias"]),
                   np.array([a["weights"][f] for f in ANSWER_FEATURES]), float(a["bias"]),
                   float(a["threshold"]), d.get("meta", {}),
                   np.array([sh["weights"][f] for f in ANSWER_FEATURES]) if sh else None,
                   float(sh["bias"]) if sh else 0.0)

    def save(self, path: Path = WEIGHTS_FILE) -> None:
        d = {"features": list(FEATURES), "identity_questions": list(IDENTITY_QUESTIONS),
             "weights": dict(zip(FEATURES, map(float, self.weights))),
             "bias": self.bias,
             "answer": {"features": list(ANSWER_FEATURES),
                        "weights": dict(zip(ANSWER_FEATURES, map(float, self.answer_weights))),
                        "bias": self.answer_bias, "threshold": self.answer_threshold},
             "meta": self.meta}
        if self.short_answer_weights is not None:
            d["answer_short"] = {"max_segments": SHORT_SEGMENTS,
                                 "weights": dict(zip(ANSWER_FEATURES, map(float, self.short_answer_weights))),
                                 "bias": self.short_answer_bias}
        Path(path).write_text(json.dumps(d, indent=2) + "\n", encoding="utf-8")

    def probability(self, feats: np.ndarray) -> np.ndarray:
        """(Q, S) probability that each passage overlaps an answer."""
        return _sigmoid(feats @ self.weights + self.bias)

    def answerable(self, prob: np.ndarray, dense: np.ndarray, lexical: np.ndarray,
                   identity: np.ndarray) -> np.ndarray:
        """(Q,) probability that the document answers each question at all; a document of at most
        SHORT_SEGMENTS passages is judged by the short-document head (see SHORT_SEGMENTS)."""
        w, b = self.answer_weights, self.answer_bias
        if prob.shape[1] <= SHORT_SEGMENTS and self.short_answer_weights is not None:
            w, b = self.short_answer_weights, self.short_answer_bias
        return _sigmoid(answer_features(prob, dense, lexical, identity) @ w + b)


def fit(X: np.ndarray, y: np.ndarray, l2: float = 1.0) -> tuple[np.ndarray, float]:
    """L2-regularised logistic regression by L-BFGS: X (M, F), y (M,) in {0, 1} -> (weights, bias)."""
    from scipy.optimize import minimize

    Xb = np.concatenate([X, np.ones((len(X), 1))], axis=1)

    def loss(w):
        s = Xb @ w
        # log(1 + e^s) computed stably; gradient (sigmoid(s) - y)
        ll = np.logaddexp(0.0, s).sum() - (y * s).sum() + l2 * (w[:-1] ** 2).sum()
        p = 1.0 / (1.0 + np.exp(-s))
        g = Xb.T @ (p - y) + 2 * l2 * np.r_[w[:-1], 0.0]
        return ll, g

    w = minimize(loss, np.zeros(Xb.shape[1]), jac=True, method="L-BFGS-B").x
    return w[:-1], float(w[-1])
