"""The index database: one SQLite file per indexed root, readable with the ``sqlite3`` shell.

Layout (schema version 4)::

    manifest  one row: schema_version, root, model_fingerprint (the encoder's: weights + config),
              model (name), tokenizer (hash of its definition), window (radius), dim, model_key
              (a cheap key of the model folder, to skip loading it when nothing changed), selection
              (JSON of the walk options), longdoc_version, created_at, updated_at (unix seconds)
    files     one row per indexed file: path (POSIX, relative to the root), sha256 of its bytes, size,
              mtime_ns, kind, language, n_tokens, n_pages, error (why it holds no segments), indexed_at
              (unix seconds taken *before* the file was read: see build._RACY_S), pack (shared by small
              files encoded together as one sequence; NULL: encoded alone), loader (longdoc's version
              and a hash of the loader's sources: a failure judged by another loader is retried)
    segments  one row per passage: file_id, ord, char_start/char_end (into the loaded text), line_start/
              line_end (1-based, inclusive), page (PDFs), kind, label, text, vector (the segment's tokens
              pooled from the whole file's encoding: it knows its surroundings), local (the segment
              encoded alone, as a chunk embedder would)
    segments_fts  FTS5 over (label, text), external content = segments, porter-stemmed: the BM25 side

Paths (``files.path``, ``manifest.root``) are stored as the bytes the file system gave, as git stores
them: a name that is not UTF-8 stays byte for byte what it is on disk (Python holds it with
``surrogateescape``, as ``os.fsdecode`` does), so the index can still open and prune that file.

``vector`` and ``local`` are ``dim`` little-endian IEEE-754 float32 values (``dim * 4`` bytes), L2-normalised, i.e.
``numpy.frombuffer(blob, "<f4")``. Nothing is pickled.

Durability: WAL journal; every file's rows (its ``files`` row, segments, vectors and FTS entries; a
pack's files together) are replaced in one transaction, so a process killed at any instant leaves each file either fully at
its old state or fully at its new one. Writers take an exclusive ``flock`` on ``<db>.lock`` for the
whole run (released by the kernel when the process dies); readers need no lock (WAL snapshots).
``--rebuild`` writes a new database beside the old one (``staging_path``) and ``swap_in`` copies it
over the old one in one transaction at the end, so an interrupted rebuild leaves the old index whole.

Migrations are numbered; ``PRAGMA user_version`` holds the last one applied. A migration that changes
what vectors mean is marked ``rebuild`` and asks the user to rebuild instead of mixing old and new;
the others only add columns, so a read-only index of an older schema is read as it is (those columns
read as NULL) and upgraded by the next writer.
"""
from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..errors import LongdocError

VECTOR_DTYPE = np.dtype("<f4")  # little-endian float32, whatever the machine's byte order


@dataclass(frozen=True)
class Migration:
    version: int
    sql: str
    rebuild: bool = False  # True: the stored vectors/segments are no longer valid under this version


MIGRATIONS: list[Migration] = [
    Migration(1, """
        CREATE TABLE manifest (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            schema_version INTEGER NOT NULL,
            root TEXT NOT NULL,
            model_fingerprint TEXT,
            model TEXT,
            tokenizer TEXT,
            window INTEGER,
            dim INTEGER,
            model_key TEXT,
            selection TEXT,
            longdoc_version TEXT NOT NULL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        );
        CREATE TABLE files (
            id INTEGER PRIMARY KEY,
            path TEXT NOT NULL UNIQUE,
            sha256 TEXT NOT NULL,
            size INTEGER NOT NULL,
            mtime_ns INTEGER NOT NULL,
            kind TEXT,
            language TEXT,
            n_tokens INTEGER NOT NULL DEFAULT 0,
            n_pages INTEGER,
            error TEXT,
            indexed_at REAL NOT NULL
        );
        CREATE TABLE segments (
            id INTEGER PRIMARY KEY,
            file_id INTEGER NOT NULL REFERENCES files(id),
            ord INTEGER NOT NULL,
            char_start INTEGER NOT NULL,
            char_end INTEGER NOT NULL,
            line_start INTEGER NOT NULL,
            line_end INTEGER NOT NULL,
            page INTEGER,
            kind TEXT NOT NULL,
            label TEXT,
            text TEXT NOT NULL,
            vector BLOB NOT NULL
        );
        CREATE INDEX segments_file ON segments(file_id);
        CREATE VIRTUAL TABLE segments_fts USING fts5(
            label, text, content='segments', content_rowid='id', tokenize='porter unicode61'
        );
        CREATE TRIGGER segments_ai AFTER INSERT ON segments BEGIN
            INSERT INTO segments_fts(rowid, label, text) VALUES (new.id, new.label, new.text);
        END;
        CREATE TRIGGER segments_ad AFTER DELETE ON segments BEGIN
            INSERT INTO segments_fts(segments_fts, rowid, label, text)
            VALUES ('delete', old.id, old.label, old.text);
        END;
    """),
    # 2: a second vector per segment, the segment encoded alone; vectors of version 1 indexes lack it.
    Migration(2, "ALTER TABLE segments ADD COLUMN local BLOB;", rebuild=True),
    # 3: files encoded together as one sequence share a pack id; NULL (every file before) = alone.
    Migration(3, "ALTER TABLE files ADD COLUMN pack TEXT;"),
    # 4: the loader that read the file (sources.loader_identity); NULL (every file before) counts as another.
    Migration(4, "ALTER TABLE files ADD COLUMN loader TEXT;"),
]
SCHEMA_VERSION = MIGRATIONS[-1].version


@dataclass
class FileRow:
    id: int
    path: str
    sha256: str
    size: int
    mtime_ns: int
    kind: str | None
    language: str | None
    n_tokens: int
    n_pages: int | None
    error: str | None
    indexed_at: float
    pack: str | None = None  # files encoded as one sequence share it (see indexer.PACK_TOKENS)
    loader: str | None = None  # sources.loader_identity() of the loader that read it (None: before schema 4)


@dataclass
class SegmentRow:
    """A passage as stored (``id`` is None before insertion)."""

    char_start: int
    char_end: int
    line_start: int
    line_end: int
    page: int | None
    kind: str
    label: str | None
    text: str
    id: int | None = None
    path: str | None = None


class IndexNotWritable(LongdocError):
    """The index cannot be written (read-only mount or folder, or no folder): it may still be read."""


def _name(s: str | None) -> bytes | None:
    """A path as bound in SQL, always inside ``CAST(? AS TEXT)``: its bytes on disk. sqlite3 refuses to
    bind a str holding the lone surrogates of a non-UTF-8 name; bytes cast to TEXT are stored unchanged
    (a UTF-8 name gives the very bytes it always did, so older rows still match)."""
    return None if s is None else s.encode("utf-8", "surrogateescape")


def _text(b: bytes) -> str:
    """Every TEXT read back: a stored non-UTF-8 name returns as the str ``os.fsdecode`` gives for it."""
    return b.decode("utf-8", "surrogateescape")


def _rebuild_hint(root: str | None) -> str:
    return f"run `longdoc index {root or 'PATH'} --rebuild`"


@contextlib.contextmanager
def db_errors(path: Path, root: str | None = None) -> Iterator[None]:
    """Turn SQLite and OS failures into one-line messages a user can act on."""
    try:
        yield
    except sqlite3.OperationalError as e:
        msg = str(e)
        if "disk is full" in msg or "disk I/O error" in msg:
            raise LongdocError(
                f"no space left for the index at {path}; the files indexed so far are kept: free some "
                "space (or pass --index DIR elsewhere) and re-run to resume"
            ) from None
        if "readonly" in msg or "unable to open" in msg or "read-only" in msg:
            raise IndexNotWritable(
                f"cannot write the index at {path} (read-only or missing folder): pass --index DIR or set "
                "LONGDOC_INDEX_DIR to a writable folder"
            ) from None
        if "locked" in msg or "busy" in msg:
            raise LongdocError(f"the index at {path} is busy (another process holds it); try again") from None
        raise LongdocError(f"index {path}: {msg}") from None
    except sqlite3.DatabaseError as e:
        raise LongdocError(f"the index at {path} is damaged ({e}): {_rebuild_hint(root)}") from None
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise LongdocError(f"no space left for the index at {path}: free some space and re-run") from None
        # The folder cannot be made or written: read-only, not ours, or a file, a dangling link (a cache
        # folder on a drive not mounted) or a pseudo file system in its way. The OS names the culprit.
        culprit = f": {e.filename}" if e.filename and os.fspath(e.filename) != os.fspath(path) else ""
        if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EEXIST, errno.ENOENT,
                       errno.ELOOP, errno.ENAMETOOLONG):
            raise IndexNotWritable(
                f"cannot write the index at {path} ({e.strerror}{culprit}): pass --index DIR or set "
                "LONGDOC_INDEX_DIR"
            ) from None
        raise LongdocError(f"index {path}: {e.strerror or e}{culprit}") from None


def remove_db(db: Path) -> None:
    """Delete a database with its write-ahead log and shared-memory files (the caller holds the lock)."""
    with db_errors(db):
        for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
            if p.exists():
                p.unlink()


def staging_path(db: Path) -> Path:
    """Where ``longdoc index --rebuild`` builds the new database before ``swap_in`` (not ``*.sqlite``, so
    ``index list`` does not take it for an index of its own)."""
    return db.with_name(db.name + ".rebuild")


def stored_selection(db: Path) -> str | None:
    """The selection stored in ``db``, or None when it has none or cannot be read (damaged, another
    schema): what a rebuild of it re-encodes. Read without ``Store``, which refuses such files."""
    if not db.exists():
        return None
    try:
        conn = sqlite3.connect("file:" + urllib.parse.quote(os.fsencode(db)) + "?mode=ro", uri=True)
        try:
            row = conn.execute("SELECT selection FROM manifest WHERE id = 1").fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return None
    return row[0] if row else None


def swap_in(staging: Path, db: Path) -> None:
    """Make ``db`` hold what ``staging`` holds, in one transaction, then delete ``staging``.

    SQLite's backup API copies every page into ``db`` as one write transaction: a reader sees the old
    index or the new one, and a process killed midway leaves the old one. Renaming the file instead
    would pull it from under open readers, whose WAL could then be applied to the wrong database.
    """
    with db_errors(db):
        src = sqlite3.connect(staging)
        try:
            try:
                _backup(src, db)
            except sqlite3.OperationalError:
                raise  # busy, disk full, read-only: db_errors words it
            except sqlite3.DatabaseError:  # "file is not a database": a damaged index, nothing to keep
                remove_db(db)
                _backup(src, db)
        finally:
            src.close()
    remove_db(staging)


def _backup(src: sqlite3.Connection, db: Path) -> None:
    dst = sqlite3.connect(db, timeout=30.0)
    try:
        src.backup(dst)
    finally:
        dst.close()


class Store:
    """An open index database. Use as a context manager; ``readonly`` opens without creating."""

    def __init__(self, path: str | os.PathLike, *, readonly: bool = False, root: str | None = None):
        self.path = Path(path)
        self.root = root
        self.readonly = readonly
        with db_errors(self.path, root):
            if readonly:
                if not self.path.exists():
                    raise LongdocError(f"no index at {self.path}")
                self.conn = self._open_readonly()
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.conn = self._connect(str(self.path))
                self.conn.execute("PRAGMA journal_mode=WAL")
                # NORMAL: a commit survives a process crash (kill -9); only power loss may roll back the
                # last transactions, never corrupt the file.
                self.conn.execute("PRAGMA synchronous=NORMAL")
            self._check_schema()

    @staticmethod
    def _connect(target: str, uri: bool = False) -> sqlite3.Connection:
        conn = sqlite3.connect(target, uri=uri, timeout=30.0, isolation_level=None,
                               check_same_thread=False)
        conn.text_factory = _text
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    def _open_readonly(self) -> sqlite3.Connection:
        # Reading a WAL database needs its -shm file, which SQLite creates when missing (the last writer
        # to close removes it). Where it cannot (a read-only mount or folder) no one can write the
        # index either, so it is opened as immutable: read as it is, without the -shm file.
        uri = "file:" + urllib.parse.quote(os.fsencode(self.path))  # '?', '#', '%' in a path are URI syntax
        conn = self._connect(uri + "?mode=ro", uri=True)
        try:
            conn.execute("PRAGMA user_version").fetchone()
            return conn
        except sqlite3.OperationalError as e:
            conn.close()
            if "unable to open" not in str(e) and "readonly" not in str(e):
                raise  # busy, or another failure: not one that immutable would make safe
        return self._connect(uri + "?mode=ro&immutable=1", uri=True)

    # -- schema ---------------------------------------------------------------------------------
    def _check_schema(self) -> None:
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise LongdocError(
                f"the index at {self.path} was written by a newer longdoc (schema {version}, this one "
                f"knows {SCHEMA_VERSION}): upgrade longdoc or {_rebuild_hint(self.root)}"
            )
        pending = [m for m in MIGRATIONS if m.version > version]
        if not pending:
            return
        if version > 0 and any(m.rebuild for m in pending):
            raise LongdocError(
                f"the index format changed (schema {version} -> {SCHEMA_VERSION}) and its vectors cannot "
                f"be reused: {_rebuild_hint(self.root)}"
            )
        if self.readonly:
            if version == 0:
                raise LongdocError(f"the index at {self.path} needs an upgrade: run `longdoc index` on its root")
            return  # only columns to add (a rebuild was refused above): read as it is, they read as NULL
        for m in pending:
            with self.transaction() as c:
                for statement in _statements(m.sql):
                    c.execute(statement)
                c.execute(f"PRAGMA user_version = {int(m.version)}")
                c.execute("UPDATE manifest SET schema_version = ?", (m.version,))

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception (including KeyboardInterrupt)."""
        with db_errors(self.path, self.root):
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    # -- manifest -------------------------------------------------------------------------------
    def manifest(self) -> dict | None:
        cur = self.conn.execute("SELECT * FROM manifest WHERE id = 1")
        row = cur.fetchone()
        if row is None:
            return None
        return dict(zip([c[0] for c in cur.description], row))

    def init_manifest(self, root: str, version: str) -> None:
        now = time.time()
        with self.transaction() as c:
            c.execute(
                "INSERT OR IGNORE INTO manifest (id, schema_version, root, longdoc_version, created_at,"
                " updated_at) VALUES (1, ?, CAST(? AS TEXT), ?, ?, ?)",
                (SCHEMA_VERSION, _name(root), version, now, now))

    def set_model(self, fingerprint: str, model: str | None, tokenizer: str | None,
                  window: int | None, dim: int) -> None:
        with self.transaction() as c:
            c.execute("UPDATE manifest SET model_fingerprint=?, model=CAST(? AS TEXT), tokenizer=?, window=?,"
                      " dim=?, updated_at=? WHERE id = 1",
                      (fingerprint, _name(model), tokenizer, window, dim, time.time()))  # model: a folder name

    def set_selection(self, selection: str) -> None:
        with self.transaction() as c:
            c.execute("UPDATE manifest SET selection = ? WHERE id = 1", (selection,))

    def set_model_key(self, key: str | None) -> None:
        with self.transaction() as c:
            c.execute("UPDATE manifest SET model_key = ? WHERE id = 1", (key,))

    def touch_manifest(self) -> None:
        with self.transaction() as c:
            c.execute("UPDATE manifest SET updated_at = ? WHERE id = 1", (time.time(),))

    # -- files ----------------------------------------------------------------------------------
    def files(self) -> dict[str, FileRow]:
        cur = self.conn.execute("SELECT * FROM files")  # a column of a pending migration is left at None
        names = [c[0] for c in cur.description]
        known = FileRow.__dataclass_fields__
        rows = ({k: v for k, v in zip(names, r) if k in known} for r in cur)
        return {r["path"]: FileRow(**r) for r in rows}

    def replace_file(self, path: str, *, sha256: str, size: int, mtime_ns: int, kind: str | None,
                     language: str | None, n_tokens: int, n_pages: int | None, error: str | None,
                     segments: Sequence[SegmentRow], vectors: np.ndarray | None,
                     indexed_at: float, local: np.ndarray | None = None, pack: str | None = None) -> None:
        """Swap in a file's new rows atomically: all of them or, after a crash, none."""
        self.replace_files([dict(path=path, sha256=sha256, size=size, mtime_ns=mtime_ns, kind=kind,
                                 language=language, n_tokens=n_tokens, n_pages=n_pages, error=error,
                                 segments=segments, vectors=vectors, indexed_at=indexed_at, local=local,
                                 pack=pack)])

    def replace_files(self, files: Sequence[dict]) -> None:
        """Swap in several files' rows (``replace_file``'s arguments, one dict each) in one transaction:
        the members of a pack, whose vectors were computed together, change together. Each row is
        stamped with the loader that read the file (``sources.loader_identity``)."""
        from longdoc import sources

        dim = self.conn.execute("SELECT dim FROM manifest WHERE id = 1").fetchone()
        prepared = []
        for f in files:
            segments, vectors, local = f["segments"], f["vectors"], f.get("local")
            if segments:
                vectors = np.ascontiguousarray(vectors, dtype=VECTOR_DTYPE)
                local = np.ascontiguousarray(local, dtype=VECTOR_DTYPE)
                for v in (vectors, local):
                    if v.shape[0] != len(segments) or (dim and dim[0] and v.shape[1] != dim[0]):
                        raise ValueError(f"{f['path']}: {v.shape} vectors for {len(segments)} segments")
            prepared.append((f, segments, vectors, local))
        with self.transaction() as c:
            for f, segments, vectors, local in prepared:
                self._delete_file(c, f["path"])
                cur = c.execute(
                    "INSERT INTO files (path, sha256, size, mtime_ns, kind, language, n_tokens, n_pages,"
                    " error, indexed_at, pack, loader)"
                    " VALUES (CAST(? AS TEXT), ?, ?, ?, ?, ?, ?, ?, CAST(? AS TEXT), ?, ?, ?)",
                    (_name(f["path"]), f["sha256"], f["size"], f["mtime_ns"], f["kind"], f["language"],
                     f["n_tokens"], f["n_pages"], _name(f["error"]), f["indexed_at"], f.get("pack"),
                     sources.loader_identity()))
                fid = cur.lastrowid
                c.executemany(
                    "INSERT INTO segments (file_id, ord, char_start, char_end, line_start, line_end, page,"
                    " kind, label, text, vector, local) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [(fid, i, s.char_start, s.char_end, s.line_start, s.line_end, s.page, s.kind, s.label,
                      s.text, vectors[i].tobytes(), local[i].tobytes()) for i, s in enumerate(segments)])

    def touch_files(self, stats: Sequence[tuple[str, int, int]], verified_at: float) -> None:
        """Record new ``(path, size, mtime_ns)`` stats of files whose content hash did not change."""
        with self.transaction() as c:
            c.executemany("UPDATE files SET size = ?, mtime_ns = ?, indexed_at = ? WHERE path = CAST(? AS TEXT)",
                          [(size, mtime, verified_at, _name(p)) for p, size, mtime in stats])

    @staticmethod
    def _delete_file(c: sqlite3.Connection, path: str) -> None:
        row = c.execute("SELECT id FROM files WHERE path = CAST(? AS TEXT)", (_name(path),)).fetchone()
        if row is not None:
            c.execute("DELETE FROM segments WHERE file_id = ?", (row[0],))
            c.execute("DELETE FROM files WHERE id = ?", (row[0],))

    def delete_files(self, paths: Sequence[str]) -> None:
        with self.transaction() as c:
            for p in paths:
                self._delete_file(c, p)

    # -- reading --------------------------------------------------------------------------------
    def counts(self) -> dict:
        f, err, tok = self.conn.execute(
            "SELECT COUNT(*), COUNT(error), COALESCE(SUM(n_tokens), 0) FROM files").fetchone()
        s = self.conn.execute("SELECT COUNT(*) FROM segments").fetchone()[0]
        return {"files": f, "failed": err, "tokens": tok, "segments": s}

    def vectors(self, file_ids: Sequence[int] | None = None, column: str = "vector") -> tuple[np.ndarray, np.ndarray]:
        """``(ids (S,), vectors (S, dim) float32)`` of all segments, or those of ``file_ids``;
        ``column`` is "vector" (in context) or "local" (alone)."""
        if column not in ("vector", "local"):
            raise ValueError(column)
        sql = f"SELECT id, {column} FROM segments"
        params: tuple = ()
        if file_ids is not None:
            sql += f" WHERE file_id IN ({','.join('?' * len(file_ids))})"
            params = tuple(file_ids)
        rows = self.conn.execute(sql + " ORDER BY id", params).fetchall()
        if not rows:
            return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        blob = b"".join(r[1] for r in rows)
        return ids, np.frombuffer(blob, dtype=VECTOR_DTYPE).reshape(len(rows), -1).astype(np.float32)

    def lexical(self, query: str, limit: int) -> list[tuple[int, float]]:
        """``(segment id, BM25)`` best first, higher is better; ``query`` is FTS5 syntax."""
        rows = self.conn.execute(
            "SELECT rowid, bm25(segments_fts) FROM segments_fts WHERE segments_fts MATCH ?"
            " ORDER BY bm25(segments_fts) LIMIT ?", (query, limit)).fetchall()
        return [(r[0], -r[1]) for r in rows]  # FTS5's bm25() is negated (lower is better)

    def segments(self, ids: Sequence[int]) -> dict[int, SegmentRow]:
        if not ids:
            return {}
        rows = self.conn.execute(
            "SELECT s.id, f.path, s.char_start, s.char_end, s.line_start, s.line_end, s.page, s.kind,"
            " s.label, s.text FROM segments s JOIN files f ON f.id = s.file_id"
            f" WHERE s.id IN ({','.join('?' * len(ids))})", tuple(int(i) for i in ids)).fetchall()
        return {r[0]: SegmentRow(r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], id=r[0], path=r[1])
                for r in rows}

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _statements(script: str) -> list[str]:
    """Split a migration into statements (``executescript`` would commit our transaction)."""
    out, buf = [], ""
    for line in script.strip().splitlines():
        buf += line + "\n"
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    if buf.strip():
        out.append(buf.strip())
    return out


class IndexLock:
    """One writer per index: an exclusive ``flock`` on ``<db>.lock``, released when the process ends
    however it ends (the kernel drops it on kill -9, so a crash never leaves a stale lock)."""

    def __init__(self, db: Path):
        self.path = db.with_name(db.name + ".lock")
        self.fd: int | None = None

    def acquire(self, wait: bool, on_wait=None, timeout: float | None = None) -> None:
        import fcntl

        with db_errors(self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = None if timeout is None else time.monotonic() + timeout
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = self.holder()
                if not wait or (deadline is not None and time.monotonic() > deadline):
                    os.close(fd)
                    raise LongdocError(
                        f"another `longdoc index` (pid {holder or '?'}) is updating the index "
                        f"{self.path.with_suffix('')}; let it finish, or run without --no-wait to wait "
                        "for it") from None
                if not told and on_wait is not None:
                    on_wait(holder)
                    told = True
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self.fd = fd

    def holder(self) -> int | None:
        try:
            return int(self.path.read_text().strip() or 0) or None
        except (OSError, ValueError):
            return None

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None
