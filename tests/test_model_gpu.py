"""The encoder on a CUDA GPU (Triton kernels) against the same weights on the CPU reference path.

Marked ``gpu``: run on the GPU machine with ``python -m pytest -q -m gpu tests/test_model_gpu.py``.
Tolerances: fp32 on the GPU (Triton fp32 path, TF32 off) within 1e-4 relative of the CPU; bf16
within 3e-2 relative (bf16 has 8 mantissa bits; errors compound over 6-12 layers).
"""
import pytest
import torch

from longdoc.model.encoder import build, preset

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def _rel(a, b):
    a, b = a.float().cpu(), b.float().cpu()
    assert not torch.isnan(a).any()
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("name,n,G", [("minilm", 5000, 16), ("base", 4097, 3)])
def test_encoder_on_gpu_matches_cpu_reference(name, n, G):
    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = False
    net = build(preset(name)).eval()
    ids = torch.randint(1000, 30000, (1, n))
    pos = (torch.arange(n) % net.cfg.usable_positions)[None] + net.cfg.position_offset
    gm = torch.zeros(1, n, dtype=torch.bool)
    gm[0, torch.randperm(n)[:G]] = True
    gm[0, 0] = True
    with torch.inference_mode():
        ref = net(ids, pos, global_mask=gm)
        gpu = net.cuda()
        out32 = gpu(ids.cuda(), pos.cuda(), global_mask=gm.cuda())
        out16 = gpu.to(torch.bfloat16)(ids.cuda(), pos.cuda(), global_mask=gm.cuda())
    assert _rel(out32, ref) < 1e-4
    assert _rel(out16, ref) < 3e-2
