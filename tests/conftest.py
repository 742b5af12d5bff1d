"""Shared fixtures: an isolated LONGDOC_HOME, and a tiny random BERT model folder for fast CLI tests."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    # Never touch the user's cache; never reach a hub.
    monkeypatch.setenv("LONGDOC_HOME", str(tmp_path / "longdoc-home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.delenv("LONGDOC_MODEL", raising=False)
    monkeypatch.delenv("NO_COLOR", raising=False)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide BERT with random weights (seed 0) and the real MiniLM tokenizer, saved as a
    local Hugging Face folder: exercises the real loading and encoding paths in a fraction of a second."""
    import torch
    from transformers import BertConfig, BertModel

    from longdoc.model.files import default_model_path

    out = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=512)
    BertModel(cfg).save_pretrained(out, safe_serialization=True)
    src = Path(default_model_path())
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        if (src / name).exists():
            shutil.copy(src / name, out / name)
    return out


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the checkout (present in CI); tests needing it skip without it."""
    d = SHARED / "data"
    if not d.is_dir():
        pytest.skip("../shared/data is not beside this checkout")
    return d
