"""The `longdoc` command: a thin layer that parses arguments, calls the library, and renders.

Each verb lives in its own module exposing a click command named ``command``; adding a verb is one
line in ``_VERBS``. Exit codes follow grep: 0 found, 1 nothing found, 2 error.
"""
from __future__ import annotations

import errno
import importlib
import os
import sys
from contextlib import contextmanager

import click

from longdoc.errors import LongdocError

# Verb modules (longdoc.cli.<name>), imported lazily so `longdoc --help` does not load torch.
_VERBS = {
    "ask": "ask",
    "classify": "classify",
    "index": "index",
    "tokens": "tokens",
    "xref": "xref",
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(_VERBS)

    def get_command(self, ctx, name):
        if name not in _VERBS:
            return None
        return importlib.import_module(f"longdoc.cli.{_VERBS[name]}").command

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            # `longdoc ... | head`: the reader left, which is not an error of ours. Click would exit 1,
            # which here means "nothing found"; the rest of the output goes nowhere.
            _to_devnull(sys.stdout)
            return 0


def _to_devnull(stream):
    os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())


class _Stderr:
    """sys.stderr during a run, except that a write that fails (`2>&-`, a reader that left, a full disk)
    loses the message and nothing else: a note, warning or error that cannot be said must not stop the
    run, leave its results unprinted or change its exit status (an error still exits 2)."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, s):
        try:
            return self._stream.write(s)
        except OSError:
            self._lost()
            return len(s)

    def flush(self):
        try:
            self._stream.flush()
        except OSError:
            self._lost()

    def _lost(self):
        try:  # what is still buffered, and the rest, goes nowhere, instead of failing again at exit
            _to_devnull(self._stream)
            self._stream.flush()
        except OSError:
            pass

    def __getattr__(self, name):
        return getattr(self._stream, name)


# A write that failed for want of room or a working device: `longdoc ... > out.json` on a full disk.
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO}


def _write_failed(e: OSError, as_json: bool):
    """The output could not be written (a full disk): one line and exit 2, never a traceback and
    exit 1, which would read as "nothing found" to a batch job whose output is cut short."""
    _to_devnull(sys.stdout)  # what is still buffered goes nowhere, instead of failing again at exit
    try:
        say_error(f"cannot write the output ({e.strerror or e}); it is incomplete", as_json)
    except OSError:
        pass
    sys.exit(2)


def _flush_stdout(as_json: bool):
    """Flush what is still buffered before exiting, so that a reader that left turns into a quiet
    exit instead of Python's 'Exception ignored ... BrokenPipeError' and status 120 (and a full disk
    into an error)."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _to_devnull(sys.stdout)
    except OSError as e:
        if e.errno not in _WRITE_ERRNOS:
            raise
        _write_failed(e, as_json)


@contextmanager
def errors_as_json(enabled: bool):
    """In --json / --jsonl modes a LongdocError goes to stderr as one JSON object (exit 2), so a
    pipeline reading JSON never has to parse prose, and so does an interrupt (exit 130); otherwise
    they reach main() as one line of prose."""
    try:
        yield
    except LongdocError as e:
        if not enabled:
            raise
        from longdoc.render import error_json

        error_json(str(e))
        sys.exit(2)
    except KeyboardInterrupt:
        if not enabled:
            raise
        from longdoc.render import error_json

        error_json("interrupted")
        sys.exit(130)


def one_line(message: str) -> str:
    """An error message on one line, whatever a file name or argument inside it holds."""
    return message.replace("\r", "\\r").replace("\n", "\\n")


def say_error(message: str, as_json: bool) -> None:
    """An error's one line on stderr: a JSON object in JSON modes, else prose."""
    if as_json:
        from longdoc.render import error_json

        error_json(message)
    else:
        click.echo(f"longdoc: error: {one_line(message)}", err=True)


def say_note(message: str, as_json: bool) -> None:
    """A note about what a command does (not a problem) on stderr: a {"warning"} object in JSON modes,
    as every verb's JSON notes are, else one line of prose."""
    if as_json:
        from longdoc.render import warning

        warning(message, as_json=True)
    else:
        click.echo(f"longdoc: {message}", err=True)


def file_error(e: LongdocError, as_json: bool) -> None:
    """One FILE of several that could not be read (the others go on): one line on stderr, worded as
    main() words a fatal error (a JSON object in JSON modes)."""
    say_error(str(e), as_json)


def stdin_once(paths) -> None:
    """'-' names standard input, which can be read once: named twice, the second read found nothing
    (`tokens - -` counted an empty file, `xref - -` said "-: no text")."""
    if list(paths).count("-") > 1:
        raise LongdocError("standard input (-) can be read only once; it is named more than once")


def nonempty_paths(ctx, param, value):
    """click callback for PATH arguments: an empty one is an error. Path("") is the current folder, so
    `longdoc ask "" q` would otherwise index whatever folder the shell is in."""
    for v in value if isinstance(value, tuple) else (value,):
        if v is not None and not str(v).strip():
            raise click.BadParameter("empty path", ctx=ctx, param=param)
    return value


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="longdoc")
def cli():
    """Read long documents and whole repositories offline with a long-context encoder."""


def main(argv=None):
    """Console entry point: one-line errors and grep-style exit codes, never a traceback."""
    saved = sys.stderr
    if saved is None:  # 2>&-: fd 2 is free. /dev/null takes it; else the next file opened (an index
        sys.stderr = open(os.open(os.devnull, os.O_WRONLY), "w")  # database) would get what C writes to fd 2
    sys.stderr = _Stderr(sys.stderr)
    try:
        _main(argv)
    finally:
        sys.stderr = saved


def _json_mode(argv) -> bool:
    """Whether --json or --jsonl is on the command line. Read from the raw arguments because click's
    own errors (an unknown option, a missing argument) come before any command knows its mode; `--`
    ends the options, so a question "--json" after it is not the flag."""
    args = list(sys.argv[1:] if argv is None else argv)
    args = args[:args.index("--")] if "--" in args else args
    return "--json" in args or "--jsonl" in args


def _main(argv):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    as_json = _json_mode(argv)
    try:
        rc = cli.main(args=argv, prog_name="longdoc", standalone_mode=False)
    except SystemExit:  # a command's own exit status stands
        _flush_stdout(as_json)
        raise
    except (click.exceptions.Abort, KeyboardInterrupt):
        if as_json:
            say_error("interrupted", True)
        else:
            click.echo("longdoc: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        if as_json:  # the message alone: the usage lines around it are for people
            say_error(e.format_message(), True)
        else:
            e.show()
        sys.exit(2)
    except LongdocError as e:
        say_error(str(e), as_json)
        sys.exit(2)
    except OSError as e:
        if e.errno not in _WRITE_ERRNOS:
            raise
        _write_failed(e, as_json)
    except (MemoryError, RuntimeError) as e:
        # torch reports a failed CPU allocation as a RuntimeError and a CUDA one as OutOfMemoryError
        # (a RuntimeError too); any other RuntimeError is a bug and keeps its traceback.
        if not (isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError"
                or "can't allocate memory" in str(e)):
            raise
        say_error("out of memory (a smaller --window or --attention setting, fewer --devices or a shorter "
                  "input needs less)", as_json)
        sys.exit(2)
    _flush_stdout(as_json)
    sys.exit(rc if isinstance(rc, int) else 0)
