"""Attention kernels for longdoc (installed as ``longdoc.kernels``).

``local_global_attention`` is the one public entry point: Triton kernels on CUDA tensors
(``triton_attention.py``), the blocked PyTorch reference (``reference.py``) everywhere else.
"""
from __future__ import annotations

import torch

from .reference import local_global_attention_dense, local_global_attention_reference

try:  # Triton is absent on some CPU-only installs; the reference then serves every device.
    from .triton_attention import local_global_attention_triton
except ImportError:  # pragma: no cover - depends on the install
    local_global_attention_triton = None


def local_global_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, window: int, dilation: int = 1,
                           global_idx=None, key_padding_mask=None, global_qkv=None, scale=None,
                           return_lse: bool = False):
    """Sliding-window + global attention (semantics: ``reference.py``'s module docstring).

    CUDA tensors in fp16 / bf16 / fp32 with head dim 16-128 run on the Triton kernels; anything else
    (CPU tensors, fp64) runs on the blocked PyTorch reference. Returns ``out`` or ``(out, lse)``.
    """
    if (local_global_attention_triton is not None and q.is_cuda
            and q.dtype in (torch.float16, torch.bfloat16, torch.float32) and q.shape[-1] in (16, 32, 64, 128)):
        return local_global_attention_triton(q, k, v, window=window, dilation=dilation, global_idx=global_idx,
                                             key_padding_mask=key_padding_mask, global_qkv=global_qkv,
                                             scale=scale, return_lse=return_lse)
    return local_global_attention_reference(q, k, v, window=window, dilation=dilation, global_idx=global_idx,
                                            key_padding_mask=key_padding_mask, global_qkv=global_qkv,
                                            scale=scale, return_lse=return_lse)


__all__ = ["local_global_attention", "local_global_attention_reference", "local_global_attention_dense",
           "local_global_attention_triton"]
