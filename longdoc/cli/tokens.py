"""`longdoc tokens PATH...`: token counts per file and in total, and which context windows they fit."""
from __future__ import annotations

import os
import sys

import click

from longdoc.cli import errors_as_json, file_error, nonempty_paths, one_line, stdin_once
from longdoc.errors import LongdocError


def _files(path: str):
    """A named file (or '-') as is; a directory as its non-hidden files, sorted, recursively."""
    if path == "-" or not os.path.isdir(path):
        yield path, True
        return
    for root, dirs, names in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__pycache__")
        for name in sorted(names):
            if not name.startswith("."):
                yield os.path.join(root, name), False


@click.command("tokens")
@click.argument("paths", nargs=-1, required=True, callback=nonempty_paths)
@click.option("--json", "as_json", is_flag=True, help="One JSON object: files, total, windows.")
@click.option("--model", envvar="LONGDOC_MODEL", help="Local Hugging Face model folder (its tokenizer is used).")
@click.option("--password", envvar="LONGDOC_PDF_PASSWORD", help="Password of an encrypted PDF.")
def command(paths, as_json, model, password):
    """Count the tokens of each PATH (a PDF, text, Markdown or code file, a directory, '-' for stdin)
    with the model's tokenizer and tiktoken's cl100k_base and o200k_base; show which context windows
    the total fits.

    A PATH named on the command line that cannot be read (missing, a binary, a broken PDF) does not
    stop the others: its one-line error goes to stderr ({"error": ...} with --json) and it is left out
    of stdout, which counts the files read (with --json, an empty "files" list if none was). Files
    inside a directory that cannot be read as text are skipped with a note on stderr ({"warning":
    "skipped ..."} with --json). The loader's warnings (PDF pages without text or with garbled text,
    invalid UTF-8) go to stderr, as `ask` prints them. Text is read and counted in blocks, so a file of
    any size is counted in flat memory.

    Exit status: 0 when every PATH was counted, 2 on error, including when any PATH could not be read.
    """
    from longdoc import render
    from longdoc import tokens as tk
    from longdoc.model.files import load_tokenizer
    from longdoc.sources import stream

    counts, skipped, failed = [], 0, 0
    with errors_as_json(as_json):
        stdin_once(paths)
        tokenizer = load_tokenizer(model)  # an error here would recur on every PATH: it stops the run
        for path in paths:
            try:
                if path != "-" and not os.path.exists(path):
                    raise LongdocError(f"{path}: no such file or directory")
                for file, named in _files(path):
                    try:  # read in blocks, never whole (longdoc/tokens.py: the counts equal the whole text's)
                        text = stream(file, password=password)
                        counts.append(tk.count_chunks(text.chunks, file, tokenizer=tokenizer))
                        for w in text.warnings:  # filled as the blocks were read
                            render.file_warning(file, w, as_json=as_json)
                    except LongdocError as e:
                        if named:
                            raise
                        if as_json:
                            render.warning(f"skipped {e}", as_json=True)
                        else:
                            click.echo(f"longdoc: skipped {one_line(str(e))}", err=True)
                        skipped += 1
            except LongdocError as e:  # this PATH alone; the others are still counted
                file_error(e, as_json)
                failed += 1
        if not counts and not failed:
            raise LongdocError("no readable file" + (f" ({skipped} skipped)" if skipped else ""))
    total = tk.total(counts)
    if as_json:
        sys.stdout.write(render.dumps({"files": [c.to_dict() for c in counts], "total": total.to_dict(),
                                       "windows": dict(tk.WINDOWS)}) + "\n")
    elif counts:  # no empty table when no PATH could be read
        _table(counts, total, tk, render.shown_path)
    if failed:
        sys.exit(2)
    return 0


def _table(counts, total, tk, shown_path):
    rows = [(shown_path(c.path), c.chars, c.model, c.cl100k_base, c.o200k_base, c.fits or "> 1M") for c in counts]
    if len(counts) > 1:
        rows.append(("total", total.chars, total.model, total.cl100k_base, total.o200k_base, total.fits or "> 1M"))
    head = ("file", "chars", "model", "cl100k", "o200k", "fits")
    cells = [head] + [(r[0], *(f"{x:,}" for x in r[1:5]), r[5]) for r in rows]
    width = [max(len(row[i]) for row in cells) for i in range(len(head))]
    for row in cells:
        line = [row[0].ljust(width[0])] + [row[i].rjust(width[i]) for i in range(1, len(head))]
        click.echo("  ".join(line))
    worst = max(total.cl100k_base, total.o200k_base)
    fit = ", ".join(f"{label} {'yes' if worst <= size else 'no'}" for label, size in tk.WINDOWS)
    click.echo(f"context windows (tiktoken, whole input): {fit}; the longdoc encoder reads it whole")
