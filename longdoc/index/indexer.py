"""Bringing an index up to date with its tree: walk, diff by content hash, encode what changed.

One run:
1. take the writer lock (wait for, or refuse beside, another indexer of the same root);
2. list the files (the walk, or ``--files-from``) and diff them against the ``files`` table: a file
   whose size and mtime match a row verified more than ``_RACY_S`` after that mtime is unchanged
   without being read; any other file is hashed (sha256 of its bytes) and compared;
3. prune deleted files (one transaction), then for each new or changed file (and the other members
   of a pack one of them belonged to): load it, segment it, encode its whole text once with the
   long-context encoder (small files of a folder packed into one sequence: ``PACK_TOKENS``), pool
   one vector per segment, and swap its rows (a pack's together) in one transaction. The encoder is
   loaded only when something needs encoding, so a no-change run never imports torch.

A crash between files loses nothing; a crash inside a transaction leaves its files at their previous
state, and the next run redoes them (a pack left half redone no longer matches its id: redone too).

``rebuild`` runs the same steps into a new database beside the old one (``store.staging_path``) and
swaps it in when complete, so until then (and after an interrupt) the old index answers; the next
``--rebuild`` resumes the new one where it stopped, unless the model changed.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable

from ..errors import LongdocError
from . import locate
from .store import IndexLock, SegmentRow, Store, remove_db, staging_path, stored_selection, swap_in
from .walk import Entry, WalkOptions, WalkResult, read_file_list, walk

# An mtime this close to the moment a row was verified may hide a later write within the file
# system's timestamp granularity (1-2 s on some), so such files are re-hashed (git's "racy" rule).
_RACY_S = 2.0
# Packing (issue 5: "a whole file, or a run of small files, as one sequence"): consecutive files of one
# folder and one language, each of at most PACK_FILE_TOKENS tokens, are encoded together in sequences of
# at most PACK_TOKENS tokens, so a short file's in-context vectors see its neighbours. A change to one
# member re-encodes its whole pack. PACK_TOKENS = 0 encodes every file alone.
PACK_TOKENS = 2048
PACK_FILE_TOKENS = 512
_PACK_SEP = "\n\n"  # between packed texts: whitespace, so no token straddles two files


@dataclass
class Progress:
    """Where an indexing run stands; handed to the ``progress`` callback after every file."""

    files_done: int
    files_total: int
    bytes_done: int
    bytes_total: int
    tokens: int
    elapsed: float
    path: str | None = None

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        if self.bytes_done == 0 or self.elapsed <= 0:
            return None
        return (self.bytes_total - self.bytes_done) * self.elapsed / self.bytes_done


@dataclass
class Report:
    """What a run did. ``failed`` files are recorded in the index (not retried until they change, or
    another loader runs: ``retry_failure``).
    ``warnings`` are the loader's warnings (``Document.warnings``) about the files this run read; they
    are not stored, so a later run that does not read the file again does not repeat them."""

    root: str
    db: str
    files: int = 0  # files in the index after the run
    encoded: list[str] = field(default_factory=list)
    unchanged: int = 0
    deleted: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[tuple[str, str]] = field(default_factory=list)  # (path, the loader's warning), files read
    tokens: int = 0
    seconds: float = 0.0
    rebuilt: bool = False

    @property
    def up_to_date(self) -> bool:
        """Nothing was encoded or pruned: the index already matched the tree."""
        return not self.encoded and not self.deleted and not self.failed

    def to_json(self) -> dict:
        d = asdict(self)
        d["up_to_date"] = self.up_to_date
        return d


def sha256_file(path: Path) -> tuple[str, bytes]:
    data = path.read_bytes()
    return hashlib.sha256(data).hexdigest(), data


def _encoder_identity(encoder) -> dict:
    tok = getattr(encoder, "tokenizer", None)
    tok_id = None
    if tok is not None and hasattr(tok, "to_str"):
        tok_id = hashlib.sha256(tok.to_str().encode()).hexdigest()[:16]
    cfg = getattr(encoder, "cfg", None)
    windows = getattr(cfg, "windows", None)
    return {
        "fingerprint": str(encoder.fingerprint),
        "model": getattr(encoder, "name", None),
        "tokenizer": tok_id,
        "window": int(windows[0]) if windows else getattr(encoder, "window", None),
        "dim": int(encoder.dim),
    }


def model_mismatch(root: str, manifest: dict, encoder) -> str | None:
    """The rebuild message when ``encoder`` did not make the index's vectors, else None."""
    fp = manifest.get("model_fingerprint")
    if fp is None or fp == str(encoder.fingerprint):
        return None
    now = _encoder_identity(encoder)
    return (f"the index of {root} was built with model {manifest.get('model')} (fingerprint {fp}, window "
            f"{manifest.get('window')}) but this run uses {now['model']} (fingerprint {now['fingerprint']}, "
            f"window {now['window']}); vectors of two models are never mixed: run `longdoc index {root} "
            "--rebuild` (or pass the index's model with --model)")


class LazyEncoder:
    """The encoder, loaded on first use (a no-change run must not pay for torch and the weights)."""

    def __init__(self, encoder=None, model: str | None = None, window: int | None = None,
                 factory: Callable[[], object] | None = None):
        self._encoder, self.model, self.window, self._factory = encoder, model, window, factory

    @property
    def loaded(self) -> bool:
        return self._encoder is not None

    def get(self):
        if self._encoder is None:
            if self._factory is not None:
                self._encoder = self._factory()
            else:
                from longdoc.model import load_encoder

                self._encoder = load_encoder(self.model, window=self.window)
        return self._encoder


def list_files(root: Path, opts: WalkOptions, files_from: str | list[str] | None) -> WalkResult:
    """The files of this run: walked, or as listed (``files_from``: a list's path, ``-``, or the names
    a former run stored)."""
    return read_file_list(files_from, root, opts) if files_from is not None else walk(root, opts)


def retry_failure(row, loader: str) -> bool:
    """Whether a file that failed to load is read again though it did not change: when another
    loader judged it (``sources.loader_identity``; or one before it was stored), whose bug may be fixed
    since."""
    return row.error is not None and row.loader != loader


def _diff(store: Store, entries: list[Entry], loader: str):
    """(to_encode [(entry, sha or None)], touched [(entry)], unchanged count, deleted [path]).

    ``indexed_at`` of a row is the time just before its file was stat'ed and read, so a write after
    that read carries a later mtime unless it fell within the timestamp granularity: hence _RACY_S.
    """
    rows = store.files()
    to_encode, touched, unchanged = [], [], 0
    for e in entries:
        row = rows.get(e.rel)
        if row is None or retry_failure(row, loader):
            to_encode.append((e, None))
            continue
        if (row.size == e.size and row.mtime_ns == e.mtime_ns
                and e.mtime_ns / 1e9 < row.indexed_at - _RACY_S):
            unchanged += 1
            continue
        try:
            sha, _ = sha256_file(e.path)
        except OSError:
            to_encode.append((e, None))  # vanished or unreadable: the encode step records why
            continue
        if sha == row.sha256:
            touched.append(e)
        else:
            to_encode.append((e, sha))
    live = {e.rel: e for e in entries}
    deleted = sorted(p for p in rows if p not in live)
    # A pack's vectors were computed together: when a member changes or goes, the other members are
    # re-encoded too (and the packs formed afresh), so no vector keeps the context of an old neighbour.
    packs = {rows[p].pack for p in [e.rel for e, _ in to_encode] + deleted if p in rows and rows[p].pack}
    # A pack id is the hash of its members' paths: one that no longer matches its rows (a run killed
    # between re-encoding the packs of a changed folder) is redone as well.
    members: dict[str, list[str]] = {}
    for rel, row in rows.items():
        if row.pack:
            members.setdefault(row.pack, []).append(rel)
    packs |= {pid for pid, rels in members.items() if pack_id(rels) != pid}
    if packs:
        queued = {e.rel for e, _ in to_encode}
        mates = {rel for rel, row in rows.items() if row.pack in packs and rel in live and rel not in queued}
        to_encode += [(live[rel], rows[rel].sha256) for rel in sorted(mates)]
        was_touched = [e for e in touched if e.rel in mates]
        touched = [e for e in touched if e.rel not in mates]
        unchanged -= len(mates) - len(was_touched)
    return to_encode, touched, unchanged, deleted


def _segments_for(doc, segs) -> list[SegmentRow]:
    out = []
    for s in segs:
        if s.end <= s.start:
            continue
        out.append(SegmentRow(
            char_start=s.start, char_end=s.end, line_start=doc.line_of(s.start),
            line_end=doc.line_of(max(s.start, s.end - 1)), page=doc.page_of(s.start), kind=s.kind,
            label=s.label, text=doc.text[s.start:s.end]))
    return out


def build(
    root: str | Path,
    *,
    encoder=None,
    model: str | None = None,
    window: int | None = None,
    encoder_factory: Callable[[], object] | None = None,
    index_dir: str | Path | None = None,
    walk_options: WalkOptions | None = None,
    files_from: str | None = None,
    rebuild: bool = False,
    wait: bool = True,
    on_wait: Callable[[int | None], None] | None = None,
    progress: Callable[[Progress], None] | None = None,
    password: str | None = None,
    on_warning: Callable[[str, str], None] | None = None,
) -> Report:
    """Index ``root`` (create or update) and return what was done.

    ``walk_options`` default to those stored by the previous run (so ``longdoc index PATH`` repeats
    the same selection), else ``WalkOptions()``. ``wait=False`` raises ``LongdocError`` when another
    process is indexing the same root. ``rebuild`` encodes every file again into a new database that
    replaces the old one only when complete (needed after a model change).

    ``on_warning(path, message)`` gets each of the loader's warnings as soon as the file is read (they
    are also in ``Report.warnings``), so a run that is interrupted has already said them about the
    files it stored.
    """
    from longdoc import __version__
    from longdoc.segment import segment
    from longdoc import sources
    from longdoc.sources import load

    t0 = time.monotonic()
    root = Path(root).resolve()
    if not root.is_dir():
        raise LongdocError(f"{root}: not a directory")
    db = locate.db_path(root, index_dir)
    lazy = encoder if isinstance(encoder, LazyEncoder) else LazyEncoder(encoder, model, window, encoder_factory)
    lock = IndexLock(db)
    lock.acquire(wait=wait, on_wait=on_wait)
    try:
        target = staging_path(db) if rebuild else db  # a rebuild never touches the old index until the swap
        if rebuild:
            _drop_stale_staging(target, lazy)
        with Store(target, root=str(root)) as store:
            store.init_manifest(str(root), __version__)
            manifest = store.manifest()
            stored = manifest
            if rebuild and not manifest.get("selection"):  # a new staging database: the old index's selection
                stored = {**manifest, "selection": stored_selection(db)}
            opts, files_from = _selection(stored, walk_options, files_from)
            t_walk = time.time()
            listing = list_files(root, opts, files_from)
            entries = [e for e in listing.files if not _inside(e.path, db.parent)]
            report = Report(root=str(root), db=str(db), skipped=listing.skipped)
            report.rebuilt = rebuild
            if not rebuild and manifest.get("model_fingerprint") and lazy.loaded:
                msg = model_mismatch(str(root), manifest, lazy.get())
                if msg:
                    raise LongdocError(msg)
            store.set_selection(json.dumps(_opts_json(opts, files_from, root, listing)))
            to_encode, touched, report.unchanged, report.deleted = _diff(store, entries, sources.loader_identity())
            report.unchanged += len(touched)
            if touched:
                store.touch_files([(e.rel, e.size, e.mtime_ns) for e in touched], t_walk)
            if report.deleted:
                store.delete_files(report.deleted)
            if to_encode:
                _encode_all(store, root, manifest, to_encode, lazy, report, progress, t0, load, segment,
                            password, on_warning)
                if encoder is None and encoder_factory is None and lazy.loaded:
                    # The model folder and settings that made these vectors, keyed as `ask` keys them:
                    # the first question then skips loading torch to re-check the fingerprint.
                    store.set_model_key(_model_key(model, window))
            store.touch_manifest()
            report.files = store.counts()["files"]
        if rebuild:
            swap_in(target, db)  # also the way out of a damaged or older-format index
    finally:
        lock.release()
    report.seconds = time.monotonic() - t0
    return report


def _model_key(model: str | None, window: int | None) -> str | None:
    from longdoc.tasks.ask import Engine

    try:
        return Engine(model=model, window=window, use_cache=False).identity
    except LongdocError:  # a folder that loaded but is not what `ask` would resolve: no shortcut
        return None


def _drop_stale_staging(staging: Path, lazy: LazyEncoder) -> None:
    """Keep an interrupted rebuild's database for this one to resume, unless another model made its
    vectors (or it cannot be read: damaged, another schema)."""
    if not staging.exists():
        return
    try:
        with Store(staging, readonly=True) as s:
            fp = (s.manifest() or {}).get("model_fingerprint")
    except LongdocError:
        remove_db(staging)
        return
    if fp is not None and fp != str(lazy.get().fingerprint):
        remove_db(staging)


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder)
        return True
    except ValueError:
        return False


def _opts_json(opts: WalkOptions, files_from: str | list[str] | None, root: Path, listing: WalkResult) -> dict:
    """The selection as stored for the next run and `ask`'s refresh. A list given as a regular file is
    stored as its path (read again each run, so an edited list counts); one read from stdin or a pipe
    (`git ls-files -z | longdoc index . --files-from -`, `<(...)`) cannot be read again, so the names
    it gave are stored (absolute: a relative name would be taken from the current folder first)."""
    d = asdict(opts)
    d["include"], d["exclude"] = list(opts.include), list(opts.exclude)
    if isinstance(files_from, list):
        d["files"] = files_from
    elif files_from is not None:
        if files_from != "-" and os.path.isfile(files_from):
            d["files_from"] = str(Path(files_from).resolve())
        else:
            d["files"] = sorted({str(root / rel) for rel in [e.rel for e in listing.files]
                                 + [rel for rel, _ in listing.skipped]})
    return d


def _selection(manifest: dict, opts: WalkOptions | None, files_from: str | None):
    """The file selection for this run: as given, else as stored by the last run."""
    if opts is not None or files_from is not None:
        return opts or WalkOptions(), files_from
    stored = manifest.get("selection")
    if not stored:
        return WalkOptions(), None
    d = json.loads(stored)
    ff = d.pop("files_from", None)
    names = d.pop("files", None)
    d["include"], d["exclude"] = tuple(d.get("include", ())), tuple(d.get("exclude", ()))
    known = set(WalkOptions.__dataclass_fields__)
    opts = WalkOptions(**{k: v for k, v in d.items() if k in known})
    if names is not None:  # the names a list from stdin or a pipe gave
        return opts, names
    if ff and not Path(ff).exists():
        # An error, not the walk: a pipeline whose list is gone expects a failure (as tar -T and rsync
        # --files-from fail on a missing list), not an index of every file of the tree, encoded for hours.
        raise LongdocError(f"the file list this index was made from ({ff}, given to --files-from) is gone: pass "
                           "--files-from again, or a walk option such as --include '*' to index the walked tree instead")
    return opts, ff


def _encode_all(store, root, manifest, to_encode, lazy, report, progress, t0, load, segment, password,
                on_warning):
    total_bytes = sum(e.size for e, _ in to_encode)
    if progress:
        progress(Progress(0, len(to_encode), 0, total_bytes, 0, time.monotonic() - t0))
    encoder = lazy.get()
    ident = _encoder_identity(encoder)
    if manifest.get("model_fingerprint") is None:
        store.set_model(ident["fingerprint"], ident["model"], ident["tokenizer"], ident["window"], ident["dim"])
    elif manifest["model_fingerprint"] != ident["fingerprint"]:
        raise LongdocError(model_mismatch(report.root, manifest, encoder))
    t_enc = time.monotonic()
    done = {"files": 0, "bytes": 0}

    def advance(e: Entry) -> None:
        done["files"] += 1
        done["bytes"] += e.size
        if progress:
            progress(Progress(done["files"], len(to_encode), done["bytes"], total_bytes, report.tokens,
                              time.monotonic() - t_enc, e.rel))

    open_packs: dict[tuple, list[_Loaded]] = {}  # (folder, kind, language) -> files waiting

    def flush(group: list[_Loaded]) -> None:
        _store_group(store, group, encoder, report)
        for f in group:
            advance(f.entry)

    # Folder by folder (the files of a folder are consecutive here); within a folder the small files
    # of one language fill packs in name order, big files in between are encoded alone.
    folder = None
    for e, _ in sorted(to_encode, key=lambda x: (str(PurePosixPath(x[0].rel).parent), x[0].rel)):
        here = str(PurePosixPath(e.rel).parent)
        if here != folder:
            for group in open_packs.values():
                flush(group)
            open_packs.clear()
            folder = here
        f = _load_one(store, e, encoder, report, load, segment, password, on_warning)
        if f is None:  # recorded as failed or deleted
            advance(e)
        elif not (PACK_TOKENS and f.rows and f.n_tokens <= PACK_FILE_TOKENS):
            flush([f])
        else:
            group = open_packs.setdefault(f.group, [])
            if group and sum(p.n_tokens for p in group) + f.n_tokens > PACK_TOKENS:
                flush(group)
                group = open_packs[f.group] = []
            group.append(f)
    for group in open_packs.values():
        flush(group)


def _numpy(x):
    return x.float().numpy() if hasattr(x, "numpy") else x


@dataclass
class _Loaded:
    """A file read, hashed, loaded, segmented and tokenized, waiting to be encoded."""

    entry: Entry
    sha: str
    st: object  # os.stat_result taken before the read
    t_read: float
    doc: object
    rows: list[SegmentRow]
    tokens: object

    @property
    def n_tokens(self) -> int:
        return len(self.tokens) if self.tokens is not None else 0

    @property
    def group(self) -> tuple:
        """Files may share a pack only within one folder and one kind and language."""
        return str(PurePosixPath(self.entry.rel).parent), self.doc.kind, self.doc.language


def failure_reason(rel: str, message: str) -> str:
    """Why a file failed, without its name: the loader's errors begin with the path, which every
    reader of ``Report.failed`` and ``Status.failed`` shows beside the reason already (rows stored
    before this was done still hold it)."""
    return message[len(rel) + 2:] if message.startswith(f"{rel}: ") else message


def _load_one(store: Store, e: Entry, encoder, report: Report, load, segment, password,
              on_warning) -> _Loaded | None:
    """Read and segment one file; None when it vanished (pruned) or failed to load (recorded). The
    loader's warnings go out here, outside any transaction: a callback that fails (stderr closed)
    stops the run between files, where a kill would."""
    t_read = time.time()
    try:
        st = e.path.stat()  # before reading: a write after this moment changes the mtime we store
        sha, data = sha256_file(e.path)
    except FileNotFoundError:
        store.delete_files([e.rel])  # deleted since the walk
        return None
    except OSError as err:
        report.failed.append((e.rel, err.strerror or str(err)))
        return None
    del data
    try:
        doc = load(str(e.path), password=password)
    except LongdocError as err:
        msg = failure_reason(e.rel, str(err).replace(str(e.path), e.rel))
        store.replace_file(e.rel, sha256=sha, size=st.st_size, mtime_ns=st.st_mtime_ns, kind=None,
                           language=None, n_tokens=0, n_pages=None, error=msg, segments=(), vectors=None,
                           indexed_at=t_read)
        report.failed.append((e.rel, msg))
        return None
    for w in doc.warnings:
        report.warnings.append((e.rel, w))
        if on_warning:
            on_warning(e.rel, w)
    rows = _segments_for(doc, segment(doc))
    tokens = encoder.tokenize(doc.text) if rows else None
    return _Loaded(e, sha, st, t_read, doc, rows, tokens)


def pack_id(paths) -> str:
    """The id of a pack: a hash of its members' relative paths, so the rows can be checked against it."""
    return hashlib.sha256("\0".join(sorted(paths)).encode("utf-8", "surrogateescape")).hexdigest()[:16]


def _store_group(store: Store, group: list[_Loaded], encoder, report: Report) -> None:
    """Encode one file, or a pack of small files as one sequence, and swap in their rows together."""
    vectors: list = [None] * len(group)
    local: list = [None] * len(group)
    if len(group) == 1:
        f = group[0]
        if f.rows:
            vectors[0] = _numpy(encoder.embed_spans(f.doc.text, [(r.char_start, r.char_end) for r in f.rows],
                                                    tokens=f.tokens))
    else:
        # The texts joined by _PACK_SEP; each segment's span shifted by its file's start in the pack.
        spans, starts, at = [], [], 0
        for f in group:
            starts.append(at)
            spans += [(at + r.char_start, at + r.char_end) for r in f.rows]
            at += len(f.doc.text) + len(_PACK_SEP)
        packed = _numpy(encoder.embed_spans(_PACK_SEP.join(f.doc.text for f in group), spans))
        at = 0
        for i, f in enumerate(group):
            vectors[i], at = packed[at:at + len(f.rows)], at + len(f.rows)
    # Each segment alone too: on docstring -> function retrieval the two rankings are complementary
    # (docs/index.md), and a short text is cheap next to the whole file. One call for the group.
    texts = [r.text for f in group for r in f.rows]
    if texts:
        alone = _numpy(encoder.embed_texts(texts))
        at = 0
        for i, f in enumerate(group):
            local[i], at = alone[at:at + len(f.rows)], at + len(f.rows)
    pid = pack_id([f.entry.rel for f in group]) if len(group) > 1 else None
    store.replace_files([dict(
        path=f.entry.rel, sha256=f.sha, size=f.st.st_size, mtime_ns=f.st.st_mtime_ns, kind=f.doc.kind,
        language=f.doc.language, n_tokens=f.n_tokens, n_pages=f.doc.n_pages, error=None, segments=f.rows,
        vectors=vectors[i], local=local[i], indexed_at=f.t_read, pack=pid) for i, f in enumerate(group)])
    for f in group:
        report.encoded.append(f.entry.rel)
        report.tokens += f.n_tokens
