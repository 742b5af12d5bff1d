"""The encoder equals transformers' LongformerModel / BertModel / RobertaModel (fp32, random tiny
configs built here, no download), loaded through longdoc's own safetensors loader."""
import os

import pytest
import torch

transformers = pytest.importorskip("transformers")

from longdoc.errors import LongdocError
from longdoc.model.load import load_net


def rel_err(got, want):
    return float((got - want).abs().max() / want.abs().max())


def _save(model, path):
    model.save_pretrained(path, safe_serialization=True)
    assert os.path.exists(os.path.join(path, "model.safetensors"))
    return str(path)


@pytest.fixture(scope="module")
def longformer(tmp_path_factory):
    torch.manual_seed(0)
    cfg = transformers.LongformerConfig(
        vocab_size=97, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=202, attention_window=[8, 4, 8], pad_token_id=1, type_vocab_size=1,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    hf = transformers.LongformerModel(cfg, add_pooling_layer=False).eval()
    with torch.no_grad():  # non-trivial LayerNorms and biases so a wrong mapping cannot hide
        for name, p in hf.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    path = _save(hf, tmp_path_factory.mktemp("longformer"))
    return hf, load_net(path, device="cpu")


def _hf_positions(ids, pad):  # RoBERTa's positions: pad + 1 + index among non-pad tokens
    mask = ids.ne(pad).long()
    return torch.cumsum(mask, 1) * mask + pad


@pytest.mark.parametrize("n", [37, 24, 5])  # not a multiple of any window; a multiple; shorter than one
@pytest.mark.parametrize("with_global", [False, True])
def test_longformer_parity(longformer, n, with_global):
    hf, net = longformer
    assert net.cfg.windows == (4, 2, 4)  # HF widths 8, 4, 8 -> radii
    torch.manual_seed(n)
    ids = torch.randint(3, 97, (1, n))
    gm = torch.zeros(1, n, dtype=torch.long)
    if with_global:
        gm[0, [0, n // 2, n - 1]] = 1
    with torch.no_grad():
        want = hf(ids, attention_mask=torch.ones_like(ids), global_attention_mask=gm).last_hidden_state
    got = net(ids, _hf_positions(ids, 1), global_mask=gm.bool())
    assert rel_err(got, want) < 1e-5


def test_longformer_parity_padded_batch(longformer):
    hf, net = longformer
    torch.manual_seed(1)
    lens = [41, 29, 12]
    N = max(lens)
    ids = torch.full((3, N), 1)
    att = torch.zeros(3, N, dtype=torch.long)
    gm = torch.zeros(3, N, dtype=torch.long)
    for b, L in enumerate(lens):
        ids[b, :L] = torch.randint(3, 97, (L,))
        att[b, :L] = 1
    gm[0, [0, 7, 30]] = 1  # different global counts per row, one row without any
    gm[1, [3]] = 1
    with torch.no_grad():
        want = hf(ids, attention_mask=att, global_attention_mask=gm).last_hidden_state
    got = net(ids, _hf_positions(ids, 1), global_mask=gm.bool(), key_padding_mask=~att.bool())
    for b, L in enumerate(lens):
        assert rel_err(got[b, :L], want[b, :L]) < 1e-5


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    torch.manual_seed(0)
    cfg = transformers.BertConfig(
        vocab_size=101, hidden_size=48, num_hidden_layers=2, num_attention_heads=3, intermediate_size=96,
        max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    hf = transformers.BertModel(cfg, add_pooling_layer=False).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "LayerNorm" in name or name.endswith("bias") or "token_type" in name:
                p.add_(torch.randn_like(p) * 0.1)
    path = _save(hf, tmp_path_factory.mktemp("bert"))
    return hf, path


def test_bert_parity_within_one_window(bert):
    hf, path = bert
    net = load_net(path, device="cpu", window=24)
    assert net.cfg.position_offset == 0 and not net.cfg.separate_global_projections
    torch.manual_seed(2)
    lens = [25, 17]  # radius 24 covers a 25-token input: full attention
    N = max(lens)
    ids = torch.zeros(2, N, dtype=torch.long)
    att = torch.zeros(2, N, dtype=torch.long)
    for b, L in enumerate(lens):
        ids[b, :L] = torch.randint(1, 101, (L,))
        att[b, :L] = 1
    with torch.no_grad():
        want = hf(ids, attention_mask=att).last_hidden_state
    got = net(ids, torch.arange(N).expand(2, N), key_padding_mask=~att.bool())
    for b, L in enumerate(lens):
        assert rel_err(got[b, :L], want[b, :L]) < 1e-5


def test_bert_window_changes_long_inputs(bert):
    """Beyond the window the band is not full attention: the outputs must differ (the test can fail)."""
    hf, path = bert
    net = load_net(path, device="cpu", window=4)
    ids = torch.randint(1, 101, (1, 30))
    with torch.no_grad():
        want = hf(ids).last_hidden_state
    got = net(ids, torch.arange(30)[None])
    assert rel_err(got[:, :4], want[:, :4]) > 1e-3


def test_roberta_parity_with_position_offset(tmp_path):
    torch.manual_seed(3)
    cfg = transformers.RobertaConfig(
        vocab_size=90, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=40, pad_token_id=1, type_vocab_size=1,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    hf = transformers.RobertaModel(cfg, add_pooling_layer=False).eval()
    net = load_net(_save(hf, tmp_path), device="cpu", window=64)
    assert net.cfg.position_offset == 2 and net.cfg.usable_positions == 38
    ids = torch.randint(3, 90, (1, 38))
    with torch.no_grad():
        want = hf(ids).last_hidden_state
    got = net(ids, torch.arange(38)[None] + 2)
    assert rel_err(got, want) < 1e-5


def test_pickle_checkpoints_are_refused(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04")
    with pytest.raises(LongdocError, match="pickle checkpoints are never loaded"):
        load_net(str(tmp_path))


def test_unsupported_model_type(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "gpt2"}')
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(LongdocError, match="not supported"):
        load_net(str(tmp_path))


def test_incomplete_config(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "bert", "hidden_size": 8}')
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(LongdocError, match="config.json lacks vocab_size"):
        load_net(str(tmp_path))
