"""`longdoc index`: incremental updates, storage format, manifest/schema checks, search, errors, CLI.

Vectors come from ``HashEncoder`` (tests/test_index_fakes.py) except in the one test marked
``model``, which runs the bundled MiniLM end to end.
"""
from __future__ import annotations

import json
import os
import sqlite3
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from longdoc.errors import LongdocError
from longdoc.index import build, clean, list_indexes, search, status
from longdoc.index import store as store_mod
from longdoc.index.indexer import LazyEncoder
from longdoc.index.locate import db_path
from longdoc.index.store import Migration, Store

sys.path.insert(0, str(Path(__file__).parent))
from test_index_fakes import HashEncoder, bag_vector, write_tree  # noqa: E402

FILES = {
    "auth/tokens.py": 'def check_token(token):\n    """Validate a bearer token."""\n    return token.startswith("tk_")\n\n\n'
                      'def refresh_session(session):\n    session.renew()\n    return session\n',
    "db/pool.py": "class ConnectionPool:\n    def acquire(self):\n        return self.conns.pop()\n\n"
                  "    def release(self, conn):\n        self.conns.append(conn)\n",
    "docs/guide.md": "# Guide\n\nThe indemnification clause limits liability for damages.\n",
    "notes.txt": "Meeting notes: migrate the payment service to the new queue.\n",
}


@pytest.fixture
def tree(tmp_path):
    return write_tree(tmp_path / "repo", FILES)


def backdate(root: Path, seconds: float = 60) -> None:
    """Give every file an mtime well before the index run, as a real checkout has (outside _RACY_S)."""
    t = time.time() - seconds
    for p in root.rglob("*"):
        if p.is_file():
            os.utime(p, (t, t))


def rows(root, **kw) -> list[tuple]:
    with sqlite3.connect(db_path(root, kw.get("index_dir"))) as c:
        return c.execute("SELECT f.path, s.text, s.vector, s.char_start, s.char_end, s.line_start"
                         " FROM segments s JOIN files f ON f.id = s.file_id ORDER BY f.path, s.ord").fetchall()


# -- incremental -----------------------------------------------------------------------------------

def test_first_run_encodes_everything_then_nothing(tree):
    backdate(tree)
    enc = HashEncoder()
    r = build(tree, encoder=enc)
    assert sorted(r.encoded) == sorted(FILES) and enc.calls == 4 and not r.up_to_date
    assert r.tokens > 0
    r2 = build(tree, encoder=enc)
    assert r2.up_to_date and r2.unchanged == 4 and r2.encoded == [] and enc.calls == 4


def test_no_change_run_does_not_load_the_encoder(tree):
    backdate(tree)
    build(tree, encoder=HashEncoder())

    def boom():
        raise AssertionError("the encoder was loaded for a no-change run")

    assert build(tree, encoder_factory=boom).up_to_date


def test_changed_file_reencoded_deleted_pruned_new_added(tree):
    backdate(tree)
    enc = HashEncoder()
    build(tree, encoder=enc)
    (tree / "db/pool.py").write_text("class ConnectionPool:\n    def drain(self):\n        self.conns.clear()\n")
    (tree / "notes.txt").unlink()
    (tree / "new.py").write_text("def added():\n    return 1\n")
    r = build(tree, encoder=enc)
    assert sorted(r.encoded) == ["db/pool.py", "new.py"] and r.deleted == ["notes.txt"] and r.unchanged == 2
    paths = {p for p, *_ in rows(tree)}
    assert "notes.txt" not in paths and "new.py" in paths
    texts = " ".join(t for p, t, *_ in rows(tree) if p == "db/pool.py")
    assert "drain" in texts and "acquire" not in texts
    # the FTS side was pruned too: the deleted file's words match nothing
    ans = search(tree, ["payment queue migrate"], encoder=enc, update=False, k=10)[0]
    assert all(h.path != "notes.txt" for h in ans.results)


def test_touched_but_identical_file_is_not_reencoded(tree):
    backdate(tree)
    enc = HashEncoder()
    build(tree, encoder=enc)
    os.utime(tree / "auth/tokens.py")  # new mtime, same bytes
    r = build(tree, encoder=enc)
    assert r.encoded == [] and enc.calls == 4
    assert build(tree, encoder=enc).up_to_date


def test_same_size_rewrite_within_racy_window_is_detected(tree):
    enc = HashEncoder()
    build(tree, encoder=enc)  # files were written just now: inside the racy window
    p = tree / "notes.txt"
    st = p.stat()
    p.write_text(p.read_text().replace("payment", "PAYMENT"))
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size, same mtime
    assert build(tree, encoder=enc).encoded == ["notes.txt"]


def test_unreadable_file_is_recorded_and_not_retried(tree):
    backdate(tree)
    (tree / "bad.txt").write_bytes(b"\xff\xfe\xfa" * 10 + b"caf\xe9 \x81\x8d")  # undecodable, no NUL
    enc = HashEncoder()
    r = build(tree, encoder=enc)
    if not r.failed:
        pytest.skip("the loader decoded this input; nothing to test here")
    assert r.failed[0][0] == "bad.txt"
    r2 = build(tree, encoder=enc)
    assert r2.failed == [] and "bad.txt" not in r2.encoded
    assert status(tree).failed and status(tree).failed[0][0] == "bad.txt"



def test_a_failure_judged_by_another_longdoc_is_retried(tree, monkeypatch):
    """A file that failed to load was not read again until it changed, so a failure judged by an older
    longdoc whose loader had a bug stayed until --rebuild. The loader that judged it is stored: a failure
    judged by another loader (version or sources), or stored before loaders were (schema 3), is retried;
    one judged by this loader is not, so a no-change run reads nothing."""
    import longdoc.sources as sources

    real, buggy = sources.load, {"on": True}

    def load(path, **kw):
        if buggy["on"] and path.endswith("notes.txt"):
            raise LongdocError(f"{path}: cannot read: a loader bug")
        return real(path, **kw)

    monkeypatch.setattr(sources, "load", load)
    backdate(tree)
    enc = HashEncoder()
    assert build(tree, encoder=enc).failed == [("notes.txt", "cannot read: a loader bug")]
    buggy["on"] = False  # fixed, but this version judged the file already: not read again
    assert build(tree, encoder=enc).up_to_date and status(tree).up_to_date
    monkeypatch.setattr(sources, "loader_identity", lambda: "9.9.9+fixed")  # a later loader reads it again, once
    assert status(tree).changed == ["notes.txt"]
    r = build(tree, encoder=enc)
    assert r.encoded == ["notes.txt"] and not r.failed and not status(tree).failed
    assert build(tree, encoder=enc).up_to_date

    buggy["on"] = True
    (tree / "notes.txt").write_text("Meeting notes: the queue moved.\n")
    backdate(tree)
    assert [p for p, _ in build(tree, encoder=enc).failed] == ["notes.txt"]
    with sqlite3.connect(db_path(tree)) as c:  # as an index of schema 3 stored it: no version
        c.execute("ALTER TABLE files DROP COLUMN loader")
        c.execute("PRAGMA user_version = 3")
    buggy["on"] = False
    st = status(tree)  # read-only: read as it is, before the upgrade
    assert st.files == 4 and st.changed == ["notes.txt"] and st.failed
    assert search(tree, ["bearer token"], encoder=enc, update=False)[0].results
    r = build(tree, encoder=enc)  # upgraded in place, rows kept, the failure retried
    assert r.encoded == ["notes.txt"] and r.unchanged == 3 and r.files == 4 and not r.failed
    with sqlite3.connect(db_path(tree)) as c:
        assert c.execute("PRAGMA user_version").fetchone()[0] == store_mod.SCHEMA_VERSION
    assert build(tree, encoder=enc).up_to_date

# -- storage format --------------------------------------------------------------------------------

def test_vectors_are_documented_little_endian_float32(tree):
    build(tree, encoder=HashEncoder())
    got = rows(tree)
    assert got
    for path, text, blob, start, end, line in got:
        assert len(blob) == 64 * 4
        np.testing.assert_allclose(np.frombuffer(blob, dtype="<f4"), bag_vector(text), atol=1e-6)
        assert (tree / path).read_text()[start:end] == text
    with sqlite3.connect(db_path(tree)) as c:
        for text, local in c.execute("SELECT text, local FROM segments"):
            np.testing.assert_allclose(np.frombuffer(local, dtype="<f4"), bag_vector(text), atol=1e-6)
    with sqlite3.connect(db_path(tree)) as c:
        assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert c.execute("PRAGMA user_version").fetchone()[0] == store_mod.SCHEMA_VERSION
        m = c.execute("SELECT schema_version, root, model_fingerprint, dim FROM manifest").fetchone()
    assert m == (store_mod.SCHEMA_VERSION, str(tree.resolve()), "hash-bag-v1", 64)


def test_index_locations(tree, tmp_path, monkeypatch):
    home = Path(os.environ["LONGDOC_HOME"])
    assert db_path(tree).parent == home / "index"
    monkeypatch.setenv("LONGDOC_INDEX_DIR", str(tmp_path / "elsewhere"))
    assert db_path(tree).parent == tmp_path / "elsewhere"
    in_tree = tree / ".longdoc"
    r = build(tree, encoder=HashEncoder(), index_dir=in_tree)
    assert Path(r.db) == in_tree / "index.sqlite"
    assert db_path(tree) == in_tree / "index.sqlite"  # found without the flag afterwards
    assert not any(".longdoc" in p for p, *_ in rows(tree, index_dir=in_tree))


# -- manifest and migrations -----------------------------------------------------------------------

def test_model_change_asks_for_rebuild_and_never_mixes(tree):
    backdate(tree)
    build(tree, encoder=HashEncoder("model-A"))
    (tree / "new.py").write_text("def f():\n    pass\n")
    with pytest.raises(LongdocError, match="--rebuild"):
        build(tree, encoder=HashEncoder("model-B"))
    with pytest.raises(LongdocError, match="model-A"):
        search(tree, ["token"], encoder=HashEncoder("model-B"), update=False)
    r = build(tree, encoder=HashEncoder("model-B"), rebuild=True)
    assert r.rebuilt and len(r.encoded) == 5
    with Store(db_path(tree), readonly=True) as s:
        assert s.manifest()["model_fingerprint"] == "model-B"
        assert s.counts()["files"] == 5
    assert search(tree, ["token"], encoder=HashEncoder("model-B"), update=False)[0].results


def test_newer_schema_is_refused(tree):
    build(tree, encoder=HashEncoder())
    with sqlite3.connect(db_path(tree)) as c:
        c.execute(f"PRAGMA user_version = {store_mod.SCHEMA_VERSION + 1}")
    with pytest.raises(LongdocError, match="newer longdoc"):
        build(tree, encoder=HashEncoder())


def test_pending_migration_applied_or_rebuild_requested(tree, monkeypatch):
    build(tree, encoder=HashEncoder())
    v = store_mod.SCHEMA_VERSION
    monkeypatch.setattr(store_mod, "MIGRATIONS", store_mod.MIGRATIONS + [
        Migration(v + 1, "ALTER TABLE files ADD COLUMN note TEXT;\nCREATE INDEX files_note ON files(note);")])
    monkeypatch.setattr(store_mod, "SCHEMA_VERSION", v + 1)
    with Store(db_path(tree)) as s:
        assert s.conn.execute("PRAGMA user_version").fetchone()[0] == v + 1
        assert s.manifest()["schema_version"] == v + 1
        s.conn.execute("SELECT note FROM files").fetchall()
        assert s.counts()["segments"] > 0  # data kept
    monkeypatch.setattr(store_mod, "MIGRATIONS", store_mod.MIGRATIONS + [Migration(v + 2, "SELECT 1;", rebuild=True)])
    monkeypatch.setattr(store_mod, "SCHEMA_VERSION", v + 2)
    with pytest.raises(LongdocError, match="rebuild"):
        Store(db_path(tree))


def test_damaged_or_old_database_clear_error_then_rebuild(tree):
    db = db_path(tree)
    db.parent.mkdir(parents=True)
    db.write_bytes(b"this is not an sqlite database" * 100)
    with pytest.raises(LongdocError, match="damaged.*--rebuild"):
        build(tree, encoder=HashEncoder())
    assert len(build(tree, encoder=HashEncoder(), rebuild=True).encoded) == 4
    with sqlite3.connect(db) as c:  # pretend it was written in format 1, before `local` vectors
        c.execute("PRAGMA user_version = 1")
    with pytest.raises(LongdocError, match="index format changed.*--rebuild"):
        build(tree, encoder=HashEncoder())
    assert len(build(tree, encoder=HashEncoder(), rebuild=True).encoded) == 4


# -- search ----------------------------------------------------------------------------------------

def test_search_finds_the_passage_with_relative_path_and_lines(tree):
    enc = HashEncoder()
    build(tree, encoder=enc)
    a, b = search(tree, ["validate bearer token", "indemnification liability damages"], encoder=enc, k=3)
    top = a.results[0]
    assert (top.path, top.line_start, top.label) == ("auth/tokens.py", 1, "check_token")
    assert "def check_token" in top.text and top.page is None
    assert b.results[0].path == "docs/guide.md"
    assert json.loads(json.dumps(a.to_json()))["results"][0]["path"] == "auth/tokens.py"


def test_search_filters_lang_glob_threshold_k(tree):
    enc = HashEncoder()
    build(tree, encoder=enc)
    q = ["token session connection liability notes"]
    assert {h.path for h in search(tree, q, encoder=enc, k=20, lang=["python"])[0].results} <= {
        "auth/tokens.py", "db/pool.py"}
    assert {h.path for h in search(tree, q, encoder=enc, k=20, lang=["markdown"])[0].results} == {"docs/guide.md"}
    assert {h.path for h in search(tree, q, encoder=enc, k=20, glob=["db/**"])[0].results} == {"db/pool.py"}
    assert len(search(tree, q, encoder=enc, k=2)[0].results) == 2
    assert search(tree, q, encoder=enc, k=20, threshold=1.01)[0].results == []
    with pytest.raises(LongdocError, match="empty question"):
        search(tree, ["  "], encoder=enc)
    # a filter that matches no indexed file is a typo, not "nothing found"
    with pytest.raises(LongdocError, match="no indexed file has it .*markdown.*python"):
        search(tree, q, encoder=enc, lang=["klingon"])
    with pytest.raises(LongdocError, match="no indexed file matches"):
        search(tree, q, encoder=enc, glob=["nowhere/**"])


def test_search_indexes_a_new_root_and_refreshes_a_stale_one(tree):
    enc = HashEncoder()
    notes = []
    assert search(tree, ["bearer token"], encoder=enc, notify=notes.append)[0].results
    assert "not indexed yet" in notes[0]
    (tree / "auth/tokens.py").unlink()
    res = search(tree, ["bearer token"], encoder=enc, notify=notes.append, k=10)[0].results
    assert all(h.path != "auth/tokens.py" for h in res) and "1 removed" in notes[-1]
    with pytest.raises(LongdocError, match="not indexed"):
        search(tree.parent, ["x"], encoder=enc, update=False)


def test_paths_escaping_the_root_are_never_returned(tree):
    enc = HashEncoder()
    build(tree, encoder=enc)
    with sqlite3.connect(db_path(tree)) as c:
        c.execute("UPDATE files SET path = '../outside.py' WHERE path = 'auth/tokens.py'")
    res = search(tree, ["validate bearer token"], encoder=enc, update=False, k=10)[0].results
    assert res and all(not h.path.startswith("..") for h in res)


# -- errors: disk full, read-only, concurrency ----------------------------------------------------

def test_disk_full_is_a_clear_error_and_keeps_what_was_done(tree):
    enc = HashEncoder()
    build(tree, encoder=enc)
    big = tree / "big.txt"
    big.write_text("\n\n".join(f"paragraph {i} " + "lorem ipsum dolor " * 30 for i in range(300)))
    real_connect = Store._connect

    def tiny(target, uri=False):
        conn = real_connect(target, uri)
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages + 2}")
        return conn

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Store, "_connect", staticmethod(tiny))
        with pytest.raises(LongdocError, match="no space left"):
            build(tree, encoder=enc)
    with Store(db_path(tree), readonly=True) as s:
        assert s.counts()["files"] == 4  # the earlier files are intact
        assert s.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert "big.txt" in build(tree, encoder=enc).encoded


def test_unwritable_index_location_is_a_clear_error(tree, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(LongdocError, match="cannot write the index"):
        build(tree, encoder=HashEncoder(), index_dir=blocker / "idx")


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_index_dir(tree, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(LongdocError, match="cannot write the index"):
            build(tree, encoder=HashEncoder(), index_dir=ro)
    finally:
        ro.chmod(0o700)


def test_second_writer_refused_while_readers_go_on(tree):
    from longdoc.index.store import IndexLock

    build(tree, encoder=HashEncoder())
    (tree / "new.py").write_text("def fresh():\n    return 2\n")
    holder = IndexLock(db_path(tree))
    holder.acquire(wait=False)  # flock is per open file description: a second acquire conflicts
    try:
        with pytest.raises(LongdocError, match="another `longdoc index`"):
            build(tree, encoder=HashEncoder(), wait=False)
        # readers never need the lock: search skips its refresh, says so, and answers
        notes, warnings = [], []
        assert search(tree, ["bearer token"], encoder=HashEncoder(), notify=notes.append,
                      warn=warnings.append)[0].results
        assert notes == [] and "another process is updating" in warnings[0]  # a warning: results may be stale
    finally:
        holder.release()
    assert build(tree, encoder=HashEncoder(), wait=False).encoded == ["new.py"]


def test_search_waits_for_a_first_index_run_instead_of_finding_nothing(tree):
    """While another process runs the first `index` of a tree, its database exists but holds no file:
    `ask DIR` waits for that run rather than answer "nothing found" from an empty index."""
    import threading

    from longdoc.index.store import IndexLock, Store

    db = db_path(tree)
    with Store(db, root=str(tree)) as st:
        st.init_manifest(str(tree), "test")
    holder = IndexLock(db)
    holder.acquire(wait=False)
    threading.Timer(1.0, holder.release).start()
    notes = []
    assert search(tree, ["bearer token"], encoder=HashEncoder(), notify=notes.append)[0].results
    assert "first time; waiting" in notes[0]


# -- status / list / clean -------------------------------------------------------------------------

def test_status_list_clean(tree, tmp_path):
    backdate(tree)
    assert not status(tree).indexed
    build(tree, encoder=HashEncoder())
    st = status(tree)
    assert st.up_to_date and st.files == 4 and st.segments > 0 and st.db_bytes > 0
    (tree / "notes.txt").write_text("changed")
    (tree / "db/pool.py").unlink()
    (tree / "z.py").write_text("x = 1\n")
    st = status(tree)
    assert (st.new, st.changed, st.deleted) == (["z.py"], ["notes.txt"], ["db/pool.py"]) and not st.up_to_date
    other = tmp_path / "gone"
    other.mkdir()
    (other / "a.txt").write_text("alpha")
    build(other, encoder=HashEncoder())
    assert {i["root"] for i in list_indexes()} == {str(tree.resolve()), str(other.resolve())}
    (other / "a.txt").unlink()
    other.rmdir()
    assert clean(missing=True) == [str(db_path(other))]
    assert clean(tree) == [str(db_path(tree))] and not db_path(tree).exists()
    assert list_indexes() == []


# -- CLI ---------------------------------------------------------------------------------------------

@pytest.fixture
def fake_model(monkeypatch):
    enc = HashEncoder()
    monkeypatch.setattr(LazyEncoder, "get", lambda self: enc)
    return enc


def run_cli(capsys, *args) -> tuple[int, str, str]:
    from longdoc.cli import main

    with pytest.raises(SystemExit) as e:
        main(list(args))
    out, err = capsys.readouterr()
    return e.value.code, out, err


def test_cli_index_update_status_json(tree, capsys, fake_model):
    backdate(tree)
    rc, out, err = run_cli(capsys, "index", str(tree))
    assert rc == 0 and "4 encoded" in out and err == ""  # no progress off a terminal
    rc, out, _ = run_cli(capsys, "index", str(tree))
    assert rc == 0 and "up to date" in out
    rc, out, _ = run_cli(capsys, "index", str(tree), "--json")
    assert rc == 0 and json.loads(out)["up_to_date"] is True
    rc, out, _ = run_cli(capsys, "index", "status", str(tree))
    assert rc == 0 and "up to date" in out and "hash-bag-v1" in out
    (tree / "notes.txt").unlink()
    rc, out, _ = run_cli(capsys, "index", "status", str(tree), "--json")
    assert rc == 1 and json.loads(out)["deleted"] == ["notes.txt"]
    rc, out, _ = run_cli(capsys, "index", "list", "--json")
    assert rc == 0 and json.loads(out)[0]["root"] == str(tree.resolve())
    rc, out, _ = run_cli(capsys, "index", "clean", str(tree))
    assert rc == 0 and out.startswith("removed ")
    rc, out, _ = run_cli(capsys, "index", "status", str(tree))
    assert rc == 1 and "not indexed" in out
    # a folder that does not exist is an error (exit 2), not a folder waiting to be indexed (exit 1)
    rc, out, err = run_cli(capsys, "index", "status", str(tree / "nope"))
    assert rc == 2 and out == "" and err.strip() == f"longdoc: error: {tree / 'nope'}: no such folder"
    rc, out, err = run_cli(capsys, "index", "status", str(tree / "nope"), "--json")
    assert rc == 2 and json.loads(err) == {"error": f"{tree / 'nope'}: no such folder"}


def test_cli_files_from_names_the_listed_files_it_could_not_find(tree, capsys, fake_model, tmp_path):
    first = sorted(p.relative_to(tree).as_posix() for p in tree.rglob("*") if p.is_file())[0]
    listing = tmp_path / "list.txt"
    listing.write_text(f"{first}\nnope.py\n")
    rc, out, err = run_cli(capsys, "index", str(tree), "--files-from", str(listing))
    assert rc == 0 and "1 encoded" in out
    assert err.strip() == "longdoc: --files-from: nope.py does not exist; not indexed"



def test_files_from_stdin_is_remembered_as_the_names_it_gave(tree, tmp_path, monkeypatch):
    """`git ls-files -z | longdoc index . --files-from -`: stdin cannot be read again, so the stored
    selection fell back to the whole walk. `index status` said "out of date" (the unlisted files "new")
    right after the run, and the next `index` or `ask DIR` refresh indexed every file of the tree. The
    names stdin gave are stored instead, and reused (from any current folder)."""
    import io

    backdate(tree)
    listed = ["auth/tokens.py", "notes.txt", "gone.txt"]
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("\0".join(listed).encode())))
    monkeypatch.chdir(tree)
    r = build(tree, encoder=HashEncoder(), files_from="-")
    assert sorted(r.encoded) == ["auth/tokens.py", "notes.txt"] and r.files == 2
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("a file of the same name in another folder")
    st = status(tree)
    assert st.up_to_date and st.new == [], st.new
    assert build(tree, encoder=HashEncoder()).up_to_date  # no file added, none pruned
    (tree / "gone.txt").write_text("listed before it existed: indexed once it does")
    r = build(tree, encoder=HashEncoder())
    assert r.encoded == ["gone.txt"] and r.files == 3
    assert [a.path for a in search(tree, ["bearer token"], encoder=HashEncoder(), k=5)[0].results] \
        and {h.path for h in search(tree, ["pool"], encoder=HashEncoder(), k=9, threshold=-1)[0].results} \
        <= {"auth/tokens.py", "notes.txt", "gone.txt"}

def test_a_stored_files_from_list_that_is_gone_is_an_error_not_the_whole_tree(tree, capsys, fake_model, tmp_path):
    """`longdoc index DIR --files-from LIST`, then LIST is deleted: the next `index DIR` or `ask DIR`
    refresh walked the whole tree instead, silently (here the 3 unlisted files were encoded). It is a
    one-line error, exit 2 (JSON in JSON modes), and the index stays as it was."""
    backdate(tree)
    listing = tmp_path / "list.txt"
    listing.write_text("notes.txt\n")
    rc, out, _ = run_cli(capsys, "index", str(tree), "--files-from", str(listing))
    assert rc == 0 and "1 encoded" in out
    listing.unlink()
    want = (f"the file list this index was made from ({listing.resolve()}, given to --files-from) is gone: pass "
            "--files-from again, or a walk option such as --include '*' to index the walked tree instead")
    rc, out, err = run_cli(capsys, "index", str(tree))
    assert (rc, out, err) == (2, "", f"longdoc: error: {want}\n")
    rc, out, err = run_cli(capsys, "ask", str(tree), "payment queue", "--json")
    assert (rc, out, [json.loads(x) for x in err.splitlines()]) == (2, "", [{"error": want}])
    with pytest.raises(LongdocError, match="is gone"):
        status(tree)
    assert [p for p, *_ in rows(tree)] == ["notes.txt"] and fake_model.calls == 1  # nothing else encoded
    rc, out, _ = run_cli(capsys, "index", str(tree), "--include", "*", "--json")  # the way to the walk
    assert rc == 0 and json.loads(out)["files"] == 4


def test_cli_walk_flags_are_remembered(tree, capsys, fake_model):
    rc, out, _ = run_cli(capsys, "index", str(tree), "--include", "*.py", "--json")
    assert rc == 0 and sorted(json.loads(out)["encoded"]) == ["auth/tokens.py", "db/pool.py"]
    rc, out, _ = run_cli(capsys, "index", str(tree), "--json")
    assert json.loads(out)["files"] == 2  # same selection as last time: nothing pruned or added


def test_rebuild_reencodes_the_stored_selection(tree, capsys, fake_model, tmp_path):
    """`index DIR --rebuild` read the selection from the new (staging) database, which has none: an
    index made with --include '*.py' was rebuilt from every file, one made with --files-from LIST from
    the whole tree. It re-encodes the stored selection now, unless new selection options are given."""
    backdate(tree)
    rc, out, _ = run_cli(capsys, "index", str(tree), "--include", "*.py", "--json")
    assert rc == 0 and json.loads(out)["files"] == 2
    rc, out, _ = run_cli(capsys, "index", str(tree), "--rebuild", "--json")
    assert rc == 0 and sorted(json.loads(out)["encoded"]) == ["auth/tokens.py", "db/pool.py"]
    rc, out, _ = run_cli(capsys, "index", str(tree), "--json")  # and it is stored again after the swap
    assert json.loads(out)["files"] == 2 and json.loads(out)["up_to_date"]
    rc, out, _ = run_cli(capsys, "index", str(tree), "--rebuild", "--include", "*.md", "--json")
    assert rc == 0 and json.loads(out)["encoded"] == ["docs/guide.md"]  # new options win

    listing = tmp_path / "list.txt"
    listing.write_text("notes.txt\n")
    rc, out, _ = run_cli(capsys, "index", str(tree), "--files-from", str(listing), "--json")
    assert rc == 0 and json.loads(out)["files"] == 1
    rc, out, _ = run_cli(capsys, "index", str(tree), "--rebuild", "--json")
    assert rc == 0 and json.loads(out)["encoded"] == ["notes.txt"] and json.loads(out)["files"] == 1
    listing.unlink()  # a list that is gone stops the rebuild too, and the index stays
    rc, out, err = run_cli(capsys, "index", str(tree), "--rebuild")
    assert rc == 2 and out == "" and "is gone" in err
    assert [p for p, *_ in rows(tree)] == ["notes.txt"]


def test_cli_errors_exit_2(tree, capsys, fake_model, tmp_path):
    rc, _, err = run_cli(capsys, "index", str(tmp_path / "missing"))
    assert rc == 2 and "not a directory" in err
    rc, _, err = run_cli(capsys, "index", "clean")
    assert rc == 2 and "PATH, --missing or --all" in err


def test_cli_ask_on_indexed_dir(tree, capsys, fake_model):
    run_cli(capsys, "index", str(tree))
    rc, out, _ = run_cli(capsys, "ask", str(tree), "validate bearer token", "--json", "-k", "2")
    assert rc == 0
    res = json.loads(out)[0]["results"]
    assert res[0]["path"] == "auth/tokens.py" and res[0]["line_start"] == 1


def test_cli_quiet_drops_notes_but_not_warnings(tree, capsys, fake_model):
    """`ask DIR -q` and `index -q` printed their notes ("indexing it first", "index updated", "waiting for
    another `longdoc index`"); -q drops those, while a warning (results that may be stale) still prints."""
    import threading

    from longdoc.index.store import IndexLock

    q = [str(tree), "validate bearer token", "-k", "1"]
    rc, _, err = run_cli(capsys, "ask", *q, "-q")
    assert rc == 0 and err == ""
    (tree / "new1.py").write_text("def one():\n    return 1\n")
    rc, _, err = run_cli(capsys, "ask", *q, "-q")
    assert rc == 0 and err == ""
    (tree / "new2.py").write_text("def two():\n    return 2\n")
    rc, _, err = run_cli(capsys, "ask", *q)  # without -q the note is there
    assert rc == 0 and "index updated: 1 re-encoded" in err

    holder = IndexLock(db_path(tree))
    holder.acquire(wait=False)  # another `longdoc index` (flock is per open file description)
    try:
        (tree / "new3.py").write_text("def three():\n    return 3\n")
        rc, _, err = run_cli(capsys, "ask", *q, "-q")
        assert rc == 0 and err.startswith("longdoc: warning: another process is updating the index")
    finally:
        holder.release()
    for quiet in ([], ["-q"]):
        holder.acquire(wait=False)
        threading.Timer(0.5, holder.release).start()
        (tree / f"new4{len(quiet)}.py").write_text("def four():\n    return 4\n")
        rc, out, err = run_cli(capsys, "index", str(tree), *quiet)
        assert rc == 0 and " encoded" in out
        assert ("waiting for another `longdoc index`" in err) == (not quiet), err



def test_json_modes_say_notes_and_interrupts_as_json(tree, capsys, fake_model, monkeypatch):
    """`ask DIR --json` said "... indexing it first", "index updated" and "interrupted" in prose on
    stderr, `index --json` its "waiting for another `longdoc index`" and "interrupted; ..." notes: in
    JSON modes each is a JSON object now (a note as {"warning"}, an interrupt as {"error"}, exit 130)."""
    import threading

    from longdoc.index.store import IndexLock

    def said(err):
        return [json.loads(line) for line in err.splitlines()]

    backdate(tree)
    q = [str(tree), "validate bearer token", "-k", "1"]
    rc, _, err = run_cli(capsys, "ask", *q, "--json")
    assert rc == 0 and said(err) == [{"warning": f"{tree.resolve()} is not indexed yet: indexing it first "
                                                 "(later questions reuse the index)"}]
    (tree / "new1.py").write_text("def one():\n    return 1\n")
    rc, _, err = run_cli(capsys, "ask", *q, "--jsonl")
    assert rc == 0 and said(err) == [{"warning": "index updated: 1 re-encoded, 0 removed"}]

    holder = IndexLock(db_path(tree))
    holder.acquire(wait=False)
    threading.Timer(0.5, holder.release).start()
    (tree / "new2.py").write_text("def two():\n    return 2\n")
    rc, out, err = run_cli(capsys, "index", str(tree), "--json")
    assert rc == 0 and json.loads(out)["encoded"] == ["new2.py"]
    assert said(err) == [{"warning": f"waiting for another `longdoc index` (pid {os.getpid()}) on this root..."}]

    def interrupt(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(fake_model, "embed_spans", interrupt)
    (tree / "new3.py").write_text("def three():\n    return 3\n")
    rc, out, err = run_cli(capsys, "ask", *q, "--json")
    assert (rc, out, said(err)) == (130, "", [{"error": "interrupted"}])
    rc, out, err = run_cli(capsys, "index", str(tree), "--json")
    assert (rc, out, said(err)) == (
        130, "", [{"error": "interrupted; 0 file(s) encoded in this run are kept, re-run to resume"}])
    rc, out, err = run_cli(capsys, "index", str(tree))  # prose without --json, as before
    assert (rc, err) == (130, "longdoc: interrupted; 0 file(s) encoded in this run are kept, re-run to resume\n")

# -- the loader's warnings ---------------------------------------------------------------------------

NO_TEXT = "page 2 has no text layer (scanned?); OCR is not done"
BAD_UTF8 = "1 invalid UTF-8 byte(s) (first at byte 10) shown as U+FFFD"


@pytest.fixture
def warned_tree(tree):
    """The tree plus a PDF whose second page has no text and a text file with an invalid UTF-8 byte:
    both load, each with one warning."""
    from test_sources_pdf import make_pdf

    (tree / "scans").mkdir()
    (tree / "scans" / "half.pdf").write_bytes(make_pdf([["Exhibit B. Payment terms apply."], None]))
    (tree / "latin.txt").write_bytes(b"Caf\xc3\xa9 and \xff notes about the payment queue.\n")
    backdate(tree)
    return tree


def test_cli_index_prints_the_loaders_warnings(warned_tree, capsys, fake_model):
    """Each file's warning on one line of stderr naming it, as `ask FILE` and `tokens` print them;
    -q keeps them; --json gives JSON objects on stderr and a "warnings" list in the report."""
    want = [f"longdoc: warning: latin.txt: {BAD_UTF8}", f"longdoc: warning: scans/half.pdf: {NO_TEXT}"]
    rc, out, err = run_cli(capsys, "index", str(warned_tree))
    assert rc == 0 and "6 encoded" in out
    assert err.splitlines() == want
    rc, out, err = run_cli(capsys, "index", str(warned_tree))  # nothing read again: nothing to say
    assert rc == 0 and "up to date" in out and err == ""

    rc, out, err = run_cli(capsys, "index", str(warned_tree), "--rebuild", "-q")
    assert rc == 0 and err.splitlines() == want

    rc, out, err = run_cli(capsys, "index", str(warned_tree), "--rebuild", "--json")
    assert rc == 0
    assert json.loads(out)["warnings"] == [["latin.txt", BAD_UTF8], ["scans/half.pdf", NO_TEXT]]
    assert [json.loads(x) for x in err.splitlines()] == [{"warning": w[len("longdoc: warning: "):]} for w in want]


def test_cli_ask_dir_prints_the_loaders_warnings_of_the_files_it_indexes(warned_tree, capsys, fake_model):
    """`ask DIR` indexes (or refreshes) first: the files it reads say their warnings as `index` does,
    -q keeps them, and an up-to-date index reads nothing and says nothing."""
    want = [f"longdoc: warning: latin.txt: {BAD_UTF8}", f"longdoc: warning: scans/half.pdf: {NO_TEXT}"]
    q = [str(warned_tree), "payment queue", "-k", "1", "-q"]
    rc, _, err = run_cli(capsys, "ask", *q)
    assert rc == 0 and err.splitlines() == want
    rc, _, err = run_cli(capsys, "ask", *q)
    assert rc == 0 and err == ""
    (warned_tree / "latin.txt").write_bytes(b"Caf\xc3\xa9 and \xff notes about the payment queue again.\n")
    rc, _, err = run_cli(capsys, "ask", *q)  # the refresh re-reads the changed file only
    assert rc == 0 and err.splitlines() == want[:1]


def test_warnings_of_an_interrupted_run_are_said_as_files_are_read(warned_tree):
    """Ctrl-C after the first file: its warning has been passed up already, the file is stored and
    the index answers; the next run reads (and warns about) only the files left."""
    import longdoc.index.indexer as indexer

    class Interrupted(HashEncoder):
        def embed_spans(self, text, spans, tokens=None):
            if self.calls >= 1:
                raise KeyboardInterrupt
            return super().embed_spans(text, spans, tokens)

    said = []
    old = indexer.PACK_TOKENS
    indexer.PACK_TOKENS = 0  # every file alone: the interrupt lands between files
    try:
        with pytest.raises(KeyboardInterrupt):
            build(warned_tree, encoder=Interrupted(), on_warning=lambda rel, w: said.append((rel, w)))
        assert said == [("latin.txt", BAD_UTF8)]  # folders in order: the root's files first
        assert status(warned_tree).files == 1
        assert search(warned_tree, ["payment queue"], encoder=HashEncoder(), update=False)[0].results

        said.clear()
        r = build(warned_tree, encoder=HashEncoder(), on_warning=lambda rel, w: said.append((rel, w)))
    finally:
        indexer.PACK_TOKENS = old
    assert said == r.warnings == [("scans/half.pdf", NO_TEXT)] and r.files == 6


# -- the real model ----------------------------------------------------------------------------------

@pytest.mark.model
def test_real_encoder_index_and_search(tree):
    from longdoc.model import load_encoder

    enc = load_encoder()
    r = build(tree, encoder=enc)
    assert len(r.encoded) == 4 and r.tokens > 50
    with Store(db_path(tree), readonly=True) as s:
        m = s.manifest()
        assert m["model_fingerprint"] == enc.fingerprint and m["dim"] == enc.dim and m["tokenizer"]
        ids, vecs = s.vectors()
        assert vecs.shape == (s.counts()["segments"], enc.dim)
        np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-4)
    a = search(tree, ["return a database connection to the pool"], encoder=enc, k=3)[0]
    assert a.results[0].path == "db/pool.py"


@pytest.mark.model
def test_ask_dir_records_the_bundled_models_name_as_index_does(tree):
    """`ask DIR` loads the bundled model by its resolved folder, whose basename is "model": the
    manifest (`index list`, `index status`, the rebuild message) named it "model" there and
    "all-MiniLM-L6-v2" when `longdoc index` had made the index."""
    from longdoc.model.files import DEFAULT_NAME, default_model_path, resolve_model

    assert resolve_model(default_model_path())[1] == DEFAULT_NAME
    search(tree, ["return a database connection to the pool"], k=1)
    with Store(db_path(tree), readonly=True) as s:
        assert s.manifest()["model"] == DEFAULT_NAME
