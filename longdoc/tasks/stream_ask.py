"""`ask` over a stream (``cat huge.log | longdoc ask - "q" --stream``) with bounded memory.

The stream is read line by line and cut into passages of whole lines (at most ``max_chars``; a longer
line is cut). Each passage is tokenized on its own (WordPiece splits at whitespace, so this equals
tokenizing the whole text for BERT-family models) and fed to ``StreamEncoder`` (the ``sinks`` pattern,
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
from typing import Iterable, Iterator

import torch
import torch.nn.functional as F

from longdoc.results import Answer, Hit


def passages_of(lines: Iterable[str], max_chars: int = 800) -> Iterator[tuple[int, int, int, int, str]]:
    """(char_start, char_end, line_start, line_end, text) of consecutive whole lines, at most
    ``max_chars`` each (a longer line is cut into pieces); blank-only passages are skipped."""
    buf: list[str] = []
    start = pos = 0
    first_line = line_no = 0

    def flush():
        text = "".join(buf)
        if text.strip():
            return (start, start + len(text), first_line, line_no, text)
        return None

    for line in lines:
        line_no += 1
        pieces = [line[i:i + max_chars] for i in range(0, len(line), max_chars)] or [line]
        for piece in pieces:
            if buf and sum(map(len, buf)) + len(piece) > max_chars:
                p = flush()
                if p:
                    yield p
                buf = []
            if not buf:
                start, first_line = pos, line_no
            buf.append(piece)
            pos += len(piece)
    if buf:
        p = flush()
        if p:
            yield p


def ask_stream(lines: Iterable[str], questions: list[str], *, encoder, k: int = 5, threshold: float | None = None,
               sinks: int = 4, chunk: int = 4096, max_chars: int = 800, path: str = "-", stats: dict | None = None):
    """Answers for a stream of text lines (see module doc). ``encoder``: an Encoder (any pattern: it is
    run as ``sinks``). ``stats`` (optional dict) receives tokens, passages and the largest context."""
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

    for p in passages_of(lines, max_chars):
        ids = encoder.tokenizer.encode(p[4], add_special_tokens=False).ids
        if not ids:
            continue
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
        hits = [Hit(path=path, char_start=p[0], char_end=p[1], page=None, line_start=p[2], line_end=p[3],
                    score=round(float(sc), 4), text=p[4]) for sc, _, p in sorted(h, reverse=True)]
        answers.append(Answer(q, hits))
    return answers


__all__ = ["ask_stream", "passages_of"]
