"""Tile sweep for the attention kernels: time each forward tile shape and each backward tile set on one
shape, so that the tile tables (`_blocks` in triton_attention.py, `TILES` in hopper_attention.py) are
chosen from measurements.

    python -m longdoc.kernels.bench_tiles [--n 65536] [--G 16] [--d 64] [--w 256] [--fwd-configs "128,64,4,2;128,32,4,3"]
        [--hopper-configs "64,4,4,96,112;64,4,3,128,160"]

--fwd-configs times the Triton forward kernel (also where the Hopper kernel would serve the call);
--hopper-configs the warp-specialised Gluon one on an sm_90 GPU.
"""
from __future__ import annotations

import argparse
import itertools

import torch


def _configs(spec: str, fallback=()) -> list[tuple[int, ...]]:
    """"128,32,4,3;64,64,4,2" -> [(128, 32, 4, 3), (64, 64, 4, 2)]; ``fallback`` when empty."""
    return [tuple(int(x) for x in c.split(",")) for c in spec.split(";")] if spec else list(fallback)


def main(argv=None):
    from triton.testing import do_bench

    from . import hopper_attention as ha
    from . import triton_attention as ta
    from .bench import HEADS, make_inputs, useful_flops

    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=65_536)
    p.add_argument("--G", type=int, default=16)
    p.add_argument("--d", type=int, default=64)
    p.add_argument("--w", type=int, default=256)
    p.add_argument("--bwd", action="store_true")
    p.add_argument("--packed", action="store_true",
                   help="q, k, v as head views of one (1, n, 3, H, d) projection, as the encoder holds them")
    p.add_argument("--fwd-configs", default="",
                   help="';'-separated BLOCK_M,BLOCK_N,warps,stages (default: a sweep)")
    p.add_argument("--hopper-configs", default="",
                   help="';'-separated BLOCK_N,stages,consumers,maxnreg,consumer_regs of the Hopper (sm_90) "
                        "forward kernel to time")
    p.add_argument("--kv-configs", default="",
                   help="with --bwd: ';'-separated dK/dV kv_n,kv_m,warps,stages to time (default: a fixed set)")
    p.add_argument("--dq-configs", default="",
                   help="with --bwd: ';'-separated dQ dq_m,dq_n,warps,stages to time (default: a fixed set)")
    p.add_argument("--bwd-kernels", default="default",
                   help="with --bwd: ','-separated dK/dV band kernels to time each tile set on: default (what the "
                        "dispatch picks), triton, hopper (the warp-specialised Gluon kernel on sm_90)")
    p.add_argument("--hopper-bwd-configs", default="",
                   help="with --bwd: ';'-separated BLOCK_M,stages,consumers,maxnreg,consumer_regs of the Hopper "
                        "dK/dV kernel to time (default: TILES_BWD)")
    p.add_argument("--one-loop", action="store_true", help="also time each config with every block masked")
    p.add_argument("--if-mask", action="store_true", help="also time each config as one loop, edges masked by a branch")
    p.add_argument("--profile", action="store_true", help="per-kernel CUDA times of one forward + backward")
    p.add_argument("--resources", action="store_true",
                   help="at the end, registers, spills and shared memory of every variant compiled")
    p.add_argument("--maxnreg", default="0",
                   help="','-separated register caps per thread to time each forward config under (0: none)")
    p.add_argument("--fuse-globals", action="store_true",
                   help="fold the global rows into the forward band kernel at any n (default: short inputs only)")
    a = p.parse_args(argv)
    if a.fuse_globals:
        ta._FUSE_MAX_CHUNKS = 1 << 30
    q, k, v, gidx = make_inputs(a.n, a.d, a.G)
    if a.packed:
        qkv = torch.stack([t.transpose(1, 2) for t in (q, k, v)], 2).contiguous()  # (1, n, 3, H, d)
        q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))
    f = useful_flops(a.n, a.d, a.w, a.G, H=HEADS)
    print(f"# n={a.n} d={a.d} w={a.w} G={a.G}: forward tiles (BLOCK_M, BLOCK_N, warps, stages)",
          flush=True)
    res = []
    if a.fwd_configs:
        sweep = _configs(a.fwd_configs)
    else:
        sweep = [c for c in itertools.product((64, 128, 256), (32, 64, 128), (4, 8), (2, 3, 4))
                 if not ((c[0] == 256 and c[2] == 4) or (c[0] == 64 and c[2] == 8) or c[0] * c[1] > 256 * 64
                         or (a.d == 128 and c[1] == 128 and c[3] > 2))]
    for cfg, cap in itertools.product(sweep, [int(x) for x in a.maxnreg.split(",")]):
        ta._FWD_MAXNREG = cap or None
        for one, ifm in [(0, 0)] + [(1, 0)] * a.one_loop + [(0, 1)] * a.if_mask:
            ta._FWD_OVERRIDE = cfg
            ta._ONE_LOOP, ta._IF_MASK = bool(one), bool(ifm)
            try:
                fn = lambda: ta.local_global_attention_triton(q, k, v, window=a.w, global_idx=gidx)  # noqa: E731
                with torch.no_grad():
                    ms = do_bench(fn, warmup=20, rep=100, return_mode="median")
            except Exception as e:  # out of shared memory or registers, or no such feature: skip it
                print(f"{cfg} failed: {type(e).__name__}: {str(e)[:120]}", flush=True)
                continue
            res.append((ms, cfg + (one, ifm, cap)))
            print(f"{cfg}{' one loop, all masked' if one else ''}{' one loop, edges behind a branch' if ifm else ''}"
                  f"{f' maxnreg {cap}' if cap else ''} {ms:.3f} ms {f / ms / 1e9:.0f} TFLOP/s", flush=True)
    ta._FWD_OVERRIDE = ta._FWD_MAXNREG = None
    ta._ONE_LOOP = ta._IF_MASK = False
    for cfg in _configs(a.hopper_configs):
        ha._TILES_OVERRIDE = cfg
        try:
            if not ha.supported(q, k, v, q, 1, False, 16 if a.G else 0):
                raise RuntimeError("the Hopper kernel does not serve this call (GPU, Triton or shape)")
            with torch.no_grad():
                ms = do_bench(lambda: ta.local_global_attention_triton(q, k, v, window=a.w, global_idx=gidx),
                              warmup=20, rep=100, return_mode="median")
        except Exception as e:
            print(f"hopper {cfg} failed: {type(e).__name__}: {str(e)[:120]}", flush=True)
            continue
        finally:
            ha._TILES_OVERRIDE = None
        res.append((ms, ("hopper",) + cfg))
        print(f"hopper {cfg} {ms:.3f} ms {f / ms / 1e9:.0f} TFLOP/s", flush=True)
    for ms, cfg in sorted(res)[:5]:
        print(f"best {cfg} {ms:.3f} ms {f / ms / 1e9:.0f} useful TFLOP/s")
    if a.bwd:
        for t in (q, k, v):
            t.requires_grad_(True)
        out = ta.local_global_attention_triton(q, k, v, window=a.w, global_idx=gidx)
        do = torch.randn_like(out)
        base = ta._blocks
        default = base(a.d, torch.bfloat16)
        f_bwd = 2.5 * f  # backward FLOPs: 5 matmuls against the forward's 2
        kv_sets = _configs(a.kv_configs, [(128, 64, 8, 2), (128, 64, 8, 4), (128, 32, 4, 2), (128, 32, 4, 3),
                                          (64, 64, 4, 2), (64, 64, 4, 3), (64, 32, 4, 2), (64, 32, 4, 3),
                                          (128, 128, 8, 2)])
        dq_sets = _configs(a.dq_configs, [(128, 32, 4, 2), (128, 32, 4, 4), (128, 64, 4, 2), (128, 64, 8, 3),
                                          (64, 64, 4, 2), (64, 32, 4, 2), (64, 32, 4, 3)])
        sets = [dict(default)]
        sets += [dict(default, kv_n=n_, kv_m=m_, kv_warps=w_, kv_stages=s_) for n_, m_, w_, s_ in kv_sets]
        sets += [dict(default, dq_m=m_, dq_n=n_, dq_warps=w_, dq_stages=s_) for m_, n_, w_, s_ in dq_sets]
        if not (a.kv_configs or a.dq_configs):
            sets.append(dict(default, kv_n=64, kv_m=32, kv_warps=4, kv_stages=2, dq_m=64, dq_n=32, dq_warps=4,
                             dq_stages=2))
        runs = []  # (dK/dV kernel, Hopper tiles or None)
        for kern in a.bwd_kernels.split(","):
            hop = [None] if kern != "hopper" else (_configs(a.hopper_bwd_configs) or [None])
            runs += [(kern, c) for c in hop]
        for t, (kern, hcfg) in itertools.product(sets, runs):
            ta._blocks = lambda *_, t=t: t  # noqa: E731
            ha.ENABLED_BWD = kern != "triton"
            ha._TILES_BWD_OVERRIDE = hcfg
            served = ha.supported_bwd(q, k, v, q, q, q, 1, False, 16 if a.G else 0)
            if kern == "hopper" and not served:
                print("bwd hopper: the Hopper dK/dV kernel does not serve this call (GPU, Triton or shape)")
                continue
            name = "hopper" + (f" {hcfg}" if hcfg else "") if served else "triton"
            try:
                ms = do_bench(lambda: torch.autograd.grad(out, (q, k, v), do, retain_graph=True),
                              warmup=20, rep=100, return_mode="median")
            except Exception as e:
                print(f"bwd {name} {t} failed: {type(e).__name__}: {str(e)[:120]}", flush=True)
                continue
            print(f"bwd dK/dV {name} kv=({t['kv_n']},{t['kv_m']},{t['kv_warps']},{t['kv_stages']}) "
                  f"dq=({t['dq_m']},{t['dq_n']},{t['dq_warps']},{t['dq_stages']}) "
                  f"{ms:.3f} ms {f_bwd / ms / 1e9:.0f} TFLOP/s", flush=True)
        ta._blocks = base
        ha.ENABLED_BWD, ha._TILES_BWD_OVERRIDE = True, None
    if a.profile:
        from torch.profiler import ProfilerActivity, profile

        for t in (q, k, v):
            t.requires_grad_(True)
        for _ in range(3):
            out = ta.local_global_attention_triton(q, k, v, window=a.w, global_idx=gidx)
            torch.autograd.grad(out, (q, k, v), torch.ones_like(out))
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                out = ta.local_global_attention_triton(q, k, v, window=a.w, global_idx=gidx)
                torch.autograd.grad(out, (q, k, v), torch.ones_like(out))
            torch.cuda.synchronize()
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=25, max_name_column_width=60))
    if a.resources:
        from .occupancy import report

        report()


if __name__ == "__main__":
    main()
