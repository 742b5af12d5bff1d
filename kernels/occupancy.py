"""Registers, spills and shared memory of the compiled kernels, and the occupancy they allow on an
H100 (65,536 registers and 228 KiB of shared memory per SM): one forward + backward at 64k tokens,
d = 64 and d = 32, 16 global tokens, then every compiled variant of the main kernels.

    python -m longdoc.kernels.occupancy      # on a CUDA GPU; the figures in docs/kernels.md

Reads Triton's per-device kernel cache (``JITFunction.device_caches``, as laid out in Triton 3.6).
"""
from __future__ import annotations

import torch


def main():
    from . import triton_attention as ta
    from .bench import make_inputs

    for d in (64, 32):
        q, k, v, g = make_inputs(65536, d, 16)
        for t in (q, k, v):
            t.requires_grad_(True)
        out = ta.local_global_attention_triton(q, k, v, window=256, global_idx=g)
        torch.autograd.grad(out, (q, k, v), torch.ones_like(out))
    torch.cuda.synchronize()
    report()


def report():
    """One line per compiled variant of the main kernels in this process (bench_tiles --resources)."""
    from . import triton_attention as ta

    props = torch.cuda.get_device_properties(0)
    print("SMs", props.multi_processor_count, "regs/SM 65536, smem/SM 228 KiB")
    for name in ["_fwd_band_kernel", "_bwd_dkdv_band_kernel", "_bwd_dq_band_kernel", "_fwd_global_rows_kernel",
                 "_bwd_global_rows_kernel"]:
        fn = getattr(ta, name)
        for cache in fn.device_caches.values():
            kc = cache[0] if isinstance(cache, tuple) else cache
            for kern in kc.values():
                if not hasattr(kern, "n_regs"):  # compiled but never loaded (it failed for lack of resources)
                    continue
                md = kern.metadata
                warps = md.num_warps
                threads = 32 * warps
                regs = kern.n_regs
                shared = md.shared
                by_regs = 65536 // (((regs + 7) // 8 * 8) * threads)  # registers are allocated in 8s
                by_smem = (228 * 1024) // max(shared + 1024, 1)  # 1 KiB per block reserved by the driver
                print(f"{name} warps={warps} stages={md.num_stages} regs={regs} spills={kern.n_spills} "
                      f"shared={shared} B -> CTAs/SM by regs {by_regs}, by smem {by_smem}, "
                      f"occupancy {min(by_regs, by_smem) * warps}/64 warps")


if __name__ == "__main__":
    main()
