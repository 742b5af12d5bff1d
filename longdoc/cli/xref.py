"""`longdoc xref FILE...`: the clause graph of each file (references, defined terms, related clauses)."""
from __future__ import annotations

import sys

import click

from longdoc.cli import errors_as_json, file_error, nonempty_paths, stdin_once
from longdoc.errors import LongdocError
from longdoc.segment import blank_text


def _read(engine, path: str, password: str | None, as_json: bool):
    """FILE's Document, or a LongdocError about this FILE alone (the other FILEs are still read). The
    loader's warnings (pages without text or with garbled text, invalid UTF-8) go to stderr, as `ask`
    prints them."""
    from longdoc import render

    if engine is not None:
        doc = engine.load(path, password=password)
    else:
        from longdoc.sources import load

        doc = load(path, password=password)
    if doc.kind == "code":
        raise LongdocError(f"{path}: is source code; xref reads contracts and other prose")
    if blank_text(doc.text):
        raise LongdocError(f"{path}: no text")
    for w in doc.warnings:
        render.file_warning(path, w, as_json=as_json)
    return doc


def _cosine(ctx, param, value):
    if not -1.0 <= value <= 1.0:  # also NaN, which no pair would ever clear
        raise click.BadParameter(f"{value} is not a cosine (between -1 and 1)", ctx=ctx, param=param)
    return value


@click.command("xref")
@click.argument("files", nargs=-1, required=True, metavar="FILE...", callback=nonempty_paths)
@click.option("--json", "as_json", is_flag=True, help="One JSON array, one object per file.")
@click.option("--format", "fmt", type=click.Choice(["auto", "tree", "plain", "dot"]), default="auto",
              show_default=True, help="tree (Rich), plain (tab-separated lines), dot (Graphviz); auto picks "
              "tree on a terminal and plain in a pipe.")
@click.option("--no-related", is_flag=True, help="Skip related clauses (no model is loaded).")
@click.option("--top", default=15, show_default=True, type=click.IntRange(min=0),
              help="At most this many related-clause pairs.")
@click.option("--min-gap", default=2000, show_default=True, type=click.IntRange(min=0),
              help="Related clauses must be at least this many characters apart.")
@click.option("--min-similarity", default=0.5, show_default=True, type=float, callback=_cosine,
              help="Related clauses need at least this cosine similarity (-1 to 1).")
@click.option("--color", type=click.Choice(["auto", "always", "never"]), default="auto", show_default=True)
@click.option("--model", envvar="LONGDOC_MODEL", help="Local Hugging Face model folder (safetensors).")
@click.option("--window", type=click.IntRange(min=1), envvar="LONGDOC_WINDOW",
              help="Attention radius in tokens (each token sees 2w+1 neighbours).")
@click.option("--password", envvar="LONGDOC_PDF_PASSWORD", help="Password of an encrypted PDF.")
@click.option("--no-cache", is_flag=True, help="Do not read or write the content-hash cache.")
def command(files, as_json, fmt, no_related, top, min_gap, min_similarity, color, model, window, password,
            no_cache):
    """Cross-references of each FILE (PDF, text or Markdown; '-' for stdin): explicit references
    ("Section 4.2(b)", "Article IV", "Exhibit B", "paragraph (c) above") resolved to the clause they
    name or listed as unresolved; defined terms with their definition and uses, terms used but never
    defined and defined but never used; and pairs of clauses far apart that the encoder finds related.

    A FILE that cannot be read (missing, a scan without a text layer, source code, empty) does not
    stop the others: its one-line error goes to stderr ({"error": ...} with --json) and it is left out
    of stdout, which holds the reports of the files read (with --json, one array, empty if none was).

    Exit status: 0 when something was found, 1 when a file has no references, terms or related
    clauses, 2 on error, including when any FILE could not be read.
    """
    from longdoc import render, render_xref
    from longdoc.tasks.xref import xref

    reports = []
    with errors_as_json(as_json):
        stdin_once(files)
        engine = None
        if not no_related:
            from longdoc.tasks.ask import Engine

            engine = Engine(model=model, window=window, use_cache=not no_cache)
        failed = 0
        for path in files:
            # Only reading is per FILE: an error of the model would recur on every FILE, so it still
            # stops the run.
            try:
                doc = _read(engine, path, password, as_json)
            except LongdocError as e:
                file_error(e, as_json)
                failed += 1
                continue
            reports.append(xref(doc, engine=engine, related=not no_related, top=top, min_gap=min_gap,
                                min_similarity=min_similarity))
    if as_json:
        render_xref.xref_json(reports)
    elif fmt == "dot":
        render_xref.xref_dot(reports)
    else:
        out = render.console(color=color)
        for r in reports:
            if fmt == "tree" or (fmt == "auto" and out.is_terminal):
                render_xref.xref_rich(r, out)
            else:
                render_xref.xref_plain(r)
    if failed:
        sys.exit(2)
    found = all(r.references or r.terms or r.related for r in reports)
    sys.exit(0 if found else 1)
