"""What the loader makes of a set of PDFs, to compare two versions of the loader on the same files.

    python -m longdoc.eval.pdf_snapshot OUT.json PDF_OR_DIR...
    python -m longdoc.eval.pdf_snapshot --diff BEFORE.json AFTER.json

A snapshot holds, per file (directories are searched recursively for *.pdf, in name order): the sha256
and length of the text ``longdoc.sources.load`` returns, its page count, its warnings, or its error,
and the seconds the load took. No password is given, so encrypted files are errors in both snapshots.
``--diff`` prints the files whose text, warnings or error differ, then one line of totals.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path


def snapshot(inputs: list[Path]) -> dict[str, dict]:
    from longdoc.errors import LongdocError
    from longdoc.sources import load

    files = [p for i in inputs for p in (sorted(i.rglob("*.pdf")) if i.is_dir() else [i])]
    out = {}
    for f in files:
        t0 = time.perf_counter()
        try:
            doc = load(str(f))
            row = {"sha256": hashlib.sha256(doc.text.encode("utf-8", "surrogatepass")).hexdigest(),
                   "chars": len(doc.text), "pages": doc.n_pages, "warnings": list(doc.warnings)}
        except LongdocError as e:
            row = {"error": str(e)}
        row["seconds"] = round(time.perf_counter() - t0, 3)
        out[str(f)] = row
    return out


def diff(before: dict[str, dict], after: dict[str, dict]) -> list[str]:
    """One line per file whose text, warnings or error changed (or that one snapshot lacks), then
    the totals."""
    lines = []
    same_text = 0
    for f in sorted(set(before) | set(after)):
        a, b = before.get(f), after.get(f)
        if a is None or b is None:
            lines.append(f"{f}: only in {'after' if a is None else 'before'}")
            continue
        if a.get("sha256") != b.get("sha256") or a.get("error") != b.get("error"):
            lines.append(f"{f}: text changed ({a.get('chars', a.get('error'))} -> {b.get('chars', b.get('error'))})")
        else:
            same_text += 1
        gone = [w for w in a.get("warnings", []) if w not in b.get("warnings", [])]
        new = [w for w in b.get("warnings", []) if w not in a.get("warnings", [])]
        lines += [f"{f}: - {w}" for w in gone] + [f"{f}: + {w}" for w in new]
    t_a = sum(r["seconds"] for r in before.values())
    t_b = sum(r["seconds"] for r in after.values())
    lines.append(f"{len(after)} files, {same_text} with the same text or error; load time {t_a:.2f} s -> {t_b:.2f} s")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--diff", nargs=2, metavar=("BEFORE", "AFTER"), help="Compare two snapshots.")
    ap.add_argument("out", nargs="?", type=Path, help="Where to write the snapshot (JSON).")
    ap.add_argument("inputs", nargs="*", type=Path, help="PDFs or folders of PDFs.")
    args = ap.parse_args(argv)
    if args.diff:
        before, after = (json.loads(Path(p).read_text(encoding="utf-8")) for p in args.diff)
        print("\n".join(diff(before, after)))
        return 0
    if args.out is None or not args.inputs:
        ap.error("give OUT.json and at least one PDF or folder (or --diff BEFORE AFTER)")
    args.out.write_text(json.dumps(snapshot(args.inputs), ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
