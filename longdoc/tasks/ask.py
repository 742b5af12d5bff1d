"""`ask`: the passages of a document that answer each question.

Flow: Document -> segments -> passage vectors (whole document through the long-context encoder,
mean-pooled per segment) -> dense cosines and BM25 over the same segments -> the ranker heads
(``rank.py``): one probability per passage, and whether the document answers the question -> top k.
Everything the model computes is cached by content hash (``longdoc.cache``), so a repeated question
on an unchanged file neither loads the model nor imports torch.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from longdoc.cache import Cache, code_hash, model_identity, sha256_text
from longdoc.config import resolve_model_dir
from longdoc.errors import LongdocError
from longdoc.results import Answer, Hit
from longdoc.sources.document import Document
from longdoc.tasks import rank, retrieve
from longdoc.tasks.rank import Ranker


@dataclass
class Passages:
    """A document's segments and their vectors, in document order."""

    doc: Document
    spans: list[tuple[int, int]]
    labels: list[str | None]
    vectors: np.ndarray  # (S, dim) float32, L2-normalised
    key: str = ""  # cache key: text hash + model identity

    @property
    def texts(self) -> list[str]:
        return [self.doc.text[s:e] for s, e in self.spans]


@dataclass
class Engine:
    """The model (loaded on first need) and the cache, shared by every question in one run."""

    model: str | None = None
    window: int | None = None
    use_cache: bool = True
    devices: int | str = 1  # ranks to shard the sequence over ("auto": every GPU when one is too small)
    shard_tokens: int | None = None  # one device, shards of this many tokens one after another
    attention: str | None = None  # attention variant spec (docs/attention.md); None = "local"
    _encoder: object = field(default=None, init=False, repr=False)
    _cache: Cache | None = field(default=None, init=False, repr=False)
    _numpy: object = field(default=None, init=False, repr=False)  # NumpyEmbedder, False when not usable

    def __post_init__(self):
        self.model_dir = resolve_model_dir(self.model)
        from longdoc.model.attention_spec import canonical

        try:
            self.attention = canonical(self.attention)
        except ValueError as e:
            raise LongdocError(str(e)) from None
        settings = {"window": self.window}
        if self.attention != "local":  # the default keeps its earlier cache keys
            settings["attention"] = self.attention
        self.identity = model_identity(self.model_dir, settings)
        self._cache = Cache() if self.use_cache else None

    @property
    def encoder(self):
        if self._encoder is None:
            from longdoc.model import load_encoder

            self._encoder = load_encoder(str(self.model_dir), window=self.window, attention=self.attention)
        return self._encoder

    def _encoder_for(self, n_chars: int):
        """The encoder, sharded across devices when asked (sharding is exact: same vectors)."""
        enc = self.encoder
        if self.devices in (1, "1", None) and not self.shard_tokens:
            return enc
        if self.attention != "local":  # the sharded path computes the band + globals pattern only
            if self.devices == "auto" and not self.shard_tokens:
                return enc
            raise LongdocError(f"--attention {self.attention} cannot be sharded (--devices/--shard-tokens): "
                               "sharding implements the local pattern only")
        from longdoc.shard import on_devices, resolve_devices

        n = resolve_devices(self.devices, n_chars // 3, enc.cfg)  # ~3+ chars per token: an upper bound
        return on_devices(enc, n, shard_tokens=self.shard_tokens)

    def load(self, path: str, *, password: str | None = None) -> Document:
        """The source's Document, from the cache when the file's bytes were seen before."""
        from longdoc.sources import load

        if path == "-" or self._cache is None or not Path(path).is_file():
            return load(path, password=password)
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        pw = hashlib.sha256((password or "").encode()).hexdigest()[:16]
        key = f"{h.hexdigest()}:{pw}:{code_hash('sources')}"
        row = self._cache.get_document(key)
        if row is not None:
            kind, text, meta = row
            ps = meta.get("page_starts")
            return Document(path=path, text=text, kind=kind, page_starts=tuple(ps) if ps is not None else None,
                            language=meta.get("language"), encoding=meta.get("encoding"),
                            warnings=tuple(meta.get("warnings", ())))
        doc = load(path, password=password)
        meta = {"page_starts": list(doc.page_starts) if doc.page_starts is not None else None,
                "language": doc.language, "encoding": doc.encoding, "warnings": list(doc.warnings)}
        self._cache.put_document(key, doc.kind, doc.text, meta)
        return doc

    def passages(self, doc: Document) -> Passages:
        from longdoc.segment import segment

        segs = segment(doc)
        if not segs:
            raise LongdocError(f"{doc.path}: no text to search")
        spans = [(s.start, s.end) for s in segs]
        key = f"{sha256_text(doc.text)}:{self.identity}"
        hit = self._cache.get_passages(key) if self._cache else None
        if hit is not None and hit[0] == spans:
            vecs = hit[1]
        else:
            vecs = self._encoder_for(len(doc.text)).embed_spans(doc.text, spans).float().numpy()
            if self._cache:
                self._cache.put_passages(key, spans, vecs)
        return Passages(doc, spans, [s.label for s in segs], vecs, key)

    def lexical_scores(self, passages: Passages, questions: list[str]) -> np.ndarray:
        """BM25 (Q, S), cached per (passages, question)."""
        got = {q: self._cache.get_lexical(passages.key, q) for q in questions} if self._cache else {}
        missing = [q for q in questions if got.get(q) is None or len(got[q]) != len(passages.spans)]
        if missing:
            for q, row in zip(missing, retrieve.lexical_scores(passages.texts, missing)):
                got[q] = row
                if self._cache:
                    self._cache.put_lexical(passages.key, q, row)
        return np.stack([got[q] for q in questions])

    def question_vectors(self, questions: list[str]) -> np.ndarray:
        got = {q: self._cache.get_question(self.identity, q) for q in questions} if self._cache else {}
        missing = [q for q in questions if got.get(q) is None]
        if missing:
            vecs = self._embed_questions(missing)
            for q, v in zip(missing, vecs):
                got[q] = v
                if self._cache:
                    self._cache.put_question(self.identity, q, v)
        return np.stack([got[q] for q in questions])

    def _embed_questions(self, texts: list[str]) -> np.ndarray:
        """The encoder's ``embed_texts`` vectors; computed in numpy without loading torch where that
        gives the same vectors (longdoc.model.numpy_embed: a question within the checkpoint's positions
        under the default attention), so a new question on an indexed tree answers in well under 1 s."""
        vecs: list = [None] * len(texts)
        if self.attention == "local":
            if self._numpy is None:
                from longdoc.model.numpy_embed import NumpyEmbedder

                self._numpy = NumpyEmbedder.load(str(self.model_dir)) or False
            if self._numpy:
                vecs = self._numpy.embed_texts(texts)
        rest = [i for i, v in enumerate(vecs) if v is None]
        if rest:  # longer than the positions, or a checkpoint the numpy path does not cover
            for i, v in zip(rest, self.encoder.embed_texts([texts[i] for i in rest]).float().numpy()):
                vecs[i] = v
        return np.stack(vecs)


def score_passages(passages: Passages, dense: np.ndarray, lexical: np.ndarray, identity: np.ndarray,
                   ranker: Ranker) -> np.ndarray:
    """(Q, S) probability that each passage overlaps an answer, from dense cosines and BM25 (Q, S) and
    the questions' identity scores (Q,) (``rank.identity``)."""
    feats = rank.features(dense, lexical, passages.spans, len(passages.doc.text), identity)
    return ranker.probability(feats)


def _heat(passages: Passages, scores: np.ndarray, buckets: int) -> list[float]:
    """Best score per page (or per equal slice of lines when the source has no pages), for the map."""
    doc = passages.doc
    n = doc.n_pages or buckets
    heat = [0.0] * n
    for (s, _), sc in zip(passages.spans, scores):
        if doc.n_pages:
            b = doc.page_of(s) - 1
        else:
            b = min(n - 1, (doc.line_of(s) - 1) * n // max(len(doc.line_starts), 1))
        heat[b] = max(heat[b], float(sc))
    return heat


def ask(
    doc: Document,
    questions: list[str],
    *,
    engine: Engine,
    k: int = 5,
    threshold: float | None = None,
) -> list[Answer]:
    """Answer every question on one document. A result's score is the ranker's probability that the
    passage holds the answer. With ``threshold``, a result is kept only when its score clears it;
    without, a question gets no results when the ranker's answer head judges that the document does
    not answer it (its calibrated no-answer cut), and the top k otherwise."""
    questions = [q.strip() for q in questions]
    if not questions or any(not q for q in questions):
        raise LongdocError("empty question")
    ranker = Ranker.load()
    passages = engine.passages(doc)
    # the identity questions ride along with the user's: embedded once, then cached like any question
    qvecs = engine.question_vectors(questions + list(rank.IDENTITY_QUESTIONS))
    qvecs, ivecs = qvecs[:len(questions)], qvecs[len(questions):]
    dense = retrieve.dense_scores(passages.vectors, qvecs)
    lexical = engine.lexical_scores(passages, questions)
    identity = rank.identity(qvecs, ivecs)
    prob = score_passages(passages, dense, lexical, identity, ranker)
    answered = ranker.answerable(prob, dense, lexical, identity) >= ranker.answer_threshold
    answers = []
    for qi, q in enumerate(questions):
        hits = []
        for p in retrieve.top_k(prob[qi:qi + 1], k)[0]:
            score = float(prob[qi, p])
            if (score < threshold) if threshold is not None else not answered[qi]:
                continue
            s, e = passages.spans[p]
            hits.append(Hit(path=doc.path, char_start=s, char_end=e, page=doc.page_of(s),
                            line_start=doc.line_of(s), line_end=doc.line_of(max(s, e - 1)),
                            score=round(score, 4), text=doc.text[s:e], label=passages.labels[p]))
        answers.append(Answer(q, hits, heat=_heat(passages, prob[qi], buckets=60)))
    return answers
