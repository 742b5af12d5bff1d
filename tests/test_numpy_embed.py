"""Question vectors without torch (longdoc.model.numpy_embed) equal the torch encoder's, and the query
path over an indexed tree never imports torch, transformers or bm25s."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from longdoc.model.files import default_model_path
from longdoc.model.numpy_embed import NumpyEmbedder, _erf

QUESTIONS = [
    "termination clause?",
    "?",
    "How does the parser turn a boolean flag from the environment into a value?",
    "naïve café — 東京の天気 🚀\u200b ﬁnance Ωmega \u0301e\u0000x \U0001F469\u200d\U0001F4BB",
    "  leading and trailing   spaces  \n\t",
    "ŁÓDŹ İstanbul straße ǅ ÅNGSTRÖM",
    # long ones: a few hundred tokens, still inside the 512 positions
    " ".join(["what is the governing law and the venue for disputes under this agreement"] * 39),
    "x" * 1500,
    "word " * 510,  # exactly 512 tokens with [CLS] and [SEP]: the last that fits the positions
]


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _check_agrees(folder: Path | str, questions):
    from longdoc.model import load_encoder

    fast = NumpyEmbedder.load(str(folder))
    assert fast is not None
    ref = load_encoder(str(folder)).embed_texts(questions).numpy()
    got = fast.embed_texts(questions)
    for q, v, r in zip(questions, got, ref):
        assert v is not None, q
        assert v.dtype == np.float32 and v.shape == r.shape
        assert _rel(v, r) < 1e-5, (q, _rel(v, r))


def test_erf_matches_math():
    import math

    x = np.linspace(-9, 9, 20001)
    assert np.abs(_erf(x) - np.array([math.erf(v) for v in x])).max() < 1e-13


def test_default_model_agrees_with_torch():
    fast = NumpyEmbedder.load(default_model_path())
    lengths = [len(e.ids) for e in fast.tokenizer.encode_batch(QUESTIONS)]
    assert max(lengths) == fast.limit == 512  # the long ones really are long
    _check_agrees(default_model_path(), QUESTIONS)


def test_tiny_model_agrees_with_torch(tiny_model_dir):
    _check_agrees(tiny_model_dir, QUESTIONS)


def test_bf16_and_prefixed_checkpoint_agrees(tiny_model_dir, tmp_path):
    """Weights stored as bfloat16 under a model-class prefix (``bert.``), as some checkpoints are."""
    import torch
    from safetensors.torch import load_file, save_file

    out = tmp_path / "bf16"
    shutil.copytree(tiny_model_dir, out)
    state = load_file(str(out / "model.safetensors"))
    save_file({"bert." + k: v.to(torch.bfloat16) for k, v in state.items()}, str(out / "model.safetensors"))
    _check_agrees(out, QUESTIONS[:4])


def test_too_long_and_unsupported_fall_back(tiny_model_dir, tmp_path):
    fast = NumpyEmbedder.load(str(tiny_model_dir))
    long_q = "word " * 600  # more tokens than the 512 positions
    assert fast.embed_texts([long_q, "short"])[0] is None
    lf = tmp_path / "longformer"
    shutil.copytree(tiny_model_dir, lf)
    cfg = json.loads((lf / "config.json").read_text())
    cfg["model_type"] = "longformer"  # trained with its windows: the torch path must run it
    (lf / "config.json").write_text(json.dumps(cfg))
    assert NumpyEmbedder.load(str(lf)) is None
    no_tok = tmp_path / "notok"
    shutil.copytree(tiny_model_dir, no_tok)
    (no_tok / "tokenizer.json").unlink()
    assert NumpyEmbedder.load(str(no_tok)) is None


def test_engine_question_vectors_mix_fast_and_long(tiny_model_dir):
    """Short questions take the numpy path, a too-long one the torch path; both as the encoder's."""
    from longdoc.model import load_encoder
    from longdoc.tasks.ask import Engine

    qs = ["short question", "word " * 600, "another one"]
    got = Engine(model=str(tiny_model_dir), use_cache=False).question_vectors(qs)
    ref = load_encoder(str(tiny_model_dir)).embed_texts(qs).numpy()
    for v, r in zip(got, ref):
        assert _rel(v, r) < 1e-5


def test_ask_on_indexed_tree_imports_no_torch(tiny_model_dir, tmp_path):
    """The real command, as a fresh process, on a tree indexed by `longdoc index`."""
    from longdoc.index import build

    root = tmp_path / "repo"
    root.mkdir()
    (root / "auth.py").write_text("def check_token(token):\n    \"\"\"Validate a bearer token.\"\"\"\n"
                                  "    return token.startswith('Bearer ')\n")
    (root / "notes.md").write_text("# Deploy\n\nRun the migrations before restarting the workers.\n")
    build(root, model=str(tiny_model_dir))
    env = dict(os.environ, LONGDOC_MODEL=str(tiny_model_dir))
    for q in ("how is a bearer token validated", "restart the workers"):  # new questions: no cache hit
        r = subprocess.run([sys.executable, "-X", "importtime", "-m", "longdoc", "ask", str(root), q, "--json"],
                           capture_output=True, text=True, env=env, timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        imported = {line.split("|")[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
        assert "numpy" in imported and "tokenizers" in imported  # the import log was read
        heavy = {m for m in imported if m.split(".")[0] in ("torch", "transformers", "bm25s")}
        assert not heavy, sorted(heavy)[:5]
        assert json.loads(r.stdout)[0]["results"]


def test_roberta_family_position_offset_agrees(tiny_model_dir, tmp_path):
    """RoBERTa-family checkpoints number positions from pad_token_id + 1; the MiniLM tokenizer is kept
    (the offset, not the vocabulary, is what differs)."""
    import torch
    from transformers import RobertaConfig, RobertaModel

    out = tmp_path / "tiny-roberta"
    torch.manual_seed(1)
    cfg = RobertaConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=514, pad_token_id=1, type_vocab_size=1,
                        layer_norm_eps=1e-5)
    RobertaModel(cfg, add_pooling_layer=False).save_pretrained(out, safe_serialization=True)
    shutil.copy(tiny_model_dir / "tokenizer.json", out / "tokenizer.json")
    fast = NumpyEmbedder.load(str(out))
    assert fast is not None and fast.offset == 2 and fast.limit == 512
    _check_agrees(out, QUESTIONS)
