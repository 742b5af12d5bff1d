"""The warp-specialised Hopper forward kernel (kernels/hopper_attention.py).

CI (no GPU): the kernel compiles for sm_90 with the installed Triton, and ptxas neither spills beyond
a few bytes nor serialises its wgmmas (the failure that cost 15% while it was written: the overlap it
is built on is then gone). On an H100 / H200 (marked gpu): the dispatched forward, and its backward,
against the reference at the edges (fewer rows than one consumer, sequence ends inside a block,
global tokens on block edges, packed head views, w = 0 and w > n, fp16, both head dims); the same
calls with the kernel switched off must agree too.
"""
from __future__ import annotations

import math
import os
import re
import subprocess

import pytest
import torch

from longdoc.kernels import hopper_attention as ha
from longdoc.kernels import local_global_attention
from longdoc.kernels.reference import local_global_attention_reference

needs_gluon = pytest.mark.skipif(not ha.HAVE_GLUON, reason="this Triton has no Gluon Hopper support")


def _ptxas():
    import triton

    path = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    return path if os.path.exists(path) else None


@needs_gluon
@pytest.mark.skipif(_ptxas() is None, reason="Triton ships no ptxas here")
@pytest.mark.parametrize("head_dim,g_pad", [(64, 16), (64, 0), (128, 64)])
def test_compiles_for_sm90_without_serialised_wgmma(head_dim, g_pad, tmp_path):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource

    bn, stages, num_c, maxnreg, cregs = ha.TILES[head_dim]

    def desc(rows):
        return f"tensordesc<bf16[1, 1, {rows}, {head_dim}],{ha._layout(rows, head_dim, torch.bfloat16, 4)!r}>"

    sig = dict(q_desc=desc(ha.SUB_M), k_desc=desc(bn), v_desc=desc(bn), o_desc=desc(ha.SUB_M), KG="*bf16",
               VG="*bf16", GPOS="*i32", Lse="*fp32", stride_gb="i64", stride_gh="i64", stride_gm="i64",
               stride_pb="i64", stride_lb="i64", stride_lh="i64", H="i32", N="i32", window="i32", qk_scale="fp32",
               HEAD_DIM="constexpr", BLOCK_N="constexpr", G_PAD="constexpr", G_LAYOUT="constexpr",
               STAGES="constexpr", NUM_C="constexpr", CONS_REGS="constexpr", num_warps="constexpr")
    const = dict(HEAD_DIM=head_dim, BLOCK_N=bn, G_PAD=g_pad, STAGES=stages, NUM_C=num_c, CONS_REGS=cregs,
                 G_LAYOUT=ha._layout(max(g_pad, 16), head_dim, torch.bfloat16, 2), num_warps=4)
    kernel = triton.compile(GluonASTSource(ha._ws_band_fwd_kernel, sig, const), target=GPUTarget("cuda", 90, 32),
                            options=dict(num_warps=4, maxnreg=maxnreg))
    assert kernel.asm["ptx"].count("wgmma.mma_async") >= 3 and "cp.async.bulk.tensor" in kernel.asm["ptx"]
    assert kernel.metadata.shared <= ha._SMEM_LIMIT
    ptx = tmp_path / "k.ptx"
    ptx.write_text(kernel.asm["ptx"])
    res = subprocess.run([_ptxas(), "-arch=sm_90a", "-v", str(ptx), "-o", str(tmp_path / "k.cubin")],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "serialized" not in res.stderr, res.stderr  # ptxas warnings C7510-C7515
    spills = [int(x) for x in re.findall(r"(\d+) bytes spill (?:stores|loads)", res.stderr)]
    assert spills and max(spills) <= 32, res.stderr


@needs_gluon
@pytest.mark.skipif(_ptxas() is None, reason="Triton ships no ptxas here")
@pytest.mark.parametrize("head_dim,g_pad,part", [(64, 16, True), (64, 0, False), (128, 16, True), (128, 64, False)])
def test_dkdv_kernel_compiles_for_sm90_without_serialised_wgmma(head_dim, g_pad, part, tmp_path):
    """The backward's dK/dV kernel: its four band wgmmas, the global rows' (and their dQ partial's) and
    the TMA copies, with no serialised wgmma and no more than 32 bytes of spills at the shipped tiles."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource

    bm, stages, num_c, maxnreg, cregs = ha.TILES_BWD[head_dim]
    gp = max(g_pad, 16)

    def desc(rows):
        return f"tensordesc<bf16[1, 1, {rows}, {head_dim}],{ha._layout(rows, head_dim, torch.bfloat16, 4)!r}>"

    sig = dict(k_desc=desc(ha.SUB_M), v_desc=desc(ha.SUB_M), q_desc=desc(bm), do_desc=desc(bm),
               dk_desc=desc(ha.SUB_M), dv_desc=desc(ha.SUB_M), LSE2="*fp32", Delta="*fp32", QG="*bf16", DOG="*bf16",
               LSEG2="*fp32", DeltaG="*fp32", PDQ="*fp32", H="i32", N="i32", window="i32", qk_scale="fp32",
               sm_scale="fp32", HEAD_DIM="constexpr", BLOCK_M="constexpr", G_PAD="constexpr", G_LAYOUT="constexpr",
               DS_LAYOUT="constexpr", STAGES="constexpr", NUM_C="constexpr", CONS_REGS="constexpr",
               PART_DQ="constexpr", num_warps="constexpr")
    const = dict(HEAD_DIM=head_dim, BLOCK_M=bm, G_PAD=g_pad, G_LAYOUT=ha._layout(gp, head_dim, torch.bfloat16, 2),
                 DS_LAYOUT=ha._layout(ha.SUB_M, gp, torch.bfloat16, 2), STAGES=stages, NUM_C=num_c,
                 CONS_REGS=cregs, PART_DQ=part, num_warps=4)
    kernel = triton.compile(GluonASTSource(ha._ws_band_dkdv_kernel, sig, const), target=GPUTarget("cuda", 90, 32),
                            options=dict(num_warps=4, maxnreg=maxnreg))
    assert kernel.asm["ptx"].count("wgmma.mma_async") >= 4 + (g_pad > 0) * 4 + part
    assert "cp.async.bulk.tensor" in kernel.asm["ptx"] and kernel.metadata.shared <= ha._SMEM_LIMIT
    ptx = tmp_path / "k.ptx"
    ptx.write_text(kernel.asm["ptx"])
    res = subprocess.run([_ptxas(), "-arch=sm_90a", "-v", str(ptx), "-o", str(tmp_path / "k.cubin")],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "serialized" not in res.stderr, res.stderr
    spills = [int(x) for x in re.findall(r"(\d+) bytes spill (?:stores|loads)", res.stderr)]
    assert spills and max(spills) <= 32, res.stderr


def test_not_served_off_sm90():
    q = torch.zeros(1, 1, 256, 64, dtype=torch.bfloat16)  # a CPU tensor: never the Gluon kernels
    assert not ha.supported(q, q, q, q, 1, False, 16)
    assert not ha.supported_bwd(q, q, q, q, q, q, 1, False, 16)


on_hopper = pytest.mark.skipif(not (torch.cuda.is_available() and ha.HAVE_GLUON
                                    and torch.cuda.get_device_capability() == (9, 0)),
                               reason="needs an sm_90 GPU and Gluon")

# B, H, N, D, w, G, dtype, packed, grads. Global tokens take the Hopper kernel's path only past 64 row
# blocks per head (8192 rows at these head dims); shorter inputs fold their global rows into the
# Triton kernel.
CASES = [
    (1, 1, 65, 64, 1, 0, torch.bfloat16, False, True),  # fewer rows than two consumers, a block past n
    (1, 2, 300, 64, 256, 0, torch.bfloat16, False, True),  # n < 2w + 1
    (1, 2, 777, 128, 64, 0, torch.float16, True, False),
    (2, 3, 9_000, 64, 256, 16, torch.bfloat16, False, True),  # globals on block edges and both ends
    (1, 4, 12_345, 64, 512, 40, torch.bfloat16, True, False),  # a 64-key tile, packed views
    (1, 2, 10_000, 128, 300, 2, torch.bfloat16, True, True),
    (2, 2, 9_001, 64, 0, 5, torch.bfloat16, False, False),  # w = 0: each row sees itself and the globals
    (1, 2, 8_200, 64, 64, 3, torch.float16, True, False),
    (1, 2, 16_384, 128, 100_000, 16, torch.bfloat16, False, False),  # w > n: every key in the band
]
TOL = {torch.bfloat16: (1.5e-2, 1e-3, 2.5e-2), torch.float16: (5e-3, 1e-3, 1e-2)}


def _rel(a, b):
    a, b = a.detach().double(), b.detach().double()
    if torch.isnan(a).any() or not torch.equal(torch.isfinite(a), torch.isfinite(b)):
        return math.inf
    fin = torch.isfinite(b)
    return ((a[fin] - b[fin]).norm() / b[fin].norm().clamp_min(1e-30)).item()


def _case_inputs(B, H, N, D, G, dtype, packed):
    gen = torch.Generator(device="cuda").manual_seed(int.from_bytes(os.urandom(4), "little"))
    if packed:  # (B, N, 3, H, D), as the encoder's projection leaves them
        qkv = torch.randn(B, N, 3, H, D, device="cuda", generator=gen).to(dtype)
        q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))
    else:
        q, k, v = (torch.randn(B, H, N, D, device="cuda", generator=gen).to(dtype) for _ in range(3))
    gidx = None
    if G:
        edges = [0, N - 1, 63, 64, 127, 128, 255, 256, N // 2]
        rest = torch.randperm(N, device="cuda", generator=gen).tolist()
        picked = list(dict.fromkeys(edges + rest))[:G]
        gidx = torch.tensor(sorted(picked), device="cuda")[None].repeat(B, 1)
    return q, k, v, gidx


@pytest.mark.gpu
@on_hopper
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"n{c[2]}-d{c[3]}-w{c[4]}-G{c[5]}-{str(c[6])[6:]}")
def test_hopper_forward_matches_reference(case, monkeypatch):
    B, H, N, D, w, G, dtype, packed, grads = case
    q, k, v, gidx = _case_inputs(B, H, N, D, G, dtype, packed)
    g_pad = max(16, 1 << (G - 1).bit_length()) if G else 0
    served = []
    real = ha.band_forward
    monkeypatch.setattr(ha, "band_forward", lambda *a, **kw: served.append(1) or real(*a, **kw))
    ins = [t.detach().requires_grad_(grads) for t in (q, k, v)]
    out, lse = local_global_attention(*ins, window=w, global_idx=gidx, return_lse=True)
    assert served, "the Hopper kernel did not serve this call"
    assert ha.supported(q, k, v, out, 1, False, g_pad)
    ref32 = [t.detach().float().requires_grad_(grads) for t in (q, k, v)]
    r_out, r_lse = local_global_attention_reference(*ref32, window=w, global_idx=gidx, return_lse=True)
    t_out, t_lse, t_grad = TOL[dtype]
    assert _rel(out, r_out) < t_out and _rel(lse, r_lse) < t_lse
    with torch.no_grad():  # the Triton kernel on the same call agrees as well
        monkeypatch.setattr(ha, "ENABLED", False)
        t_o, t_l = local_global_attention(q, k, v, window=w, global_idx=gidx, return_lse=True)
        monkeypatch.setattr(ha, "ENABLED", True)
    assert _rel(out, t_o) < t_out and _rel(lse, t_l) < t_lse
    if grads:  # the backward reads the forward's LSE
        dout = torch.randn_like(out)
        g = torch.autograd.grad(out, ins, dout)
        g_ref = torch.autograd.grad(r_out, ref32, dout.float())
        for name, a, b in zip(("dq", "dk", "dv"), g, g_ref):
            assert _rel(a, b) < t_grad, name


# The backward's dK/dV band pass on the warp-specialised kernel. B, H, N, D, w, G, dtype, packed,
# separate global projections. The global rows' own dQ comes as per-64-key partials from this kernel
# up to 256k tokens with a tile of at most 16 (G <= 16), otherwise from the separate pass.
BWD_CASES = [
    (1, 1, 65, 64, 1, 0, torch.bfloat16, False, False),  # one program, keys past n
    (1, 2, 300, 64, 256, 0, torch.bfloat16, False, False),  # n < 2w + 1
    (2, 3, 9_000, 64, 256, 16, torch.bfloat16, False, False),  # globals on block edges and both ends
    (1, 4, 12_345, 64, 512, 40, torch.bfloat16, True, False),  # a 64-row global tile, packed views
    (1, 2, 10_000, 128, 300, 2, torch.bfloat16, True, False),
    (2, 2, 9_001, 64, 0, 5, torch.float16, False, False),  # w = 0
    (1, 2, 16_384, 128, 100_000, 16, torch.bfloat16, False, False),  # w > n
    (2, 2, 5_000, 64, 256, 7, torch.bfloat16, False, True),  # separate global projections
]


@pytest.mark.gpu
@on_hopper
@pytest.mark.parametrize("case", BWD_CASES, ids=lambda c: f"n{c[2]}-d{c[3]}-w{c[4]}-G{c[5]}-{str(c[6])[6:]}"
                         + ("-proj" if c[8] else ""))
def test_hopper_dkdv_matches_reference(case, monkeypatch):
    B, H, N, D, w, G, dtype, packed, proj = case
    q, k, v, gidx = _case_inputs(B, H, N, D, G, dtype, packed)
    gen = torch.Generator(device="cuda").manual_seed(int.from_bytes(os.urandom(4), "little"))
    gqkv = tuple(torch.randn(*s, device="cuda", generator=gen).to(dtype)
                 for s in ((B, H, G, D), (B, H, N, D), (B, H, N, D))) if proj else None
    ins = [t.detach().requires_grad_(True) for t in (q, k, v) + (gqkv or ())]
    kw = dict(window=w, global_idx=gidx)
    served = []
    real = ha.band_dkdv
    monkeypatch.setattr(ha, "band_dkdv", lambda *a, **k_: served.append(1) or real(*a, **k_))
    out = local_global_attention(*ins[:3], **kw, global_qkv=tuple(ins[3:]) or None)
    dout = torch.randn_like(out)
    g = torch.autograd.grad(out, ins, dout)
    assert served, "the Hopper dK/dV kernel did not serve this call"
    again = torch.autograd.grad(local_global_attention(*ins[:3], **kw, global_qkv=tuple(ins[3:]) or None), ins, dout)
    assert all(torch.equal(a, b) for a, b in zip(g, again)), "backward is not deterministic"
    ref32 = [t.detach().float().requires_grad_(True) for t in ins]
    r_out = local_global_attention_reference(*ref32[:3], **kw, global_qkv=tuple(ref32[3:]) or None)
    g_ref = torch.autograd.grad(r_out, ref32, dout.float())
    monkeypatch.setattr(ha, "ENABLED_BWD", False)  # the Triton dK/dV kernel on the same call agrees as well
    g_tri = torch.autograd.grad(local_global_attention(*ins[:3], **kw, global_qkv=tuple(ins[3:]) or None), ins, dout)
    t_grad = TOL[dtype][2]
    for name, a, b, c in zip(("dq", "dk", "dv", "dq_g", "dk_g", "dv_g"), g, g_ref, g_tri):
        assert _rel(a, b) < t_grad and _rel(a, c) < t_grad, name
