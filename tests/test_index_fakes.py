"""A deterministic stand-in for the encoder (unit tests only) and helpers shared by the index tests.

``HashEncoder`` embeds a span as the normalised bag of its hashed words: two spans sharing words are
close, and a stored vector can be recomputed from its stored text alone, which is how the kill -9
tests check that no vector sits beside the wrong text. It is also importable from a child process
(``child_env``) so `python -m longdoc index` runs without torch.
"""
from __future__ import annotations

import hashlib
import os
import re

import numpy as np

DIM = 64


def bag_vector(text: str) -> np.ndarray:
    v = np.zeros(DIM, dtype=np.float32)
    for w in re.findall(r"\w+", text.lower()):
        h = hashlib.sha1(w.encode()).digest()
        v[h[0] % DIM] += 1.0 if h[1] & 1 else -1.0
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


class HashEncoder:
    """Same methods as ``longdoc.model.Encoder``."""

    name = "hash-bag"
    dim = DIM

    def __init__(self, fingerprint: str = "hash-bag-v1"):
        self.fingerprint = fingerprint
        self.calls = 0  # embed_spans calls: one per encoded file, or pack of small files

    def tokenize(self, text: str) -> list[str]:
        return re.findall(r"\w+|\S", text)

    def embed_spans(self, text, spans, tokens=None):
        self.calls += 1
        return np.stack([bag_vector(text[s:e]) for s, e in spans]) if spans else np.zeros((0, DIM), np.float32)

    def embed_texts(self, texts):
        return np.stack([bag_vector(t) for t in texts])


SITECUSTOMIZE = '''
import os, sys, time
sys.path.insert(0, {tests!r})
from test_index_fakes import HashEncoder
import longdoc.index.indexer as _b
_enc = HashEncoder(fingerprint=os.environ.get("FAKE_FP", "hash-bag-v1"))
_b.LazyEncoder.get = lambda self: _enc
_delay = float(os.environ.get("FAKE_DELAY", "0"))
if _delay:
    # Per encoded file, whether alone or in a pack of small files (one embed_spans call for the pack),
    # as a real encoder's time grows with the text: the kill tests time their kills by it.
    _store_group = _b._store_group
    def _slow_store_group(store, group, *args):
        time.sleep(_delay * len(group))
        return _store_group(store, group, *args)
    _b._store_group = _slow_store_group
'''


def child_env(tmp_path, delay: float = 0.0, fingerprint: str = "hash-bag-v1") -> dict:
    """Environment for a `python -m longdoc` child that encodes with HashEncoder (via sitecustomize),
    spending ``delay`` seconds on each encoded file."""
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    tests = os.path.dirname(os.path.abspath(__file__))
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE.format(tests=tests))
    repo = os.path.dirname(tests)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), repo, env.get("PYTHONPATH", "")])
    env["FAKE_DELAY"] = str(delay)
    env["LONGDOC_MODEL"] = os.path.join(str(tmp_path), "no-model-here")  # if the patch fails, fail loudly
    env["FAKE_FP"] = fingerprint
    return env


def write_tree(root, files: dict, *, age: float | None = None):
    """A small repository at ``root`` (Path): ``files`` maps relative paths to text. ``age`` seconds
    backdates every mtime, as a real checkout's (outside the indexer's racy-mtime window)."""
    import os
    import time

    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    if age is not None:
        t = time.time() - age
        for p in root.rglob("*"):
            os.utime(p, (t, t))
    return root
