"""How well segments fit CUAD's gold clause spans, for a few length settings.

    python -m longdoc.eval.segments [--cuad DIR] [--settings 800/200,600/150,...]

For each (max_chars, min_chars) it segments the 80 dev contracts and prints, over the gold spans of
the positive (contract, category) pairs in labels.dev.jsonl:

- ``inside``: share of gold spans lying entirely inside one segment;
- ``half``: share with at least half of their characters in one segment (the retrieval hit rule);
- ``prec``: for that best segment, the share of its characters that are gold (how much of a returned
  passage a reviewer must read besides the clause), averaged;
- segment count and length statistics (chars), and the segmentation time;

and the same for fixed windows of ``max_chars`` cut at a space (the usual chunking baseline).

No model is involved; this measures only where the cuts fall.
"""
from __future__ import annotations

import argparse
import bisect
import json
import os
import statistics
import time

from ..segment import segment
from ..sources import Segment, load

DEFAULT_SETTINGS = "400/100,600/150,800/200,1000/250,1500/300"


def default_cuad_dir() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.dirname(os.path.dirname(here))
    for cand in (os.path.join(repo, "..", "shared", "data", "cuad"), "/work/shared/data/cuad"):
        if os.path.isdir(cand):
            return os.path.normpath(cand)
    return os.path.normpath(os.path.join(repo, "..", "shared", "data", "cuad"))


def gold_spans(cuad: str) -> dict[str, list[tuple[int, int]]]:
    spans: dict[str, list[tuple[int, int]]] = {}
    with open(os.path.join(cuad, "labels.dev.jsonl"), encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if row["is_impossible"]:
                continue
            spans.setdefault(row["doc"], []).extend((s["start"], s["end"]) for s in row["spans"])
    return spans


def fixed_windows(doc, size: int) -> list[Segment]:
    """The usual baseline: consecutive windows of at most ``size`` chars, cut at the last space."""
    text, out, s = doc.text, [], 0
    while s < len(text):
        while s < len(text) and text[s].isspace():
            s += 1
        if s >= len(text):
            break
        e = min(len(text), s + size)
        if e < len(text):
            cut = max(text.rfind(" ", s, e + 1), text.rfind("\n", s, e + 1))
            e = cut if cut > s else e
        out.append(Segment(s, e, "window"))
        s = e
    return out


def measure(cuad: str, max_chars: int, min_chars: int, gold: dict[str, list[tuple[int, int]]],
            docs: dict[str, object], *, fixed: bool = False) -> dict[str, float]:
    inside = half = 0
    precs = []
    lengths = []
    n_gold = 0
    t0 = time.perf_counter()
    if fixed:
        all_segs = {name: fixed_windows(doc, max_chars) for name, doc in docs.items()}
    else:
        all_segs = {name: segment(doc, max_chars=max_chars, min_chars=min_chars) for name, doc in docs.items()}
    seconds = time.perf_counter() - t0
    for name, segs in all_segs.items():
        lengths.extend(s.end - s.start for s in segs)
        starts = [s.start for s in segs]
        for gs, ge in gold.get(name, []):
            if ge <= gs:
                continue
            n_gold += 1
            i = max(0, bisect.bisect_right(starts, gs) - 1)
            best, best_seg = 0, None
            while i < len(segs) and segs[i].start < ge:
                ov = min(ge, segs[i].end) - max(gs, segs[i].start)
                if ov > best:
                    best, best_seg = ov, segs[i]
                i += 1
            if best_seg is None:
                continue
            if best_seg.start <= gs and ge <= best_seg.end:
                inside += 1
            if best >= 0.5 * (ge - gs):
                half += 1
            precs.append(best / (best_seg.end - best_seg.start))
    lengths.sort()
    return {
        "segmenter": "fixed" if fixed else "segment", "max": max_chars, "min": min_chars, "gold": n_gold,
        "inside": inside / n_gold, "half": half / n_gold, "prec": statistics.fmean(precs),
        "segments": len(lengths), "mean": statistics.fmean(lengths), "median": statistics.median(lengths),
        "p90": lengths[int(0.9 * (len(lengths) - 1))], "longest": lengths[-1], "seconds": seconds,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cuad", default=default_cuad_dir(), help="the CUAD dev folder (labels.dev.jsonl, txt/)")
    ap.add_argument("--settings", default=DEFAULT_SETTINGS, help="comma-separated max/min char pairs")
    ap.add_argument("--no-baseline", action="store_true", help="skip the fixed-window rows")
    args = ap.parse_args(argv)
    gold = gold_spans(args.cuad)
    docs = {name: load(os.path.join(args.cuad, name)) for name in sorted(gold)}
    # Contracts with no positive label still count for the length statistics.
    for name in sorted(os.listdir(os.path.join(args.cuad, "txt"))):
        key = "txt/" + name
        if key not in docs:
            docs[key] = load(os.path.join(args.cuad, key))
    print(f"CUAD dev: {len(docs)} contracts, {sum(len(v) for v in gold.values())} gold spans")
    cols = ["segmenter", "max", "min", "inside", "half", "prec", "segments", "mean", "median", "p90", "longest", "seconds"]
    print(" ".join(f"{c:>9}" for c in cols))
    runs = [(int(a), int(b), False) for a, b in (p.split("/") for p in args.settings.split(","))]
    if not args.no_baseline:
        runs += [(mx, 0, True) for mx in sorted({mx for mx, _, _ in runs})]
    for mx, mn, fixed in runs:
        r = measure(args.cuad, mx, mn, gold, docs, fixed=fixed)
        print(" ".join(f"{r[c]:>9.3f}" if isinstance(r[c], float) and c in ("inside", "half", "prec")
                       else f"{r[c]:>9.1f}" if isinstance(r[c], float) else f"{r[c]:>9}" for c in cols))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
