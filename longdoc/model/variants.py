"""Attention patterns from the literature, one function each, selectable in the encoder.

Every function takes ``q, k, v`` of shape ``(B, H, N, D)`` and returns ``out`` of the same shape in the
input dtype; statistics (max, sum, log-sum-exp) are accumulated in fp32 (fp64 for fp64 inputs, which
is how the tests compare them with dense float64 references). ``key_padding_mask`` ``(B, N)`` is True
where a token is padding: padded keys are never attended. A query with no key to attend gets output
0, never NaN. Memory is O(N * keys per query) for every pattern but ``full`` (whose memory is O(N)
on the flash / fused CPU kernels and whose time is O(N^2)): no N x N mask is ever built.

Patterns (``w`` is the radius and ``d`` the dilation of the layer, as in ``kernels/reference.py``):

* ``local`` - Longformer (Beltagy et al. 2020), the default: query i sees band keys i + d*t for
  t in -w..w, every global key; global queries see every key. ``longdoc.kernels.local_global_attention``
  (Triton on CUDA, the blocked reference elsewhere).
* ``strided`` - Sparse Transformer's "fixed" pattern (Child et al. 2019) made bidirectional: the
  ``local`` pattern plus the summary columns ``j = stride-1, 2*stride-1, ...`` (the last token of each
  block of ``stride``), visible to every query. Default stride: ``max(2w+1, ceil(sqrt(N)))`` (the
  paper's stride ~ sqrt(N)), so a query sees at most 2w+1 + N/stride + G keys. Computed as the band
  kernel (with its log-sum-exp) plus a compact gather of the M = N/stride columns, merged by
  log-sum-exp; a column already in the query's band or a global token is not counted twice.
* ``sinks`` - StreamingLLM's attention sinks (Xiao et al. 2023) in a bidirectional encoder: the
  ``local`` pattern plus the first ``sinks`` tokens as keys visible to every query. Unlike a global
  token, a sink *query* does not see the whole sequence: it sees its band, the other sinks and the
  global keys. So nothing beyond the window flows into any token except through the sinks' values,
  and the sinks themselves only ever read the start of the input: the pattern can be computed
  over a stream, window by window, with the sinks' K/V carried along.
* ``lsh`` - Reformer's LSH attention (Kitaev et al. 2020), adapted to a checkpoint with separate
  query and key projections: per hash round, queries and keys are hashed with the *same* random
  rotations R (angular LSH: bucket = argmax([x R, -x R]) of the unit vector x), each sorted by
  (bucket, position), cut into chunks of ``chunk`` tokens, and query chunk t attends key chunks t and
  t-1 (chunk 0's previous is the last chunk, as in Reformer). The rounds are merged by log-sum-exp
  with a duplicate correction (a key attended in c rounds has log c subtracted from its score in
  each), so the result is exact softmax attention over the union of the rounds' key sets. Padded
  tokens hash to an extra last bucket. Rotations come from ``torch.Generator().manual_seed(seed)``
  on the CPU: the pattern is reproducible across runs and devices. Defaults: chunk = max(w, 32),
  buckets = N / chunk rounded up to an even number (Reformer's choice), 2 rounds.
  Global tokens are ignored.
* ``linear`` - kernelised linear attention (Katharopoulos et al. 2020), non-causal:
  out_i = phi(q_i)^T (sum_j phi(k_j) v_j^T) / (phi(q_i)^T sum_j phi(k_j)) with phi = elu + 1 and no
  softmax scale; O(N D^2) time, O(N + D^2) memory. Global tokens are ignored.
* ``full`` - exact softmax attention over every key (``scaled_dot_product_attention``: flash on
  the GPU, the fused CPU kernel here). Global tokens change nothing (every token is global);
  Longformer's separate global projections are not used.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from longdoc.kernels import local_global_attention
from longdoc.model.attention_spec import PARAMS, VARIANTS, parse_spec  # noqa: F401  (re-exported)

# Scores held at once by the blocked passes below, in elements (fp32: 64 MiB), as in kernels/reference.py.
_SCORE_BUDGET = 1 << 24


def _cdt(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _key_valid(key_padding_mask, B, N, device):
    if key_padding_mask is None:
        return torch.ones(B, N, dtype=torch.bool, device=device)
    return ~key_padding_mask.to(device=device, dtype=torch.bool)


def _softmax_stats(scores, ok):
    """Masked softmax over the last dim without NaN (also in backward): (p, lse); lse -inf and p 0
    for a row with no allowed key."""
    scores = scores.masked_fill(~ok, float("-inf"))
    m = scores.amax(-1, keepdim=True).detach()
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = torch.exp(scores - m)  # exactly 0 where masked
    s = e.sum(-1, keepdim=True)
    seen = s > 0
    p = e / torch.where(seen, s, torch.ones_like(s))
    lse = torch.where(seen, m + torch.log(torch.where(seen, s, torch.ones_like(s))),
                      torch.full_like(s, float("-inf")))
    return p, lse.squeeze(-1)


def _fused_ok(q) -> bool:
    # fp32 inference on the CPU: the fused flash kernel (as kernels/reference.py's _band_fused)
    return (q.device.type == "cpu" and q.dtype == torch.float32 and not torch.is_grad_enabled()
            and hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu"))


def _attend(q, k, v, ok, scale, bias=None):
    """Softmax attention of q (..., c, D) over k, v (..., L, D) where ``ok`` (broadcast to (..., c, L))
    allows, scores shifted by ``bias`` (..., c, L) when given. Returns out (..., c, D), lse (..., c)."""
    if not _fused_ok(q):
        s = torch.matmul(q, k.transpose(-1, -2)) * scale
        if bias is not None:
            s = s + bias
        p, lse = _softmax_stats(s, ok)
        return torch.matmul(p, v), lse
    lead, c, D = q.shape[:-2], q.shape[-2], q.shape[-1]
    L = k.shape[-2]
    add = torch.zeros(*lead, c, L, dtype=q.dtype, device=q.device)
    add.masked_fill_(~ok.expand(*lead, c, L), -1e30)
    if bias is not None:
        add += bias
    n = add[..., 0, 0].numel()
    o, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        q.expand(*lead, c, D).reshape(n, 1, c, D), k.expand(*lead, L, D).reshape(n, 1, L, D),
        v.expand(*lead, L, v.shape[-1]).reshape(n, 1, L, v.shape[-1]), attn_mask=add.view(n, 1, c, L),
        scale=scale)[:2]
    visible = ok.expand(*lead, c, L).any(-1)
    o = o.view(*lead, c, -1) * visible[..., None]
    lse = lse.view(*lead, c).masked_fill(~visible, float("-inf"))
    return o, lse


def merge(o1, l1, o2, l2):
    """Two attention results over disjoint key sets -> the result over their union (log-sum-exp)."""
    m = torch.maximum(l1, l2).detach()
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    a1, a2 = torch.exp(l1 - m), torch.exp(l2 - m)  # 0 for a side that saw nothing
    s = a1 + a2
    seen = s > 0
    s_safe = torch.where(seen, s, torch.ones_like(s))
    out = (a1[..., None] * o1 + a2[..., None] * o2) / s_safe[..., None]
    lse = torch.where(seen, m + torch.log(s_safe), torch.full_like(s, float("-inf")))
    return out, lse


def _is_global(global_idx, key_valid, B, N, device):
    """(B, N) bool: token is global (a padded token never is, as in the kernels)."""
    g = torch.zeros(B, N + 1, dtype=torch.bool, device=device)
    if global_idx is not None and global_idx.numel():
        gi = global_idx.to(device=device, dtype=torch.long)
        g.scatter_(1, torch.where(gi >= 0, gi, N), True)
    return g[:, :N] & key_valid


# ---------------------------------------------------------------------------------------------------
# local / full


def local(q, k, v, *, window, dilation=1, global_idx=None, key_padding_mask=None, global_qkv=None, scale=None,
          **_):
    """The Longformer pattern (the kernels' function)."""
    return local_global_attention(q, k, v, window=window, dilation=dilation, global_idx=global_idx,
                                  key_padding_mask=key_padding_mask, global_qkv=global_qkv, scale=scale)


def full(q, k, v, *, key_padding_mask=None, scale=None, **_):
    """Exact attention over every (valid) key through scaled_dot_product_attention."""
    B, H, N, D = q.shape
    in_dtype = q.dtype
    low = q.is_cuda and in_dtype in (torch.float16, torch.bfloat16)  # flash accumulates in fp32 itself
    cdt = in_dtype if low else _cdt(in_dtype)
    q, k, v = q.to(cdt), k.to(cdt), v.to(cdt)
    if key_padding_mask is None:
        return F.scaled_dot_product_attention(q, k, v, scale=scale).to(in_dtype)
    valid = _key_valid(key_padding_mask, B, N, q.device)
    empty = ~valid.any(1)  # (B,) rows of pure padding: attend anything, then zeroed (no NaN)
    mask = (valid | empty[:, None])[:, None, None, :]  # (B, 1, 1, N)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    out = torch.where(empty[:, None, None, None], torch.zeros_like(out), out)
    return out.to(in_dtype)


# ---------------------------------------------------------------------------------------------------
# band + extra key columns (strided, sinks)


def _columns(q, k, v, cols, key_valid, is_global, window, dilation, scale):
    """Attention of every query over the key columns ``cols`` (M,) that it does not already see
    through the band or the global tile; global query rows see none (they see every key already).
    Returns out (B, H, N, D), lse (B, H, N). O(N * M) time, a working set bounded by _SCORE_BUDGET."""
    B, H, N, D = q.shape
    M = cols.numel()
    kc, vc = k[:, :, cols], v[:, :, cols]  # (B, H, M, D)
    col_ok = key_valid[:, cols] & ~is_global[:, cols]  # (B, M)
    reach = window * dilation
    outs, lses = [], []
    step = max(1, _SCORE_BUDGET // max(B * H * M, 1))
    for i0 in range(0, N, step):
        i1 = min(N, i0 + step)
        rows = torch.arange(i0, i1, device=q.device)
        off = cols[None, :] - rows[:, None]  # (c, M)
        in_band = (off.abs() <= reach) & (off.remainder(dilation) == 0)
        ok = col_ok[:, None, :] & ~in_band[None] & ~is_global[:, i0:i1, None]  # (B, c, M)
        o, l = _attend(q[:, :, i0:i1], kc, vc, ok[:, None], scale)  # (B, H, c, D), (B, H, c)
        outs.append(o)
        lses.append(l)
    return torch.cat(outs, 2), torch.cat(lses, 2)


def _band_plus_columns(q, k, v, cols, *, window, dilation, global_idx, key_padding_mask, global_qkv, scale):
    B, H, N, D = q.shape
    in_dtype = q.dtype
    cdt = _cdt(in_dtype)
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    ob, lb = local_global_attention(q, k, v, window=window, dilation=dilation, global_idx=global_idx,
                                    key_padding_mask=key_padding_mask, global_qkv=global_qkv, scale=scale,
                                    return_lse=True)
    if cols.numel() == 0:
        return ob
    qc, kc, vc = q.to(cdt), k.to(cdt), v.to(cdt)
    key_valid = _key_valid(key_padding_mask, B, N, q.device)
    oc, lc = _columns(qc, kc, vc, cols, key_valid, _is_global(global_idx, key_valid, B, N, q.device), window, dilation, scale)
    out, _ = merge(ob.to(cdt), lb.to(cdt), oc, lc)
    return out.to(in_dtype)


def strided_columns(n: int, stride: int, window: int, device=None) -> torch.Tensor:
    """The summary columns of ``strided``: the last token of each block of ``stride`` (auto when 0)."""
    stride = stride or max(2 * window + 1, math.isqrt(max(n - 1, 0)) + 1)
    if stride - 1 >= n:
        return torch.zeros(0, dtype=torch.long, device=device)
    return torch.arange(stride - 1, n, stride, device=device)


def strided(q, k, v, *, window, dilation=1, global_idx=None, key_padding_mask=None, global_qkv=None, scale=None,
            stride=0, **_):
    """Band + globals + every stride-th key (the summary columns), merged by log-sum-exp."""
    cols = strided_columns(q.shape[2], stride, window, q.device)
    return _band_plus_columns(q, k, v, cols, window=window, dilation=dilation, global_idx=global_idx,
                              key_padding_mask=key_padding_mask, global_qkv=global_qkv, scale=scale)


def sinks(q, k, v, *, window, dilation=1, global_idx=None, key_padding_mask=None, global_qkv=None, scale=None,
          sinks=4, **_):
    """Band + globals + the first ``sinks`` tokens as keys for every query."""
    cols = torch.arange(min(int(sinks), q.shape[2]), device=q.device)
    return _band_plus_columns(q, k, v, cols, window=window, dilation=dilation, global_idx=global_idx,
                              key_padding_mask=key_padding_mask, global_qkv=global_qkv, scale=scale)


# ---------------------------------------------------------------------------------------------------
# lsh


def lsh_defaults(n: int, window: int, buckets: int = 0, chunk: int = 0) -> tuple[int, int]:
    """(buckets, chunk) with the defaults filled in: chunk max(w, 32), buckets ~ n / chunk, even."""
    chunk = int(chunk) or max(int(window), 32)
    if not buckets:
        buckets = max(2, -(-n // chunk))
    buckets = int(buckets) + (int(buckets) % 2)
    return buckets, chunk


def _angular_buckets(x, rot):
    """argmax([x R, -x R]) per token, (B, H, N), in row blocks so the (N, buckets) projection is never
    held whole (it would be O(N^2 / chunk) with the default bucket count)."""
    B, H, N, D = x.shape
    half = rot.shape[-1]
    out = torch.empty(B, H, N, dtype=torch.long, device=x.device)
    step = max(1, _SCORE_BUDGET // max(B * H * half, 1))
    for i0 in range(0, N, step):
        proj = torch.einsum("bhnd,hdk->bhnk", x[:, :, i0:i0 + step], rot)
        hi, lo = proj.max(-1), proj.min(-1)
        # the first maximum of [p, -p]: in the first half when max(p) >= max(-p), as argmax would pick
        out[:, :, i0:i0 + step] = torch.where(hi.values >= -lo.values, hi.indices, lo.indices + half)
    return out


def lsh_chunk_ids(q, k, key_valid, *, buckets, rounds, chunk, seed=0):
    """The hashing of ``lsh``, shared with the tests' dense reference.

    Returns (q_order, k_order, q_chunk, k_chunk): ``*_order[r]`` (B, H, N) lists token indices in
    sorted (bucket, position) order for round r; ``*_chunk[r]`` (B, H, N) is each token's chunk in that
    order (rank // chunk). Padded tokens (as queries and keys) go to an extra last bucket."""
    B, H, N, D = q.shape
    gen = torch.Generator().manual_seed(int(seed))
    rot = torch.randn(rounds, H, D, buckets // 2, generator=gen, dtype=torch.float64).to(q.device, q.dtype)
    pos = torch.arange(N, device=q.device)
    pad = ~key_valid[:, None, :]  # (B, 1, N)
    qn, kn = F.normalize(q.detach(), dim=-1), F.normalize(k.detach(), dim=-1)
    q_order, k_order, q_chunk, k_chunk = [], [], [], []
    for r in range(rounds):
        for x, order_l, chunk_l in ((qn, q_order, q_chunk), (kn, k_order, k_chunk)):
            bucket = _angular_buckets(x, rot[r])  # (B, H, N)
            bucket = bucket.masked_fill(pad, buckets)
            order = torch.argsort(bucket * N + pos, dim=-1)  # keys are unique: a total order
            rank = torch.empty_like(order)
            rank.scatter_(-1, order, pos.expand_as(order).contiguous())
            order_l.append(order)
            chunk_l.append(rank // chunk)
    return torch.stack(q_order), torch.stack(k_order), torch.stack(q_chunk), torch.stack(k_chunk)


def lsh(q, k, v, *, window, key_padding_mask=None, scale=None, buckets=0, rounds=2, chunk=0, seed=0, **_):
    """Reformer-style LSH attention over chunks of hash-sorted queries and keys (see module doc)."""
    B, H, N, D = q.shape
    in_dtype = q.dtype
    cdt = _cdt(in_dtype)
    q, k, v = q.to(cdt), k.to(cdt), v.to(cdt)
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    dev = q.device
    key_valid = _key_valid(key_padding_mask, B, N, dev)
    buckets, C = lsh_defaults(N, window, buckets, chunk)
    # A chunk longer than the input is one chunk of the whole input, the same pattern; without the
    # clamp the sorted layout would be padded to C tokens (chunk=1000000000 ran out of memory).
    C = max(1, min(C, N))
    rounds = max(1, int(rounds))
    q_order, k_order, q_chunk, k_chunk = lsh_chunk_ids(q, k, key_valid, buckets=buckets, rounds=rounds,
                                                       chunk=C, seed=seed)
    nc = -(-N // C)
    Np = nc * C
    # chunk ids with one dummy slot (index N) for the padding positions of the sorted layout
    qc_all = F.pad(q_chunk, (0, 1)).to(torch.int32)  # (R, B, H, N+1)
    kc_all = F.pad(k_chunk, (0, 1)).to(torch.int32)
    kv_valid = F.pad(key_valid, (0, 1), value=False)  # (B, N+1)
    out = lse = None
    for r in range(rounds):
        qpos = F.pad(q_order[r], (0, Np - N), value=N)  # (B, H, Np) sorted rank -> token (N = dummy)
        kpos = F.pad(k_order[r], (0, Np - N), value=N)
        gq = qpos.clamp(max=N - 1)[..., None].expand(B, H, Np, D)
        gk = kpos.clamp(max=N - 1)[..., None].expand(B, H, Np, D)
        qs = torch.gather(q, 2, gq).view(B, H, nc, C, D)
        ks = torch.gather(k, 2, gk).view(B, H, nc, C, D)
        vs = torch.gather(v, 2, gk).view(B, H, nc, C, D)
        qp, kp = qpos.view(B, H, nc, C), kpos.view(B, H, nc, C)
        if nc > 1:  # each query chunk sees its own key chunk and the previous one (wrapping)
            ks = torch.cat([ks.roll(1, 2), ks], 3)
            vs = torch.cat([vs.roll(1, 2), vs], 3)
            kp = torch.cat([kp.roll(1, 2), kp], 3)
        kval = torch.gather(kv_valid[:, None, :].expand(B, H, N + 1), 2, kp.reshape(B, H, -1)).view(kp.shape)
        outs, lses = [], []
        step = max(1, _SCORE_BUDGET // max(B * H * C * kp.shape[-1], 1))
        for c0 in range(0, nc, step):
            c1 = min(nc, c0 + step)
            qpb, kpb = qp[:, :, c0:c1], kp[:, :, c0:c1]
            # In how many rounds is this (query, key) pair in one window? Round r by construction; the
            # others are checked by chunk ids: key chunk = query chunk or the one before (wrapping).
            bias = None
            if rounds > 1:
                count = torch.ones(B, H, c1 - c0, C, kpb.shape[-1], dtype=cdt, device=dev)
                for r2 in range(rounds):
                    if r2 == r:
                        continue
                    cq = torch.gather(qc_all[r2], 2, qpb.reshape(B, H, -1)).view(qpb.shape)[..., :, None]
                    ck = torch.gather(kc_all[r2], 2, kpb.reshape(B, H, -1)).view(kpb.shape)[..., None, :]
                    dd = cq - ck
                    count += ((dd == 0) | (dd == 1) | (dd == 1 - nc)).to(cdt)
                bias = -count.log_()
            o, l = _attend(qs[:, :, c0:c1], ks[:, :, c0:c1], vs[:, :, c0:c1], kval[:, :, c0:c1, None, :], scale, bias)
            outs.append(o)
            lses.append(l)
        o_r = torch.cat(outs, 2).reshape(B, H, Np, D)
        l_r = torch.cat(lses, 2).reshape(B, H, Np)
        # back to token order: the sorted rank of token i is its position in q_order
        rank = q_order.new_empty(B, H, N)
        rank.scatter_(-1, q_order[r], torch.arange(N, device=dev).expand(B, H, N).contiguous())
        o_r = torch.gather(o_r, 2, rank[..., None].expand(B, H, N, D))
        l_r = torch.gather(l_r, 2, rank)
        if out is None:
            out, lse = o_r, l_r
        else:
            out, lse = merge(out, lse, o_r, l_r)
    return out.to(in_dtype)


# ---------------------------------------------------------------------------------------------------
# linear


def elu1(x):
    return F.elu(x) + 1.0


def linear(q, k, v, *, key_padding_mask=None, **_):
    """phi(Q) (phi(K)^T V) / (phi(Q) phi(K)^T 1), phi = elu + 1, padded keys excluded."""
    B, H, N, D = q.shape
    in_dtype = q.dtype
    cdt = _cdt(in_dtype)
    q, k, v = q.to(cdt), k.to(cdt), v.to(cdt)
    fk = elu1(k)
    if key_padding_mask is not None:
        fk = fk * _key_valid(key_padding_mask, B, N, q.device)[:, None, :, None].to(cdt)
    fq = elu1(q)
    kv = torch.matmul(fk.transpose(-1, -2), v)  # (B, H, D, Dv)
    z = fk.sum(2)  # (B, H, D)
    num = torch.matmul(fq, kv)  # (B, H, N, Dv)
    den = torch.einsum("bhnd,bhd->bhn", fq, z)[..., None]
    out = num / torch.where(den > 0, den, torch.ones_like(den))
    return out.to(in_dtype)


# ---------------------------------------------------------------------------------------------------

_FUNCS = {"local": local, "strided": strided, "lsh": lsh, "sinks": sinks, "linear": linear, "full": full}


def attention(name: str, q, k, v, *, window, dilation=1, global_idx=None, key_padding_mask=None,
              global_qkv=None, scale=None, **params):
    """Dispatch to the variant ``name`` (one of VARIANTS) with its parameters."""
    try:
        fn = _FUNCS[name]
    except KeyError:
        raise ValueError(f"attention must be one of {', '.join(VARIANTS)}, got {name!r}") from None
    return fn(q, k, v, window=window, dilation=dilation, global_idx=global_idx, key_padding_mask=key_padding_mask,
              global_qkv=global_qkv, scale=scale, **params)


__all__ = ["VARIANTS", "PARAMS", "attention", "parse_spec", "merge", "strided_columns", "lsh_chunk_ids",
           "lsh_defaults", "local", "strided", "sinks", "lsh", "linear", "full"]
