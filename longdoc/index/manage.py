"""``longdoc index status | list | clean``: what an index holds, how stale it is, and removing it."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import LongdocError
from . import locate
from .indexer import _RACY_S, _selection, failure_reason, list_files, retry_failure, sha256_file
from .store import IndexLock, Store, remove_db, staging_path


@dataclass
class Status:
    """An index's manifest and counts, plus how the tree has moved since (without encoding)."""

    root: str
    db: str
    indexed: bool
    manifest: dict = field(default_factory=dict)
    files: int = 0
    segments: int = 0
    tokens: int = 0
    db_bytes: int = 0
    new: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)

    @property
    def up_to_date(self) -> bool:
        return self.indexed and not (self.new or self.changed or self.deleted)

    def to_json(self) -> dict:
        d = dict(self.__dict__)
        d["up_to_date"] = self.up_to_date
        return d


def db_size(db: Path) -> int:
    """Bytes of the database with its write-ahead log (what it costs on disk)."""
    return sum(p.stat().st_size for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")) if p.exists())


def status(root: str | os.PathLike, index_dir: str | os.PathLike | None = None) -> Status:
    from longdoc import sources

    root = Path(root).resolve()
    db = locate.db_path(root, index_dir)
    st = Status(str(root), str(db), db.exists())
    if not st.indexed:
        return st
    with Store(db, readonly=True, root=str(root)) as store:
        st.manifest = store.manifest() or {}
        c = store.counts()
        st.files, st.segments, st.tokens = c["files"], c["segments"], c["tokens"]
        rows = store.files()
    st.db_bytes = db_size(db)
    st.failed = sorted((p, failure_reason(p, r.error)) for p, r in rows.items() if r.error)
    if root.is_dir():
        opts, files_from = _selection(st.manifest, None, None)
        live = {e.rel: e for e in list_files(root, opts, files_from).files}
    else:
        live = {}
    for rel, e in live.items():
        row = rows.get(rel)
        if row is None:
            st.new.append(rel)
        elif retry_failure(row, sources.loader_identity()):  # the next run reads it again
            st.changed.append(rel)
        elif not (row.size == e.size and row.mtime_ns == e.mtime_ns
                  and e.mtime_ns / 1e9 < row.indexed_at - _RACY_S):
            try:
                if sha256_file(e.path)[0] != row.sha256:
                    st.changed.append(rel)
            except OSError:
                st.changed.append(rel)
    st.deleted = sorted(p for p in rows if p not in live)
    st.new.sort()
    st.changed.sort()
    return st


def list_indexes() -> list[dict]:
    """Every index in the shared index folder: its root, counts, size, model and last update."""
    out = []
    for db in locate.all_dbs():
        item = {"db": str(db), "root": None, "files": None, "segments": None, "bytes": db_size(db),
                "model": None, "updated_at": None, "root_exists": False, "error": None}
        try:
            with Store(db, readonly=True) as store:
                m = store.manifest() or {}
                c = store.counts()
            item.update(root=m.get("root"), files=c["files"], segments=c["segments"],
                        model=m.get("model"), updated_at=m.get("updated_at"),
                        root_exists=bool(m.get("root")) and Path(m["root"]).is_dir())
        except LongdocError as e:
            item["error"] = str(e)
        out.append(item)
    return out


def remove(db: Path) -> None:
    """Delete an index database (waiting for nobody: refuses while an indexer holds it)."""
    lock = IndexLock(db)
    lock.acquire(wait=False)
    try:
        remove_db(db)
        remove_db(staging_path(db))  # an interrupted rebuild's
    finally:
        lock.release()
        try:
            lock.path.unlink()
        except OSError:
            pass


def clean(root: str | os.PathLike | None = None, *, index_dir=None, missing: bool = False,
          everything: bool = False) -> list[str]:
    """Remove the index of ``root``; or (``missing``) every index whose root no longer exists; or
    (``everything``) all indexes in the shared folder. Returns the databases removed."""
    if root is not None:
        db = locate.db_path(root, index_dir)
        if not db.exists():
            raise LongdocError(f"{Path(root).resolve()} is not indexed (no {db})")
        targets = [db]
    elif everything or missing:
        targets = [Path(i["db"]) for i in list_indexes() if everything or not i["root_exists"]]
    else:
        raise LongdocError("say which index to remove: PATH, --missing or --all")
    for db in targets:
        remove(db)
    return [str(t) for t in targets]
