"""The encoder's CPU inference path (Layer.forward_inplace: shared buffers, row chunks, x overwritten)
gives the plain forward's output; the plain forward is the one autograd runs."""
from __future__ import annotations

import pytest
import torch

from longdoc.kernels import local_global_attention_reference
from longdoc.model.encoder import EncoderConfig, Layer, build

# name: config overrides. ffn_chunk 7 leaves a ragged last chunk; windows differ per layer.
CONFIGS = {
    "bert": dict(),
    "longformer_globals": dict(separate_global_projections=True, layer_norm_eps=1e-5, hidden_act="gelu_new"),
    "relu_dilation": dict(hidden_act="relu", dilation=(1, 2)),
    "strided_variant": dict(attention="strided"),
}


def _model(dtype=torch.float32, **over):
    torch.manual_seed(0)
    cfg = EncoderConfig(vocab_size=100, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
                        max_positions=64, window=(3, 5), ffn_chunk=7, **over)
    net = build(cfg).to(dtype)
    with torch.no_grad():  # non-trivial LayerNorms and biases
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return net


def _inputs(B=2, N=45):
    ids = torch.randint(1, 100, (B, N))
    pos = torch.arange(N)[None].expand(B, N) % 64
    gm = torch.zeros(B, N, dtype=torch.bool)
    gm[0, [0, 20, 44]] = True
    gm[1, 3] = True
    pad = torch.zeros(B, N, dtype=torch.bool)
    pad[1, 38:] = True
    return ids, pos, gm, pad


def _rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_inplace_inference_matches_plain_forward(name, monkeypatch):
    calls = []
    inplace = Layer.forward_inplace
    monkeypatch.setattr(Layer, "forward_inplace", lambda self, *a: calls.append(1) or inplace(self, *a))
    net = _model(**CONFIGS[name])
    ids, pos, gm, pad = _inputs()
    for kw in (dict(global_mask=gm, key_padding_mask=pad), dict(), dict(window=50)):
        with torch.enable_grad():  # autograd on: the plain per-layer forward
            ref = net(ids, pos, **kw)
        assert ref.requires_grad
        with torch.inference_mode():
            got = net(ids, pos, **kw)
        assert _rel(got, ref) < 1e-5, (name, list(kw))
    assert len(calls) == 3 * 2  # the inference calls took the in-place path, every layer


def test_inplace_inference_fp64_is_exact():
    net = _model(torch.float64)
    ids, pos, gm, pad = _inputs()
    with torch.enable_grad():
        ref = net(ids, pos, global_mask=gm, key_padding_mask=pad)
    with torch.no_grad():
        got = net(ids, pos, global_mask=gm, key_padding_mask=pad)
    assert _rel(got, ref) < 1e-12


@pytest.mark.parametrize("dtype,dilation", [(torch.float32, 1), (torch.float32, 2), (torch.float64, 1)])
def test_attention_out_buffer(dtype, dilation):
    """`out=` (B, N, H, D): written in place by the fused CPU band, copied into by the other paths."""
    g = torch.Generator().manual_seed(0)
    B, H, N, D = 2, 3, 150, 16
    q, k, v = (torch.randn(B, H, N, D, generator=g, dtype=dtype) for _ in range(3))
    kw = dict(window=20, dilation=dilation, global_idx=torch.tensor([[0, 77], [5, -1]]))
    with torch.inference_mode():
        ref, ref_lse = local_global_attention_reference(q, k, v, **kw, return_lse=True)
        buf = torch.full((B, N, H, D), float("nan"), dtype=dtype)
        out, lse = local_global_attention_reference(q, k, v, **kw, return_lse=True, out=buf)
    assert out.data_ptr() == buf.data_ptr() and out.shape == (B, H, N, D)
    assert torch.equal(out, ref) and torch.equal(lse, ref_lse)


@pytest.mark.parametrize("group_rows", [32, 96])
def test_fused_band_in_several_groups(group_rows, monkeypatch):
    """The fused band's flash calls (and global-key merges) over several groups of blocks, with the
    padded first and last ranges, globals, padding and a ragged end: the dense oracle's result."""
    from longdoc.kernels import local_global_attention_dense
    from longdoc.kernels import reference

    monkeypatch.setattr(reference, "_GROUP_ROWS", group_rows)
    g = torch.Generator().manual_seed(1)
    B, H, N, D = 2, 2, 301, 16
    q, k, v = (torch.randn(B, H, N, D, generator=g) for _ in range(3))
    pad = torch.zeros(B, N, dtype=torch.bool)
    pad[1, 280:] = True
    kw = dict(window=20, global_idx=torch.tensor([[0, 150, 300], [7, -1, -1]]), key_padding_mask=pad)
    with torch.inference_mode():
        out, lse = local_global_attention_reference(q, k, v, **kw, return_lse=True)
    ref, ref_lse = local_global_attention_dense(q, k, v, **kw)
    assert _rel(out, ref) < 1e-5 and _rel(lse[torch.isfinite(lse)], ref_lse[torch.isfinite(ref_lse)]) < 1e-5
