"""`longdoc ask PATH QUESTION...`: the passages that answer each question."""
from __future__ import annotations

import os
import stat
import sys
from contextlib import nullcontext
from pathlib import Path

import click

from longdoc.cli import errors_as_json, nonempty_paths, say_note
from longdoc.errors import LongdocError


def _not_nan(ctx, param, value):
    if value is not None and value != value:  # NaN: no score would ever clear it, silently
        raise click.BadParameter("must be a number, not nan", ctx=ctx, param=param)
    return value


def _questions(questions: tuple[str, ...], questions_file) -> list[str]:
    from longdoc.sources.text import decode_text, without_surrogates

    qs = [without_surrogates(q) for q in questions]
    if questions_file is not None:  # any encoding the document loader reads (UTF-16, cp1252, ...)
        text = decode_text(questions_file.read(), questions_file.name)[0]
        qs += [line.strip() for line in text.splitlines() if line.strip()]
    if not qs:
        raise LongdocError("no question given (pass QUESTION arguments or --questions-file)")
    if any(not q.strip() for q in qs):
        raise LongdocError("empty question")
    return qs


def _ask_stream(path, qs, *, k, threshold, model, window, attention, password, as_json):
    """--stream: the sinks pattern over stdin or a file (text decoded block by block, a PDF page by
    page; longdoc/sources, longdoc/tasks/stream_ask.py)."""
    from longdoc import render
    from longdoc.model.attention_spec import parse_spec
    from longdoc.sources import stream

    try:
        name, params = parse_spec(attention or "sinks")
    except ValueError as e:
        raise LongdocError(str(e)) from None
    if name != "sinks":
        raise LongdocError(f"--stream runs the sinks pattern only, not --attention {name}")
    src = stream(path, password=password)  # a missing, binary or undecodable input fails here, before the model
    from longdoc.model import load_encoder
    from longdoc.tasks.stream_ask import ask_stream

    encoder = load_encoder(model, window=window)
    stats: dict = {}
    answers = ask_stream(src.chunks, qs, encoder=encoder, k=k, threshold=threshold, sinks=params.get("sinks", 4),
                         path=path, pages=src.kind == "pdf", stats=stats)
    for w in src.warnings:
        render.file_warning(path, w, as_json=as_json)
    if not stats.get("passages"):  # as without --stream: an empty input is an error, not "nothing found"
        raise LongdocError(f"{path}: no text to search")
    return answers


# Above this many tokens (estimated), encoding the whole input at once takes minutes to hours and GBs on
# a CPU (docs/attention.md, "Streaming": 238k tokens took 244 s and 3.31 GiB on 2 cores), so `ask` says
# that --stream exists before it starts. An estimate from the size: about 4 characters (bytes) a token.
STREAM_HINT_TOKENS = 500_000


def _stream_hint(path: str, n_chars: int, warn) -> None:
    tokens = n_chars // 4
    if tokens < STREAM_HINT_TOKENS:
        return
    warn(f"{path}: about {tokens:,} tokens; ask encodes them all at once, in time and memory that grow with "
         "them (238k tokens: 4 min, 3.3 GiB on 2 CPU cores); --stream reads the file window by window in flat memory")


def _text_size(path: str) -> int | None:
    """The size in bytes of a regular file that is not a PDF (about its characters), else None."""
    from longdoc.sources import looks_like_pdf

    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            return None
        with open(path, "rb") as f:
            return None if looks_like_pdf(f.read(1024), path) else st.st_size
    except OSError:
        return None  # the loader says what is wrong


@click.command("ask")
@click.argument("path", callback=nonempty_paths)
@click.argument("questions", nargs=-1)
@click.option("-k", "--top-k", "k", default=5, show_default=True, type=click.IntRange(min=1),
              help="Passages per question.")
@click.option("--threshold", type=float, default=None, callback=_not_nan,
              help="Keep every passage whose score is at least this. Default: the top k, or none "
                   "when the answer head judges that the document does not answer the question.")
@click.option("--questions-file", type=click.File("rb"), help="One question per line.")
@click.option("--json", "as_json", is_flag=True, help="One JSON array, one object per question.")
@click.option("--jsonl", "as_jsonl", is_flag=True, help="One JSON object per result, streamed.")
@click.option("--color", type=click.Choice(["auto", "always", "never"]), default="auto", show_default=True)
@click.option("-q", "--quiet", is_flag=True,
              help="No progress or notes on stderr (warnings and errors are still printed).")
@click.option("--model", envvar="LONGDOC_MODEL", help="Local Hugging Face model folder (safetensors).")
@click.option("--window", type=click.IntRange(min=1), envvar="LONGDOC_WINDOW",
              help="Attention radius in tokens (each token sees 2w+1 neighbours).")
@click.option("--attention", envvar="LONGDOC_ATTENTION", metavar="NAME[:k=v,...]",
              help="Attention pattern: local (default: window + global tokens), strided, lsh, sinks, linear "
                   "or full, with parameters, e.g. lsh:rounds=4 (docs/attention.md).")
@click.option("--stream", is_flag=True,
              help="Read PATH (or '-') as a stream with bounded memory: the sinks pattern, encoded window by "
                   "window; scores are cosines and there is no 'no answer' judgement (docs/attention.md).")
@click.option("--password", envvar="LONGDOC_PDF_PASSWORD", help="Password of an encrypted PDF.")
@click.option("--no-cache", is_flag=True, help="Do not read or write the content-hash cache.")
@click.option("--devices", default="1", show_default=True, envvar="LONGDOC_DEVICES",
              help="Shard the sequence over N local devices (processes), or 'auto'.")
@click.option("--shard-tokens", type=click.IntRange(min=64), default=None,
              help="On one device, encode shards of this many tokens one after another.")
@click.option("--lang", multiple=True, help="Indexed directory: only files of this language (repeatable).")
@click.option("--glob", "globs", multiple=True, help="Indexed directory: only paths matching (gitignore syntax).")
@click.option("--index", "index_dir", type=click.Path(file_okay=False), help="Indexed directory: its in-tree index.")
def command(path, questions, k, threshold, questions_file, as_json, as_jsonl, color, quiet, model, window,
            attention, stream, password, no_cache, devices, shard_tokens, lang, globs, index_dir):
    """Find the passages of PATH (a PDF, text, Markdown or code file, '-' for stdin, or an indexed
    directory) that answer each QUESTION.

    On a file, each result's score is the probability that the passage holds the answer. On a
    directory (searched through its index) the score is the passage's cosine to the question while
    the order fuses that cosine with two other rankings (BM25 among them), so scores need not fall
    down the list; with --stream the score is also a cosine. --threshold cuts on the score shown.

    Exit status: 0 when some question got a passage, 1 when none did, 2 on error.
    """
    from longdoc import render

    def warn(message):  # a problem with the input, or results that may be stale: --quiet keeps it
        render.warning(message, as_json=as_json or as_jsonl)

    def note(message):  # what ask does first (indexing DIR): --quiet drops it, as it drops progress
        if not quiet:
            say_note(message, as_json or as_jsonl)

    def hint(message):  # advice (--stream exists), worded as a warning: --quiet drops it
        if not quiet:
            warn(message)

    with errors_as_json(as_json or as_jsonl):
        if as_json and as_jsonl:
            raise LongdocError("give one of --json and --jsonl")
        if path == "-" and questions_file is not None and questions_file.name == "<stdin>":
            raise LongdocError("standard input cannot be both the document (-) and --questions-file -")
        qs = _questions(questions, questions_file)
        if (lang or globs) and (path == "-" or not Path(path).is_dir()):
            raise LongdocError("--lang and --glob filter the files of an indexed directory; PATH is one file")
        if index_dir and (path == "-" or not Path(path).is_dir()):  # it was ignored: a file is never indexed
            raise LongdocError("--index names the index of an indexed directory; PATH is one file")
        if stream:
            from click.core import ParameterSource

            cmdline = click.get_current_context().get_parameter_source("devices") == ParameterSource.COMMANDLINE
            if shard_tokens is not None or (cmdline and devices != "1"):  # (not LONGDOC_DEVICES, set for all runs)
                raise LongdocError("--stream encodes window by window on one device: it takes no --devices "
                                   "or --shard-tokens")
            answers = _ask_stream(path, qs, k=k, threshold=threshold, model=model, window=window,
                                  attention=attention, password=password, as_json=as_json or as_jsonl)
        elif path != "-" and Path(path).is_dir():
            from longdoc.index import search

            if attention and attention.split(":")[0].strip().lower() != "local":
                raise LongdocError("--attention applies to a file or stdin; an indexed directory keeps the "
                                   "pattern it was indexed with (local)")
            answers = search(path, qs, k=k, threshold=threshold, model=model, window=window,
                             lang=list(lang) or None, glob=list(globs) or None, index_dir=index_dir,
                             notify=note, warn=warn)
        else:
            if path != "-" and not os.path.exists(path):
                raise LongdocError(f"{path}: no such file")
            from longdoc.tasks.ask import Engine, ask

            err = render.console(stderr=True, color=color)
            show = err.is_terminal and not quiet and not (as_json or as_jsonl)
            with err.status(f"reading {path}") if show else nullcontext() as status:
                if devices != "auto" and not devices.isdigit():
                    raise LongdocError(f"--devices must be a number or 'auto', not {devices!r}")
                engine = Engine(model=model, window=window, use_cache=not no_cache,
                                devices=devices if devices == "auto" else int(devices),
                                shard_tokens=shard_tokens, attention=attention)
                size = _text_size(path) if path != "-" else None
                if size is not None:  # a text file: said before the (long) read
                    _stream_hint(path, size, hint)
                doc = engine.load(path, password=password)
                for w in doc.warnings:
                    render.file_warning(path, w, as_json=as_json or as_jsonl)
                if size is None:  # a PDF or stdin: known once read
                    _stream_hint(path, len(doc.text), hint)
                if status:
                    status.update(f"encoding {path} ({len(doc.text):,} chars)")
                answers = ask(doc, qs, engine=engine, k=k, threshold=threshold)
    if as_json:
        render.answers_json(answers)
    elif as_jsonl:
        render.answers_jsonl(answers)
    else:
        out = render.console(color=color)
        if out.is_terminal:
            render.answers_rich(answers, out)
        else:
            render.answers_plain(answers)
    sys.exit(0 if any(a.results for a in answers) else 1)
