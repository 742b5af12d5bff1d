"""Sliding-window + global attention in Triton, forward and backward.

Semantics are those of ``reference.py`` (radius ``w``, 2w+1 band keys, Longformer dilation, global
tokens seen through one compact tile, global rows over the whole sequence, padded keys, fully masked
rows -> 0 with log-sum-exp -inf). This file reads top to bottom:

1. device helpers (the band loop of the forward pass);
2. the ``@triton.jit`` kernels: forward band, forward global rows (split over the sequence) and their
   log-sum-exp merge; backward global-row prep, dK/dV band, dQ band (which runs first and makes every
   row's delta and log2 LSE), global-key tile, global rows, and the fixed-order reduction of per-chunk
   partials;
3. the launch configurations;
4. the launchers, the ``torch.library`` custom ops (so ``torch.compile`` sees one opaque op and does
   not break the graph) and the ``torch.autograd.Function`` that ties forward to backward;
5. the public ``local_global_attention_triton``.

Two choices shape every kernel:

* **Global keys are counted by the band, not excluded from it.** The reference removes a global key
  from the band and adds it back through the tile. The same set of (query, key) pairs is obtained by
  keeping the band whole and masking, inside the small ``BLOCK_M x G_PAD`` tile, the global keys that
  already lie in the query's band. The band then needs masks only at its two edges (and for padded
  keys when a padding mask is given); interior blocks run with no mask arithmetic at all.
* **Dilation is a strided view.** Residue class ``r`` of dilation ``d`` is the sequence ``r, r+d, ...``:
  an ordinary dilation-1 band over rows of stride ``d * stride_m``. No score is computed for a key off
  the band's lattice.

Global query rows attend to the whole sequence: the sequence is cut in chunks, each program handles
every global row against one chunk, and a second kernel merges the chunks by log-sum-exp in a fixed
order. The backward is deterministic: every output element is written by one program, partial sums
over chunks are stored and reduced in chunk order, and no atomics are used.
"""
from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl

from . import hopper_attention

_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"

LOG2E = 1.4426950408889634  # 1/ln 2: exp(x) = exp2(x * LOG2E)
LN2 = 0.6931471805599453  # ln 2: back from log2 units to natural-log LSE


# ---------------------------------------------------------------------------------------------
# 1. Device helpers
# ---------------------------------------------------------------------------------------------
@triton.jit
def _attn_fwd_inner(acc, l_i, m_i, q, q_idx, k_base, v_base, kpm_base, stride_kn, stride_vn,
                    stride_mn, blk_lo, blk_hi, key0, n_r, window, qk_scale,
                    HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr, MASKED: tl.constexpr,
                    HAS_KPM: tl.constexpr, DOT_PREC: tl.constexpr, edge_lo=0, edge_hi=0,
                    IF_MASK: tl.constexpr = False):
    """Online softmax over band key blocks ``blk_lo <= t < blk_hi`` (keys ``key0 + t*BLOCK_N + ...``).

    ``MASKED`` blocks check the band edges and the sequence ends; the others load and multiply only.
    Scores stay raw until the exponent, where ``qk * qk_scale - m`` is one FMA per score
    (``qk_scale`` holds 1/ln 2, so ``m_i`` and the exponents are in log2 units); the padding bias and
    the edge mask are 0 / -inf, which scaling leaves unchanged.
    """
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    for t in range(blk_lo, blk_hi):
        k_idx = key0 + t * BLOCK_N + offs_n  # (BLOCK_N,) key rows in the strided view
        k_ptrs = k_base + k_idx.to(tl.int64)[None, :] * stride_kn + offs_d[:, None]  # (D, BLOCK_N)
        v_ptrs = v_base + k_idx.to(tl.int64)[:, None] * stride_vn + offs_d[None, :]  # (BLOCK_N, D)
        if MASKED:
            k_in = (k_idx >= 0) & (k_idx < n_r)
            kt = tl.load(k_ptrs, mask=k_in[None, :], other=0.0)
        else:
            kt = tl.load(k_ptrs)
        qk = tl.dot(q, kt, input_precision=DOT_PREC)  # (BLOCK_M, BLOCK_N) fp32, unscaled
        if HAS_KPM:  # key padding: 0 or -inf per key, from the caller's mask bytes
            if MASKED:
                qk += _pad_bias(tl.load(kpm_base + k_idx.to(tl.int64) * stride_mn, mask=k_in, other=1))[None, :]
            else:
                qk += _pad_bias(tl.load(kpm_base + k_idx.to(tl.int64) * stride_mn))[None, :]
        if MASKED:
            rel = k_idx[None, :] - q_idx[:, None]
            ok = (rel <= window) & (rel >= -window) & k_in[None, :]
            qk = tl.where(ok, qk, float("-inf"))
        if IF_MASK:  # one loop over an interior program's blocks: the band edges masked behind a branch
            if (t < edge_lo) | (t >= edge_hi):
                rel = k_idx[None, :] - q_idx[:, None]
                qk = tl.where((rel <= window) & (rel >= -window), qk, float("-inf"))
        # m_i starts at a finite -1e30, so a block with every key masked leaves it finite: no NaN.
        m_ij = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
        p = tl.math.exp2(qk * qk_scale - m_ij[:, None])
        alpha = tl.math.exp2(m_i - m_ij)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None]
        if MASKED:
            v = tl.load(v_ptrs, mask=k_in[:, None], other=0.0)
        else:
            v = tl.load(v_ptrs)
        acc = tl.dot(p.to(v.dtype), v, acc, input_precision=DOT_PREC)
        m_i = m_ij
    return acc, l_i, m_i


@triton.jit
def _band_split(m0, n_r, window, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Split the key blocks of query block ``m0`` into [0, k_lo) edge, [k_lo, k_hi) interior, rest edge.

    Block t holds keys m0 - w + t*BLOCK_N + [0, BLOCK_N). It is interior (every key in the band of
    every row) iff  t >= (BLOCK_M - 1) / BLOCK_N  and  (t + 1) * BLOCK_N <= 2w + 1.
    A block at the sequence ends needs masks too, so such programs mask every block.
    """
    n_blk = (BLOCK_M + 2 * window + BLOCK_N - 1) // BLOCK_N
    key0 = m0 - window
    # (t + 1) * BLOCK_N <= 2w + 1  <=>  t < (2w + 1) // BLOCK_N
    k_hi = tl.minimum(tl.maximum((2 * window + 1) // BLOCK_N, (BLOCK_M - 1 + BLOCK_N - 1) // BLOCK_N), n_blk)
    k_lo = tl.minimum((BLOCK_M - 1 + BLOCK_N - 1) // BLOCK_N, k_hi)
    boundary = (key0 < 0) | (key0 + n_blk * BLOCK_N > n_r)
    return n_blk, key0, k_lo, k_hi, boundary


@triton.jit
def _global_in_band(q_pos, g_pos, window, DIL):
    """(BLOCK_M, G_PAD) True where global key ``g_pos`` already lies in the band of query ``q_pos``."""
    rel = g_pos[None, :] - q_pos[:, None]
    return ((rel % DIL) == 0) & (rel <= window * DIL) & (rel >= -window * DIL)


@triton.jit
def _pad_bias(pad):
    """Additive score bias of key-padding-mask bytes: -inf where set (a padded key), else 0. Masked
    loads pass ``other=1``: a key past the sequence ends reads as padded."""
    return tl.where(pad != 0, float("-inf"), 0.0)


# ---------------------------------------------------------------------------------------------
# 2. Kernels
# ---------------------------------------------------------------------------------------------
@triton.jit
def _fwd_row_block(m0, q_base, k_base, v_base, kpm_base, o_base, l_base, sq, sk, sv, so, KG, VG, GPOS, g_base,
                   g_pos_base, stride_gm, n_r, r, window, qk_scale, DIL: tl.constexpr, HEAD_DIM: tl.constexpr,
                   BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, G_PAD: tl.constexpr, HAS_KPM: tl.constexpr,
                   DOT_PREC: tl.constexpr, ONE_LOOP: tl.constexpr, IF_MASK: tl.constexpr):
    """Rows m0 .. m0 + BLOCK_M of one (batch, head, residue) view: the global tile, then the band;
    stores their output and LSE."""
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    q_idx = m0 + offs_m
    q_in = q_idx < n_r
    q = tl.load(q_base + q_idx.to(tl.int64)[:, None] * sq + offs_d[None, :], mask=q_in[:, None], other=0.0)

    m_i = tl.zeros([BLOCK_M], dtype=tl.float32) - 1.0e30
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)

    if G_PAD > 0:  # the compact global tile, visited once
        offs_g = tl.arange(0, G_PAD)
        g_pos = tl.load(GPOS + g_pos_base + offs_g)  # -1: unused slot or padded token
        kg = tl.load(KG + g_base + offs_g[None, :] * stride_gm + offs_d[:, None])  # (D, G_PAD)
        qk = tl.dot(q, kg, input_precision=DOT_PREC)
        ok = (g_pos[None, :] >= 0) & ~_global_in_band(r + DIL * q_idx, g_pos, window, DIL)
        qk = tl.where(ok, qk, float("-inf"))
        m_i = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
        p = tl.math.exp2(qk * qk_scale - m_i[:, None])
        l_i = tl.sum(p, 1)
        vg = tl.load(VG + g_base + offs_g[:, None] * stride_gm + offs_d[None, :])  # (G_PAD, D)
        acc = tl.dot(p.to(vg.dtype), vg, acc, input_precision=DOT_PREC)

    n_blk, key0, k_lo, k_hi, boundary = _band_split(m0, n_r, window, BLOCK_M, BLOCK_N)
    if ONE_LOOP or boundary:  # ONE_LOOP: every block masked, one loop (a measured alternative)
        acc, l_i, m_i = _attn_fwd_inner(acc, l_i, m_i, q, q_idx, k_base, v_base, kpm_base, sk, sv, DIL,
                                        0, n_blk, key0, n_r, window, qk_scale,
                                        HEAD_DIM, BLOCK_N, True, HAS_KPM, DOT_PREC)
    elif IF_MASK:
        acc, l_i, m_i = _attn_fwd_inner(acc, l_i, m_i, q, q_idx, k_base, v_base, kpm_base, sk, sv, DIL,
                                        0, n_blk, key0, n_r, window, qk_scale,
                                        HEAD_DIM, BLOCK_N, False, HAS_KPM, DOT_PREC, k_lo, k_hi, True)
    else:
        acc, l_i, m_i = _attn_fwd_inner(acc, l_i, m_i, q, q_idx, k_base, v_base, kpm_base, sk, sv, DIL,
                                        0, k_lo, key0, n_r, window, qk_scale,
                                        HEAD_DIM, BLOCK_N, True, HAS_KPM, DOT_PREC)
        acc, l_i, m_i = _attn_fwd_inner(acc, l_i, m_i, q, q_idx, k_base, v_base, kpm_base, sk, sv, DIL,
                                        k_lo, k_hi, key0, n_r, window, qk_scale,
                                        HEAD_DIM, BLOCK_N, False, HAS_KPM, DOT_PREC)
        acc, l_i, m_i = _attn_fwd_inner(acc, l_i, m_i, q, q_idx, k_base, v_base, kpm_base, sk, sv, DIL,
                                        k_hi, n_blk, key0, n_r, window, qk_scale,
                                        HEAD_DIM, BLOCK_N, True, HAS_KPM, DOT_PREC)

    empty = l_i == 0.0  # no visible key: output 0, LSE -inf
    l_safe = tl.where(empty, 1.0, l_i)
    out = acc / l_safe[:, None]
    lse = tl.where(empty, float("-inf"), (m_i + tl.math.log2(l_safe)) * 0.6931471805599453)  # ln 2
    tl.store(o_base + q_idx.to(tl.int64)[:, None] * so + offs_d[None, :], out.to(o_base.dtype.element_ty),
             mask=q_in[:, None])
    tl.store(l_base + q_idx.to(tl.int64) * DIL, lse, mask=q_in)


@triton.jit(do_not_specialize=["N", "window"])
def _fwd_band_kernel(Q, K, V, KPM, KG, VG, GPOS, Out, Lse, QG, PO, PL,
                     stride_qb, stride_qh, stride_qm, stride_kb, stride_kh, stride_kn,
                     stride_vb, stride_vh, stride_vn, stride_ob, stride_oh, stride_om,
                     stride_mb, stride_gb, stride_gh, stride_gm, stride_pb, stride_lb, stride_lh,
                     H, N, window, qk_scale, DIL: tl.constexpr,
                     HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                     G_PAD: tl.constexpr, HAS_KPM: tl.constexpr, DOT_PREC: tl.constexpr,
                     FUSE_G: tl.constexpr = False, ONE_LOOP: tl.constexpr = False,
                     IF_MASK: tl.constexpr = False):
    """One program: BLOCK_M query rows of one (batch, head, residue class): global tile, then band.

    ``FUSE_G`` (short sequences, where the launches of a separate pass cost more than its work): the
    block's own keys also feed the global rows (``QG``, the compact global queries), stored as a
    normalised partial and log2 LSE in ``PO``, ``PL`` (chunk r * programs + pid_m of (b, h)) for the
    log-sum-exp merge."""
    pid_m = tl.program_id(0)
    pid_z = tl.program_id(1)  # (b * H + h) * DIL + r
    r = pid_z % DIL
    h = (pid_z // DIL) % H
    b = pid_z // (DIL * H)
    n_r = (N - r + DIL - 1) // DIL  # rows of residue class r
    b64 = b.to(tl.int64)
    h64 = h.to(tl.int64)
    r64 = r.to(tl.int64)
    q_base = Q + b64 * stride_qb + h64 * stride_qh + r64 * stride_qm
    k_base = K + b64 * stride_kb + h64 * stride_kh + r64 * stride_kn
    v_base = V + b64 * stride_vb + h64 * stride_vh + r64 * stride_vn
    kpm_base = KPM + b64 * stride_mb + r64
    sk = stride_kn * DIL  # row strides of the stride-DIL view
    sv = stride_vn * DIL
    _fwd_row_block(pid_m * BLOCK_M, q_base, k_base, v_base, kpm_base,
                   Out + b64 * stride_ob + h64 * stride_oh + r64 * stride_om,
                   Lse + b64 * stride_lb + h64 * stride_lh + r64, stride_qm * DIL, sk, sv, stride_om * DIL,
                   KG, VG, GPOS, b64 * stride_gb + h64 * stride_gh, b64 * stride_pb, stride_gm, n_r, r, window,
                   qk_scale, DIL, HEAD_DIM, BLOCK_M, BLOCK_N, G_PAD, HAS_KPM, DOT_PREC, ONE_LOOP, IF_MASK)
    if FUSE_G:
        offs_g = tl.arange(0, G_PAD)
        offs_d = tl.arange(0, HEAD_DIM)
        bh = b64 * H + h64
        gsl = offs_g[:, None] * HEAD_DIM + offs_d[None, :]
        qg = tl.load(QG + bh * (G_PAD * HEAD_DIM) + gsl)  # (G_PAD, D), contiguous tile
        k_idx = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # this block's own keys (L2-warm: the band read them)
        k_in = k_idx < n_r
        kt = tl.load(k_base + k_idx.to(tl.int64)[None, :] * sk + offs_d[:, None], mask=k_in[None, :], other=0.0)
        s = tl.dot(qg, kt, input_precision=DOT_PREC)  # (G_PAD, BLOCK_M), unscaled
        if HAS_KPM:
            s += _pad_bias(tl.load(kpm_base + k_idx.to(tl.int64) * DIL, mask=k_in, other=1))[None, :]
        s = tl.where(k_in[None, :], s, float("-inf"))
        m_g = tl.maximum(tl.max(s, 1) * qk_scale, -1.0e30)  # finite: a block with no key gives l_g = 0
        p = tl.math.exp2(s * qk_scale - m_g[:, None])
        l_g = tl.sum(p, 1)
        v = tl.load(v_base + k_idx.to(tl.int64)[:, None] * sv + offs_d[None, :], mask=k_in[:, None], other=0.0)
        acc_g = tl.dot(p.to(v.dtype), v, input_precision=DOT_PREC)
        empty = l_g == 0.0
        l_safe = tl.where(empty, 1.0, l_g)
        chunk = (bh * DIL + r64) * tl.num_programs(0) + pid_m
        tl.store(PO + chunk * (G_PAD * HEAD_DIM) + gsl, acc_g / l_safe[:, None])
        tl.store(PL + chunk * G_PAD + offs_g, tl.where(empty, float("-inf"), m_g + tl.math.log2(l_safe)))


@triton.jit(do_not_specialize=["N", "chunk"])
def _fwd_global_rows_kernel(QG, K, V, KPM, PO, PL,
                            stride_gb, stride_gh, stride_gm, stride_kb, stride_kh, stride_kn,
                            stride_vb, stride_vh, stride_vn, stride_mb,
                            stride_ob, stride_oh, stride_oc, stride_lb, stride_lh,
                            H, N, chunk, qk_scale,
                            HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr, G_PAD: tl.constexpr,
                            HAS_KPM: tl.constexpr, DOT_PREC: tl.constexpr):
    """Every global row of one (batch, head) against one chunk of keys: a normalised partial + LSE."""
    pid_c = tl.program_id(0)
    pid_z = tl.program_id(1)
    h = pid_z % H
    b = pid_z // H
    b64 = b.to(tl.int64)
    h64 = h.to(tl.int64)
    offs_g = tl.arange(0, G_PAD)
    offs_d = tl.arange(0, HEAD_DIM)
    offs_n = tl.arange(0, BLOCK_N)
    qg = tl.load(QG + b64 * stride_gb + h64 * stride_gh + offs_g[:, None] * stride_gm + offs_d[None, :])
    k_base = K + b64 * stride_kb + h64 * stride_kh
    v_base = V + b64 * stride_vb + h64 * stride_vh
    kpm_base = KPM + b64 * stride_mb
    m_i = tl.zeros([G_PAD], dtype=tl.float32) - 1.0e30
    l_i = tl.zeros([G_PAD], dtype=tl.float32)
    acc = tl.zeros([G_PAD, HEAD_DIM], dtype=tl.float32)
    c0 = pid_c * chunk
    for start in range(c0, c0 + chunk, BLOCK_N):
        k_idx = start + offs_n
        k_in = k_idx < N
        kt = tl.load(k_base + k_idx.to(tl.int64)[None, :] * stride_kn + offs_d[:, None], mask=k_in[None, :], other=0.0)
        qk = tl.dot(qg, kt, input_precision=DOT_PREC) * qk_scale  # (G_PAD, BLOCK_N)
        if HAS_KPM:
            qk += _pad_bias(tl.load(kpm_base + k_idx.to(tl.int64), mask=k_in, other=1))[None, :]
        qk = tl.where(k_in[None, :], qk, float("-inf"))
        m_ij = tl.maximum(m_i, tl.max(qk, 1))
        p = tl.math.exp2(qk - m_ij[:, None])
        alpha = tl.math.exp2(m_i - m_ij)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(v_base + k_idx.to(tl.int64)[:, None] * stride_vn + offs_d[None, :], mask=k_in[:, None], other=0.0)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None], input_precision=DOT_PREC)
        m_i = m_ij
    empty = l_i == 0.0
    l_safe = tl.where(empty, 1.0, l_i)
    lse2 = tl.where(empty, float("-inf"), m_i + tl.math.log2(l_safe))  # log2 units
    po = PO + b64 * stride_ob + h64 * stride_oh + pid_c.to(tl.int64) * stride_oc
    tl.store(po + offs_g[:, None] * HEAD_DIM + offs_d[None, :], acc / l_safe[:, None])
    tl.store(PL + b64 * stride_lb + h64 * stride_lh + pid_c.to(tl.int64) * G_PAD + offs_g, lse2)


@triton.jit(do_not_specialize=["n_chunks"])
def _fwd_global_merge_kernel(PO, PL, GPOS, Out, Lse, n_chunks,
                             stride_pob, stride_poh, stride_poc, stride_plb, stride_plh, stride_pb,
                             stride_ob, stride_oh, stride_om, stride_lb, stride_lh,
                             H, HEAD_DIM: tl.constexpr, G_PAD: tl.constexpr):
    """Merge the per-chunk partials of the global rows by log-sum-exp (chunk order: deterministic)
    and write them over the band result at the global tokens' own positions."""
    pid_z = tl.program_id(0)
    h = pid_z % H
    b = pid_z // H
    b64 = b.to(tl.int64)
    h64 = h.to(tl.int64)
    offs_g = tl.arange(0, G_PAD)
    offs_d = tl.arange(0, HEAD_DIM)
    po = PO + b64 * stride_pob + h64 * stride_poh
    pl = PL + b64 * stride_plb + h64 * stride_plh
    m = tl.zeros([G_PAD], dtype=tl.float32) - 1.0e30
    s = tl.zeros([G_PAD], dtype=tl.float32)
    acc = tl.zeros([G_PAD, HEAD_DIM], dtype=tl.float32)
    for c in range(0, n_chunks):
        lc = tl.load(pl + c * G_PAD + offs_g)
        oc = tl.load(po + c * stride_poc + offs_g[:, None] * HEAD_DIM + offs_d[None, :])
        m_new = tl.maximum(m, lc)
        alpha = tl.math.exp2(m - m_new)
        beta = tl.math.exp2(lc - m_new)
        s = s * alpha + beta
        acc = acc * alpha[:, None] + oc * beta[:, None]
        m = m_new
    empty = s == 0.0
    s_safe = tl.where(empty, 1.0, s)
    out = acc / s_safe[:, None]
    lse = tl.where(empty, float("-inf"), (m + tl.math.log2(s_safe)) * 0.6931471805599453)
    g_pos = tl.load(GPOS + b64 * stride_pb + offs_g)
    ok = g_pos >= 0
    rows = tl.where(ok, g_pos, 0).to(tl.int64)
    tl.store(Out + b64 * stride_ob + h64 * stride_oh + rows[:, None] * stride_om + offs_d[None, :],
             out.to(Out.dtype.element_ty), mask=ok[:, None])
    tl.store(Lse + b64 * stride_lb + h64 * stride_lh + rows, lse, mask=ok)


@triton.jit(do_not_specialize=["N"])
def _bwd_global_prep_kernel(GPOS, LSE, Delta, DO, LSEG2, DeltaG, DOG, stride_pb, stride_db, stride_dh,
                            stride_dm, H, N, HEAD_DIM: tl.constexpr, G_PAD: tl.constexpr):
    """One (batch, head), after the dQ kernel (which already gave the global rows a band LSE of +inf:
    their gradient flows only through the global pass): the global rows' log2 LSE (+inf on unused
    slots), delta and dO gathered into compact (G_PAD,) / (G_PAD, D) rows."""
    pid_z = tl.program_id(0)
    b = (pid_z // H).to(tl.int64)
    h = (pid_z % H).to(tl.int64)
    offs_g = tl.arange(0, G_PAD)
    offs_d = tl.arange(0, HEAD_DIM)
    g_pos = tl.load(GPOS + b * stride_pb + offs_g)
    ok = g_pos >= 0
    rows = tl.where(ok, g_pos, 0).to(tl.int64)
    row = pid_z.to(tl.int64) * N + rows
    slot = pid_z.to(tl.int64) * G_PAD + offs_g
    lse = tl.load(LSE + row, mask=ok, other=float("-inf"))
    tl.store(LSEG2 + slot, tl.where(lse == float("-inf"), float("inf"), lse * 1.4426950408889634))
    tl.store(DeltaG + slot, tl.load(Delta + row, mask=ok, other=0.0))
    dog = tl.load(DO + b * stride_db + h * stride_dh + rows[:, None] * stride_dm + offs_d[None, :], mask=ok[:, None],
                  other=0.0)
    tl.store(DOG + slot[:, None] * HEAD_DIM + offs_d[None, :], dog)


@triton.jit
def _bwd_dkdv_inner(dk, dv, q_base, do_base, lse2_base, delta_base, stride_qm, stride_dm, stride_lm, k, v, kbias, k_idx,
                    n_r, window, qk_scale, blk_lo, blk_hi, row0,
                    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, MASKED: tl.constexpr,
                    HAS_KPM: tl.constexpr, DOT_PREC: tl.constexpr):
    """dK, dV of one key block from query blocks ``blk_lo <= t < blk_hi`` (rows ``row0 + t*BLOCK_M + ...``).

    Rows outside the sequence load q = dO = 0 and LSE = +inf, so their probabilities are exactly 0;
    only ``MASKED`` blocks check the band edges.
    """
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    for t in range(blk_lo, blk_hi):
        q_idx = row0 + t * BLOCK_M + offs_m
        rows = q_idx.to(tl.int64)
        if MASKED:
            q_in = (q_idx >= 0) & (q_idx < n_r)
            q = tl.load(q_base + rows[:, None] * stride_qm + offs_d[None, :], mask=q_in[:, None], other=0.0)
            do = tl.load(do_base + rows[:, None] * stride_dm + offs_d[None, :], mask=q_in[:, None], other=0.0)
            lse2 = tl.load(lse2_base + rows * stride_lm, mask=q_in, other=float("inf"))
            delta = tl.load(delta_base + rows * stride_lm, mask=q_in, other=0.0)
        else:
            q = tl.load(q_base + rows[:, None] * stride_qm + offs_d[None, :])
            do = tl.load(do_base + rows[:, None] * stride_dm + offs_d[None, :])
            lse2 = tl.load(lse2_base + rows * stride_lm)
            delta = tl.load(delta_base + rows * stride_lm)
        qkT = tl.dot(k, tl.trans(q), input_precision=DOT_PREC)  # (BLOCK_N, BLOCK_M), unscaled
        if HAS_KPM:
            qkT += kbias[:, None]  # 0 / -inf: unchanged by the scale folded into the exponent's FMA
        pT = tl.math.exp2(qkT * qk_scale - lse2[None, :])
        if MASKED:
            rel = k_idx[:, None] - q_idx[None, :]
            pT = tl.where((rel <= window) & (rel >= -window), pT, 0.0)
        dv = tl.dot(pT.to(do.dtype), do, dv, input_precision=DOT_PREC)
        dpT = tl.dot(v, tl.trans(do), input_precision=DOT_PREC)
        dsT = pT * (dpT - delta[None, :])
        dk = tl.dot(dsT.to(q.dtype), q, dk, input_precision=DOT_PREC)
    return dk, dv


@triton.jit(do_not_specialize=["N", "window"])
def _bwd_dkdv_band_kernel(Q, K, V, DO, KPM, LSE2, Delta, DK, DV, QG, DOG, LSEG2, DeltaG, PDQ,
                          stride_qb, stride_qh, stride_qm, stride_kb, stride_kh, stride_kn,
                          stride_vb, stride_vh, stride_vn, stride_db, stride_dh, stride_dm,
                          stride_mb, H, N, window, qk_scale, sm_scale, DIL: tl.constexpr,
                          HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                          HAS_KPM: tl.constexpr, DOT_PREC: tl.constexpr, G_PAD: tl.constexpr,
                          PART_DQ: tl.constexpr = False):
    """One program: BLOCK_N keys of one (batch, head, residue); walks the query blocks of their band,
    then (``G_PAD`` > 0) the global rows, which see every key.

    The band is symmetric, so the query blocks of key block n0 are laid out exactly like the key
    blocks of a query block in the forward pass (with BLOCK_M and BLOCK_N swapped). ``LSE2`` is the
    log2-unit LSE with +inf on rows that must not contribute through the band (global rows, rows
    that saw nothing), which makes their probabilities exactly 0 with no row mask. The global rows
    come as compact (B, H, G_PAD, ...) tiles: queries ``QG``, ``DOG``, log2 LSE ``LSEG2`` (+inf on
    unused slots) and ``DeltaG``; adding them here saves a second pass that read and rewrote dK, dV.
    ``PART_DQ``: the global rows' dQ from these keys too, an unscaled (G_PAD, D) fp32 partial in ``PDQ``
    (chunk (b*H + h)*DIL*programs + r*programs + pid_n), summed later: no pass re-reads K, V for it.
    dK/dV are contiguous (B, H, N, D) like the fp32 row statistics (B, H, N).
    """
    pid_n = tl.program_id(0)
    pid_z = tl.program_id(1)
    r = pid_z % DIL
    h = (pid_z // DIL) % H
    b = pid_z // (DIL * H)
    n_r = (N - r + DIL - 1) // DIL
    n0 = pid_n * BLOCK_N
    b64 = b.to(tl.int64)
    h64 = h.to(tl.int64)
    r64 = r.to(tl.int64)
    bh = (b64 * H + h64)
    q_base = Q + b64 * stride_qb + h64 * stride_qh + r64 * stride_qm
    k_base = K + b64 * stride_kb + h64 * stride_kh + r64 * stride_kn
    v_base = V + b64 * stride_vb + h64 * stride_vh + r64 * stride_vn
    do_base = DO + b64 * stride_db + h64 * stride_dh + r64 * stride_dm
    row_base = bh * N + r64  # into LSE2 / Delta
    sq = stride_qm * DIL
    sdo = stride_dm * DIL

    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    k_idx = n0 + offs_n
    k_in = k_idx < n_r
    k = tl.load(k_base + k_idx.to(tl.int64)[:, None] * (stride_kn * DIL) + offs_d[None, :], mask=k_in[:, None], other=0.0)
    v = tl.load(v_base + k_idx.to(tl.int64)[:, None] * (stride_vn * DIL) + offs_d[None, :], mask=k_in[:, None], other=0.0)
    kbias = tl.zeros([BLOCK_N], dtype=tl.float32)
    if HAS_KPM:
        kbias = _pad_bias(tl.load(KPM + b64 * stride_mb + r64 + k_idx.to(tl.int64) * DIL, mask=k_in, other=1))
    dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)

    n_blk, row0, t_lo, t_hi, boundary = _band_split(n0, n_r, window, BLOCK_N, BLOCK_M)
    lse_base = LSE2 + row_base
    delta_base = Delta + row_base
    if boundary:
        dk, dv = _bwd_dkdv_inner(dk, dv, q_base, do_base, lse_base, delta_base, sq, sdo, DIL, k, v, kbias, k_idx,
                                 n_r, window, qk_scale, 0, n_blk, row0, HEAD_DIM, BLOCK_M, True, HAS_KPM, DOT_PREC)
    else:
        dk, dv = _bwd_dkdv_inner(dk, dv, q_base, do_base, lse_base, delta_base, sq, sdo, DIL, k, v, kbias, k_idx,
                                 n_r, window, qk_scale, 0, t_lo, row0, HEAD_DIM, BLOCK_M, True, HAS_KPM, DOT_PREC)
        dk, dv = _bwd_dkdv_inner(dk, dv, q_base, do_base, lse_base, delta_base, sq, sdo, DIL, k, v, kbias, k_idx,
                                 n_r, window, qk_scale, t_lo, t_hi, row0, HEAD_DIM, BLOCK_M, False, HAS_KPM, DOT_PREC)
        dk, dv = _bwd_dkdv_inner(dk, dv, q_base, do_base, lse_base, delta_base, sq, sdo, DIL, k, v, kbias, k_idx,
                                 n_r, window, qk_scale, t_hi, n_blk, row0, HEAD_DIM, BLOCK_M, True, HAS_KPM, DOT_PREC)
    if G_PAD > 0:  # the global rows: no band, every key (keys past the end only touch unstored rows)
        offs_g = tl.arange(0, G_PAD)
        gsl = bh * (G_PAD * HEAD_DIM) + offs_g[:, None] * HEAD_DIM + offs_d[None, :]
        qg = tl.load(QG + gsl)
        dog = tl.load(DOG + gsl)
        lse_g = tl.load(LSEG2 + bh * G_PAD + offs_g)
        delta_g = tl.load(DeltaG + bh * G_PAD + offs_g)
        qkT = tl.dot(k, tl.trans(qg), input_precision=DOT_PREC)  # (BLOCK_N, G_PAD), unscaled
        if HAS_KPM:
            qkT += kbias[:, None]
        pT = tl.math.exp2(qkT * qk_scale - lse_g[None, :])
        dv = tl.dot(pT.to(dog.dtype), dog, dv, input_precision=DOT_PREC)
        dpT = tl.dot(v, tl.trans(dog), input_precision=DOT_PREC)
        dsT = pT * (dpT - delta_g[None, :])
        dk = tl.dot(dsT.to(qg.dtype), qg, dk, input_precision=DOT_PREC)
        if PART_DQ:  # keys past the end are loaded as 0, so they add nothing here
            dqg = tl.dot(tl.trans(dsT.to(k.dtype)), k, input_precision=DOT_PREC)  # (G_PAD, D)
            chunk = (bh * DIL + r64) * tl.num_programs(0) + pid_n
            tl.store(PDQ + chunk * (G_PAD * HEAD_DIM) + offs_g[:, None] * HEAD_DIM + offs_d[None, :], dqg)
    out_rows = (bh * N + r64 + k_idx.to(tl.int64) * DIL)[:, None] * HEAD_DIM + offs_d[None, :]
    tl.store(DK + out_rows, (dk * sm_scale).to(DK.dtype.element_ty), mask=k_in[:, None])
    tl.store(DV + out_rows, dv.to(DV.dtype.element_ty), mask=k_in[:, None])


@triton.jit
def _bwd_dq_inner(dq, q, do, lse2, delta, q_idx, k_base, v_base, kpm_base, stride_kn, stride_vn, stride_mn,
                  blk_lo, blk_hi, key0, n_r, window, qk_scale,
                  HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr, MASKED: tl.constexpr,
                  HAS_KPM: tl.constexpr, DOT_PREC: tl.constexpr):
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    for t in range(blk_lo, blk_hi):
        k_idx = key0 + t * BLOCK_N + offs_n
        rows = k_idx.to(tl.int64)
        if MASKED:
            k_in = (k_idx >= 0) & (k_idx < n_r)
            kt = tl.load(k_base + rows[None, :] * stride_kn + offs_d[:, None], mask=k_in[None, :], other=0.0)
            vt = tl.load(v_base + rows[None, :] * stride_vn + offs_d[:, None], mask=k_in[None, :], other=0.0)
        else:
            kt = tl.load(k_base + rows[None, :] * stride_kn + offs_d[:, None])
            vt = tl.load(v_base + rows[None, :] * stride_vn + offs_d[:, None])
        qk = tl.dot(q, kt, input_precision=DOT_PREC)  # unscaled: the scale is folded into the FMA below
        if HAS_KPM:
            if MASKED:
                qk += _pad_bias(tl.load(kpm_base + rows * stride_mn, mask=k_in, other=1))[None, :]
            else:
                qk += _pad_bias(tl.load(kpm_base + rows * stride_mn))[None, :]
        p = tl.math.exp2(qk * qk_scale - lse2[:, None])
        if MASKED:
            rel = k_idx[None, :] - q_idx[:, None]
            p = tl.where((rel <= window) & (rel >= -window) & k_in[None, :], p, 0.0)
        dp = tl.dot(do, vt, input_precision=DOT_PREC)
        ds = p * (dp - delta[:, None])
        dq = tl.dot(ds.to(kt.dtype), tl.trans(kt), dq, input_precision=DOT_PREC)
    return dq


@triton.jit(do_not_specialize=["N", "window"])
def _bwd_dq_band_kernel(Q, K, V, DO, KPM, KG, VG, GPOS, O, LSE, LSE2, Delta, DQ, PDK, PDV,
                        stride_qb, stride_qh, stride_qm, stride_kb, stride_kh, stride_kn,
                        stride_vb, stride_vh, stride_vn, stride_db, stride_dh, stride_dm,
                        stride_ob, stride_oh, stride_om,
                        stride_mb, stride_gb, stride_gh, stride_gm, stride_pb,
                        H, N, window, qk_scale, sm_scale, DIL: tl.constexpr,
                        HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                        G_PAD: tl.constexpr, HAS_KPM: tl.constexpr, DOT_PREC: tl.constexpr,
                        PART_KV: tl.constexpr = False):
    """One program: dQ of BLOCK_M rows of one (batch, head, residue): global tile, then band.
    It runs first in the backward and makes its rows' statistics itself: delta = rowsum(dO * O) and
    the log2 LSE, +inf for rows that saw no key and for global rows (whose gradient flows only through
    the global pass), stored in ``Delta`` and ``LSE2`` for the kernels after it (a separate pass over O
    and dO did this before).
    ``PART_KV``: also the tile's dK, dV from these rows, unscaled (G_PAD, D) fp32 partials in ``PDK``,
    ``PDV`` (chunk (b*H + h)*DIL*programs + r*programs + pid_m), summed later: no pass re-reads Q, dO."""
    pid_m = tl.program_id(0)
    pid_z = tl.program_id(1)
    r = pid_z % DIL
    h = (pid_z // DIL) % H
    b = pid_z // (DIL * H)
    n_r = (N - r + DIL - 1) // DIL
    m0 = pid_m * BLOCK_M
    b64 = b.to(tl.int64)
    h64 = h.to(tl.int64)
    r64 = r.to(tl.int64)
    bh = b64 * H + h64
    q_base = Q + b64 * stride_qb + h64 * stride_qh + r64 * stride_qm
    k_base = K + b64 * stride_kb + h64 * stride_kh + r64 * stride_kn
    v_base = V + b64 * stride_vb + h64 * stride_vh + r64 * stride_vn
    do_base = DO + b64 * stride_db + h64 * stride_dh + r64 * stride_dm
    kpm_base = KPM + b64 * stride_mb + r64

    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    q_idx = m0 + offs_m
    q_in = q_idx < n_r
    rows = q_idx.to(tl.int64)
    q = tl.load(q_base + rows[:, None] * (stride_qm * DIL) + offs_d[None, :], mask=q_in[:, None], other=0.0)
    do = tl.load(do_base + rows[:, None] * (stride_dm * DIL) + offs_d[None, :], mask=q_in[:, None], other=0.0)
    o = tl.load(O + b64 * stride_ob + h64 * stride_oh + r64 * stride_om + rows[:, None] * (stride_om * DIL)
                + offs_d[None, :], mask=q_in[:, None], other=0.0)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    stat = bh * N + r64 + rows * DIL
    lse = tl.load(LSE + stat, mask=q_in, other=float("-inf"))
    lse2 = tl.where(lse == float("-inf"), float("inf"), lse * 1.4426950408889634)
    dq = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)

    if G_PAD > 0:
        offs_g = tl.arange(0, G_PAD)
        g_pos = tl.load(GPOS + b64 * stride_pb + offs_g)
        is_global = tl.max(((r + DIL * q_idx)[:, None] == g_pos[None, :]).to(tl.int32), 1) > 0
        lse2 = tl.where(is_global, float("inf"), lse2)
        g_base = b64 * stride_gb + h64 * stride_gh
        kgt = tl.load(KG + g_base + offs_g[None, :] * stride_gm + offs_d[:, None])  # (D, G_PAD)
        vgt = tl.load(VG + g_base + offs_g[None, :] * stride_gm + offs_d[:, None])
        qk = tl.dot(q, kgt, input_precision=DOT_PREC) * qk_scale
        ok = (g_pos[None, :] >= 0) & ~_global_in_band(r + DIL * q_idx, g_pos, window, DIL)
        p = tl.where(ok, tl.math.exp2(qk - lse2[:, None]), 0.0)
        dp = tl.dot(do, vgt, input_precision=DOT_PREC)
        ds = p * (dp - delta[:, None])
        dq = tl.dot(ds.to(kgt.dtype), tl.trans(kgt), dq, input_precision=DOT_PREC)
        if PART_KV:  # rows past the end have p = 0 (LSE +inf)
            chunk = (bh * DIL + r64) * tl.num_programs(0) + pid_m
            part = chunk * (G_PAD * HEAD_DIM) + offs_g[:, None] * HEAD_DIM + offs_d[None, :]
            tl.store(PDV + part, tl.dot(tl.trans(p.to(do.dtype)), do, input_precision=DOT_PREC))
            tl.store(PDK + part, tl.dot(tl.trans(ds.to(q.dtype)), q, input_precision=DOT_PREC))

    sk = stride_kn * DIL
    sv = stride_vn * DIL
    n_blk, key0, k_lo, k_hi, boundary = _band_split(m0, n_r, window, BLOCK_M, BLOCK_N)
    if boundary:
        dq = _bwd_dq_inner(dq, q, do, lse2, delta, q_idx, k_base, v_base, kpm_base, sk, sv, DIL,
                           0, n_blk, key0, n_r, window, qk_scale, HEAD_DIM, BLOCK_N, True, HAS_KPM, DOT_PREC)
    else:
        dq = _bwd_dq_inner(dq, q, do, lse2, delta, q_idx, k_base, v_base, kpm_base, sk, sv, DIL,
                           0, k_lo, key0, n_r, window, qk_scale, HEAD_DIM, BLOCK_N, True, HAS_KPM, DOT_PREC)
        dq = _bwd_dq_inner(dq, q, do, lse2, delta, q_idx, k_base, v_base, kpm_base, sk, sv, DIL,
                           k_lo, k_hi, key0, n_r, window, qk_scale, HEAD_DIM, BLOCK_N, False, HAS_KPM, DOT_PREC)
        dq = _bwd_dq_inner(dq, q, do, lse2, delta, q_idx, k_base, v_base, kpm_base, sk, sv, DIL,
                           k_hi, n_blk, key0, n_r, window, qk_scale, HEAD_DIM, BLOCK_N, True, HAS_KPM, DOT_PREC)
    tl.store(Delta + stat, delta, mask=q_in)
    tl.store(LSE2 + stat, lse2, mask=q_in)
    out_rows = (bh * N + r64 + rows * DIL)[:, None] * HEAD_DIM + offs_d[None, :]
    tl.store(DQ + out_rows, (dq * sm_scale).to(DQ.dtype.element_ty), mask=q_in[:, None])


@triton.jit(do_not_specialize=["N", "window", "chunk"])
def _bwd_global_tile_kernel(Q, DO, KG, VG, GPOS, LSE2, Delta, PDK, PDV,
                            stride_qb, stride_qh, stride_qm, stride_db, stride_dh, stride_dm,
                            stride_gb, stride_gh, stride_gm, stride_pb,
                            H, N, window, chunk, qk_scale, DIL: tl.constexpr,
                            HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, G_PAD: tl.constexpr,
                            DOT_PREC: tl.constexpr):
    """dK, dV of the compact global tile from one chunk of query rows (a partial, reduced later)."""
    pid_c = tl.program_id(0)
    pid_z = tl.program_id(1)
    h = pid_z % H
    b = pid_z // H
    b64 = b.to(tl.int64)
    h64 = h.to(tl.int64)
    bh = b64 * H + h64
    offs_g = tl.arange(0, G_PAD)
    offs_d = tl.arange(0, HEAD_DIM)
    offs_m = tl.arange(0, BLOCK_M)
    g_pos = tl.load(GPOS + b64 * stride_pb + offs_g)
    g_base = b64 * stride_gb + h64 * stride_gh
    kgt = tl.load(KG + g_base + offs_g[None, :] * stride_gm + offs_d[:, None])  # (D, G_PAD)
    vgt = tl.load(VG + g_base + offs_g[None, :] * stride_gm + offs_d[:, None])
    q_base = Q + b64 * stride_qb + h64 * stride_qh
    do_base = DO + b64 * stride_db + h64 * stride_dh
    dkg = tl.zeros([G_PAD, HEAD_DIM], dtype=tl.float32)
    dvg = tl.zeros([G_PAD, HEAD_DIM], dtype=tl.float32)
    c0 = pid_c * chunk
    for start in range(c0, c0 + chunk, BLOCK_M):
        q_idx = start + offs_m  # positions in the full sequence (the tile ignores residues)
        q_in = q_idx < N
        rows = q_idx.to(tl.int64)
        q = tl.load(q_base + rows[:, None] * stride_qm + offs_d[None, :], mask=q_in[:, None], other=0.0)
        do = tl.load(do_base + rows[:, None] * stride_dm + offs_d[None, :], mask=q_in[:, None], other=0.0)
        lse2 = tl.load(LSE2 + bh * N + rows, mask=q_in, other=float("inf"))
        delta = tl.load(Delta + bh * N + rows, mask=q_in, other=0.0)
        qk = tl.dot(q, kgt, input_precision=DOT_PREC) * qk_scale
        ok = (g_pos[None, :] >= 0) & ~_global_in_band(q_idx, g_pos, window, DIL)
        p = tl.where(ok, tl.math.exp2(qk - lse2[:, None]), 0.0)  # (BLOCK_M, G_PAD)
        dp = tl.dot(do, vgt, input_precision=DOT_PREC)
        ds = p * (dp - delta[:, None])
        dvg = tl.dot(tl.trans(p.to(do.dtype)), do, dvg, input_precision=DOT_PREC)
        dkg = tl.dot(tl.trans(ds.to(q.dtype)), q, dkg, input_precision=DOT_PREC)
    part = (bh * tl.num_programs(0) + pid_c) * (G_PAD * HEAD_DIM) + offs_g[:, None] * HEAD_DIM + offs_d[None, :]
    tl.store(PDK + part, dkg)
    tl.store(PDV + part, dvg)


@triton.jit(do_not_specialize=["N", "chunk"])
def _bwd_global_rows_kernel(QG, K, V, DOG, KPM, LSEG2, DeltaG, DK, DV, PDQ,
                            stride_gb, stride_gh, stride_gm, stride_kb, stride_kh, stride_kn,
                            stride_vb, stride_vh, stride_vn, stride_mb,
                            H, N, chunk, qk_scale, sm_scale,
                            HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr, G_PAD: tl.constexpr,
                            HAS_KPM: tl.constexpr, DKDV: tl.constexpr, DOT_PREC: tl.constexpr):
    """Gradients through the global rows, for one chunk of keys: a partial dQ of the global rows and,
    with ``DKDV`` (separate global projections, whose keys are not the band's), dK/dV of those keys.
    When the global rows share k, v, the dK/dV band kernel adds their dK/dV itself."""
    pid_c = tl.program_id(0)
    pid_z = tl.program_id(1)
    h = pid_z % H
    b = pid_z // H
    b64 = b.to(tl.int64)
    h64 = h.to(tl.int64)
    bh = b64 * H + h64
    offs_g = tl.arange(0, G_PAD)
    offs_d = tl.arange(0, HEAD_DIM)
    offs_n = tl.arange(0, BLOCK_N)
    gsl = offs_g[:, None] * HEAD_DIM + offs_d[None, :]
    qg = tl.load(QG + b64 * stride_gb + h64 * stride_gh + offs_g[:, None] * stride_gm + offs_d[None, :])
    dog = tl.load(DOG + bh * (G_PAD * HEAD_DIM) + gsl)  # (G_PAD, D), gathered contiguous
    lse2 = tl.load(LSEG2 + bh * G_PAD + offs_g)  # +inf on unused slots
    delta = tl.load(DeltaG + bh * G_PAD + offs_g)
    k_base = K + b64 * stride_kb + h64 * stride_kh
    v_base = V + b64 * stride_vb + h64 * stride_vh
    dqg = tl.zeros([G_PAD, HEAD_DIM], dtype=tl.float32)
    c0 = pid_c * chunk
    for start in range(c0, c0 + chunk, BLOCK_N):
        k_idx = start + offs_n
        k_in = k_idx < N
        rows = k_idx.to(tl.int64)
        k = tl.load(k_base + rows[:, None] * stride_kn + offs_d[None, :], mask=k_in[:, None], other=0.0)
        v = tl.load(v_base + rows[:, None] * stride_vn + offs_d[None, :], mask=k_in[:, None], other=0.0)
        qkT = tl.dot(k, tl.trans(qg), input_precision=DOT_PREC)  # (BLOCK_N, G_PAD), unscaled
        if HAS_KPM:
            qkT += _pad_bias(tl.load(KPM + b64 * stride_mb + rows, mask=k_in, other=1))[:, None]
        pT = tl.where(k_in[:, None], tl.math.exp2(qkT * qk_scale - lse2[None, :]), 0.0)
        dpT = tl.dot(v, tl.trans(dog), input_precision=DOT_PREC)
        dsT = pT * (dpT - delta[None, :])
        dqg = tl.dot(tl.trans(dsT.to(k.dtype)), k, dqg, input_precision=DOT_PREC)
        if DKDV:
            dv = tl.dot(pT.to(dog.dtype), dog, input_precision=DOT_PREC)
            dk = tl.dot(dsT.to(qg.dtype), qg, input_precision=DOT_PREC) * sm_scale
            out_rows = (bh * N + rows)[:, None] * HEAD_DIM + offs_d[None, :]
            tl.store(DK + out_rows, dk.to(DK.dtype.element_ty), mask=k_in[:, None])
            tl.store(DV + out_rows, dv.to(DV.dtype.element_ty), mask=k_in[:, None])
    part = (bh * tl.num_programs(0) + pid_c) * (G_PAD * HEAD_DIM) + gsl
    tl.store(PDQ + part, dqg)


@triton.jit(do_not_specialize=["n_chunks", "n_out"])
def _fold_partials_kernel(P, P2, n_chunks, n_out, FAN: tl.constexpr, HEAD_DIM: tl.constexpr, G_PAD: tl.constexpr):
    """One level of a reduction tree over per-chunk partial sums: chunks [FAN*i, FAN*(i+1)) of one
    (batch, head) of (B*H, n_chunks, G_PAD, D) fp32 partials ``P`` summed into chunk i of ``P2``
    (B*H, n_out, G_PAD, D). The FAN chunks load as one (FAN, G_PAD * D) tile, all in flight at once,
    and reduce in a fixed order: deterministic. Offsets inside the tile are int32 (FAN * G_PAD * D is
    small); only the tile's base is 64-bit."""
    GD: tl.constexpr = G_PAD * HEAD_DIM
    pid_o = tl.program_id(0)
    pid_z = tl.program_id(1).to(tl.int64)
    c0 = pid_o * FAN
    offs_c = tl.arange(0, FAN)
    offs_e = tl.arange(0, GD)
    c_in = (c0 + offs_c) < n_chunks
    oc = tl.load(P + (pid_z * n_chunks + c0) * GD + (offs_c[:, None] * GD + offs_e[None, :]), mask=c_in[:, None],
                 other=0.0)
    tl.store(P2 + (pid_z * n_out + pid_o) * GD + offs_e, tl.sum(oc, 0))


@triton.jit(do_not_specialize=["n_chunks", "N"])
def _reduce_partials_kernel(P, Dst, GPOS, n_chunks, stride_pb, scale, H, G, N,
                            HEAD_DIM: tl.constexpr, G_PAD: tl.constexpr, TO_ROWS: tl.constexpr):
    """Sum (B, H, n_chunks, G_PAD, D) partials over chunks in order, times ``scale``. ``TO_ROWS``: add
    into the contiguous (B, H, N, D) tensor ``Dst`` at the global positions; else write (B, H, G, D)."""
    pid_z = tl.program_id(0)  # b * H + h
    b = pid_z // H
    offs_g = tl.arange(0, G_PAD)
    offs_d = tl.arange(0, HEAD_DIM)
    gsl = offs_g[:, None] * HEAD_DIM + offs_d[None, :]
    base = P + pid_z.to(tl.int64) * n_chunks * (G_PAD * HEAD_DIM)
    acc = tl.zeros([G_PAD, HEAD_DIM], dtype=tl.float32)
    for c in range(0, n_chunks):
        acc += tl.load(base + c * (G_PAD * HEAD_DIM) + gsl)
    acc = acc * scale
    if TO_ROWS:
        g_pos = tl.load(GPOS + b.to(tl.int64) * stride_pb + offs_g)
        ok = g_pos >= 0
        rows = tl.where(ok, g_pos, 0).to(tl.int64)
        ptrs = Dst + (pid_z.to(tl.int64) * N + rows)[:, None] * HEAD_DIM + offs_d[None, :]
        cur = tl.load(ptrs, mask=ok[:, None], other=0.0).to(tl.float32)
        tl.store(ptrs, (cur + acc).to(Dst.dtype.element_ty), mask=ok[:, None])
    else:
        tl.store(Dst + pid_z.to(tl.int64) * G * HEAD_DIM + gsl, acc.to(Dst.dtype.element_ty),
                 mask=(offs_g < G)[:, None])


@triton.jit
def _gather_globals_kernel(IDX, KPM, Q, K, V, QGI, GPOS, QG, KG, VG,
                           stride_ib, stride_mb, stride_qb, stride_qh, stride_qm, stride_kb, stride_kh, stride_kn,
                           stride_vb, stride_vh, stride_vn, stride_xb, stride_xh, stride_xm, stride_pb,
                           H, G, HEAD_DIM: tl.constexpr, G_PAD: tl.constexpr, HAS_KPM: tl.constexpr,
                           HAS_QGI: tl.constexpr):
    """One (batch, head): the compact global tile. Positions GPOS (B, G_PAD) int32, -1 for unused
    slots, -1 slots of IDX and padded tokens; KG, VG, QG (B, H, G_PAD, D) contiguous rows of K, V and Q
    (or of QGI, the separate global projection) at those positions, zero where there is none."""
    pid_z = tl.program_id(0)
    b = (pid_z // H).to(tl.int64)
    h = (pid_z % H).to(tl.int64)
    offs_g = tl.arange(0, G_PAD)
    offs_d = tl.arange(0, HEAD_DIM)
    in_g = offs_g < G
    idx = tl.load(IDX + b * stride_ib + offs_g, mask=in_g, other=-1).to(tl.int64)
    has = idx >= 0
    safe = tl.where(has, idx, 0)
    valid = has
    if HAS_KPM:
        valid = valid & (tl.load(KPM + b * stride_mb + safe, mask=has, other=1) == 0)
    if h == 0:
        tl.store(GPOS + b * stride_pb + offs_g, tl.where(valid, idx, -1).to(tl.int32))
    rows = safe[:, None]
    tile = ((b * H + h) * G_PAD + offs_g[:, None]) * HEAD_DIM + offs_d[None, :]
    kg = tl.load(K + b * stride_kb + h * stride_kh + rows * stride_kn + offs_d[None, :], mask=has[:, None], other=0.0)
    vg = tl.load(V + b * stride_vb + h * stride_vh + rows * stride_vn + offs_d[None, :], mask=has[:, None], other=0.0)
    tl.store(KG + tile, kg)
    tl.store(VG + tile, vg)
    if HAS_QGI:
        qg = tl.load(QGI + b * stride_xb + h * stride_xh + offs_g[:, None] * stride_xm + offs_d[None, :],
                     mask=in_g[:, None], other=0.0)
    else:
        qg = tl.load(Q + b * stride_qb + h * stride_qh + rows * stride_qm + offs_d[None, :], mask=has[:, None],
                     other=0.0)
    tl.store(QG + tile, qg)


# ---------------------------------------------------------------------------------------------
# 3. Launch configurations
# ---------------------------------------------------------------------------------------------
# The forward band kernel is the one that matters for time. Its tiles are fixed per head dim and
# dtype rather than autotuned: each configuration costs seconds of compile time on a new shape bucket
# (four autotuned configurations made the first call 10-15 s against a 10 s target), and the best
# tile does not depend on n, G or dilation (kernels/bench_tiles.py sweeps them; docs/kernels.md has the
# figures). BLOCK_M beyond 128 wastes a growing triangle of masked scores (BLOCK_M / (2w + 1) of the
# work) and BLOCK_M below 64 under-fills Hopper's 64-row wgmma.
_FWD_OVERRIDE = None  # (BLOCK_M, BLOCK_N, num_warps, num_stages): kernels/bench_tiles.py
_ONE_LOOP = False  # True: mask every band block in one loop (kernels/bench_tiles.py compares)
_IF_MASK = False  # with _FWD_OVERRIDE: one loop, band edges masked behind a branch (see _blocks' fwd_if)
_FWD_MAXNREG = None  # a register cap per thread for the forward band kernel (kernels/bench_tiles.py)


def _blocks(head_dim: int, dtype: torch.dtype = torch.bfloat16) -> dict:
    """The kernels' tiles (the backward ones could not be autotuned anyway: two kernels add into their
    outputs, and an autotuner's repeated runs would add twice).

    fwd_m/fwd_n/fwd_warps/fwd_stages: the forward band kernel's query block, key step, warps and
    pipeline stages, and fwd_if: one loop over an interior program's key blocks with the band edges
    masked behind a branch, instead of edge / interior / edge loops (each the fastest of
    kernels/bench_tiles.py's sweeps on an H100 at that head dim, bf16, G = 16: docs/kernels.md);
    kv_n/kv_m: the dK/dV kernel's key block and query step; dq_m/dq_n: the dQ kernel's query block and
    key step. A 64-row tile gets 4 warps: one Hopper warpgroup per 64 rows (with 8 warps on a 64-row dQ
    tile, Triton 3.6 on the H100 made a kernel that faulted with an illegal address; 4 warps run
    correctly).
    """
    if _INTERPRET:  # small tiles so CPU tests reach interior blocks at small w; both loop forms tested
        return dict(fwd_m=16, fwd_n=16, fwd_warps=4, fwd_stages=2, fwd_if=head_dim == 32, kv_n=16, kv_m=16,
                    kv_warps=4, kv_stages=1, dq_m=16, dq_n=16, dq_warps=4, dq_stages=1, glob=16)
    if dtype == torch.float32:
        # fp32 on the GPU serves exactness checks, not speed: small tiles, quick to compile (an fp32
        # forward configuration took about 20 s to compile on an H200).
        return dict(fwd_m=64, fwd_n=32, fwd_warps=4, fwd_stages=2, fwd_if=False, kv_n=64, kv_m=32, kv_warps=4,
                    kv_stages=3, dq_m=64, dq_n=32, dq_warps=4, dq_stages=3, glob=64)
    # dK/dV with one stage (no software pipelining of its loads) measured 3-7% faster than two at every
    # head dim and length tried (docs/kernels.md, session 6).
    if head_dim >= 128:  # dK/dV: two warpgroups on 128 keys, one CTA per SM (docs/kernels.md, session 6)
        return dict(fwd_m=128, fwd_n=32, fwd_warps=4, fwd_stages=2, fwd_if=True, kv_n=128, kv_m=64, kv_warps=8,
                    kv_stages=1, dq_m=64, dq_n=32, dq_warps=4, dq_stages=2, glob=64)
    if head_dim == 64:
        return dict(fwd_m=128, fwd_n=32, fwd_warps=4, fwd_stages=3, fwd_if=False, kv_n=64, kv_m=32, kv_warps=4,
                    kv_stages=1, dq_m=128, dq_n=32, dq_warps=4, dq_stages=3, glob=64)
    # d = 16, 32
    return dict(fwd_m=64, fwd_n=64, fwd_warps=4, fwd_stages=2, fwd_if=True, kv_n=64, kv_m=32, kv_warps=4,
                kv_stages=1, dq_m=128, dq_n=32, dq_warps=4, dq_stages=3, glob=64)


def _fwd_tiles(head_dim: int, dtype: torch.dtype) -> tuple:
    """(BLOCK_M, BLOCK_N, num_warps, num_stages, if_mask) of the forward band kernel."""
    if _FWD_OVERRIDE is not None:
        return tuple(_FWD_OVERRIDE) + (_IF_MASK,)
    t = _blocks(head_dim, dtype)
    return t["fwd_m"], t["fwd_n"], t["fwd_warps"], t["fwd_stages"], t["fwd_if"]


def _chunk(n: int, block: int, programs_per_head: int = 64) -> int:
    """Sequence chunk for the global passes: a power of two >= block, about n / 64 (so the B*H*64
    programs fill the GPU at any n) and at most 16k rows per program."""
    c = max(block, triton.next_power_of_2(max(1, -(-n // programs_per_head))))
    return min(c, max(block, 16384))


def _dot_precision(dtype: torch.dtype) -> str:
    # fp32 inputs: exact fp32 products (tf32 would give about 3e-4 relative error).
    return "ieee" if dtype == torch.float32 else "tf32"


# ---------------------------------------------------------------------------------------------
# 4. Launchers, custom ops, autograd
# ---------------------------------------------------------------------------------------------
def _prepare_globals(q, k, v, global_idx, kpm, has_kpm, global_qkv):
    """Compact global tile (B, H, G_PAD, D), positions (B, G_PAD) int32 (-1 unused or padded) and the
    global-row operands, built by one gather kernel (torch gathers and slice writes took about a dozen
    launches, which showed in the host time of every call; it drops padded global tokens by reading
    ``kpm``, the mask bytes of ``_key_mask``). G_PAD is the next power of two >= 16 (the smallest tl.dot)."""
    B, H, N, D = q.shape
    G = 0 if global_idx is None else global_idx.shape[1]
    if G == 0:
        return 0, None, None, None, None, None, None
    g_pad = max(16, triton.next_power_of_2(G))
    idx = global_idx if global_idx.stride(-1) == 1 else global_idx.contiguous()
    qgi = None if global_qkv is None else _lastdim_contig(global_qkv[0])
    gpos = torch.empty(B, g_pad, dtype=torch.int32, device=q.device)
    kg, vg, qg = (q.new_empty(B, H, g_pad, D) for _ in range(3))
    _gather_globals_kernel[(B * H,)](
        idx, kpm, q, k, v, qgi if qgi is not None else q, gpos, qg, kg, vg,
        idx.stride(0), kpm.stride(0) if has_kpm else 0, q.stride(0), q.stride(1), q.stride(2),
        k.stride(0), k.stride(1), k.stride(2), v.stride(0), v.stride(1), v.stride(2),
        qgi.stride(0) if qgi is not None else 0, qgi.stride(1) if qgi is not None else 0,
        qgi.stride(2) if qgi is not None else 0, gpos.stride(0),
        H, G, HEAD_DIM=D, G_PAD=g_pad, HAS_KPM=has_kpm, HAS_QGI=qgi is not None, num_warps=4)
    kG, vG = (global_qkv[1], global_qkv[2]) if global_qkv is not None else (k, v)
    return g_pad, gpos, kg, vg, qg, kG, vG


_NO_MASK: dict = {}


def _key_mask(q, key_padding_mask):
    """The padding mask (B, N) as the bytes the kernels read (nonzero = padded key; ``_pad_bias`` makes
    them 0 / -inf): a zero-copy uint8 view of the bool mask (copied only if its last dim is strided or
    it is not bool on q's device), so padding costs no memory that grows with N. A cached 1-element
    dummy when there is no padding."""
    if key_padding_mask is None:
        dummy = _NO_MASK.get(q.device)
        if dummy is None:
            dummy = _NO_MASK[q.device] = torch.zeros(1, 1, dtype=torch.uint8, device=q.device)
        return dummy, False
    kpm = _lastdim_contig(key_padding_mask.to(device=q.device, dtype=torch.bool))
    return kpm.view(torch.uint8), True


def _lastdim_contig(t):
    return t if t.stride(-1) == 1 else t.contiguous()


def _global_rows_pass(qg, kG, vG, kpm, has_kpm, qk_scale):
    """The global query rows qg (B, H, G_PAD, D) against every key of kG, vG (B, H, N, D), in chunks of
    the sequence: per-chunk normalised partials po (B, H, C, G_PAD, D) and log2-unit LSEs pl
    (B, H, C, G_PAD), both fp32, for a log-sum-exp merge."""
    B, H, g_pad, D = qg.shape
    N = kG.shape[2]
    kG, vG = _lastdim_contig(kG), _lastdim_contig(vG)
    block = _blocks(D, qg.dtype)["glob"]
    chunk = _chunk(N, block)
    n_chunks = triton.cdiv(N, chunk)
    po = torch.empty(B, H, n_chunks, g_pad, D, dtype=torch.float32, device=qg.device)
    pl = torch.empty(B, H, n_chunks, g_pad, dtype=torch.float32, device=qg.device)
    _fwd_global_rows_kernel[(n_chunks, B * H)](
        qg, kG, vG, kpm, po, pl, qg.stride(0), qg.stride(1), qg.stride(2),
        kG.stride(0), kG.stride(1), kG.stride(2), vG.stride(0), vG.stride(1), vG.stride(2),
        kpm.stride(0) if has_kpm else 0, po.stride(0), po.stride(1), po.stride(2), pl.stride(0), pl.stride(1),
        H, N, chunk, qk_scale, HEAD_DIM=D, BLOCK_N=block, G_PAD=g_pad, HAS_KPM=has_kpm,
        DOT_PREC=_dot_precision(qg.dtype), num_warps=4)
    return po, pl


def _fwd(q, k, v, global_idx, key_padding_mask, qg_in, kG_in, vG_in, window, dilation, scale):
    B, H, N, D = q.shape
    global_qkv = None if qg_in is None else (qg_in, kG_in, vG_in)
    q, k, v = _lastdim_contig(q), _lastdim_contig(k), _lastdim_contig(v)
    out = torch.empty(B, H, N, D, dtype=q.dtype, device=q.device)
    lse = torch.empty(B, H, N, dtype=torch.float32, device=q.device)
    if N == 0:
        return out, lse
    kpm, has_kpm = _key_mask(q, key_padding_mask)
    g_pad, gpos, kg, vg, qg, kG, vG = _prepare_globals(q, k, v, global_idx, kpm, has_kpm, global_qkv)
    # global rows that share k, v ride along the band kernel; separate projections need their own pass
    parts = _band_pass(q, k, v, kpm, has_kpm, g_pad, gpos, kg, vg, out, lse, window, dilation, scale,
                       qg=qg if g_pad and global_qkv is None else None)
    if g_pad:
        po, pl = parts or _global_rows_pass(qg, kG, vG, kpm, has_kpm, scale * LOG2E)
        n_chunks = po.shape[2]
        _fwd_global_merge_kernel[(B * H,)](
            po, pl, gpos, out, lse, n_chunks, po.stride(0), po.stride(1), po.stride(2), pl.stride(0), pl.stride(1),
            gpos.stride(0), out.stride(0), out.stride(1), out.stride(2), lse.stride(0), lse.stride(1),
            H, HEAD_DIM=D, G_PAD=g_pad, num_warps=4)
    return out, lse


# The forward folds the global rows into the band kernel up to _FUSE_MAX_CHUNKS row blocks per head;
# beyond that the separate pass is faster (on an H100 at 64k, 0.569 against 0.627 ms: docs/kernels.md).
# The backward's global-row work rides along its band kernels as per-block partials (G_PAD x D fp32
# each) instead of two passes that re-read Q, dO and K, V, when the tile is at most _PART_MAX_GPAD wide
# (the partials then take at most one more Q-sized buffer) and n is at most _PART_MAX_N: measured on an
# H100 at G = 16, the backward gained 13% at 4k, 6% at 64k, 3% at 256k and 1% at 1M, where 1.6 GB of
# partials would buy nothing. The backward's partial sums (these and the separate passes') are folded
# about _FOLD_FAN at a time, in parallel, until at most _FOLD_MAX remain for the final per-head kernel,
# which walks them one by one. Measured on the H100 by a one-off micro-benchmark (not in the
# repository; fold + final sum of 1,024 chunks of 16 x 64): 34 us with 32 per program, 49 us with 16,
# 84 us with 8, 40 us for one program per 32 chunks walking them in a loop. The forward's merge walks its at most 64 chunks itself (22 us at 64k; folding them first
# took a third longer).
# Under the interpreter small numbers make the CPU tests' shapes take every branch.
_FUSE_MAX_CHUNKS = 6 if _INTERPRET else 64
_PART_MAX_GPAD, _PART_MAX_N = 16, 1 << 18
_FOLD_FAN, _FOLD_MAX = (2, 3) if _INTERPRET else (32, 32)


def _fold(part):
    """Sum (B, H, C, G_PAD, D) fp32 partials over chunks down to at most _FOLD_MAX chunks, about
    _FOLD_FAN per program per level (same layout out)."""
    while part.shape[2] > _FOLD_MAX:
        B, H, C, g_pad, D = part.shape
        fan = _FOLD_FAN if _INTERPRET else max(2, _FOLD_FAN * 1024 // (g_pad * D))  # tiles of <= 32k floats
        n_out = triton.cdiv(C, fan)
        p2 = part.new_empty(B, H, n_out, g_pad, D)
        _fold_partials_kernel[(n_out, B * H)](part, p2, C, n_out, FAN=fan, HEAD_DIM=D, G_PAD=g_pad, num_warps=8)
        part = p2
    return part


def _fuses_global_rows(n: int, dilation: int, head_dim: int, dtype: torch.dtype) -> bool:
    """Whether the Triton band kernel also computes the global rows (at most _FUSE_MAX_CHUNKS row
    blocks per head), so no separate global-rows pass runs."""
    return dilation * triton.cdiv(-(-n // dilation), _fwd_tiles(head_dim, dtype)[0]) <= _FUSE_MAX_CHUNKS


def _on_hopper_kernel(q, k, v, out, dilation, has_kpm, g_pad, fuse) -> bool:
    """Whether the forward band pass runs on the warp-specialised sm_90 kernel (hopper_attention.py):
    not when the global rows ride along the Triton band kernel (fuse) or a Triton tile is forced."""
    return not fuse and _FWD_OVERRIDE is None and hopper_attention.supported(q, k, v, out, dilation, has_kpm, g_pad)


def _band_pass(q, k, v, kpm, has_kpm, g_pad, gpos, kg, vg, out, lse, window, dilation, scale, qg=None):
    """The forward band kernel (with the compact tile kg, vg at positions gpos when g_pad > 0) into
    out (B, H, N, D) and lse (B, H, N). With qg (the global rows' queries, when they share k, v) the
    kernel also returns their per-block partials (po, pl) for the merge when the sequence is short
    (at most _FUSE_MAX_CHUNKS row blocks per head); else None, and the caller runs the separate
    global-rows pass."""
    B, H, N, D = q.shape
    qk_scale = scale * LOG2E
    prec = _dot_precision(q.dtype)
    dummy = kpm
    n_r_max = -(-N // dilation)
    bm, bn, warps, stages, if_mask = _fwd_tiles(D, q.dtype)
    n_mblk = triton.cdiv(n_r_max, bm)
    fuse = qg is not None and _fuses_global_rows(N, dilation, D, q.dtype)
    if _on_hopper_kernel(q, k, v, out, dilation, has_kpm, g_pad, fuse):
        hopper_attention.band_forward(q, k, v, out, lse, window, qk_scale, g_pad, gpos, kg, vg)
        return None
    po = pl = dummy
    if fuse:
        po = torch.empty(B, H, dilation * n_mblk, g_pad, D, dtype=torch.float32, device=q.device)
        pl = torch.empty(B, H, dilation * n_mblk, g_pad, dtype=torch.float32, device=q.device)
    args = (q, k, v, kpm, kg if g_pad else dummy, vg if g_pad else dummy, gpos if g_pad else dummy, out, lse,
            qg if fuse else dummy, po, pl,
            q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
            v.stride(0), v.stride(1), v.stride(2), out.stride(0), out.stride(1), out.stride(2),
            kpm.stride(0) if has_kpm else 0,
            kg.stride(0) if g_pad else 0, kg.stride(1) if g_pad else 0, kg.stride(2) if g_pad else 0,
            gpos.stride(0) if g_pad else 0, lse.stride(0), lse.stride(1),
            H, N, window, qk_scale)
    grid = (n_mblk, B * H * dilation)
    extra = {} if _INTERPRET else {"num_warps": warps, "num_stages": stages}  # the interpreter ignores both
    if _FWD_MAXNREG and not _INTERPRET:
        extra["maxnreg"] = _FWD_MAXNREG
    _fwd_band_kernel[grid](*args, DIL=dilation, HEAD_DIM=D, G_PAD=g_pad, HAS_KPM=has_kpm, DOT_PREC=prec,
                           FUSE_G=fuse, ONE_LOOP=_ONE_LOOP, IF_MASK=if_mask, BLOCK_M=bm, BLOCK_N=bn, **extra)
    return (po, pl) if fuse else None


@torch.no_grad()
def band_with_tile_triton(q, k, v, tile_k, tile_v, tile_valid, *, window, dilation=1, key_padding_mask=None,
                          scale=None):
    """Band attention of q over k, v (B, H, N, D), every row also seeing the S extra keys tile_k, tile_v
    (B, H, S, D) where tile_valid (B, S); forward only, no global query rows. The tile goes straight
    into the band kernel's compact global tile, at positions no band reaches, so nothing of the
    sequence is copied (the sharded encoder's halo runs; see longdoc.kernels.band_with_tile)."""
    B, H, N, D = q.shape
    scale = D ** -0.5 if scale is None else scale
    q, k, v = _lastdim_contig(q), _lastdim_contig(k), _lastdim_contig(v)
    out = torch.empty(B, H, N, D, dtype=q.dtype, device=q.device)
    lse = torch.empty(B, H, N, dtype=torch.float32, device=q.device)
    if N == 0:
        return out
    S = tile_k.shape[2]
    g_pad = max(16, triton.next_power_of_2(S)) if S else 0
    gpos = kg = vg = None
    if g_pad:
        far = N + window * dilation + 1  # beyond every row's band, so the kernel never drops a tile key
        slot = torch.arange(S, device=q.device, dtype=torch.int32)[None, :] + far
        gpos = torch.full((B, g_pad), -1, dtype=torch.int32, device=q.device)
        gpos[:, :S] = torch.where(tile_valid.to(q.device), slot, -1)
        kg = q.new_zeros(B, H, g_pad, D)
        vg = q.new_zeros(B, H, g_pad, D)
        kg[:, :, :S] = tile_k
        vg[:, :, :S] = tile_v
    kpm, has_kpm = _key_mask(q, key_padding_mask)
    _band_pass(q, k, v, kpm, has_kpm, g_pad, gpos, kg, vg, out, lse, window, dilation, scale)
    return out


def _bwd(do, q, k, v, out, lse, global_idx, key_padding_mask, qg_in, kG_in, vG_in, window, dilation, scale):
    B, H, N, D = q.shape
    global_qkv = None if qg_in is None else (qg_in, kG_in, vG_in)
    q, k, v, do = _lastdim_contig(q), _lastdim_contig(k), _lastdim_contig(v), _lastdim_contig(do)
    out = out.contiguous()
    dq = torch.empty(B, H, N, D, dtype=q.dtype, device=q.device)
    dk = torch.empty_like(dq)
    dv = torch.empty_like(dq)
    G = 0 if global_idx is None else global_idx.shape[1]
    dqg = q.new_zeros(B, H, G, D) if global_qkv is not None else q.new_zeros(0)
    dkG = torch.zeros_like(dq) if global_qkv is not None else q.new_zeros(0)
    dvG = torch.zeros_like(dq) if global_qkv is not None else q.new_zeros(0)
    if N == 0:
        return dq.zero_(), dk.zero_(), dv.zero_(), dqg, dkG, dvG
    kpm, has_kpm = _key_mask(q, key_padding_mask)
    g_pad, gpos, kg, vg, qg, kG, vG = _prepare_globals(q, k, v, global_idx, kpm, has_kpm, global_qkv)
    qk_scale = scale * LOG2E
    prec = _dot_precision(q.dtype)
    t = _blocks(D, q.dtype)

    # The dQ kernel runs first: it also makes each row's delta and log2-unit LSE (+inf where a row must
    # contribute nothing through the band and the tile: rows that saw no key, and global rows, whose
    # gradient flows only through the global pass), which the kernels after it read.
    lse = lse.contiguous()
    delta = torch.empty(B, H, N, dtype=torch.float32, device=q.device)
    lse2 = torch.empty_like(delta)

    # Global rows that share k, v add their dK/dV inside the dK/dV band kernel (separate projections
    # cannot); with a narrow tile that kernel also leaves their dQ as per-block partials, and the dQ
    # kernel the tile's dK/dV, so no pass re-reads the sequence for them (see _PART_MAX_GPAD).
    fuse = g_pad and global_qkv is None
    part_kv = 0 < g_pad <= _PART_MAX_GPAD and N <= _PART_MAX_N
    part_dq = fuse and part_kv
    n_r_max = -(-N // dilation)
    dummy = kpm
    # the dK/dV band pass runs on the warp-specialised Hopper kernel where it can (one partial of the
    # global rows' dQ per 64 keys there, per dK/dV key block here)
    hopper = hopper_attention.supported_bwd(q, k, v, do, dk, dv, dilation, has_kpm, g_pad if fuse else 0)
    n_kblk = triton.cdiv(n_r_max, hopper_attention.SUB_M if hopper else t["kv_n"])
    n_qblk = triton.cdiv(n_r_max, t["dq_m"])
    pdq = q.new_empty(B, H, dilation * n_kblk, g_pad, D, dtype=torch.float32) if part_dq else dummy
    pdk, pdv = ((q.new_empty(B, H, dilation * n_qblk, g_pad, D, dtype=torch.float32) for _ in range(2)) if part_kv
                else (dummy, dummy))
    _bwd_dq_band_kernel[(n_qblk, B * H * dilation)](
        q, k, v, do, kpm, kg if g_pad else dummy, vg if g_pad else dummy, gpos if g_pad else dummy, out, lse, lse2,
        delta, dq, pdk, pdv,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), do.stride(0), do.stride(1), do.stride(2),
        out.stride(0), out.stride(1), out.stride(2),
        kpm.stride(0) if has_kpm else 0,
        kg.stride(0) if g_pad else 0, kg.stride(1) if g_pad else 0, kg.stride(2) if g_pad else 0,
        gpos.stride(0) if g_pad else 0,
        H, N, window, qk_scale, scale, DIL=dilation, HEAD_DIM=D, BLOCK_M=t["dq_m"],
        BLOCK_N=t["dq_n"], G_PAD=g_pad, HAS_KPM=has_kpm, DOT_PREC=prec, PART_KV=part_kv,
        num_warps=t["dq_warps"], num_stages=t["dq_stages"])
    if g_pad:
        lse_g2 = torch.empty(B, H, g_pad, dtype=torch.float32, device=q.device)
        delta_g = torch.empty_like(lse_g2)
        dog = do.new_empty(B, H, g_pad, D)
        _bwd_global_prep_kernel[(B * H,)](gpos, lse, delta, do, lse_g2, delta_g, dog, gpos.stride(0),
                                          do.stride(0), do.stride(1), do.stride(2), H, N, HEAD_DIM=D, G_PAD=g_pad,
                                          num_warps=4)
    if hopper:
        hopper_attention.band_dkdv(q, k, v, do, dk, dv, lse2, delta, window, qk_scale, scale, g_pad if fuse else 0,
                                   *((qg, dog, lse_g2, delta_g) if fuse else (None,) * 4), pdq if part_dq else None)
    else:
        _bwd_dkdv_band_kernel[(n_kblk, B * H * dilation)](
            q, k, v, do, kpm, lse2, delta, dk, dv, *((qg, dog, lse_g2, delta_g) if fuse else (kpm,) * 4), pdq,
            q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
            v.stride(0), v.stride(1), v.stride(2), do.stride(0), do.stride(1), do.stride(2),
            kpm.stride(0) if has_kpm else 0, H, N, window, qk_scale, scale,
            DIL=dilation, HEAD_DIM=D, BLOCK_M=t["kv_m"], BLOCK_N=t["kv_n"], HAS_KPM=has_kpm, DOT_PREC=prec,
            G_PAD=g_pad if fuse else 0, PART_DQ=part_dq, num_warps=t["kv_warps"], num_stages=t["kv_stages"])

    if g_pad:
        chunk = _chunk(N, t["glob"])
        n_chunks = triton.cdiv(N, chunk)
        # (1) the compact tile: dK_g, dV_g from every local row, as per-block partials from the dQ
        # kernel or per chunk from a pass over the rows, then summed in order
        if not part_kv:
            pdk = torch.empty(B, H, n_chunks, g_pad, D, dtype=torch.float32, device=q.device)
            pdv = torch.empty_like(pdk)
            _bwd_global_tile_kernel[(n_chunks, B * H)](
                q, do, kg, vg, gpos, lse2, delta, pdk, pdv,
                q.stride(0), q.stride(1), q.stride(2), do.stride(0), do.stride(1), do.stride(2),
                kg.stride(0), kg.stride(1), kg.stride(2), gpos.stride(0),
                H, N, window, chunk, qk_scale, DIL=dilation, HEAD_DIM=D, BLOCK_M=t["glob"], G_PAD=g_pad,
                DOT_PREC=prec, num_warps=4)
        pdk, pdv = _fold(pdk), _fold(pdv)
        _reduce_rows(pdk, dk, gpos, pdk.shape[2], scale, B, H, N, D, g_pad)
        _reduce_rows(pdv, dv, gpos, pdv.shape[2], 1.0, B, H, N, D, g_pad)
        # (2) the global rows: dQ_g, as per-block partials from the dK/dV kernel or per chunk of keys
        # from a pass over the sequence (which, for separate projections, also makes dK_G / dV_G)
        if part_dq:
            pdq = _fold(pdq)
            _reduce_rows(pdq, dq, gpos, pdq.shape[2], scale, B, H, N, D, g_pad)
            return dq, dk, dv, dqg, dkG, dvG
        kG, vG = _lastdim_contig(kG), _lastdim_contig(vG)
        pdq = torch.empty(B, H, n_chunks, g_pad, D, dtype=torch.float32, device=q.device)
        _bwd_global_rows_kernel[(n_chunks, B * H)](
            qg, kG, vG, dog, kpm, lse_g2, delta_g, kpm if fuse else dkG, kpm if fuse else dvG, pdq,
            qg.stride(0), qg.stride(1), qg.stride(2), kG.stride(0), kG.stride(1), kG.stride(2),
            vG.stride(0), vG.stride(1), vG.stride(2), kpm.stride(0) if has_kpm else 0,
            H, N, chunk, qk_scale, scale, HEAD_DIM=D, BLOCK_N=t["glob"], G_PAD=g_pad, HAS_KPM=has_kpm,
            DKDV=not fuse, DOT_PREC=prec, num_warps=4)
        pdq = _fold(pdq)
        n_chunks = pdq.shape[2]
        if fuse:
            _reduce_rows(pdq, dq, gpos, n_chunks, scale, B, H, N, D, g_pad)
        else:
            _reduce_partials_kernel[(B * H,)](pdq, dqg, gpos, n_chunks, gpos.stride(0), scale, H, G, N,
                                              HEAD_DIM=D, G_PAD=g_pad, TO_ROWS=False, num_warps=4)
    return dq, dk, dv, dqg, dkG, dvG


def _reduce_rows(part, dst, gpos, n_chunks, scale, B, H, N, D, g_pad):
    """dst[b, h, gpos[b, s]] += scale * sum_c part[b, h, c, s]  (dst contiguous (B, H, N, D))."""
    _reduce_partials_kernel[(B * H,)](part, dst, gpos, n_chunks, gpos.stride(0), scale, H, 0, N,
                                      HEAD_DIM=D, G_PAD=g_pad, TO_ROWS=True, num_warps=4)


@torch.library.custom_op("longdoc::local_global_attention_fwd", mutates_args=())
def _lga_fwd_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, global_idx: torch.Tensor | None,
                key_padding_mask: torch.Tensor | None, q_g: torch.Tensor | None, k_g: torch.Tensor | None,
                v_g: torch.Tensor | None, window: int, dilation: int, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    return _fwd(q, k, v, global_idx, key_padding_mask, q_g, k_g, v_g, window, dilation, scale)


@_lga_fwd_op.register_fake
def _(q, k, v, global_idx, key_padding_mask, q_g, k_g, v_g, window, dilation, scale):
    B, H, N, D = q.shape
    return q.new_empty(B, H, N, D), q.new_empty(B, H, N, dtype=torch.float32)


@torch.library.custom_op("longdoc::local_global_attention_bwd", mutates_args=())
def _lga_bwd_op(do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
                lse: torch.Tensor, global_idx: torch.Tensor | None, key_padding_mask: torch.Tensor | None,
                q_g: torch.Tensor | None, k_g: torch.Tensor | None, v_g: torch.Tensor | None,
                window: int, dilation: int, scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                                    torch.Tensor, torch.Tensor, torch.Tensor]:
    return _bwd(do, q, k, v, out, lse, global_idx, key_padding_mask, q_g, k_g, v_g, window, dilation, scale)


@_lga_bwd_op.register_fake
def _(do, q, k, v, out, lse, global_idx, key_padding_mask, q_g, k_g, v_g, window, dilation, scale):
    B, H, N, D = q.shape
    if q_g is None:
        e = q.new_empty(0)
        return q.new_empty(B, H, N, D), q.new_empty(B, H, N, D), q.new_empty(B, H, N, D), e, e, e
    return (q.new_empty(B, H, N, D), q.new_empty(B, H, N, D), q.new_empty(B, H, N, D),
            q_g.new_empty(q_g.shape), q.new_empty(B, H, N, D), q.new_empty(B, H, N, D))


def _setup_context(ctx, inputs, output):
    q, k, v, global_idx, key_padding_mask, q_g, k_g, v_g, window, dilation, scale = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, global_idx, key_padding_mask, q_g, k_g, v_g)
    ctx.cfg = (window, dilation, scale)


def _backward(ctx, dout, dlse):
    q, k, v, out, lse, global_idx, key_padding_mask, q_g, k_g, v_g = ctx.saved_tensors
    window, dilation, scale = ctx.cfg
    # The LSE output is a statistic: its gradient is not propagated (as in FlashAttention).
    bwd = _lga_bwd_op if torch.compiler.is_compiling() else _bwd  # see LocalGlobalAttention
    dq, dk, dv, dqg, dkG, dvG = bwd(dout.contiguous(), q, k, v, out, lse, global_idx, key_padding_mask,
                                    q_g, k_g, v_g, window, dilation, scale)
    if q_g is None:
        dqg = dkG = dvG = None
    return dq, dk, dv, None, None, dqg, dkG, dvG, None, None, None


torch.library.register_autograd("longdoc::local_global_attention_fwd", _backward, setup_context=_setup_context)


class LocalGlobalAttention(torch.autograd.Function):
    """Forward and backward custom ops tied together for autograd. ``torch.compile`` traces this
    Function and keeps each custom op as one opaque node, so the graph does not break. (The forward
    op also carries the same formula through ``register_autograd``, for callers of the op itself.)
    Eager calls skip the ops and run the launchers directly: the op layer's per-call checks cost about
    0.7 ms of host time per op on the H100 machine (cProfile), which made a forward + backward of up
    to 16k tokens wait on the host rather than the GPU."""

    @staticmethod
    def forward(ctx, q, k, v, global_idx, key_padding_mask, q_g, k_g, v_g, window, dilation, scale):
        fwd = _lga_fwd_op if torch.compiler.is_compiling() else _fwd
        out, lse = fwd(q, k, v, global_idx, key_padding_mask, q_g, k_g, v_g, window, dilation, scale)
        ctx.save_for_backward(q, k, v, out, lse, global_idx, key_padding_mask, q_g, k_g, v_g)
        ctx.cfg = (window, dilation, scale)
        ctx.mark_non_differentiable(lse)
        return out, lse

    @staticmethod
    def backward(ctx, dout, dlse):
        return _backward(ctx, dout, dlse)


# ---------------------------------------------------------------------------------------------
# 5. Public entry point
# ---------------------------------------------------------------------------------------------
def local_global_attention_triton(q, k, v, *, window, dilation=1, global_idx=None, key_padding_mask=None,
                                  global_qkv=None, scale=None, return_lse=False):
    """Sliding-window + global attention on Triton kernels (CUDA tensors, or any tensors under
    ``TRITON_INTERPRET=1``). Same arguments, semantics and return values as
    ``local_global_attention_reference``; fp16 / bf16 / fp32 inputs, head dim 16 to 128 (a power of 2).
    """
    if q.dim() != 4 or q.shape != k.shape or k.shape != v.shape:
        raise ValueError(f"q, k, v must all be (B, H, N, D); got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if window < 0 or dilation < 1:
        raise ValueError(f"window must be >= 0 and dilation >= 1, got {window}, {dilation}")
    B, H, N, D = q.shape
    if D not in (16, 32, 64, 128):
        raise ValueError(f"head dim must be 16, 32, 64 or 128, got {D}")
    if q.dtype not in (torch.float16, torch.bfloat16, torch.float32) or k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError(f"q, k, v must share one of fp16 / bf16 / fp32, got {q.dtype}, {k.dtype}, {v.dtype}")
    scale = 1.0 / math.sqrt(D) if scale is None else float(scale)
    if global_idx is not None:
        global_idx = global_idx.to(device=q.device, dtype=torch.long)
        if global_idx.shape[1] == 0:
            global_idx = None
        elif global_idx.shape[0] != B:
            raise ValueError(f"global_idx must be (B, G) with B = {B}, got {tuple(global_idx.shape)}")
    if global_idx is None:
        global_qkv = None
    q_g = k_g = v_g = None
    if global_qkv is not None:
        q_g, k_g, v_g = global_qkv
        if q_g.shape != (B, H, global_idx.shape[1], D) or k_g.shape != q.shape or v_g.shape != q.shape:
            raise ValueError("global_qkv must be (q_g (B, H, G, D), k_g (B, H, N, D), v_g (B, H, N, D))")
        q_g, k_g, v_g = (t.to(q.dtype) for t in (q_g, k_g, v_g))
    if key_padding_mask is not None:
        key_padding_mask = key_padding_mask.to(device=q.device, dtype=torch.bool)
    graph = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (q, k, v, q_g, k_g, v_g))
    if graph or torch.compiler.is_compiling():
        out, lse = LocalGlobalAttention.apply(q, k, v, global_idx, key_padding_mask, q_g, k_g, v_g,
                                              int(window), int(dilation), scale)
    else:  # inference: straight to the launcher (the custom op and autograd dispatch cost host time)
        out, lse = _fwd(q, k, v, global_idx, key_padding_mask, q_g, k_g, v_g, int(window), int(dilation), scale)
    return (out, lse) if return_lse else out


def global_rows_partial(qg, k, v, *, key_padding_mask=None, scale=None):
    """Global query rows against one run of keys, for merging with other runs by log-sum-exp (the
    sequence-sharded encoder: each rank holds a shard of the keys). Inference only.

    qg (B, H, S, D) and k, v (B, H, n, D) in one dtype; key_padding_mask (B, n) bool, True = not a key.
    Returns out (B, H, S, D) fp32, normalised over this run's keys, and lse (B, H, S) fp32 in natural
    log (-inf and a zero row where the run has no key). The global-rows pass of the forward kernel,
    with its per-chunk partials merged here instead of being written into a band output."""
    B, H, S, D = qg.shape
    n = k.shape[2]
    scale = 1.0 / math.sqrt(D) if scale is None else float(scale)
    if S == 0 or n == 0:
        return qg.new_zeros(B, H, S, D, dtype=torch.float32), qg.new_full((B, H, S), -math.inf, dtype=torch.float32)
    g_pad = max(16, triton.next_power_of_2(S))
    q_pad = qg.new_zeros(B, H, g_pad, D)
    q_pad[:, :, :S] = qg
    kpm, has_kpm = _key_mask(k, key_padding_mask)
    po, pl = _global_rows_pass(q_pad, k, v, kpm, has_kpm, scale * LOG2E)
    po, pl = po[..., :S, :], pl[..., :S] * math.log(2.0)  # (B, H, C, S, D), (B, H, C, S) natural log
    m = pl.amax(2, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    w = torch.exp(pl - m)  # 0 for chunks without a key
    l = w.sum(2)
    out = (w[..., None] * po).sum(2) / l.clamp(min=1e-30)[..., None]
    lse = torch.where(l > 0, m.squeeze(2) + torch.log(l.clamp(min=1e-30)), torch.full_like(l, -math.inf))
    return out, lse
