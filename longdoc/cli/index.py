"""`longdoc index PATH` (create or update), `longdoc index status|list|clean`."""
from __future__ import annotations

import os
import shutil
import sys
import time
from datetime import datetime

import click

from longdoc.cli import errors_as_json, file_error, nonempty_paths, say_note
from longdoc.errors import LongdocError

class _IndexGroup(click.Group):
    """`longdoc index PATH` means `longdoc index update PATH`: a first argument that is not a
    subcommand name is a path (a folder literally named `status` is `./status`)."""

    def parse_args(self, ctx, args):
        if not args or (args[0] not in self.commands and args[0] not in ("-h", "--help")):
            args = ["update", *args]
        return super().parse_args(ctx, args)


@click.group("index", cls=_IndexGroup, context_settings={"help_option_names": ["-h", "--help"]})
def command():
    """Keep a persistent, incremental index of a repository or document folder.

    \b
      longdoc index PATH            create or update the index of PATH
      longdoc index status PATH     what is indexed, and what changed since
      longdoc index list            every index in the cache folder
      longdoc index clean PATH      remove an index (--missing: of vanished roots)

    Then `longdoc ask PATH "question"` searches it.
    """


def _shown(path: str) -> str:
    from longdoc.render import shown_path  # lazily: render loads rich

    return shown_path(path)


def _json(obj) -> str:
    from longdoc.render import dumps

    return dumps(obj)


def _fmt_time(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


class _ProgressLine:
    """One self-rewriting line on stderr (a terminal only): files, tokens, tokens/s, ETA, file."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.last = 0.0
        self.shown = False
        self.state = None

    def __call__(self, p) -> None:
        self.state = p
        now = time.monotonic()
        if not self.enabled or (now - self.last < 0.1 and p.files_done < p.files_total):
            return
        self.last = now
        eta = f"ETA {_fmt_time(p.eta_s)}" if p.eta_s is not None else "ETA -"
        line = (f"indexing {p.files_done:,}/{p.files_total:,} files  {p.tokens:,} tokens  "
                f"{p.tokens_per_s:,.0f} tok/s  {eta}  {_shown(p.path or '')}")
        width = shutil.get_terminal_size((100, 20)).columns
        sys.stderr.write("\r" + line[: width - 1].ljust(width - 1))
        sys.stderr.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            sys.stderr.write("\n")
            sys.stderr.flush()
            self.shown = False

    def clear(self) -> None:
        """Blank the line, so that a message printed now does not land in the middle of it (the next
        update draws it again below)."""
        if self.shown:
            width = shutil.get_terminal_size((100, 20)).columns
            sys.stderr.write("\r" + " " * (width - 1) + "\r")
            sys.stderr.flush()
            self.shown = False


@command.command("update")
@click.argument("path", default=".", type=click.Path(file_okay=False), callback=nonempty_paths)
@click.option("--files-from", metavar="FILE|-", help="Index exactly these files (one per line or NUL-separated; "
              "'-' reads stdin), e.g. `git ls-files -z | longdoc index . --files-from -`.")
@click.option("--no-ignore", is_flag=True, help="Do not honour .gitignore/.ignore/.longdocignore, nor skip "
              "vendored/build folders and lockfiles.")
@click.option("--hidden", is_flag=True, help="Include hidden files and folders (names starting with '.').")
@click.option("--follow", is_flag=True, help="Follow symbolic links (each real folder is walked once).")
@click.option("--include", multiple=True, metavar="GLOB", help="Only files matching (gitignore syntax); repeatable.")
@click.option("--exclude", multiple=True, metavar="GLOB", help="Also skip files matching (gitignore syntax); repeatable.")
@click.option("--max-size", type=click.IntRange(min=1), metavar="BYTES",
              help="Skip text files larger than this (default 1 MiB; PDFs 64 MiB).")
@click.option("--index", "index_dir", type=click.Path(file_okay=False),
              help="Keep the index in DIR (e.g. an in-tree .longdoc) instead of the cache folder.")
@click.option("--model", envvar="LONGDOC_MODEL", help="Local Hugging Face model folder (safetensors).")
@click.option("--window", type=click.IntRange(min=1), envvar="LONGDOC_WINDOW",
              help="Attention radius in tokens (each token sees 2w+1 neighbours).")
@click.option("--password", envvar="LONGDOC_PDF_PASSWORD", help="Password of encrypted PDFs.")
@click.option("--rebuild", is_flag=True, help="Encode all files again into a new index that replaces the old "
              "one when done (needed after a model change); if interrupted, the old one stays.")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="When another process is indexing the same root: wait for it, or fail at once.")
@click.option("--json", "as_json", is_flag=True, help="Print the run's report as JSON.")
@click.option("-q", "--quiet", is_flag=True,
              help="No progress line or notes on stderr (warnings and errors are still printed).")
def update(path, files_from, no_ignore, hidden, follow, include, exclude, max_size, index_dir, model, window,
           password, rebuild, wait, as_json, quiet):
    """Create or update the index of PATH (default: the current folder).

    Only new and changed files are encoded (by content hash); deleted files are removed. Walk flags
    given here are remembered for the next run. Exit status: 0 done, 2 when a file could not be read
    (it is listed; the others are indexed) or on error, 130 when interrupted (what was done is kept).
    The loader's warnings about the files read (PDF pages without text or with garbled text, invalid
    UTF-8) go to stderr as each file is read, as `ask` prints them (a JSON object with --json, and in
    the report's "warnings"). With --json, errors are JSON objects on stderr too ({"error": ...}), one
    for each file that could not be read (also in the report's "failed").
    """
    from longdoc.index import WalkOptions, build
    from longdoc.index.walk import DEFAULT_MAX_SIZE

    selection_given = any([files_from, no_ignore, hidden, follow, include, exclude, max_size])
    opts = WalkOptions(no_ignore=no_ignore, hidden=hidden, follow=follow, include=tuple(include),
                       exclude=tuple(exclude), max_size=max_size or DEFAULT_MAX_SIZE) if selection_given else None
    line = _ProgressLine(sys.stderr.isatty() and not quiet and not as_json)

    def on_warning(rel, message):  # a problem with a file's text: --quiet keeps it
        from longdoc.render import file_warning

        line.clear()
        file_warning(rel, message, as_json=as_json)

    def say(message, error=False):  # prose, or a JSON object with --json
        if error and as_json:
            from longdoc.render import error_json

            error_json(message)
        else:
            say_note(message, as_json)

    def on_wait(pid):  # a note, not a problem: --quiet drops it
        if not quiet:
            say(f"waiting for another `longdoc index` (pid {pid or '?'}) on this root...")

    with errors_as_json(as_json):
        try:
            report = build(path, model=model, window=window, index_dir=index_dir, walk_options=opts,
                           files_from=files_from, rebuild=rebuild, wait=wait, on_wait=on_wait, progress=line,
                           password=password, on_warning=on_warning)
        except KeyboardInterrupt:  # caught before errors_as_json, to say what was kept
            line.close()
            done = line.state.files_done if line.state else 0
            if rebuild:
                say(f"interrupted; the index is as it was before --rebuild; the {done} file(s) re-encoded so "
                    "far are kept, re-run with --rebuild to resume", error=True)
            else:
                say(f"interrupted; {done} file(s) encoded in this run are kept, re-run to resume", error=True)
            sys.exit(130)
        finally:
            line.close()
    if as_json:
        click.echo(_json(report.to_json()))
    else:
        secs = f"{report.seconds:.1f} s"
        if report.up_to_date:
            click.echo(f"{_shown(report.root)}: up to date ({report.files:,} files, {secs})")
        else:
            rate = f", {report.tokens / report.seconds:,.0f} tok/s" if report.seconds > 0 and report.tokens else ""
            click.echo(f"{_shown(report.root)}: {len(report.encoded):,} encoded, {len(report.deleted):,} removed, "
                       f"{report.unchanged:,} unchanged; {report.files:,} files, {report.tokens:,} tokens "
                       f"in {secs}{rate}" + (" (rebuilt)" if report.rebuilt else ""))
    if files_from is not None:  # the user named these files: say which were not there
        for rel, why in report.skipped:
            if why in ("does not exist", "is a folder"):
                say(f"--files-from: {_shown(rel)} {why}; not indexed")
    for rel, why in report.failed:
        if as_json:
            file_error(LongdocError(f"{_shown(rel)}: {why}"), True)
        else:
            click.echo(f"longdoc: {_shown(rel)}: {_shown(why)}", err=True)
    if report.failed:
        if not as_json:  # (JSON: the report's "failed" counts them)
            click.echo(f"longdoc: {len(report.failed)} file(s) could not be indexed (kept out until they "
                       "change, or another loader reads them)", err=True)
        sys.exit(2)


@command.command("status")
@click.argument("path", default=".", type=click.Path(file_okay=False), callback=nonempty_paths)
@click.option("--index", "index_dir", type=click.Path(file_okay=False), help="The index's folder, if not the default.")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status_cmd(path, index_dir, as_json):
    """What the index of PATH holds and which files changed since it was updated.

    Exit status: 0 up to date, 1 not indexed or out of date, 2 error.
    """
    from longdoc.index import status

    with errors_as_json(as_json):
        st = status(path, index_dir)
        if not st.indexed and not os.path.isdir(path):  # a typo, not an unindexed folder (exit 1)
            raise LongdocError(f"{_shown(path)}: no such folder")
    if as_json:
        click.echo(_json(st.to_json()))
        sys.exit(0 if st.up_to_date else 1)
    if not st.indexed:
        click.echo(f"{_shown(st.root)}: not indexed (run `longdoc index {_shown(path)}`)")
        sys.exit(1)
    m = st.manifest
    when = datetime.fromtimestamp(m.get("updated_at") or 0).strftime("%Y-%m-%d %H:%M:%S")
    click.echo(f"root      {_shown(st.root)}")
    click.echo(f"index     {_shown(st.db)} ({_fmt_bytes(st.db_bytes)}, schema {m.get('schema_version')})")
    click.echo(f"model     {m.get('model')} (fingerprint {m.get('model_fingerprint')}, window "
               f"{m.get('window')}, dim {m.get('dim')})")
    click.echo(f"contents  {st.files:,} files, {st.segments:,} segments, {st.tokens:,} tokens"
               + (f", {len(st.failed)} failed" if st.failed else ""))
    click.echo(f"updated   {when}")
    if st.up_to_date:
        click.echo("state     up to date")
    else:
        click.echo(f"state     out of date: {len(st.new)} new, {len(st.changed)} changed, {len(st.deleted)} "
                   f"deleted (run `longdoc index {_shown(path)}`)")
        for tag, items in (("new", st.new), ("changed", st.changed), ("deleted", st.deleted)):
            for rel in items[:20]:
                click.echo(f"  {tag:8}{_shown(rel)}")
            if len(items) > 20:
                click.echo(f"  ... and {len(items) - 20} more {tag}")
    for rel, why in st.failed:
        click.echo(f"  failed  {_shown(rel)}: {_shown(why)}")
    sys.exit(0 if st.up_to_date else 1)


@command.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
def list_cmd(as_json):
    """Every index in the cache folder (in-tree `--index` ones are not listed)."""
    from longdoc.index import list_indexes
    from longdoc.index.locate import index_home

    with errors_as_json(as_json):
        items = list_indexes()
    if as_json:
        click.echo(_json(items))
        return
    if not items:
        click.echo(f"no indexes in {index_home()}", err=True)
        return
    for it in items:
        if it["error"]:
            click.echo(f"{_shown(it['db'])}  unreadable: {_shown(it['error'])}")
            continue
        when = datetime.fromtimestamp(it["updated_at"] or 0).strftime("%Y-%m-%d %H:%M")
        gone = "" if it["root_exists"] else "  (root missing)"
        click.echo(f"{_shown(it['root'])}  {it['files']:,} files  {it['segments']:,} segments  "
                   f"{_fmt_bytes(it['bytes'])}  {it['model']}  {when}{gone}")


@command.command("clean")
@click.argument("path", required=False, type=click.Path(file_okay=False), callback=nonempty_paths)
@click.option("--index", "index_dir", type=click.Path(file_okay=False), help="The index's folder, if not the default.")
@click.option("--missing", is_flag=True, help="Remove the indexes whose root folder no longer exists.")
@click.option("--all", "everything", is_flag=True, help="Remove every index in the cache folder.")
def clean_cmd(path, index_dir, missing, everything):
    """Remove the index of PATH (or, with --missing / --all, several)."""
    from longdoc.index import clean

    if path is not None and (missing or everything):
        raise LongdocError("give PATH or --missing/--all, not both")
    for db in clean(path, index_dir=index_dir, missing=missing, everything=everything):
        click.echo(f"removed {_shown(db)}")
