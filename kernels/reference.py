"""Sliding-window + global attention in plain PyTorch: the CPU path and the test oracle.

Semantics (the one place they are written down; DESIGN.md "Window semantics"):

* ``q, k, v``: ``(B, H, N, D)``. Radius ``window = w`` and ``dilation = d``: query ``i`` sees the band
  keys ``j = i + d*t`` for ``t in -w..w`` with ``0 <= j < N`` (so ``2w+1`` keys away from the edges).
  A Hugging Face ``attention_window`` of ``W`` is ``w = W // 2``; convert when loading, never here.
* ``global_idx``: ``(B, G)`` int64 positions of global tokens, ``-1`` for unused slots, so each batch
  element can have its own count. Every query also sees every global key (gathered once into a
  compact tile), and a global key is removed from the band so it is never counted twice (this is
  also Hugging Face Longformer's rule). Global query rows attend to every key in the sequence.
* ``global_qkv``: optional ``(q_g, k_g, v_g)`` from separate global projections (Longformer):
  ``q_g`` is ``(B, H, G, D)`` (already gathered at ``global_idx``), ``k_g, v_g`` are ``(B, H, N, D)``.
  When given, global rows use them; otherwise global rows use ``q, k, v``.
* ``key_padding_mask``: ``(B, N)`` bool, True where the token is padding; padded keys are never
  attended. A row with no key to attend gives output 0 and log-sum-exp ``-inf`` (never NaN).
* Returns ``out (B, H, N, D)`` in the input dtype and, with ``return_lse``, the natural-log
  log-sum-exp of the scaled scores ``(B, H, N)`` in fp32 (fp64 for fp64 inputs).

Cost: O(N * (2w + 1 + G)) time; memory is the output plus a working set bounded by
``_SCORE_BUDGET`` elements, never an N x N mask. Dilation runs as ``d`` stride-``d`` views, each an
ordinary dilation-1 band, so no score is computed for a key outside the band's lattice.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# Scores held at once by the blocked band pass, in elements (fp32: 4 bytes each -> 64 MiB).
_SCORE_BUDGET = 1 << 24
# Queries per block of the fused CPU band. Measured at w = 128 (whole MiniLM encoder): 32 beat 64 by
# 4-7% (1 and 2 threads, 16k and 64k tokens) and 16 was between them; session 2 found 64 better than
# 128-256. Narrow blocks compute fewer masked scores (c + 2w keys for 2w + 1 used); the flash op
# splits its queries by 32 anyway, so a wider block gains it nothing.
_BAND_BLOCK = 32
# Query rows per flash call (and per merge of the global keys) of the fused CPU band. Each torch op is
# a barrier of the CPU threads, so fewer, larger calls hold up better on shared cores: 8192 rows took
# 5.0-5.5 s where 4352 took 6.3-7.3 s at 16k tokens with one other busy process, and the same on an
# idle core (docs/encoder.md, third pass).
_GROUP_ROWS = 8192


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # Softmax statistics are always at least fp32; fp64 passes through for the float64 oracle.
    return torch.float64 if dtype == torch.float64 else torch.float32


def _global_keys(k, v, global_idx, key_valid):
    """Gather the global keys into one compact tile: (B, H, G, D) x2 and their validity (B, G)."""
    B, H, N, D = k.shape
    safe = global_idx.clamp(min=0)  # (B, G); -1 slots read row 0 and are masked out below
    gather = safe[:, None, :, None].expand(B, H, safe.shape[1], D)
    kg = torch.gather(k, 2, gather)
    vg = torch.gather(v, 2, gather)
    valid = (global_idx >= 0) & torch.gather(key_valid, 1, safe)
    return kg, vg, valid


def _band(q, k, v, key_valid, kg, vg, g_valid, window, scale, block):
    """Dilation-1 band plus the global tile for every query row. Returns out (B,H,N,D), lse (B,H,N)."""
    B, H, N, D = q.shape
    w = window
    c = block
    nb = -(-N // c)  # query blocks of c rows; the last may be partial
    span = c + 2 * w  # keys a block can see: its own rows plus w on each side
    pad_right = nb * c - N + w
    # (B, H, w + nb*c + w, D): true key position j sits at padded index j + w
    k_pad = F.pad(k, (0, 0, w, pad_right))
    v_pad = F.pad(v, (0, 0, w, pad_right))
    kv_pad = F.pad(key_valid, (w, pad_right), value=False)  # (B, Npad)
    q_pad = F.pad(q, (0, 0, 0, nb * c - N))  # (B, H, nb*c, D)

    # Band mask in block coordinates: row r, key s holds offset (s - w) - r; in band iff 0 <= s-r <= 2w.
    r = torch.arange(c, device=q.device)[:, None]
    s = torch.arange(span, device=q.device)[None, :]
    in_band = ((s - r) >= 0) & ((s - r) <= 2 * w)  # (c, span)

    out = torch.empty(B, H, nb * c, D, dtype=q.dtype, device=q.device)
    lse = torch.empty(B, H, nb * c, dtype=q.dtype, device=q.device)
    G = kg.shape[2]
    per_block = B * H * c * (span + G)
    step = max(1, _SCORE_BUDGET // max(per_block, 1))
    for b0 in range(0, nb, step):
        b1 = min(nb, b0 + step)
        m = b1 - b0
        lo, hi = b0 * c, b1 * c + 2 * w
        # Overlapping windows of keys, one per block, as a strided view (no copy): (B, H, m, span, D)
        kb = k_pad[:, :, lo:hi].unfold(2, span, c).transpose(-1, -2)
        vb = v_pad[:, :, lo:hi].unfold(2, span, c).transpose(-1, -2)
        valid = kv_pad[:, lo:hi].unfold(1, span, c)  # (B, m, span)
        qb = q_pad[:, :, b0 * c : b1 * c].reshape(B, H, m, c, D)
        scores = torch.matmul(qb, kb.transpose(-1, -2)) * scale  # (B, H, m, c, span)
        mask = in_band & valid[:, None, :, None, :]  # (B, 1, m, c, span)
        scores = scores.masked_fill(~mask, float("-inf"))
        if G:
            sg = torch.einsum("bhmcd,bhgd->bhmcg", qb, kg) * scale  # (B, H, m, c, G)
            sg = sg.masked_fill(~g_valid[:, None, None, None, :], float("-inf"))
            scores = torch.cat([scores, sg], dim=-1)
        blk_lse = torch.logsumexp(scores, dim=-1)  # (B, H, m, c); -inf where nothing is visible
        p = torch.exp(scores - blk_lse.nan_to_num(neginf=0.0)[..., None])
        o = torch.matmul(p[..., :span], vb)
        if G:
            o = o + torch.einsum("bhmcg,bhgd->bhmcd", p[..., span:], vg)
        out[:, :, b0 * c : b1 * c] = o.reshape(B, H, m * c, D)
        lse[:, :, b0 * c : b1 * c] = blk_lse.reshape(B, H, m * c)
    return out[:, :, :N], lse[:, :, :N]


def _rows(t, lo, hi, fill=0.0):
    """Rows [lo, hi) of t along dim -2 (or of a 1-D t), with `fill` where they fall outside t: a
    view when they all lie inside (no copy), else a padded copy of just that range."""
    one_d = t.dim() == 1
    n = t.shape[0] if one_d else t.shape[-2]
    a = max(lo, 0)
    b = max(a, min(hi, n))
    inside = t[a:b] if one_d else t[..., a:b, :]
    if (a, b) == (lo, hi):
        return inside
    return F.pad(inside, (a - lo, hi - b) if one_d else (0, 0, a - lo, hi - b), value=fill)


def _band_fused(q, k, v, key_valid, kg, vg, g_valid, window, scale, block, out=None):
    """Same contract as ``_band``, for fp32 inference on the CPU, on torch's fused flash-attention op.

    Blocks of c queries attend their (c + 2w)-key windows as overlapping strided views (``as_strided``)
    of q, k and v themselves: no window is copied (unfolding copied every key about (c + 2w) / c
    times), and only the first and last few blocks, whose windows leave the sequence, read a padded
    copy of their rows. The band edges and excluded keys are an additive mask, one (c, span) tile for
    the groups of blocks with no excluded key. The G global keys are merged into each group right
    after its flash call, by log-sum-exp, with two heads-first matmuls: a separate flash call of every
    query against G keys cost 20% of the attention (its per-query overhead), and a whole-sequence
    output plus a merge pass were two more copies of the output. Each group is then written once,
    straight into ``out``: (B, N, H, D) memory, the encoder's layout, returned as a (B, H, N, D) view,
    so merging the heads is free. Masks are finite (-1e30) so no NaN arises; rows with no visible key
    are zeroed and get lse -inf, as in ``_band``."""
    B, H, N, D = q.shape
    w = window
    c = min(block, _BAND_BLOCK)
    nb = -(-N // c)
    span = c + 2 * w
    G = kg.shape[2]
    neg = -1e30
    flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    r = torch.arange(c, device=q.device)[:, None]
    t = torch.arange(span, device=q.device)[None, :]
    band_bias = torch.zeros(c, span, dtype=q.dtype, device=q.device).masked_fill_(((t - r) < 0) | ((t - r) > 2 * w), neg)
    step = max(1, _GROUP_ROWS // c)  # blocks per flash call
    # Blocks [lo, hi) have their whole window inside the sequence: they read q, k, v in place.
    lo = min(nb, -(-w // c))
    hi = max(lo, min(nb, (N - w - c) // c + 1)) if N >= w + c else lo
    if out is None:
        out = torch.empty(B, N, H, D, dtype=q.dtype, device=q.device)
    lse = torch.empty(B, N, H, dtype=q.dtype, device=q.device)  # rows first too, as the output
    for b in range(B):  # one batch element at a time: its blocks form the flash op's batch dimension
        kv_bias = torch.zeros(N, dtype=q.dtype, device=q.device).masked_fill_(~key_valid[b], neg)
        if G:
            kgT, vg_b = kg[b].transpose(-1, -2) * scale, vg[b]  # (H, D, G) pre-scaled, (H, G, D)
            g_bias = torch.zeros(G, dtype=q.dtype, device=q.device).masked_fill_(~g_valid[b], neg)
        for i0, i1 in ((0, lo), (lo, hi), (hi, nb)):
            if i0 == i1:
                continue
            qr = _rows(q[b], i0 * c, i1 * c)  # (H, rows, D): views inside, padded copies at the ends
            kr = _rows(k[b], i0 * c - w, i1 * c + w)
            vr = _rows(v[b], i0 * c - w, i1 * c + w)
            br = _rows(kv_bias, i0 * c - w, i1 * c + w, fill=neg)
            (qh, qn), (kh, kn), (vh, vn) = (x.stride()[:2] for x in (qr, kr, vr))
            for b0 in range(i0, i1, step):
                m, o0 = min(i1, b0 + step) - b0, (b0 - i0) * c  # o0: the group's first row in qr / kr
                qb = qr[:, o0:].as_strided((m, H, c, D), (c * qn, qh, qn, 1))  # block j: rows [jc, jc + c)
                kb = kr[:, o0:].as_strided((m, H, span, D), (c * kn, kh, kn, 1))  # keys [jc - w, jc + c + w)
                vb = vr[:, o0:].as_strided((m, H, span, D), (c * vn, vh, vn, 1))
                keys = br[o0 : o0 + m * c + 2 * w]  # the group's key biases: nonzero at excluded keys
                if bool(keys.any()):  # (m, 1, c, span): the band plus this group's excluded keys
                    bias = band_bias + keys.as_strided((m, 1, c, span), (c, 0, 0, 1))
                else:  # the band alone, one (c, span) tile broadcast over the blocks: no per-block mask
                    bias = band_bias[None, None]
                o, l = flash(qb, kb, vb, attn_mask=bias, scale=scale)[:2]  # (m, H, c, D), (m, H, c)
                r0, rows = b0 * c, m * c
                inside = r0 + rows <= N  # only the last group's padded last block runs past N
                # This group's output rows as (m, c, H, D) and lse as (m, c, H): views (scratch past N)
                to = out[b, r0 : r0 + rows].view(m, c, H, D) if inside else o.new_empty(m, c, H, D)
                tl = lse[b, r0 : r0 + rows].view(m, c, H) if inside else l.new_empty(m, c, H)
                if G:  # softmax over band + globals = the band's, rescaled, plus the globals' share
                    # Heads-first (H, rows, .) for the global keys: q's rows are read in place, and the
                    # two matmuls are H large ones rather than m * H tiny ones.
                    sg = torch.bmm(qr[:, o0 : o0 + rows], kgT).add_(g_bias)  # (H, rows, G) scaled scores
                    lb = l.transpose(0, 1).reshape(H, rows)  # the band's lse
                    mx = torch.maximum(lb, sg.amax(-1))
                    a = (lb - mx).exp_()  # the band's weight relative to the new maximum
                    pg = sg.sub_(mx[..., None]).exp_()
                    den = pg.sum(-1).add_(a)
                    pv = torch.bmm(pg.div_(den[..., None]), vg_b)  # (H, rows, D): the globals' share
                    # o * a / den + pv in one pass, written straight into the output rows
                    torch.addcmul(pv.view(H, m, c, D), o.transpose(0, 1), a.div_(den).view(H, m, c, 1),
                                  out=to.permute(2, 0, 1, 3))
                    tl.permute(2, 0, 1).copy_(den.log_().add_(mx).view(H, m, c))
                else:
                    to.copy_(o.transpose(1, 2))
                    tl.copy_(l.transpose(1, 2))
                if not inside:
                    out[b, r0:], lse[b, r0:] = to.flatten(0, 1)[: N - r0], tl.flatten(0, 1)[: N - r0]
        # Rows that see some band key: a valid key within [i - w, i + w], by a running count.
        cs = F.pad(F.pad(key_valid[b], (w, w), value=False).to(torch.int32).cumsum(0), (1, 0))
        i = torch.arange(N, device=q.device)
        visible = (cs[i + 2 * w + 1] - cs[i]) > 0
        if G:
            visible = visible | bool(g_valid[b].any())
        if not bool(visible.all()):
            out[b].mul_(visible[:, None, None])
            lse[b].masked_fill_(~visible[:, None], float("-inf"))
    return out.transpose(1, 2), lse.transpose(1, 2)


def _use_fused(q) -> bool:
    # The fused CPU op is inference-speed only: autograd and fp64 (the test oracle) take _band.
    return (q.device.type == "cpu" and q.dtype == torch.float32 and not torch.is_grad_enabled()
            and hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu"))


def _global_rows(qg, k, v, key_valid, g_valid, scale):
    """Global query rows over the whole sequence: (B,H,G,D), lse (B,H,G). O(G*N) memory."""
    scores = torch.einsum("bhgd,bhnd->bhgn", qg, k) * scale
    scores = scores.masked_fill(~key_valid[:, None, None, :], float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)
    p = torch.exp(scores - lse.nan_to_num(neginf=0.0)[..., None])
    out = torch.einsum("bhgn,bhnd->bhgd", p, v)
    lse = lse.masked_fill(~g_valid[:, None, :], float("-inf"))
    return out, lse


def _global_rows_fused(qg, k, v, key_valid, g_valid, scale):
    """``_global_rows`` on the CPU flash op, for the fp32 inference path: reads k and v in place
    (the matmul form copied the strided K and V of the encoder's fused projection)."""
    bias = torch.zeros(key_valid.shape, dtype=qg.dtype, device=qg.device).masked_fill_(~key_valid, -1e30)
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        qg, k, v, attn_mask=bias[:, None, None, :], scale=scale)[:2]
    seen = key_valid.any(1)[:, None, None]  # (B, 1, 1): a row with no key at all gives 0 and -inf
    lse = lse.masked_fill(~seen | ~g_valid[:, None, :], float("-inf"))
    return out * seen[..., None], lse


def local_global_attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    window: int,
    dilation: int = 1,
    global_idx: torch.Tensor | None = None,
    key_padding_mask: torch.Tensor | None = None,
    global_qkv: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    scale: float | None = None,
    return_lse: bool = False,
    block: int | None = None,
    out: torch.Tensor | None = None,
):
    """Blocked O(N*w) reference of sliding-window + global attention (semantics in the module doc).

    ``out``: an optional (B, N, H, D) buffer for the output (the encoder reuses one across layers, so
    no whole-sequence tensor is allocated per layer); the result is then a (B, H, N, D) view of it."""
    if q.dim() != 4 or q.shape != k.shape or k.shape != v.shape:
        raise ValueError(f"q, k, v must all be (B, H, N, D); got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if window < 0 or dilation < 1:
        raise ValueError(f"window must be >= 0 and dilation >= 1, got {window}, {dilation}")
    B, H, N, D = q.shape
    in_dtype = q.dtype
    cdt = _compute_dtype(in_dtype)
    q, k, v = q.to(cdt), k.to(cdt), v.to(cdt)
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    dev = q.device

    key_valid = torch.ones(B, N, dtype=torch.bool, device=dev)
    if key_padding_mask is not None:
        key_valid = ~key_padding_mask.to(device=dev, dtype=torch.bool)
    if global_idx is None:
        global_idx = torch.empty(B, 0, dtype=torch.long, device=dev)
    global_idx = global_idx.to(device=dev, dtype=torch.long)
    if global_idx.numel() and int(global_idx.max()) >= N:
        raise ValueError(f"global index {int(global_idx.max())} is outside a sequence of {N}")

    kg, vg, g_valid = _global_keys(k, v, global_idx, key_valid)
    # Global keys leave the band (they are seen through the compact tile instead).
    band_valid = key_valid.clone()
    if global_idx.numel():
        is_global = torch.zeros(B, N + 1, dtype=torch.bool, device=dev)
        is_global.scatter_(1, torch.where(global_idx >= 0, global_idx, N), True)
        band_valid &= ~is_global[:, :N]

    d = dilation
    blk = block or max(16, min(256, 1 << max(window - 1, 1).bit_length()))
    given = out  # the caller's (B, N, H, D) buffer, if any
    in_place = given is not None and given.dtype == cdt and _use_fused(q)
    if _use_fused(q):  # the band writes its rows straight into (B, N, H, D) memory
        res = given if in_place else torch.empty(B, N, H, D, dtype=cdt, device=dev)
        if d == 1:
            out, lse = _band_fused(q, k, v, band_valid, kg, vg, g_valid, window, scale, blk, out=res)
        else:  # one ordinary band per residue class mod d, each a strided view of the same buffer
            out, lse = res.transpose(1, 2), torch.empty(B, H, N, dtype=cdt, device=dev)
            for r in range(min(d, N)):
                sl = slice(r, None, d)
                lse[:, :, sl] = _band_fused(q[:, :, sl], k[:, :, sl], v[:, :, sl], band_valid[:, sl], kg, vg,
                                            g_valid, window, scale, blk, out=res[:, sl])[1]
    elif d == 1:  # one band: its output is the output (no copy)
        out, lse = _band(q, k, v, band_valid, kg, vg, g_valid, window, scale, blk)
    else:  # one ordinary band per residue class mod d
        out = torch.empty(B, H, N, D, dtype=cdt, device=dev)
        lse = torch.empty(B, H, N, dtype=cdt, device=dev)
        for r in range(min(d, N)):
            sl = slice(r, None, d)
            out[:, :, sl], lse[:, :, sl] = _band(q[:, :, sl], k[:, :, sl], v[:, :, sl], band_valid[:, sl],
                                                 kg, vg, g_valid, window, scale, blk)

    if global_idx.numel():
        if global_qkv is not None:
            qg, kG, vG = (t.to(cdt) for t in global_qkv)
        else:
            safe = global_idx.clamp(min=0)[:, None, :, None].expand(B, H, global_idx.shape[1], D)
            qg, kG, vG = torch.gather(q, 2, safe), k, v
        fused = _use_fused(qg)
        og, lg = (_global_rows_fused if fused else _global_rows)(qg, kG, vG, key_valid, g_valid, scale)
        # Global rows replace the band rows at their positions: valid slots only; out of place where
        # autograd may need the band output, in place on the inference path (no copy of the output).
        bi, gi = torch.nonzero(g_valid, as_tuple=True)  # (K,) each
        at = (bi[:, None], torch.arange(H, device=dev)[None, :], global_idx[bi, gi][:, None])  # (K, H)
        if fused:
            out.index_put_(at, og[bi, :, gi])
            lse.index_put_(at, lg[bi, :, gi])
        else:
            out = out.index_put(at, og[bi, :, gi])  # values (K, H, D)
            lse = lse.index_put(at, lg[bi, :, gi])

    out = out.to(in_dtype)
    if given is not None and not in_place:  # the unfused paths: one copy into the caller's buffer
        given.copy_(out.transpose(1, 2))
        out = given.transpose(1, 2)
    return (out, lse) if return_lse else out


def local_global_attention_dense(q, k, v, *, window, dilation=1, global_idx=None,
                                 key_padding_mask=None, global_qkv=None, scale=None):
    """The same semantics with an explicit N x N mask: a test oracle for small N only (float64)."""
    B, H, N, D = q.shape
    q, k, v = q.double(), k.double(), v.double()
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    i = torch.arange(N)[:, None]
    j = torch.arange(N)[None, :]
    off = j - i
    band = (off.abs() <= window * dilation) & (off % dilation == 0)  # (N, N)
    key_valid = torch.ones(B, N, dtype=torch.bool) if key_padding_mask is None else ~key_padding_mask.cpu()
    is_global = torch.zeros(B, N, dtype=torch.bool)
    if global_idx is not None:
        for b in range(B):
            for g in global_idx[b].tolist():
                if g >= 0:
                    is_global[b, g] = True
    # (B, N, N): band minus global keys, plus every global key; all only over valid keys
    allowed = (band[None] & ~is_global[:, None, :]) | is_global[:, None, :]
    allowed &= key_valid[:, None, :]
    scores = torch.einsum("bhid,bhjd->bhij", q, k) * scale
    scores = scores.masked_fill(~allowed[:, None], float("-inf"))
    lse = torch.logsumexp(scores, -1)
    p = torch.exp(scores - lse.nan_to_num(neginf=0.0)[..., None])
    out = p @ v
    if global_idx is not None:
        # fresh tensors for the row writes below: p and lse are saved for backward and must not change
        out, lse = out.clone(), lse.clone()
        for b in range(B):
            for slot, g in enumerate(global_idx[b].tolist()):
                if g < 0 or not key_valid[b, g]:
                    continue
                if global_qkv is not None:
                    qg, kG, vG = global_qkv[0][b, :, slot].double(), global_qkv[1][b].double(), global_qkv[2][b].double()
                else:
                    qg, kG, vG = q[b, :, g], k[b], v[b]
                s = torch.einsum("hd,hnd->hn", qg, kG) * scale
                s = s.masked_fill(~key_valid[b][None], float("-inf"))
                l = torch.logsumexp(s, -1)
                out[b, :, g] = torch.einsum("hn,hnd->hd", torch.exp(s - l[:, None]), vG)
                lse[b, :, g] = l
    return out, lse
