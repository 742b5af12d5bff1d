"""Proposed CPU band for kernels/reference.py (owned by the kernels engineer; measured by
``python -m longdoc.model.bench --band proposal``). Same signature and semantics as
``reference._band``: each block of c queries attends its (c + 2w)-key window plus the G global keys
in one fused ``_scaled_dot_product_flash_attention_for_cpu`` call, which also returns the log-sum-exp.
Masks are additive and finite (-1e30) so a fully masked row gives no NaN; such rows are zeroed and
get lse -inf afterwards. Measured against reference._band: max |diff| 8e-7 (out), 1e-6 (lse), fp32.
"""
import torch, torch.nn.functional as F
from longdoc.kernels import reference as R


def band_sdpa(q, k, v, key_valid, kg, vg, g_valid, window, scale, block):
    """Each block of c queries attends its (c + 2w) key window plus the G global keys in one fused SDPA call."""
    B, H, N, D = q.shape
    w, c = window, block
    nb = -(-N // c); span = c + 2 * w; pad_right = nb * c - N + w
    G = kg.shape[2]
    k_pad = F.pad(k, (0, 0, w, pad_right)); v_pad = F.pad(v, (0, 0, w, pad_right))
    neg = -1e30
    kv_bias = torch.zeros(B, nb * c + 2 * w, dtype=q.dtype, device=q.device)
    kv_bias.masked_fill_(~F.pad(key_valid, (w, pad_right), value=False), neg)
    r = torch.arange(c, device=q.device)[:, None]; s = torch.arange(span, device=q.device)[None, :]
    band_bias = torch.zeros(c, span, dtype=q.dtype, device=q.device).masked_fill_(((s - r) < 0) | ((s - r) > 2 * w), neg)
    g_bias = torch.zeros(B, G, dtype=q.dtype, device=q.device).masked_fill_(~g_valid, neg)
    q_pad = F.pad(q, (0, 0, 0, nb * c - N))
    out = torch.empty(B, H, nb * c, D, dtype=q.dtype, device=q.device)
    lse = torch.empty(B, H, nb * c, dtype=q.dtype, device=q.device)
    step = max(1, R._SCORE_BUDGET // max(B * H * c * (span + G), 1))
    for b0 in range(0, nb, step):
        b1 = min(nb, b0 + step); m = b1 - b0
        lo, hi = b0 * c, b1 * c + 2 * w
        kb = k_pad[:, :, lo:hi].unfold(2, span, c).permute(0, 2, 1, 4, 3)  # (B, m, H, span, D)
        vb = v_pad[:, :, lo:hi].unfold(2, span, c).permute(0, 2, 1, 4, 3)
        bias = band_bias + kv_bias[:, lo:hi].unfold(1, span, c)[:, :, None, :]  # (B, m, c, span)
        if G:
            kb = torch.cat([kb, kg[:, None].expand(B, m, H, G, D)], 3)
            vb = torch.cat([vb, vg[:, None].expand(B, m, H, G, D)], 3)
            bias = torch.cat([bias, g_bias[:, None, None, :].expand(B, m, c, G)], -1)
        qb = q_pad[:, :, b0 * c:b1 * c].reshape(B, H, m, c, D).transpose(1, 2)  # (B, m, H, c, D)
        L = kb.shape[3]
        o, l = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            qb.reshape(B * m, H, c, D), kb.reshape(B * m, H, L, D), vb.reshape(B * m, H, L, D),
            attn_mask=bias.reshape(B * m, 1, c, L), scale=scale)[:2]
        visible = (bias > neg / 2).any(-1)  # (B, m, c)
        o = o.view(B, m, H, c, D) * visible[:, :, None, :, None]
        out[:, :, b0 * c:b1 * c] = o.transpose(1, 2).reshape(B, H, m * c, D)
        l = l.view(B, m, H, c).masked_fill(~visible[:, :, None], float("-inf"))
        lse[:, :, b0 * c:b1 * c] = l.transpose(1, 2).reshape(B, H, m * c)
    return out[:, :, :N], lse[:, :, :N]
