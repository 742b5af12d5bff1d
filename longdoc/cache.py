"""Content-addressed cache for `ask`: loaded documents, passage vectors and question vectors.

A repeated question on an unchanged file must answer in well under a second, which rules out even
importing torch. So the cache is keyed without loading the model: the *model identity* hashes the
resolved model folder's config and weights (size and mtime), the encoder settings, and the source of
the modules that compute vectors; any change there gives new keys, never stale vectors.

Storage is one SQLite file (``<cache dir>/ask.sqlite``, WAL) you can open with ``sqlite3``:

* ``documents(key, kind, text, meta)``: key = sha256 of the file's bytes + of the password given +
  loader version (so an encrypted PDF is never served without its password); ``meta`` is JSON with
  ``page_starts``, ``language``, ``encoding`` and ``warnings``.
* ``passages(key, spans, vectors, dim)``: key = document text hash + model identity + segmenter
  version; ``spans`` is little-endian int64 ``(S, 2)``, ``vectors`` little-endian float32 ``(S, dim)``.
* ``questions(model, question, vector)``: little-endian float32 ``(dim,)``.
* ``lexical(passages, question, scores)``: BM25 of each passage, little-endian float32 ``(S,)``; so a
  repeated question does not even import the BM25 library.
"""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from pathlib import Path

import numpy as np

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (key TEXT PRIMARY KEY, kind TEXT NOT NULL, text TEXT NOT NULL,
                                      meta TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS passages (key TEXT PRIMARY KEY, spans BLOB NOT NULL, vectors BLOB NOT NULL,
                                     dim INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS questions (model TEXT NOT NULL, question TEXT NOT NULL, vector BLOB NOT NULL,
                                      PRIMARY KEY (model, question));
CREATE TABLE IF NOT EXISTS lexical (passages TEXT NOT NULL, question TEXT NOT NULL, scores BLOB NOT NULL,
                                    PRIMARY KEY (passages, question));
"""
_SCHEMA_VERSION = 2  # PRAGMA user_version; a cache of another version is dropped, never migrated
_PACKAGE = Path(__file__).resolve().parent
# Sources whose behaviour changes vectors: a change to any of them invalidates cached vectors.
_VECTOR_CODE = ("model", "kernels", "segment.py", "tokens.py")


def cache_dir() -> Path:
    """``$LONGDOC_HOME/cache`` when set, else the platform's user cache dir for longdoc."""
    home = os.environ.get("LONGDOC_HOME")
    if home:
        return Path(home) / "cache"
    import platformdirs

    return Path(platformdirs.user_cache_dir("longdoc"))


def code_hash(*names: str) -> str:
    """Hash of the package sources named (folders or files under longdoc/)."""
    h = hashlib.sha256()
    for name in names:
        p = _PACKAGE / name
        if not p.exists():  # kernels/ sits beside the package in a source checkout
            p = _PACKAGE.parent / name
        files = sorted(p.rglob("*.py")) if p.is_dir() else [p]
        for f in files:
            if f.exists():
                h.update(f.name.encode())
                h.update(f.read_bytes())
    return h.hexdigest()[:16]


def model_identity(model_dir: Path, settings: dict) -> str:
    """Stable id of (weights, config, encoder settings, vector code), computed without torch."""
    h = hashlib.sha256()
    for f in sorted(model_dir.glob("*.json")) + sorted(model_dir.glob("*.safetensors")):
        st = f.stat()
        h.update(f"{f.name}:{st.st_size}:{int(st.st_mtime)}".encode())
    h.update(json.dumps(settings, sort_keys=True).encode())
    h.update(code_hash(*_VECTOR_CODE).encode())
    return h.hexdigest()[:24]


class Cache:
    """The ask cache. Every write is its own transaction, so an interrupted run loses nothing stored."""

    def __init__(self, path: Path | None = None):
        path = path or cache_dir() / "ask.sqlite"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(path, timeout=30)
            self.db.execute("PRAGMA journal_mode=WAL")
            if self.db.execute("PRAGMA user_version").fetchone()[0] != _SCHEMA_VERSION:
                with self.db:  # it is only a cache: start it afresh rather than migrate
                    for (name,) in self.db.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall():
                        self.db.execute(f'DROP TABLE "{name}"')
                    self.db.executescript(_SCHEMA)
                    self.db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
        except (OSError, sqlite3.Error):
            # A read-only or full cache dir must not stop `ask`: run without a cache.
            self.db = None

    def _get(self, sql, args, decode=lambda row: row):
        """``decode(row)`` of the first row, or None; decoding is inside the guard too, so a row whose
        blob was cut short (ValueError from numpy's reshape, JSON's decoder) is a miss as well."""
        if self.db is None:
            return None
        try:
            row = self.db.execute(sql, args).fetchone()
            return None if row is None else decode(row)
        except (sqlite3.Error, ValueError, TypeError):
            return None  # a damaged cache is a miss, never an error

    def _put(self, sql, args):
        if self.db is None:
            return
        try:
            with self.db:
                self.db.execute(sql, args)
        except sqlite3.Error:
            pass  # a full disk only costs the next run its cache hit

    # Documents --------------------------------------------------------------------------------
    def get_document(self, key: str):
        """(kind, text, meta dict) or None."""
        return self._get("SELECT kind, text, meta FROM documents WHERE key=?", (key,),
                         lambda row: (row[0], row[1], json.loads(row[2])))

    def put_document(self, key: str, kind: str, text: str, meta: dict):
        self._put("INSERT OR REPLACE INTO documents VALUES (?,?,?,?)", (key, kind, text, json.dumps(meta)))

    # Passage vectors --------------------------------------------------------------------------
    def get_passages(self, key: str):
        def decode(row):
            spans = np.frombuffer(row[0], dtype="<i8").reshape(-1, 2)
            vecs = np.frombuffer(row[1], dtype="<f4").reshape(-1, row[2])
            if len(vecs) != len(spans):
                raise ValueError("vectors and spans disagree")
            return [tuple(map(int, s)) for s in spans], vecs

        return self._get("SELECT spans, vectors, dim FROM passages WHERE key=?", (key,), decode)

    def put_passages(self, key: str, spans, vectors: np.ndarray):
        s = np.asarray(spans, dtype="<i8").reshape(-1, 2).tobytes()
        v = np.ascontiguousarray(vectors, dtype="<f4")
        self._put("INSERT OR REPLACE INTO passages VALUES (?,?,?,?)", (key, s, v.tobytes(), v.shape[1]))

    # Question vectors -------------------------------------------------------------------------
    def get_question(self, model: str, question: str):
        return self._get("SELECT vector FROM questions WHERE model=? AND question=?", (model, question),
                         lambda row: np.frombuffer(row[0], dtype="<f4"))

    def put_question(self, model: str, question: str, vector: np.ndarray):
        v = np.ascontiguousarray(vector, dtype="<f4").tobytes()
        self._put("INSERT OR REPLACE INTO questions VALUES (?,?,?)", (model, question, v))

    # Lexical scores -------------------------------------------------------------------------
    def get_lexical(self, passages_key: str, question: str):
        return self._get("SELECT scores FROM lexical WHERE passages=? AND question=?", (passages_key, question),
                         lambda row: np.frombuffer(row[0], dtype="<f4"))

    def put_lexical(self, passages_key: str, question: str, scores: np.ndarray):
        v = np.ascontiguousarray(scores, dtype="<f4").tobytes()
        self._put("INSERT OR REPLACE INTO lexical VALUES (?,?,?)", (passages_key, question, v))


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
