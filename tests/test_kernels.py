"""The blocked reference against the dense float64 oracle (forward, LSE, gradients), on the CPU."""
from __future__ import annotations

import pytest
import torch

import math
import os

from longdoc.kernels import local_global_attention, local_global_attention_dense, local_global_attention_reference




def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| in float64; NaN anywhere (or a mismatched -inf pattern) gives inf."""
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    if torch.isnan(a).any() or torch.isnan(b).any():
        return math.inf
    if not torch.equal(torch.isinf(a), torch.isinf(b)) or not torch.equal(a[torch.isinf(a)], b[torch.isinf(b)]):
        return math.inf
    fin = torch.isfinite(b)
    a, b = a[fin], b[fin]
    den = b.norm().item()
    num = (a - b).norm().item()
    return num / den if den > 0 else num


def fresh_generator() -> tuple[torch.Generator, int]:
    """A generator with a fresh seed per call (reported on failure so a failure can be replayed)."""
    seed = int.from_bytes(os.urandom(4), "little")
    return torch.Generator().manual_seed(seed), seed


def _pad(B, N, spec):
    if spec is None:
        return None
    m = torch.zeros(B, N, dtype=torch.bool)
    for b, (lo, hi) in enumerate(spec):
        m[b, lo:hi] = True
    return m


# name: (B, H, N, D, window, dilation, global_idx rows or None, padding (lo, hi) per batch or None, global_qkv)
CASES = {
    "plain": (1, 2, 100, 16, 24, 1, None, None, False),
    "n_lt_w": (1, 1, 9, 16, 24, 1, None, None, False),
    "n_not_block_multiple": (2, 1, 77, 16, 20, 1, None, None, False),
    "dilation2": (1, 1, 150, 16, 24, 2, None, None, False),
    "dilation4_globals": (1, 2, 130, 16, 8, 4, [[0, 33, 129]], None, False),
    "globals_edges": (1, 1, 128, 16, 20, 1, [[0, 15, 16, 64, 127]], None, False),
    "globals_variable_count": (2, 1, 120, 16, 20, 1, [[0, 37, 119], [16, -1, -1]], None, False),
    "no_global_slots_used": (1, 1, 64, 16, 10, 1, [[-1, -1]], None, False),
    "padding_dilation3_globals": (2, 1, 120, 16, 20, 3, [[0, 37, 110], [16, -1, 2]], [(100, 120), (0, 5)], False),
    "all_masked_rows": (2, 1, 70, 16, 6, 1, [[3, -1], [5, -1]], [(20, 40), (0, 70)], False),
    "global_projections": (2, 1, 120, 16, 20, 1, [[0, 37, 110], [16, -1, 2]], [(100, 120), (0, 5)], True),
    "head_dim32_dilation2": (1, 1, 90, 32, 12, 2, [[5, 60]], None, True),
    # d = 32 with interior blocks: the Triton forward's one-loop form (edges masked behind a branch)
    "head_dim32_interior_padding": (1, 2, 300, 32, 24, 1, [[0, 150, 299]], [(280, 300)], False),
    # 34 globals: a 64-wide tile, past the Triton kernels' per-block partials, so the separate passes
    "many_globals_padding": (1, 1, 140, 16, 12, 1, [list(range(0, 136, 4))], [(130, 140)], False),
}


def make_inputs(case, dtype, gen, requires_grad=True, device="cpu"):
    B, H, N, D, w, dil, gidx, pad, gq = CASES[case]

    def r(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype).requires_grad_(requires_grad)

    q, k, v = r(B, H, N, D), r(B, H, N, D), r(B, H, N, D)
    global_idx = None if gidx is None else torch.tensor(gidx, dtype=torch.long, device=device)
    kpm = _pad(B, N, pad)
    kpm = None if kpm is None else kpm.to(device)
    gqkv = None
    if gq:
        G = len(gidx[0])
        gqkv = (r(B, H, G, D), r(B, H, N, D), r(B, H, N, D))
    kw = dict(window=w, dilation=dil, global_idx=global_idx, key_padding_mask=kpm, global_qkv=gqkv)
    return (q, k, v), kw



def _grads(out, inputs, dout):
    return torch.autograd.grad(out, inputs, dout, allow_unused=True)


@pytest.mark.parametrize("case", sorted(CASES))
def test_reference_matches_dense_oracle(case):
    gen, seed = fresh_generator()
    (q, k, v), kw = make_inputs(case, torch.float64, gen)
    inputs = [q, k, v] + (list(kw["global_qkv"]) if kw["global_qkv"] else [])
    # a small block so that several blocks and partial last blocks are exercised
    out, lse = local_global_attention_reference(q, k, v, **kw, return_lse=True, block=16)
    ref_out, ref_lse = local_global_attention_dense(q, k, v, **kw)
    dout = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    g = _grads(out, inputs, dout)
    g_ref = _grads(ref_out, inputs, dout)
    msg = f"case {case}, seed {seed}"
    assert rel_err(out, ref_out) < 1e-12, msg
    assert rel_err(lse, ref_lse) < 1e-12, msg
    for name, a, b in zip(["dq", "dk", "dv", "dq_g", "dk_g", "dv_g"], g, g_ref):
        assert rel_err(a, b) < 1e-10, f"{name}: {msg}"


def test_all_masked_rows_are_zero_with_lse_minus_inf():
    gen, _ = fresh_generator()
    (q, k, v), kw = make_inputs("all_masked_rows", torch.float32, gen, requires_grad=False)
    out, lse = local_global_attention_reference(q, k, v, **kw, return_lse=True)
    assert not torch.isnan(out).any()
    assert torch.all(out[1] == 0) and torch.all(torch.isneginf(lse[1]))  # batch 1 is all padding


def test_fp32_reference_close_to_oracle():
    gen, seed = fresh_generator()
    (q, k, v), kw = make_inputs("padding_dilation3_globals", torch.float32, gen, requires_grad=False)
    out, lse = local_global_attention_reference(q, k, v, **kw, return_lse=True)
    ref_out, ref_lse = local_global_attention_dense(q, k, v, **kw)
    assert rel_err(out, ref_out) < 1e-5, seed
    assert rel_err(lse, ref_lse) < 1e-5, seed


@pytest.mark.parametrize("case", sorted(CASES) + ["long_window"])
def test_fused_cpu_inference_path_matches_dense_oracle(case):
    """fp32 without autograd takes the fused flash path (strided windows, globals merged by LSE)."""
    gen, seed = fresh_generator()
    if case == "long_window":  # several 64-query blocks, a window wider than a block, a ragged end
        B, H, N, D, w = 2, 2, 700, 32, 100
        q, k, v = (torch.randn(B, H, N, D, generator=gen) for _ in range(3))
        kw = dict(window=w, dilation=1, global_idx=torch.tensor([[0, 350, 699], [64, -1, 1]]),
                  key_padding_mask=_pad(B, N, [(650, 700), (0, 3)]), global_qkv=None)
    else:
        (q, k, v), kw = make_inputs(case, torch.float32, gen, requires_grad=False)
    with torch.inference_mode():
        out, lse = local_global_attention_reference(q, k, v, **kw, return_lse=True)
    ref_out, ref_lse = local_global_attention_dense(q, k, v, **kw)
    assert rel_err(out, ref_out) < 1e-5, f"case {case}, seed {seed}"  # NaN or a wrong -inf gives inf
    assert rel_err(lse, ref_lse) < 1e-5, f"case {case}, seed {seed}"


def test_dispatch_cpu_uses_reference():
    gen, _ = fresh_generator()
    (q, k, v), kw = make_inputs("globals_edges", torch.float32, gen, requires_grad=False)
    a = local_global_attention(q, k, v, **kw)
    b = local_global_attention_reference(q, k, v, **kw)
    assert torch.equal(a, b)


@pytest.mark.parametrize("dilation", [1, 3])
def test_window_past_the_sequence_is_full_reach_without_the_memory(dilation):
    """A radius of 10^9 (a user's --window) means every key in reach: the same output as the dense
    oracle, computed with the window clamped to the sequence (it used to size band buffers by w)."""
    from longdoc.kernels import band_with_tile

    N = 37
    q, k, v = (torch.randn(1, 2, N, 8, dtype=torch.float64) for _ in range(3))
    gidx = torch.tensor([[0, 20]])
    out = local_global_attention(q, k, v, window=10**9, dilation=dilation, global_idx=gidx)
    ref, _ = local_global_attention_dense(q, k, v, window=N, dilation=dilation, global_idx=gidx)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    tk, tv = torch.randn(1, 2, 3, 8, dtype=torch.float64), torch.randn(1, 2, 3, 8, dtype=torch.float64)
    valid = torch.ones(1, 3, dtype=torch.bool)
    huge = band_with_tile(q, k, v, tk, tv, valid, window=10**9, dilation=dilation)
    torch.testing.assert_close(huge, band_with_tile(q, k, v, tk, tv, valid, window=N, dilation=dilation),
                               rtol=1e-10, atol=1e-10)


def test_band_is_exactly_radius_w():
    """A single key moved just inside / outside the band changes / does not change the output."""
    N, w = 40, 5
    q = torch.zeros(1, 1, N, 16, dtype=torch.float64)
    k = torch.randn(1, 1, N, 16, dtype=torch.float64)
    v = torch.randn(1, 1, N, 16, dtype=torch.float64)
    base = local_global_attention_reference(q, k, v, window=w)
    for j, inside in ((20 + w, True), (20 + w + 1, False), (20 - w, True), (20 - w - 1, False)):
        v2 = v.clone()
        v2[0, 0, j] += 1.0
        changed = not torch.allclose(local_global_attention_reference(q, k, v2, window=w)[0, 0, 20], base[0, 0, 20])
        assert changed == inside, j


def test_bench_dense_blocks_hold_every_band_key():
    """The benchmark's dense-block ceiling (kernels/bench.py) must give each query block every key of
    its rows' bands: masked back to the band, the blocks reproduce the reference's output."""
    from longdoc.kernels.bench import dense_blocks

    H, n, d, w, bm = 2, 512, 8, 64, 128
    q, k, v = (torch.randn(1, H, n, d, dtype=torch.float64) for _ in range(3))
    qb, kb, vb = dense_blocks(q, k, v, w, bm)
    assert qb.shape == (n // bm, H, bm, d) and kb.shape == vb.shape == (n // bm, H, bm + 2 * w, d)
    qpos = torch.arange(n).view(n // bm, 1, bm, 1)
    kpos = (torch.arange(n // bm) * bm - w).view(-1, 1, 1, 1) + torch.arange(bm + 2 * w).view(1, 1, 1, -1)
    keep = ((qpos - kpos).abs() <= w) & (kpos >= 0) & (kpos < n)
    s = (qb @ kb.transpose(-1, -2)) / math.sqrt(d)
    out = torch.softmax(s.masked_fill(~keep, -math.inf), -1) @ vb  # (n/bm, H, bm, d)
    ref = local_global_attention_reference(q, k, v, window=w)
    torch.testing.assert_close(out.transpose(0, 1).reshape(1, H, n, d), ref, rtol=1e-10, atol=1e-10)


def test_bench_executed_flops_of_the_hopper_kernel_count_each_consumers_blocks():
    """bench.py's executed FLOPs for the sm_90 kernel: every 64-row consumer walks exactly the 64-key
    blocks that hold a key of its rows' bands; counted here block by block."""
    from longdoc.kernels import hopper_attention as ha
    from longdoc.kernels.bench import executed_flops

    for n, d, w in [(1000, 64, 100), (70_000, 128, 256), (300, 64, 1000)]:
        bn, _, num_c = ha.TILES[d][:3]
        rows = num_c * ha.SUB_M
        blocks = 0
        for m0 in range(0, n, rows):
            key0 = m0 - w
            n_blk = -(-(rows + 2 * w) // bn)
            for c in range(num_c):
                lo, hi = m0 + c * ha.SUB_M - w, m0 + c * ha.SUB_M + ha.SUB_M - 1 + w
                blocks += sum(1 for t in range(n_blk) if key0 + t * bn <= hi and key0 + t * bn + bn - 1 >= lo)
        expect = 4 * d * 1 * ha.SUB_M * blocks * bn
        assert executed_flops(n, d, w, 0, H=1, hopper=True) == expect
        if w < n:  # 576 keys per row where the Triton tiles walk 640 (w = 256)
            assert executed_flops(n, d, w, 0, H=1, hopper=True) < executed_flops(n, d, w, 0, H=1)
