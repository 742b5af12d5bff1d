"""Where an attention call runs: the Triton kernels on CUDA tensors (``triton_attention.py``; on
Hopper GPUs its forward band and dK/dV pass at head dims 64 and 128 run on the warp-specialised Gluon
kernels of ``hopper_attention.py``), the blocked PyTorch reference (``reference.py``) everywhere else.
"""
from __future__ import annotations

import torch

from .reference import local_global_attention_reference

try:  # Triton is absent on some CPU-only installs; the reference then serves every device.
    from .triton_attention import band_with_tile_triton, local_global_attention_triton
except ImportError:  # pragma: no cover - depends on the install
    local_global_attention_triton = band_with_tile_triton = None


def _on_triton(q: torch.Tensor) -> bool:
    return (local_global_attention_triton is not None and q.is_cuda
            and q.dtype in (torch.float16, torch.bfloat16, torch.float32) and q.shape[-1] in (16, 32, 64, 128))


def _reach(window: int, dilation: int, n: int) -> int:
    """The window clamped to the longest distance a sequence of n holds: the same keys, and no band
    buffer sized by a radius of, say, 10^8 (the blocked reference allocates per row block c + 2w)."""
    if window < 0 or dilation < 1:
        return window  # left for the implementations' own checks
    return min(window, -(-(n - 1) // dilation)) if n > 1 else 0


def local_global_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, window: int, dilation: int = 1,
                           global_idx=None, key_padding_mask=None, global_qkv=None, scale=None,
                           return_lse: bool = False, out: torch.Tensor | None = None):
    """Sliding-window + global attention (semantics: ``reference.py``'s module docstring).

    CUDA tensors in fp16 / bf16 / fp32 with head dim 16-128 run on the Triton kernels; anything else
    (CPU tensors, fp64) runs on the blocked PyTorch reference. Returns ``out`` or ``(out, lse)``.
    ``out``: an optional (B, N, H, D) buffer for the output, which is then a (B, H, N, D) view of it
    (the CPU reference writes into it directly; the Triton path copies into it).
    """
    window = _reach(window, dilation, q.shape[2])
    if _on_triton(q):
        res = local_global_attention_triton(q, k, v, window=window, dilation=dilation, global_idx=global_idx,
                                            key_padding_mask=key_padding_mask, global_qkv=global_qkv,
                                            scale=scale, return_lse=return_lse)
        if out is None:
            return res
        o, lse = res if return_lse else (res, None)
        out.copy_(o.transpose(1, 2))
        return (out.transpose(1, 2), lse) if return_lse else out.transpose(1, 2)
    return local_global_attention_reference(q, k, v, window=window, dilation=dilation, global_idx=global_idx,
                                            key_padding_mask=key_padding_mask, global_qkv=global_qkv,
                                            scale=scale, return_lse=return_lse, out=out)


def band_with_tile(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, tile_k: torch.Tensor, tile_v: torch.Tensor,
                   tile_valid: torch.Tensor, *, window: int, dilation: int = 1, key_padding_mask=None, scale=None):
    """Band attention over one run of rows q, k, v (B, H, L, D) in which every row also sees the S extra
    keys tile_k, tile_v (B, H, S, D) where tile_valid (B, S) -> (B, H, L, D). ``key_padding_mask``
    (B, L) marks keys of the run that are never band keys. The tile keys are not rows of the run: they
    have no query rows and no band of their own (the sharded encoder's global tile).

    Inference on CUDA passes the tile straight to the band kernel, with no copy of the run. Elsewhere,
    and under autograd, the run is extended with a gap of w*d padding rows and the tile rows, marked as
    global tokens, and goes through ``local_global_attention``: the same function, differentiable."""
    B, H, L, D = q.shape
    S = tile_k.shape[2]
    if L == 0:
        return q.new_zeros(B, H, 0, D)
    window = _reach(window, dilation, L)  # the run's rows reach no further than the run
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v, tile_k, tile_v))
    if _on_triton(q) and not grad:
        return band_with_tile_triton(q, k, v, tile_k, tile_v, tile_valid, window=window, dilation=dilation,
                                     key_padding_mask=key_padding_mask, scale=scale)
    if S == 0:
        return local_global_attention(q, k, v, window=window, dilation=dilation,
                                      key_padding_mask=key_padding_mask, scale=scale)
    gap = window * dilation  # no band reaches across it, so the tile rows are seen only as global keys
    excluded = q.new_zeros(B, L, dtype=torch.bool) if key_padding_mask is None else key_padding_mask
    filler = q.new_zeros(B, H, gap + S, D)
    q_c = torch.cat([q, filler], 2)  # (B, H, L + gap + S, D); the filler rows' outputs are dropped
    k_c = torch.cat([k, filler[:, :, :gap], tile_k], 2)
    v_c = torch.cat([v, filler[:, :, :gap], tile_v], 2)
    pad_c = torch.cat([excluded, excluded.new_ones(B, gap), ~tile_valid], 1)  # (B, L + gap + S)
    slot = torch.arange(S, device=q.device)[None, :] + (L + gap)
    gidx = torch.where(tile_valid, slot, torch.full_like(slot, -1))  # (B, S)
    out = local_global_attention(q_c, k_c, v_c, window=window, dilation=dilation, global_idx=gidx,
                                 key_padding_mask=pad_c, scale=scale)
    return out[:, :, :L]

