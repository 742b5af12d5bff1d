"""One large PDF from many: the inputs' pages, in order, repeated; for load, memory and sharding runs.

    python -m longdoc.eval.bigpdf OUT.pdf [--repeat N] PDF_OR_DIR...

Directories contribute their *.pdf files in name order. Files that cannot be read (encrypted,
broken) are skipped and named on stderr. The repeated copies share their page objects in the output
file, so OUT stays small while a loader still parses every page.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def build(out: Path, inputs: list[Path], repeat: int = 1) -> int:
    """Write ``out``; returns its page count."""
    from pypdf import PdfReader, PdfWriter

    files = [p for i in inputs for p in (sorted(i.glob("*.pdf")) if i.is_dir() else [i])]
    readers = []
    for f in files:
        try:
            r = PdfReader(f)
            if r.is_encrypted and not r.decrypt(""):  # an owner password alone still opens
                raise ValueError("encrypted")
            readers.append(r)
        except Exception as e:  # noqa: BLE001  (a corpus run names and skips what it cannot read)
            print(f"skipped {f}: {e}", file=sys.stderr)
    writer = PdfWriter()
    for _ in range(repeat):
        for r in readers:
            for page in r.pages:
                writer.add_page(page)
    with open(out, "wb") as fh:
        writer.write(fh)
    return len(writer.pages)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m longdoc.eval.bigpdf", description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("inputs", type=Path, nargs="+")
    ap.add_argument("--repeat", type=int, default=1)
    a = ap.parse_args(argv)
    pages = build(a.out, a.inputs, a.repeat)
    print(f"{a.out}: {pages:,} pages, {a.out.stat().st_size / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
