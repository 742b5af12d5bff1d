"""Evidence pages on the FinanceBench dev split: longdoc against the baselines, in one run.

    python -m longdoc.eval.financebench [--data ../shared/data/financebench] [--systems ...] [--json]

Each question is asked of its filing as ``longdoc ask`` does (the product's own ranking, top 10 with
no threshold). A returned unit is a hit when the pages it spans include a gold evidence page (the
dataset's ``evidence_page_num`` is 0-based; pages here are 1-based). Reported: page hit@1/3/5 and
MRR@10 over the questions, and the mean length of the top-5 units, since a whole page is an easy
target but a poor citation.

Baselines, over the same loaded text: passages of at most 120 words with 30 words of overlap scored
by BM25, by all-MiniLM-L6-v2 over each passage alone, and by reciprocal-rank fusion of the two (as in
``longdoc.eval.cuad``); whole pages scored by BM25 ("bm25-pages"); and the "floor", which returns the
first passages whatever the question. The ranker head was fitted on CUAD contracts only, so no
FinanceBench question or filing shaped it.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from longdoc.eval.cuad import K_MAX, format_table
from longdoc.segment import word_windows
from longdoc.tasks import retrieve

SYSTEMS = ("floor", "bm25", "minilm", "rrf", "bm25-pages", "longdoc")


def default_data_dir() -> Path:
    return Path(__file__).resolve().parents[2].parent / "shared" / "data" / "financebench"


def load_questions(data: Path) -> list[dict]:
    """The question records, each with ``pdf`` (its path) and ``gold_pages`` (1-based)."""
    out = []
    with open(data / "questions.dev.jsonl", encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            r["pdf"] = data / "pdfs" / f"{r['doc_name']}.pdf"
            r["gold_pages"] = sorted({e["evidence_page_num"] + 1 for e in r["evidence"]})
            out.append(r)
    return out


def _pages_of(doc, span) -> set[int]:
    s, e = span
    return set(range(doc.page_of(s), doc.page_of(max(s, e - 1)) + 1))


def _page_spans(doc) -> list[tuple[int, int]]:
    bounds = list(doc.page_starts) + [len(doc.text)]
    return [(s, e) for s, e in zip(bounds, bounds[1:]) if doc.text[s:e].strip()]


class Tally:
    def __init__(self):
        self.first_hit: list[int | None] = []
        self.chars: list[int] = []

    def add(self, doc, spans, order, gold: set[int]):
        hit = next((r for r, p in enumerate(order[:K_MAX]) if _pages_of(doc, spans[p]) & gold), None)
        self.first_hit.append(hit)
        self.chars.extend(spans[p][1] - spans[p][0] for p in order[:5])

    def row(self) -> dict:
        n = max(len(self.first_hit), 1)
        rec = lambda k: sum(1 for h in self.first_hit if h is not None and h < k) / n  # noqa: E731
        mrr = sum(1.0 / (h + 1) for h in self.first_hit if h is not None) / n
        return {"R@1": rec(1), "R@3": rec(3), "R@5": rec(5), "MRR@10": mrr,
                "span_chars": float(np.mean(self.chars)) if self.chars else 0.0, "pairs": len(self.first_hit)}


def evaluate(data: Path, systems: list[str], log=print) -> dict[str, dict]:
    from longdoc.sources import load
    from longdoc.tasks.ask import Engine, ask

    questions = load_questions(data)
    tallies = {s: Tally() for s in systems}
    engine = Engine()
    minilm = engine.encoder if {"minilm", "rrf"} & set(systems) else None
    t0 = time.time()
    for name in sorted({q["doc_name"] for q in questions}):
        qs = [q for q in questions if q["doc_name"] == name]
        doc = load(qs[0]["pdf"])
        texts = [q["question"] for q in qs]
        ranked: dict[str, tuple[list, np.ndarray]] = {}  # system -> (spans, (Q, S) scores)
        base = word_windows(doc.text)
        base_txt = [doc.text[s:e] for s, e in base]
        if "floor" in systems:
            ranked["floor"] = (base, np.tile(-np.arange(len(base), dtype=np.float32), (len(qs), 1)))
        if {"bm25", "rrf"} & set(systems):
            ranked["bm25"] = (base, retrieve.lexical_scores(base_txt, texts))
        if minilm is not None:
            vecs = minilm.embed_texts(base_txt).float().numpy()
            ranked["minilm"] = (base, retrieve.dense_scores(vecs, minilm.embed_texts(texts).float().numpy()))
        if "rrf" in systems:
            ranked["rrf"] = (base, retrieve.rank_fusion(ranked["bm25"][1], ranked["minilm"][1]))
        if "bm25-pages" in systems:
            pages = _page_spans(doc)
            ranked["bm25-pages"] = (pages, retrieve.lexical_scores([doc.text[s:e] for s, e in pages], texts))
        for sysname, (spans, scores) in ranked.items():
            if sysname in tallies:
                for qi, q in enumerate(qs):
                    tallies[sysname].add(doc, spans, retrieve.top_k(scores[qi:qi + 1], K_MAX)[0],
                                         set(q["gold_pages"]))
        if "longdoc" in systems:
            for q, answer in zip(qs, ask(doc, texts, engine=engine, k=K_MAX, threshold=-1.0)):
                spans = [(h.char_start, h.char_end) for h in answer.results]
                tallies["longdoc"].add(doc, spans, list(range(len(spans))), set(q["gold_pages"]))
        log(f"{name}: {len(qs)} question(s), {doc.n_pages} pages  {time.time() - t0:.0f}s", file=sys.stderr)
    return {s: t.row() for s, t in tallies.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=default_data_dir())
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    systems = [s for s in a.systems.split(",") if s]
    unknown = sorted(set(systems) - set(SYSTEMS))
    if unknown:
        ap.error(f"unknown system(s) {', '.join(unknown)}; choose from {', '.join(SYSTEMS)}")
    rows = evaluate(a.data, systems)
    print(json.dumps(rows, indent=2) if a.json else format_table(rows))


if __name__ == "__main__":
    main()
