"""Rendering of `longdoc classify` results: a Rich table for people, tab-separated lines for pipes,
JSON / JSONL for programs. Tasks return data; only this module prints it."""
from __future__ import annotations

import sys

from rich.console import Console
from rich.table import Table
from rich.text import Text

from longdoc.render import dumps, shown_path
from longdoc.tasks.classify import Classification, Evidence


def _one_line(s: str, limit: int) -> str:
    s = " ".join(s.split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


def _where(e: Evidence) -> str:
    lines = f"{e.line_start}-{e.line_end}" if e.line_end != e.line_start else f"{e.line_start}"
    return (f"p.{e.page} " if e.page is not None else "") + f"l.{lines}"


def classify_rich(results: list[Classification], out: Console, snippet_chars: int = 160) -> None:
    table = Table(show_header=True, header_style="bold", expand=False, show_lines=True)
    table.add_column("file", style="longdoc.path", overflow="fold")
    table.add_column("label", style="longdoc.label")
    table.add_column("score", style="longdoc.score", justify="right")
    table.add_column("evidence")
    for r in results:
        shown = [r.best] if r.mode == "single" else r.present
        if not shown:
            table.add_row(shown_path(r.path), Text("none", style="longdoc.dim"), "", "")
        for i, s in enumerate(shown):
            ev = Text()
            for e in s.evidence:
                if ev:
                    ev.append("\n")
                ev.append(_where(e), "longdoc.loc")
                ev.append("  " + _one_line(e.text, snippet_chars))
            table.add_row(shown_path(r.path) if i == 0 else "", s.label, f"{s.score:.3f}", ev)
    out.print(table)


def classify_plain(results: list[Classification], out=None) -> None:
    """``path<TAB>label<TAB>score<TAB>evidence locations``, one line per (file, label shown)."""
    out = out or sys.stdout
    for r in results:
        for s in ([r.best] if r.mode == "single" else r.present):
            where = ",".join(_where(e).replace(" ", ":") for e in s.evidence)
            out.write(f"{shown_path(r.path)}\t{s.label}\t{s.score:.3f}\t{where}\n")


def classify_json(results: list[Classification], out=None) -> None:
    out = out or sys.stdout
    out.write(dumps([r.to_json() for r in results], indent=2) + "\n")


def classify_jsonl_one(result: Classification, out=None) -> None:
    out = out or sys.stdout
    out.write(dumps(result.to_json()) + "\n")
    out.flush()
