"""`ask` over a stream (``cat huge.log | longdoc ask - "q" --stream``, or ``longdoc ask FILE "q" --stream``)
with bounded memory.

The text (``longdoc.sources.stream``: a text file decoded block by block, a PDF page by page) is cut
into passages of whole lines (at most ``max_chars``; a longer line is cut between words). Each passage
is tokenized on its own (WordPiece splits at whitespace, so this equals tokenizing the whole text for
BERT-family models) and fed to ``StreamEncoder`` (the ``sinks`` pattern,
exact, O(chunk + halo) tokens in memory). A passage's vector is the mean of its tokens' final states,
L2-normalised, as in ``ask``; its score is the cosine with each question's vector, and a running
top-k per question is kept. So memory holds: the encoder's window, the passages not yet encoded, and
k passages per question.

What differs from ``ask`` on a file: the score is the dense cosine (the ranker head needs BM25 over
the whole document and its length, which a stream does not have), there is no "no answer" judgement
(``--threshold`` is a cosine), and the middle of the stream is read through the window and the sinks
only (see longdoc/model/stream.py).
"""
from __future__ import annotations

import heapq
import re
from collections.abc import Iterable, Iterator

import torch
import torch.nn.functional as F

from longdoc.results import Answer, Hit


# Up to and including the last whitespace (as the segmenter counts it: U+FEFF too) of a string.
_TO_LAST_SPACE = re.compile(r".*[\s\ufeff]", re.S)


def _cuts(text: str, start: int, stop: int, max_chars: int) -> Iterator[int]:
    """Where the line ``text[start:stop]`` is cut while more than ``max_chars`` of it remain: after
    the last whitespace within the next ``max_chars``, so no word is split between passages; only a
    word that fills them alone is cut inside. Offsets, not copies: a chunk may be a MiB of one line."""
    while stop - start > max_chars:
        m = _TO_LAST_SPACE.match(text, start, start + max_chars)
        start = m.end() if m else start + max_chars
        yield start


def _lines(chunks: Iterable[str], max_chars: int) -> Iterator[str]:
    """The lines (each with its "\\n", the last one maybe without) of the text whose pieces are
    ``chunks``, a line longer than ``max_chars`` in pieces of at most ``max_chars`` (``_cuts``): memory
    holds one chunk and one piece, whatever the lines' lengths."""
    rest = ""
    for chunk in chunks:
        rest += chunk
        start = 0
        while (end := rest.find("\n", start)) != -1:
            for cut in _cuts(rest, start, end + 1, max_chars):
                yield rest[start:cut]
                start = cut
            yield rest[start:end + 1]
            start = end + 1
        # A line still arriving gets the cuts it will have once whole: each cut looks only at the next
        # max_chars and is made only while more than max_chars remain.
        for cut in _cuts(rest, start, len(rest), max_chars):
            yield rest[start:cut]
            start = cut
        rest = rest[start:]
    if rest:
        yield rest


def passages_of(chunks: Iterable[str], max_chars: int = 800, *, pages: bool = False
                ) -> Iterator[tuple[int, int, int, int, int | None, str]]:
    """(char_start, char_end, line_start, line_end, page, text) of consecutive whole lines of the text
    whose pieces are ``chunks`` (lines, or blocks of any size), at most ``max_chars`` each (a longer
    line is cut into pieces); blank-only passages are skipped. With ``pages`` (PDF text: pages joined
    by ``sources.PAGE_SEPARATOR``), a line starting with a form feed is a page break: passages do not
    cross it and carry their page number (else page is None)."""
    buf: list[str] = []
    size = start = pos = 0
    line = first_line = page = 1  # line (1-based) of the character at pos
    at_line_start = True

    def flush():
        text = "".join(buf)
        if text.strip():
            last = line - 1 if text.endswith("\n") else line
            return (start, start + len(text), first_line, last, page if pages else None, text)
        return None

    for piece in _lines(chunks, max_chars):
        if pages and at_line_start and piece.startswith("\f"):  # the page break's own line
            if buf and (p := flush()):
                yield p
            buf, size = [], 0
            pos += len(piece)
            line += piece.count("\n")
            page += 1
            continue
        if buf and size + len(piece) > max_chars:
            if p := flush():
                yield p
            buf, size = [], 0
        if not buf:
            start, first_line = pos, line
        buf.append(piece)
        size += len(piece)
        pos += len(piece)
        at_line_start = piece.endswith("\n")
        if at_line_start:
            line += 1
    if buf and (p := flush()):
        yield p


def tokenized_passages(chunks: Iterable[str], tokenizer, *, max_chars: int = 800, pages: bool = False):
    """(passage, token ids) for each passage with tokens: the reading half of ``ask_stream`` (no model)."""
    for p in passages_of(chunks, max_chars, pages=pages):
        ids = tokenizer.encode(p[5], add_special_tokens=False).ids
        if ids:
            yield p, ids


def ask_stream(chunks: Iterable[str], questions: list[str], *, encoder, k: int = 5, threshold: float | None = None,
               sinks: int = 4, chunk: int = 4096, max_chars: int = 800, path: str = "-", pages: bool = False,
               stats: dict | None = None):
    """Answers for a text given in pieces (lines, or blocks of any size; see module doc). ``encoder``:
    an Encoder (any pattern: it is run as ``sinks``). ``pages``: the text is a PDF's (passages carry
    their page). ``stats`` (optional dict) receives tokens, passages and the largest context."""
    from longdoc.model.stream import StreamEncoder

    qvecs = encoder.embed_texts(questions).to(encoder.device)  # (Q, C), L2-normalised
    enc = encoder.with_attention(f"sinks:sinks={sinks}")
    se = StreamEncoder(enc, sinks=sinks, chunk=chunk)
    special = encoder.tokenizer.encode("").ids  # [CLS] [SEP] / <s> </s>
    head, tail = special[:1], special[1:]
    se.push(head)
    pending: list[tuple[int, int, tuple]] = []  # (tok_start, tok_end, passage) not yet pooled, in order
    states, sbase = None, 0  # final states of tokens [sbase, sbase + len(states))
    heaps: list[list] = [[] for _ in questions]
    count = [0]

    def consume(blocks):
        nonlocal states, sbase
        for a, st in blocks:
            if states is None:
                states, sbase = st, a
            else:
                states = torch.cat([states, st])
            end = sbase + states.shape[0]
            while pending and pending[0][1] <= end:
                t0, t1, p = pending.pop(0)
                vec = F.normalize(states[t0 - sbase:t1 - sbase].mean(0), dim=-1)
                scores = (qvecs @ vec).tolist()
                count[0] += 1
                for qi, sc in enumerate(scores):
                    if threshold is not None and sc < threshold:
                        continue
                    item = (sc, -count[0], p)
                    if len(heaps[qi]) < k:
                        heapq.heappush(heaps[qi], item)
                    elif item > heaps[qi][0]:
                        heapq.heapreplace(heaps[qi], item)
            keep = pending[0][0] if pending else end
            if keep > sbase:
                states = states[keep - sbase:]
                sbase = keep

    for p, ids in tokenized_passages(chunks, encoder.tokenizer, max_chars=max_chars, pages=pages):
        t0 = se.n
        se.push(ids)
        pending.append((t0, t0 + len(ids), p))
        consume(se.ready())
    se.push(tail)
    consume(se.ready(final=True))
    if stats is not None:
        stats.update(tokens=se.n, passages=count[0], peak_context=se.peak_context)
    answers = []
    for q, h in zip(questions, heaps):
        hits = [Hit(path=path, char_start=p[0], char_end=p[1], page=p[4], line_start=p[2], line_end=p[3],
                    score=round(float(sc), 4), text=p[5]) for sc, _, p in sorted(h, reverse=True)]
        answers.append(Answer(q, hits))
    return answers


__all__ = ["ask_stream", "passages_of", "tokenized_passages"]
