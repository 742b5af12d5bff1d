"""`longdoc classify FILE...` (zero-shot or with a trained head) and `longdoc classify train DIR`."""
from __future__ import annotations

import os
import sys

import click

from longdoc.cli import errors_as_json, file_error, nonempty_paths, stdin_once
from longdoc.errors import LongdocError
from longdoc.segment import blank_text

_COMMON = [
    click.option("--color", type=click.Choice(["auto", "always", "never"]), default="auto", show_default=True),
    click.option("--model", envvar="LONGDOC_MODEL", help="Local Hugging Face model folder (safetensors)."),
    click.option("--window", type=click.IntRange(min=1), envvar="LONGDOC_WINDOW",
                 help="Attention radius in tokens (each token sees 2w+1 neighbours)."),
    click.option("--no-cache", is_flag=True, help="Do not read or write the content-hash cache."),
]


def _common(f):
    for opt in reversed(_COMMON):
        f = opt(f)
    return f


def _read(engine, path: str, password: str | None, as_json: bool):
    """FILE's Document, or a LongdocError about this FILE alone (the other FILEs are still classified).
    The loader's warnings (pages without text or with garbled text, invalid UTF-8) go to stderr, as
    `ask` prints them."""
    from longdoc import render

    doc = engine.load(path, password=password)
    if blank_text(doc.text):
        raise LongdocError(f"{path}: no text to classify")
    for w in doc.warnings:
        render.file_warning(path, w, as_json=as_json)
    return doc


@click.command("classify", no_args_is_help=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("files", nargs=-1, required=True, metavar="FILE...", callback=nonempty_paths)
@click.option("--labels", "labels_spec", help='Comma-separated labels, e.g. "NDA,lease,employment agreement".')
@click.option("--labels-file", type=click.Path(dir_okay=False),
              help="A label per line: name, or name<TAB>description, or 'name: description'.")
@click.option("--preset", type=click.Choice(["cuad-types", "cuad-clauses"]),
              help="CUAD's 25 contract types (one per document) or 41 clause categories (an inventory).")
@click.option("--multi", is_flag=True, help="Report every label that occurs (default for cuad-clauses).")
@click.option("--head", "head_path", type=click.Path(dir_okay=False), help="A head from `longdoc classify train`.")
@click.option("--title/--no-title", "use_title", default=True, show_default=True,
              help="Choosing one label zero-shot, count a title that names the document's kind. --no-title for "
                   "labels that are not kinds of document.")
@click.option("--evidence", default=3, show_default=True, type=click.IntRange(min=0), help="Evidence spans per label.")
@click.option("--json", "as_json", is_flag=True, help="One JSON array, one object per file.")
@click.option("--jsonl", "as_jsonl", is_flag=True, help="One JSON object per file, in the order given.")
@click.option("--password", envvar="LONGDOC_PDF_PASSWORD", help="Password of an encrypted PDF.")
@_common
def run(files, labels_spec, labels_file, preset, multi, head_path, use_title, evidence, as_json, as_jsonl, password,
        color, model, window, no_cache):
    """Label each FILE (PDF, text or Markdown; '-' for stdin) from label descriptions, zero-shot, or
    with a head trained by `longdoc classify train`; show the calibrated score and the passages
    (page/line) that drove it. Choosing one label zero-shot, a title that names the document's kind
    in its opening ("DISTRIBUTOR AGREEMENT") counts too, and is shown first when it names the label.

    `longdoc classify train DIR --out HEAD` trains a head instead (see `longdoc classify train
    --help`); a FILE named train is therefore given as ./train.

    A FILE that cannot be read (missing, a scan without a text layer, empty) does not stop the others:
    its one-line error goes to stderr ({"error": ...} with --json or --jsonl) and it is left out of
    stdout, which holds the results of the files read (with --json, one array, empty if none was).

    Exit status: 0 when every file got a label, 1 when a file got none (--multi), 2 on error,
    including when any FILE could not be read.
    """
    from longdoc import render, render_classify
    from longdoc.tasks import classify as C

    results = []
    with errors_as_json(as_json or as_jsonl):
        if as_json and as_jsonl:
            raise LongdocError("give one of --json and --jsonl")
        stdin_once(files)
        given = sum(x is not None for x in (labels_spec, labels_file, preset, head_path))
        if given != 1:
            raise LongdocError("give exactly one of --labels, --labels-file, --preset, --head")
        for flag, value in (("--head", head_path), ("--labels-file", labels_file)):
            if value is not None and not str(value).strip():
                raise LongdocError(f"{flag} needs a file path")
        head, labels, mode = None, None, "multi" if multi else "single"
        if head_path is not None:  # `is not None`: an empty value given is an error, not another option
            head = C.Head.load(head_path)
        elif preset is not None:
            labels, pmode = C.preset(preset)
            mode = "multi" if multi else pmode
        elif labels_file is not None:
            labels = C.read_labels_file(labels_file)
        else:
            labels = C.parse_labels(labels_spec)
        if labels is not None and mode == "single" and len(labels) < 2:
            raise LongdocError("a single-label choice needs at least 2 labels (or use --multi)")
        from longdoc.tasks.ask import Engine

        engine = Engine(model=model, window=window, use_cache=not no_cache)
        if head is not None and head.model and head.model != engine.identity:
            # The vector size matched (Head.check), but other weights or settings give other vectors.
            render.warning(f"{head_path} was trained with another model or settings (--model, --window); "
                           "its scores may not hold here", as_json=as_json or as_jsonl)
        failed = 0
        for path in files:
            # Only reading is per FILE: an error of the model or the head would recur on every FILE,
            # so it still stops the run.
            try:
                doc = _read(engine, path, password, as_json or as_jsonl)
            except LongdocError as e:
                file_error(e, as_json or as_jsonl)
                failed += 1
                continue
            r = C.classify(doc, labels, engine=engine, mode=mode, head=head, evidence=evidence, use_title=use_title)
            results.append(r)
            if as_jsonl:
                render_classify.classify_jsonl_one(r)
    if as_json:
        render_classify.classify_json(results)
    elif not as_jsonl and results:  # no empty table when no FILE could be read
        out = render.console(color=color)
        if out.is_terminal:
            render_classify.classify_rich(results, out)
        else:
            render_classify.classify_plain(results)
    if failed:
        sys.exit(2)
    sys.exit(0 if all(r.mode == "single" or r.present for r in results) else 1)


@click.command("train", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("directory", callback=nonempty_paths)
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False),
              help="Where to write the head (.safetensors).")
@click.option("--folds", type=click.IntRange(min=2), help="k-fold cross-validation (default: leave-one-out "
              "up to 50 documents, else 5).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@_common
def train(directory, out_path, folds, as_json, color, model, window, no_cache):
    """Fit a classification head (logistic regression on document vectors) on DIRECTORY/<label>/*.pdf|txt
    and report its cross-validated accuracy; use it with `longdoc classify --head OUT FILE...`. With
    --json an error is a JSON object on stderr ({"error": ...})."""
    import json

    from longdoc import render
    from longdoc.tasks import classify as C
    from longdoc.tasks.ask import Engine

    with errors_as_json(as_json):  # as every other --json: a pipeline never parses prose
        folder = os.path.dirname(os.path.abspath(out_path))
        if not os.path.isdir(folder):  # before the training, not after it
            raise LongdocError(f"--out {out_path}: no folder {folder}")
        engine = Engine(model=model, window=window, use_cache=not no_cache)
        err = render.console(stderr=True, color=color)

        def progress(i, n, path):
            if err.is_terminal:
                err.print(f"[longdoc.dim]encoding {i + 1}/{n} {path}[/]")

        head = C.train_head(directory, engine=engine, folds=folds, progress=progress)
        try:
            head.save(out_path)
        except OSError as e:  # read-only folder, full disk; the OS names the temp file, which says nothing
            raise LongdocError(f"--out {out_path}: cannot write the head ({e.strerror or e})") from None
        n = len(C.training_files(directory))
    if as_json:
        click.echo(json.dumps({"out": out_path, "labels": head.labels, "documents": n,
                               "cv_accuracy": round(head.cv_accuracy, 4)}))
    else:
        click.echo(f"{out_path}\t{len(head.labels)} labels\t{n} documents\tcross-validated accuracy "
                   f"{head.cv_accuracy:.3f}")


class _Classify(click.Group):
    """`longdoc classify train DIR ...` trains a head; anything else is `longdoc classify [OPTIONS] FILE...`.

    The choice is made on the raw arguments, before any parsing: a group would parse the labelling
    options as its own (and refuse them) when they come before FILE, and would name the command
    `classify run` in usage lines, a command that does not exist."""

    def make_context(self, info_name, args, parent=None, **extra):
        if args and args[0] in self.commands:
            return super().make_context(info_name, args, parent=parent, **extra)
        return run.make_context(info_name, args, parent=parent, **extra)


# The group's help is the one-line summary in `longdoc --help`; `longdoc classify --help` is run's.
command = _Classify("classify", commands={"train": train},
                    help="Label documents zero-shot from label descriptions, or with a trained head.")
