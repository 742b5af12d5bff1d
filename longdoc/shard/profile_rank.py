"""Where a sharded forward spends its time beyond the plain one: one rank, one GPU, torch.profiler.

    python -m longdoc.shard.profile_rank            # N=262144 tokens by default (env N)

A one-rank process group runs the same random-weight base-size encoder (bf16, 16 global tokens)
unsharded and through the sharded layers (the tile, the global-row partials and the band runs, no
halo). It prints both times (mean of 3 after a warm-up) and the profiler's table of each, by CUDA
time. This is how the costs named in docs/sharding.md ("What limits it") were found.
"""
from __future__ import annotations

import copy
import os
import time

import torch
import torch.distributed as dist
from torch.profiler import ProfilerActivity, profile

from longdoc.model.encoder import build, preset
from longdoc.shard.encoder import shard_encoder, unshard_encoder


def _ms(fn, reps: int = 3) -> float:
    fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / reps * 1e3


def main() -> None:
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29533")
    dist.init_process_group("nccl", rank=0, world_size=1)
    torch.cuda.set_device(0)
    n = int(os.environ.get("N", 262144))
    cfg = preset("base")
    torch.manual_seed(0)
    net = build(cfg).cuda().to(torch.bfloat16).eval()
    sharded = shard_encoder(unshard_encoder(copy.deepcopy(net)), None)  # shard_encoder swaps layers in place
    ids = torch.randint(1000, 30000, (1, n), device="cuda")
    pos = (torch.arange(n, device="cuda") % cfg.usable_positions)[None] + cfg.position_offset
    gm = torch.zeros(1, n, dtype=torch.bool, device="cuda")
    gm[0, torch.linspace(0, n - 1, 16).long()] = True
    runs = (("plain", lambda: net(ids, pos, global_mask=gm)), ("sharded (1 rank)", lambda: sharded(ids, pos, global_mask=gm)))
    with torch.inference_mode():
        for name, fn in runs:
            print(f"{name}: {_ms(fn):.1f} ms", flush=True)
        for name, fn in runs:
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as p:
                fn()
                torch.cuda.synchronize()
            print(f"===== {name}", flush=True)
            print(p.key_averages().table(sort_by="cuda_time_total", row_limit=14, max_name_column_width=60), flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
