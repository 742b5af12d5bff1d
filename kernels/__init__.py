"""Attention kernels for longdoc (installed as ``longdoc.kernels``).

``local_global_attention`` is the one public entry point: Triton kernels on CUDA tensors, the
blocked PyTorch reference (``reference.py``) everywhere else.
"""
from .reference import local_global_attention_dense, local_global_attention_reference

# Until the Triton path lands, the reference is the implementation on every device.
local_global_attention = local_global_attention_reference

__all__ = ["local_global_attention", "local_global_attention_reference", "local_global_attention_dense"]
