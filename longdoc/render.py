"""The only module that prints results: Rich for people, grep-shaped lines for pipes, JSON for programs.

Colours are theme keys (``longdoc.path``, ``longdoc.score``, ...), so ``NO_COLOR`` and ``--color``
apply everywhere. Progress, logs and errors go to stderr; results go to stdout.
"""
from __future__ import annotations

import json
import re
import sys

from rich.console import Console
from rich.text import Text
from rich.theme import Theme

from longdoc.results import Answer

THEME = Theme({
    "longdoc.path": "magenta",
    "longdoc.loc": "green",
    "longdoc.score": "bold cyan",
    "longdoc.label": "yellow",
    "longdoc.match": "bold red",
    "longdoc.question": "bold",
    "longdoc.dim": "dim",
})
# Eight shades for the page map, low to high relevance.
_SHADES = " ▁▂▃▄▅▆▇█"
_WORD = re.compile(r"\w\w+", re.UNICODE)
_STOP = frozenset("the a an and or of to in on for by with is are be this that what which clause clauses "
                  "does do any there".split())


class _Console(Console):
    """Rich's console, except when the reader leaves (`longdoc ask ... --color always | head -1`): Rich
    then exits 1 on its own, which for longdoc means "nothing found"; the BrokenPipeError goes on to the
    CLI, which ends quietly with 0 as for the plain and JSON outputs."""

    def on_broken_pipe(self) -> None:
        self.quiet = True  # nothing more to write: the rest of the output goes nowhere
        raise BrokenPipeError


def console(stderr: bool = False, color: str = "auto", width: int | None = None, file=None) -> Console:
    """A themed console; ``color`` is auto | always | never (NO_COLOR is honoured for auto)."""
    force = True if color == "always" else None  # "never" keeps the layout, drops the colour
    return _Console(theme=THEME, stderr=stderr, file=file, width=width, force_terminal=force,
                    no_color=(color == "never") or None, highlight=False, soft_wrap=False)


def _stem(word: str) -> str:
    from longdoc.tasks.retrieve import stemmer  # the same stems as BM25 matched on

    st = stemmer()
    return st.stemWord(word.lower()) if st else word.lower()


def query_terms(question: str) -> set[str]:
    return {_stem(w) for w in _WORD.findall(question) if w.lower() not in _STOP}


def highlight(snippet: str, terms: set[str]) -> Text:
    """The snippet with the words that match the question (after stemming) styled longdoc.match."""
    text = Text(snippet)
    for m in _WORD.finditer(snippet):
        if _stem(m.group()) in terms:
            text.stylize("longdoc.match", m.start(), m.end())
    return text


def shown_path(path: str) -> str:
    """A path for a human: a byte of a name that is not UTF-8 (held as a lone surrogate) as ``\\xe9``,
    where writing it would fail or leave invalid text on the terminal; a line break or tab as ``\\n``,
    ``\\r``, ``\\t``, which would split a grep-shaped or tab-separated line."""
    shown = path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return shown.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")


def dumps(obj, **kw) -> str:
    """JSON with non-ASCII text as is, except the lone surrogates of non-UTF-8 names: those as their
    ``\\udcXX`` escapes (valid JSON, and ``json.loads`` gives back the very name)."""
    return re.sub("[\udc80-\udcff]", lambda m: f"\\u{ord(m.group()):04x}", json.dumps(obj, ensure_ascii=False, **kw))


def _location(h) -> str:
    loc = f"{h.line_start}-{h.line_end}" if h.line_end != h.line_start else f"{h.line_start}"
    return f"{shown_path(h.path)}:{loc}"


def _one_line(s: str, limit: int) -> str:
    s = " ".join(s.split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


def heat_map(heat: list[float]) -> str:
    """One character per page (or slice of lines), shaded by the best passage's relevance there."""
    if not heat:
        return ""
    lo, hi = min(heat), max(heat)
    span = (hi - lo) or 1.0
    return "".join(_SHADES[round((h - lo) / span * (len(_SHADES) - 1))] for h in heat)


def answers_rich(answers: list[Answer], out: Console, snippet_chars: int = 400) -> None:
    for a in answers:
        out.print(Text(a.question, style="longdoc.question"))
        if a.heat:
            unit = "pages" if a.results and a.results[0].page is not None else "lines"
            out.print(Text.assemble(("  map ", "longdoc.dim"), heat_map(a.heat), (f"  ({unit})", "longdoc.dim")))
        if not a.results:
            out.print(Text("  no passage cleared the threshold", style="longdoc.dim"))
        terms = query_terms(a.question)
        for h in a.results:
            head = Text.assemble(("  ", ""), (_location(h), "longdoc.path"))
            if h.page is not None:
                head.append(f"  p.{h.page}", "longdoc.loc")
            head.append(f"  {h.score:.3f}", "longdoc.score")
            if h.label:
                head.append(f"  {_one_line(h.label, 40)}", "longdoc.label")
            out.print(head)
            body = highlight(_one_line(h.text, snippet_chars), terms)
            body.pad_left(4)
            out.print(body)
        out.print()


def answers_plain(answers: list[Answer], out=None) -> None:
    """grep-shaped: ``path:line-line[:p.N]<TAB>score<TAB>snippet``; a ``# question`` line per question."""
    out = out or sys.stdout
    many = len(answers) > 1
    for a in answers:
        if many:
            out.write(f"# {a.question}\n")
        for h in a.results:
            page = f":p.{h.page}" if h.page is not None else ""
            out.write(f"{_location(h)}{page}\t{h.score:.3f}\t{_one_line(h.text, 200)}\n")


def answers_json(answers: list[Answer], out=None) -> None:
    out = out or sys.stdout
    out.write(dumps([a.to_json() for a in answers], indent=2) + "\n")


def answers_jsonl(answers: list[Answer], out=None) -> None:
    out = out or sys.stdout
    for a in answers:
        for h in a.results:
            out.write(dumps({"question": a.question, **h.to_json()}) + "\n")
            out.flush()


def warning(message: str, *, as_json: bool = False, err=None) -> None:
    """A non-fatal problem, on stderr (a JSON object in JSON modes)."""
    err = err or sys.stderr
    err.write((json.dumps({"warning": message}, ensure_ascii=False) if as_json else f"longdoc: warning: {message}") + "\n")


def file_warning(path: str, message: str, *, as_json: bool = False, err=None) -> None:
    """One of a loader's warnings about a file (``Document.warnings``, ``TextStream.warnings``): one
    line naming the file, as every verb that reads files prints it."""
    warning(f"{shown_path(path)}: {message}", as_json=as_json, err=err)


def error_json(message: str, err=None) -> None:
    err = err or sys.stderr
    err.write(json.dumps({"error": message}, ensure_ascii=False) + "\n")
