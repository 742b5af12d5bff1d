"""Scoring passages against questions: lexical (BM25), dense (cosine), and their rank fusion.

Pure functions over lists and arrays, shared by `ask` on one file and by the index. Every matrix is
``(Q, P)``: one row per question, one column per passage.
"""
from __future__ import annotations

import re
from functools import lru_cache

import numpy as np

_WORD = r"(?u)\b\w\w+\b"


@lru_cache(maxsize=1)
def stemmer():
    """The English Snowball stemmer shared by BM25 and snippet highlighting (None without PyStemmer)."""
    try:  # PyStemmer is a declared dependency; keep BM25 usable without it all the same
        import Stemmer

        return Stemmer.Stemmer("english")
    except ImportError:  # pragma: no cover
        return None


def lexical_scores(passages: list[str], queries: list[str], *, stem: bool = True) -> np.ndarray:
    """BM25 (Lucene variant, k1=1.5, b=0.75) of every passage for every query; English stemming and
    stop words unless ``stem=False`` (the plain baseline)."""
    import bm25s

    if not passages:
        return np.zeros((len(queries), 0), dtype=np.float32)
    stem = stemmer() if stem else None
    corpus = bm25s.tokenize(passages, stopwords="en" if stem else None, stemmer=stem, show_progress=False)
    out = np.zeros((len(queries), len(passages)), dtype=np.float32)
    if not corpus.vocab:  # only stop words and one-letter tokens ("To be or not to be."): nothing to match
        return out
    retriever = bm25s.BM25()
    retriever.index(corpus, show_progress=False)
    for qi, q in enumerate(queries):
        words = re.findall(_WORD, q.lower())
        words = stem.stemWords(words) if stem else words
        words = [w for w in words if w in corpus.vocab]
        if words:
            out[qi] = retriever.get_scores(words)
    return out


def dense_scores(passage_vecs: np.ndarray, query_vecs: np.ndarray) -> np.ndarray:
    """Cosine similarity; both inputs are L2-normalised ``(P, dim)`` and ``(Q, dim)`` arrays."""
    return np.asarray(query_vecs, dtype=np.float32) @ np.asarray(passage_vecs, dtype=np.float32).T


def ranks(scores: np.ndarray) -> np.ndarray:
    """0-based rank of every passage within its row (ties broken by position, earlier first)."""
    order = np.argsort(-scores, axis=1, kind="stable")
    r = np.empty_like(order)
    rows = np.arange(scores.shape[0])[:, None]
    r[rows, order] = np.arange(scores.shape[1])[None, :]
    return r


def rank_fusion(*score_mats: np.ndarray, weights=None, k: float = 60.0) -> np.ndarray:
    """Weighted reciprocal-rank fusion (Cormack et al., 2009): sum_i w_i / (k + rank_i + 1)."""
    weights = weights or [1.0] * len(score_mats)
    fused = np.zeros_like(score_mats[0], dtype=np.float64)
    for w, s in zip(weights, score_mats):
        fused += w / (k + ranks(s) + 1.0)
    return fused


def top_k(scores: np.ndarray, k: int) -> list[list[int]]:
    """Indices of the k best passages per row, best first."""
    k = min(k, scores.shape[1])
    return [list(np.argsort(-row, kind="stable")[:k]) for row in scores]
