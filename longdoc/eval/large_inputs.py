"""A large text for the resource figures of docs/reliability.md, and the reading half of `ask --stream`.

    python -m longdoc.eval.large_inputs text OUT.txt --size 1G     # the 80 CUAD dev texts, repeated
    python -m longdoc.eval.large_inputs read-stream FILE           # reader + passage cutter + tokenizer

``text`` writes the dev contracts (sorted by name) one after another, again and again, until the file
holds ``--size`` bytes (whole contracts: the last one may end past it), so a prefix made with a smaller
``--size`` is the start of the larger file. (Large PDFs: ``python -m longdoc.eval.bigpdf``.)

``read-stream`` runs exactly what ``longdoc ask FILE --stream`` runs before the encoder
(``longdoc.sources.stream`` -> ``stream_ask.tokenized_passages`` with the model's tokenizer) and prints
characters, passages, tokens, seconds and the peak RSS of this process. Peak memory is best read with
``/usr/bin/time -f "%e s, %M KB"`` around any of these commands (docs/reliability.md).
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path


def default_data_dir() -> Path:
    """../shared/data/cuad beside the checkout (as longdoc.eval.cuad, whose imports are heavier)."""
    return Path(__file__).resolve().parents[2].parent / "shared" / "data" / "cuad"


def _size(text: str) -> int:
    units = {"K": 10**3, "M": 10**6, "G": 10**9}  # decimal, as file sizes are quoted
    text = text.strip().upper().removesuffix("B")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def make_text(out: Path, size: int, src: Path) -> int:
    """Write the CUAD texts of ``src`` repeated until ``size`` bytes; returns the bytes written."""
    texts = [p.read_bytes() for p in sorted(src.glob("*.txt"))]
    if not texts:
        raise SystemExit(f"no .txt files in {src}")
    written = 0
    with open(out, "wb") as f:
        while written < size:
            for t in texts:
                f.write(t)
                written += len(t)
                if written >= size:
                    break
    return written


def read_stream(path: str, model: str | None = None) -> dict:
    """The reading half of ``ask --stream`` over ``path``, no encoder: counts and the time taken."""
    from longdoc.model.files import load_tokenizer
    from longdoc.sources import stream
    from longdoc.tasks.stream_ask import tokenized_passages

    t0 = time.perf_counter()
    tokenizer = load_tokenizer(model)
    src = stream(path)
    chars = passages = tokens = 0
    for p, ids in tokenized_passages(src.chunks, tokenizer, pages=src.kind == "pdf"):
        chars = p[1]
        passages += 1
        tokens += len(ids)
    return {"path": path, "kind": src.kind, "chars_to_last_passage": chars, "passages": passages, "tokens": tokens,
            "seconds": round(time.perf_counter() - t0, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("text", help="the CUAD dev texts repeated to --size bytes")
    t.add_argument("out", type=Path)
    t.add_argument("--size", type=_size, default=_size("1G"), help="bytes (K, M, G: 10**3, 10**6, 10**9; default 1G)")
    t.add_argument("--src", type=Path, default=default_data_dir() / "txt")
    r = sub.add_parser("read-stream", help="the reader, passage cutter and tokenizer of ask --stream, no model")
    r.add_argument("path")
    r.add_argument("--model", default=None)
    args = ap.parse_args(argv)
    if args.cmd == "text":
        n = make_text(args.out, args.size, args.src)
        print(f"{args.out}: {n:,} bytes")
    else:
        from longdoc.errors import LongdocError

        try:
            out = read_stream(args.path, args.model)
        except LongdocError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print("  ".join(f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}" for k, v in out.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
