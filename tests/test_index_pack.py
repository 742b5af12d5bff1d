"""Small files packed into one encoder sequence (longdoc.index.indexer.PACK_TOKENS): which files share a
pack, that their vectors are those of the packed sequence, and that a change to one member re-encodes
its pack and nothing else."""
from __future__ import annotations

import hashlib
import sqlite3
import sys
from pathlib import Path

import numpy as np
import pytest

from longdoc.index import build, indexer
from longdoc.index.locate import db_path
from longdoc.index.store import SCHEMA_VERSION

sys.path.insert(0, str(Path(__file__).parent))
from test_index_fakes import HashEncoder  # noqa: E402


class RecordingEncoder(HashEncoder):
    """HashEncoder that remembers the text of every sequence it encoded."""

    def __init__(self):
        super().__init__()
        self.sequences: list[str] = []

    def embed_spans(self, text, spans, tokens=None):
        self.sequences.append(text)
        return super().embed_spans(text, spans, tokens)


def _fn(name: str, n: int = 1) -> str:
    return "".join(f"def {name}_{i}(x):\n    return x + {i}\n\n\n" for i in range(n))


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "repo"
    files = {
        "pkg/a.py": _fn("alpha"), "pkg/b.py": _fn("beta"), "pkg/c.py": _fn("gamma"),
        "pkg/notes.md": "# Notes\n\nThe beta helper adds one.\n",  # prose: not packed with code
        "pkg/big.py": _fn("large", 120),  # over PACK_FILE_TOKENS: alone
        "other/d.py": _fn("delta"),  # another folder: another pack
        "other/e.py": _fn("epsilon"),
    }
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


def packs(root) -> dict[str, str | None]:
    with sqlite3.connect(db_path(root)) as c:
        return dict(c.execute("SELECT path, pack FROM files"))


def test_small_files_of_one_folder_and_language_share_a_sequence(tree):
    enc = RecordingEncoder()
    rep = build(tree, encoder=enc)
    p = packs(tree)
    assert p["pkg/a.py"] and p["pkg/a.py"] == p["pkg/b.py"] == p["pkg/c.py"]
    assert p["other/d.py"] and p["other/d.py"] == p["other/e.py"] != p["pkg/a.py"]
    assert p["pkg/big.py"] is None and p["pkg/notes.md"] is None
    assert len(enc.sequences) == 4  # pkg pack, big.py, notes.md, other pack
    packed = next(s for s in enc.sequences if "alpha_0" in s)
    assert "beta_0" in packed and "gamma_0" in packed and "Notes" not in packed
    assert sorted(rep.encoded) == sorted(p)
    with sqlite3.connect(db_path(tree)) as c:  # each file keeps its own hash and token count
        for path, sha, n in c.execute("SELECT path, sha256, n_tokens FROM files"):
            assert sha == hashlib.sha256((tree / path).read_bytes()).hexdigest()
            assert n == len(enc.tokenize((tree / path).read_text()))


def test_pack_budget_splits_a_folder(tree, monkeypatch):
    monkeypatch.setattr(indexer, "PACK_TOKENS", 25)  # room for two of the 10-token files, not three
    build(tree, encoder=HashEncoder())
    p = packs(tree)
    assert p["pkg/a.py"] == p["pkg/b.py"] and p["pkg/c.py"] is None  # a pack of one is "alone"


def test_packing_off_encodes_each_file_alone(tree, monkeypatch):
    monkeypatch.setattr(indexer, "PACK_TOKENS", 0)
    enc = RecordingEncoder()
    build(tree, encoder=enc)
    assert set(packs(tree).values()) == {None} and len(enc.sequences) == 7


def test_changed_member_reencodes_its_pack_only(tree):
    build(tree, encoder=HashEncoder())
    before = packs(tree)
    (tree / "pkg/b.py").write_text(_fn("beta") + _fn("beta_more"))
    enc = RecordingEncoder()
    rep = build(tree, encoder=enc)
    assert sorted(rep.encoded) == ["pkg/a.py", "pkg/b.py", "pkg/c.py"]
    assert rep.unchanged == 4 and len(enc.sequences) == 1
    after = packs(tree)
    assert after["pkg/a.py"] == after["pkg/b.py"] == after["pkg/c.py"]
    assert after["other/d.py"] == before["other/d.py"]
    assert build(tree, encoder=enc).up_to_date


def test_deleted_member_reencodes_the_rest(tree):
    build(tree, encoder=HashEncoder())
    (tree / "other/e.py").unlink()
    rep = build(tree, encoder=HashEncoder())
    assert rep.deleted == ["other/e.py"] and rep.encoded == ["other/d.py"]
    assert packs(tree)["other/d.py"] is None  # alone now


def test_packed_vectors_are_those_of_the_joined_sequence(tree, tiny_model_dir):
    """With the real encoder: each stored in-context vector is the segment pooled from the packed
    sequence (spans shifted correctly), and differs from encoding the file alone."""
    from longdoc.model import load_encoder

    build(tree, model=str(tiny_model_dir))
    enc = load_encoder(str(tiny_model_dir))
    with sqlite3.connect(db_path(tree)) as c:
        pack = c.execute("SELECT pack FROM files WHERE path = 'pkg/a.py'").fetchone()[0]
        members = [r[0] for r in c.execute("SELECT path FROM files WHERE pack = ? ORDER BY path", (pack,))]
        stored = {(p, o): (s, e, np.frombuffer(v, "<f4")) for p, o, s, e, v in c.execute(
            "SELECT f.path, s.ord, s.char_start, s.char_end, s.vector FROM segments s JOIN files f"
            " ON f.id = s.file_id WHERE f.pack = ?", (pack,))}
    assert members == ["pkg/a.py", "pkg/b.py", "pkg/c.py"]
    texts = [(tree / m).read_text() for m in members]
    joined, spans, keys, at = indexer._PACK_SEP.join(texts), [], [], 0
    for m, t in zip(members, texts):
        for (p, o), (s, e, _) in sorted(stored.items()):
            if p == m:
                spans.append((at + s, at + e))
                keys.append((p, o))
        at += len(t) + len(indexer._PACK_SEP)
    want = enc.embed_spans(joined, spans).numpy()
    for k, w in zip(keys, want):
        np.testing.assert_allclose(stored[k][2], w, atol=1e-5)
    s, e, v = stored[("pkg/b.py", 0)]
    alone = enc.embed_spans(texts[1], [(s, e)]).numpy()[0]
    assert not np.allclose(v, alone, atol=1e-4)  # it did see its neighbours


def test_pack_left_incomplete_by_a_crash_is_redone(tree):
    """A run killed between two pack transactions leaves a pack whose rows no longer match its id."""
    build(tree, encoder=HashEncoder())
    with sqlite3.connect(db_path(tree)) as c:
        c.execute("UPDATE files SET pack = NULL WHERE path = 'pkg/c.py'")  # as if c.py had been redone alone
    assert indexer.pack_id(["pkg/a.py", "pkg/b.py", "pkg/c.py"]) == packs(tree)["pkg/a.py"]
    rep = build(tree, encoder=HashEncoder())
    assert sorted(rep.encoded) == ["pkg/a.py", "pkg/b.py"] and not rep.up_to_date
    assert build(tree, encoder=HashEncoder()).up_to_date


def test_index_of_schema_2_upgrades_in_place(tree):
    """An index written before packs (schema 2) gains the column, keeps its vectors, and is up to date:
    its files stay encoded alone until they change."""
    build(tree, encoder=HashEncoder())
    with sqlite3.connect(db_path(tree)) as c:
        c.execute("ALTER TABLE files DROP COLUMN pack")
        c.execute("ALTER TABLE files DROP COLUMN loader")  # (schema 4's)
        c.execute("PRAGMA user_version = 2")
        n = c.execute("SELECT COUNT(*) FROM segments").fetchone()[0]
    rep = build(tree, encoder=HashEncoder())
    assert rep.up_to_date and set(packs(tree).values()) == {None}
    with sqlite3.connect(db_path(tree)) as c:
        assert c.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION  # 3 and the ones after
        assert c.execute("SELECT COUNT(*) FROM segments").fetchone()[0] == n
    (tree / "pkg/a.py").write_text(_fn("alpha", 2))
    assert sorted(build(tree, encoder=HashEncoder()).encoded) == ["pkg/a.py"]  # no pack to pull in yet
