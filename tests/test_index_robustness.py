"""`longdoc index` against hostile surroundings: file names that are not UTF-8, an index on a read-only
file system, and a `--rebuild` interrupted halfway. Vectors come from ``HashEncoder``."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_index_fakes import HashEncoder, bag_vector, child_env, write_tree  # noqa: E402

from longdoc.errors import LongdocError  # noqa: E402
from longdoc.index import build, search, status  # noqa: E402
from longdoc.index.indexer import LazyEncoder  # noqa: E402
from longdoc.index.locate import db_path  # noqa: E402
from longdoc.index.store import Store, staging_path  # noqa: E402

FILES = {
    "auth/tokens.py": 'def check_token(token):\n    """Validate a bearer token."""\n    return token.isalnum()\n',
    "db/pool.py": "class ConnectionPool:\n    def acquire(self):\n        return self.conns.pop()\n",
    "docs/guide.md": "# Guide\n\nThe indemnification clause limits liability for damages.\n",
    "notes.txt": "Meeting notes: migrate the payment service to the new queue.\n",
}
BAD = b"pars\xe9r.py"  # Latin-1 bytes: not UTF-8
BAD_TEXT = "def parse_options(argv):\n    return dict(a.split('=') for a in argv)\n"


@pytest.fixture
def tree(tmp_path):
    return write_tree(tmp_path / "repo", FILES, age=60)


def write_bad_name(folder: Path) -> str:
    """Create ``folder/BAD`` and return its name as Python holds it (``os.fsdecode``: a lone surrogate)."""
    try:
        with open(os.path.join(os.fsencode(folder), BAD), "w") as f:
            f.write(BAD_TEXT)
    except (OSError, UnicodeError):
        pytest.skip("this file system refuses names that are not UTF-8")
    return os.fsdecode(BAD)


def run_cli(capsys, *args) -> tuple[int, str, str]:
    from longdoc.cli import main

    with pytest.raises(SystemExit) as e:
        main(list(args))
    out, err = capsys.readouterr()
    return e.value.code, out, err


@pytest.fixture
def fake_model(monkeypatch):
    enc = HashEncoder()
    monkeypatch.setattr(LazyEncoder, "get", lambda self: enc)
    return enc


# -- file names that are not UTF-8 -----------------------------------------------------------------

def test_non_utf8_name_is_indexed_searched_and_pruned(tree):
    name = write_bad_name(tree)
    (tree / "util.py").write_text("def helper():\n    return 1\n")  # packed with it: one pack id over both
    r = build(tree, encoder=HashEncoder())
    assert name in r.encoded and r.files == 6 and not r.failed
    with Store(db_path(tree), readonly=True) as s:
        rows = s.files()
        assert rows[name].pack and rows[name].pack == rows["util.py"].pack
    assert build(tree, encoder=HashEncoder()).up_to_date and status(tree).up_to_date
    with sqlite3.connect(db_path(tree)) as c:  # stored as the bytes on disk, as git stores names
        assert BAD in [r[0] for r in c.execute("SELECT CAST(path AS BLOB) FROM files")]
    hit = search(tree, ["parse options argv"], encoder=HashEncoder(), k=1)[0].results[0]
    assert hit.path == name and (tree / hit.path).read_text() == BAD_TEXT
    (tree / name).unlink()
    r = build(tree, encoder=HashEncoder())
    assert r.deleted == [name] and r.encoded == ["util.py"] and r.files == 5


def test_non_utf8_name_from_files_from(tree, tmp_path):
    name = write_bad_name(tree)
    listing = tmp_path / "list"
    listing.write_bytes(b"notes.txt\0" + BAD + b"\0")
    r = build(tree, encoder=HashEncoder(), files_from=str(listing))
    assert sorted(r.encoded) == sorted(["notes.txt", name])
    assert build(tree, encoder=HashEncoder(), files_from=str(listing)).up_to_date


def test_cli_prints_non_utf8_names_escaped(tree, capsys, fake_model):
    build(tree, encoder=HashEncoder())
    name = write_bad_name(tree)
    rc, out, _ = run_cli(capsys, "index", "status", str(tree))
    assert rc == 1 and "  new     pars\\xe9r.py\n" in out
    rc, out, _ = run_cli(capsys, "index", str(tree), "--json")
    assert rc == 0 and '"encoded": ["pars\\udce9r.py"]' in out and json.loads(out)["encoded"] == [name]
    rc, out, _ = run_cli(capsys, "index", "status", str(tree), "--json")
    assert rc == 0 and json.loads(out)["up_to_date"]


def test_question_with_a_lone_surrogate(tree, tiny_model_dir):
    """A non-UTF-8 byte of an argument reaches Python as a lone surrogate, which the tokenizer and the
    question cache refuse: the library's entry point takes it as U+FFFD, as `longdoc ask` does."""
    a = search(tree, ["bearer \udce9 token", "pool \ud800"], model=str(tiny_model_dir), notify=None)
    assert [x.question for x in a] == ["bearer \ufffd token", "pool \ufffd"] and a[0].results


# -- a read-only index -----------------------------------------------------------------------------

@pytest.fixture
def read_only(tmp_path):
    """``read_only.mount(folder)`` makes a folder, ``read_only(folder)`` then makes it really read-only:
    a tmpfs remounted read-only where this process may mount (root, whom permission bits do not stop),
    else the permission bits."""
    mounted = []

    def mount(folder: Path) -> Path:
        folder.mkdir()
        if os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(folder)],
                                                capture_output=True).returncode == 0:
            mounted.append(folder)
        return folder

    def make(folder: Path) -> None:
        if folder in mounted:
            subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
            return
        for p in [*folder.rglob("*"), folder]:
            p.chmod(0o555 if p.is_dir() else 0o444)
        try:
            (folder / "probe").touch()
        except OSError:
            return
        pytest.skip("permission bits do not stop this user and no tmpfs could be mounted")

    make.mount = mount
    yield make
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)
    for p in tmp_path.rglob("*"):
        if not p.is_symlink():
            p.chmod(0o755)


def test_read_only_index_answers_and_reports(tree, tmp_path, read_only, capsys, fake_model):
    idx = read_only.mount(tmp_path / "ro") / "idx"
    build(tree, encoder=HashEncoder(), index_dir=idx)
    read_only(idx.parent)
    (tree / "new.py").write_text("def fresh_feature():\n    return 2\n")  # can no longer be indexed
    notes, warnings = [], []
    a = search(tree, ["validate bearer token"], encoder=HashEncoder(), index_dir=idx, notify=notes.append,
               warn=warnings.append)[0]
    assert a.results[0].path == "auth/tokens.py"
    assert notes == [] and len(warnings) == 1
    assert "cannot update the index" in warnings[0] and "out of date" in warnings[0]
    st = status(tree, idx)
    assert st.files == 4 and st.new == ["new.py"]
    with pytest.raises(LongdocError, match="cannot write the index"):
        build(tree, encoder=HashEncoder(), index_dir=idx)

    rc, out, err = run_cli(capsys, "ask", str(tree), "validate bearer token", "--index", str(idx), "--json")
    assert rc == 0 and json.loads(out)[0]["results"][0]["path"] == "auth/tokens.py"
    assert len(err.strip().splitlines()) == 1 and "cannot update the index" in err
    rc, out, err = run_cli(capsys, "index", "status", str(tree), "--index", str(idx))
    assert rc == 1 and "4 files" in out and "new     new.py" in out and err == ""
    rc, _, err = run_cli(capsys, "index", str(tree), "--index", str(idx))
    assert rc == 2 and "cannot write the index" in err


# -- an interrupted --rebuild ----------------------------------------------------------------------

class InterruptedEncoder(HashEncoder):
    """Ctrl-C (KeyboardInterrupt) arrives during the ``after + 1``-th file encoded."""

    def __init__(self, after: int, **kw):
        super().__init__(**kw)
        self.after = after

    def embed_spans(self, text, spans, tokens=None):
        if self.calls >= self.after:
            raise KeyboardInterrupt
        return super().embed_spans(text, spans, tokens)


def stored(root: Path) -> dict[str, str]:
    """{path: model fingerprint} of the live index, after checking every vector against its text."""
    with Store(db_path(root), readonly=True) as s:
        fp = s.manifest()["model_fingerprint"]
        for text, blob in s.conn.execute("SELECT text, vector FROM segments"):
            assert bytes(blob) == bag_vector(text).astype("<f4").tobytes()
        return {p: fp for p in s.files()}


@pytest.fixture
def alone(monkeypatch):
    """Every file encoded alone (one embed_spans call each), so an interrupt lands between files."""
    import longdoc.index.indexer as indexer

    monkeypatch.setattr(indexer, "PACK_TOKENS", 0)


def test_interrupted_rebuild_keeps_the_old_index_and_resumes(tree, alone):
    build(tree, encoder=HashEncoder("model-A"))
    before = stored(tree)
    assert len(before) == 4
    with pytest.raises(KeyboardInterrupt):
        build(tree, encoder=InterruptedEncoder(after=2, fingerprint="model-B"), rebuild=True)
    assert stored(tree) == before and status(tree).up_to_date  # the old index, whole
    assert search(tree, ["indemnification liability"], encoder=HashEncoder("model-A"))[0].results
    assert staging_path(db_path(tree)).exists()

    enc = HashEncoder("model-B")
    r = build(tree, encoder=enc, rebuild=True)
    assert enc.calls == 2 and len(r.encoded) == 2 and r.files == 4  # resumed: the 2 left
    assert stored(tree) == {p: "model-B" for p in before} and not staging_path(db_path(tree)).exists()
    assert build(tree, encoder=HashEncoder("model-B")).up_to_date


def test_interrupted_rebuild_then_another_model_starts_over(tree, alone):
    build(tree, encoder=HashEncoder("model-A"))
    with pytest.raises(KeyboardInterrupt):
        build(tree, encoder=InterruptedEncoder(after=2, fingerprint="model-B"), rebuild=True)
    enc = HashEncoder("model-C")
    r = build(tree, encoder=enc, rebuild=True)
    assert enc.calls == 4 and r.files == 4  # model-B's half-done vectors were not mixed in
    assert set(stored(tree).values()) == {"model-C"}


def test_rebuild_swaps_under_an_open_reader(tree):
    build(tree, encoder=HashEncoder("model-A"))
    reader = sqlite3.connect(db_path(tree), isolation_level=None)
    try:
        reader.execute("BEGIN")
        assert reader.execute("SELECT model_fingerprint FROM manifest").fetchone()[0] == "model-A"
        build(tree, encoder=HashEncoder("model-B"), rebuild=True)
        # the reader's snapshot is the old index, whole, until its transaction ends
        assert reader.execute("SELECT model_fingerprint FROM manifest").fetchone()[0] == "model-A"
        assert reader.execute("SELECT COUNT(*) FROM files").fetchone()[0] == 4
        reader.execute("COMMIT")
        assert reader.execute("SELECT model_fingerprint FROM manifest").fetchone()[0] == "model-B"
    finally:
        reader.close()
    assert set(stored(tree).values()) == {"model-B"}


def test_cli_rebuild_interrupted_by_sigint(tree, tmp_path):
    """The QA report's case: `timeout -s INT 10 longdoc index --rebuild repo`, then `index status`."""
    for i in range(12):
        (tree / f"pkg{i}").mkdir()
        (tree / f"pkg{i}" / "mod.py").write_text(f"def handler_{i}(event):\n    return event.kind == {i}\n")
    env = child_env(tmp_path, delay=0.2)
    cmd = [sys.executable, "-m", "longdoc", "index", str(tree), "-q"]
    assert subprocess.run(cmd, env=child_env(tmp_path), capture_output=True, timeout=120).returncode == 0
    before = stored(tree)
    child = subprocess.Popen(cmd + ["--rebuild"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    staging = staging_path(db_path(tree))
    deadline = time.monotonic() + 60
    while not _holds_files(staging) and time.monotonic() < deadline:  # some files re-encoded
        time.sleep(0.05)
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 130, err
    assert "interrupted; the index is as it was before --rebuild" in err and "Traceback" not in err
    assert stored(tree) == before and status(tree).up_to_date


def _holds_files(db: Path) -> bool:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
            return c.execute("SELECT COUNT(*) FROM files").fetchone()[0] > 0
    except sqlite3.Error:
        return False


# -- files that cannot be read ---------------------------------------------------------------------

def test_a_file_that_fails_is_named_once(tree, capsys, fake_model):
    """`longdoc index` and `index status` name a file that cannot be read once, then the reason (they
    said "broken.pdf: broken.pdf: cannot read PDF: ...", the loader's message holding the path too)."""
    (tree / "docs" / "broken.pdf").write_bytes(b"%PDF-1.4\ngarbage")
    rc, _, err = run_cli(capsys, "index", str(tree))
    assert rc == 2 and err.splitlines()[0].startswith("longdoc: docs/broken.pdf: cannot read PDF: "), err
    rc, out, _ = run_cli(capsys, "index", "status", str(tree))
    assert rc == 0 and "  failed  docs/broken.pdf: cannot read PDF: " in out, out
    rc, out, _ = run_cli(capsys, "index", "status", str(tree), "--json")
    assert [p for p, _ in json.loads(out)["failed"]] == ["docs/broken.pdf"]
    assert json.loads(out)["failed"][0][1].startswith("cannot read PDF: ")


def test_json_mode_errors_are_json(tree, tmp_path, capsys, fake_model):
    """`index --json` (and `index status --json`) said its errors in prose, unlike the other verbs:
    a missing root, a file that could not be read, a --files-from name that is not there."""
    rc, out, err = run_cli(capsys, "index", "--json", str(tmp_path / "nowhere"))
    assert rc == 2 and out == "" and "not a directory" in json.loads(err)["error"]
    (tree / "docs" / "broken.pdf").write_bytes(b"%PDF-1.4\ngarbage")
    rc, out, err = run_cli(capsys, "index", "--json", str(tree))
    assert rc == 2 and [p for p, _ in json.loads(out)["failed"]] == ["docs/broken.pdf"]
    assert [json.loads(line) for line in err.splitlines()] == [
        {"error": "docs/broken.pdf: " + json.loads(out)["failed"][0][1]}]
    listing = tmp_path / "list"
    listing.write_text("notes.txt\nnope.txt\n")
    rc, out, err = run_cli(capsys, "index", "--json", str(tree), "--files-from", str(listing))
    assert rc == 0 and json.loads(out)["files"] == 1
    assert [json.loads(line) for line in err.splitlines()] == [
        {"warning": "--files-from: nope.txt does not exist; not indexed"}]
    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / "index.sqlite").write_bytes(b"not a database" * 100)
    rc, out, err = run_cli(capsys, "index", "status", "--json", str(tree), "--index", str(tmp_path / "damaged"))
    assert rc == 2 and out == "" and "error" in json.loads(err)


def test_cache_folder_behind_a_dangling_link_is_a_one_line_error(tree, tmp_path, capsys, monkeypatch, fake_model):
    """LONGDOC_HOME a link to a drive that is not mounted: `index` and `ask DIR` stopped with a
    FileExistsError traceback (exit 1); one line naming the link, exit 2."""
    link = tmp_path / "home-link"
    link.symlink_to(tmp_path / "unmounted" / "cache")
    monkeypatch.setenv("LONGDOC_HOME", str(link))
    monkeypatch.delenv("LONGDOC_INDEX_DIR", raising=False)
    for args in (["index", str(tree)], ["ask", str(tree), "bearer token"]):
        rc, out, err = run_cli(capsys, *args)
        last = err.splitlines()[-1]
        assert rc == 2 and out == "" and last.startswith("longdoc: error: cannot write the index at "), err
        assert f"File exists: {link})" in last, err
