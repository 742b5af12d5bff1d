import numpy as np

from longdoc.cache import Cache, model_identity


def test_roundtrip_vectors_and_questions(tmp_path):
    c = Cache(tmp_path / "c.sqlite")
    vecs = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    c.put_passages("k", [(0, 5), (5, 9), (9, 20)], vecs)
    spans, got = c.get_passages("k")
    assert spans == [(0, 5), (5, 9), (9, 20)]
    np.testing.assert_array_equal(got, vecs)
    assert c.get_passages("other") is None
    c.put_question("m", "q?", vecs[0])
    np.testing.assert_array_equal(c.get_question("m", "q?"), vecs[0])
    assert c.get_question("m2", "q?") is None


def test_identity_changes_with_settings_and_weights(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"x")
    a = model_identity(tmp_path, {"window": 128})
    assert a == model_identity(tmp_path, {"window": 128})
    assert a != model_identity(tmp_path, {"window": 64})
    (tmp_path / "model.safetensors").write_bytes(b"xy")
    assert a != model_identity(tmp_path, {"window": 128})


def test_unwritable_cache_dir_degrades_to_no_cache(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    c = Cache(blocker / "sub" / "c.sqlite")  # parent is a file: cannot be created
    assert c.db is None
    c.put_question("m", "q", np.zeros(2, np.float32))
    assert c.get_question("m", "q") is None


def test_a_row_cut_short_is_a_miss(tmp_path):
    """A damaged row (a blob cut short, meta that is not JSON) is a miss, as a damaged file is: `ask`
    re-encodes instead of stopping with a reshape error on every later run."""
    c = Cache(tmp_path / "c.sqlite")
    c.put_passages("k", [(0, 5), (6, 9)], np.ones((2, 8), dtype=np.float32))
    c.put_document("d", "text", "hello", {"page_starts": None})
    c.put_lexical("k", "q", np.ones(2, dtype=np.float32))
    with c.db:
        c.db.execute("UPDATE passages SET vectors = substr(vectors, 1, 12)")
        c.db.execute("UPDATE documents SET meta = '{not json'")
        c.db.execute("UPDATE lexical SET scores = substr(scores, 1, 3)")
    assert c.get_passages("k") is None and c.get_document("d") is None and c.get_lexical("k", "q") is None
    c.put_passages("k", [(0, 5)], np.ones((1, 8), dtype=np.float32))  # and the next run refills it
    assert c.get_passages("k")[0] == [(0, 5)]
