"""Memory per rank and communication per layer of the sharded encoder vs the number of ranks.

    python -m longdoc.shard.bench [--tokens 8192] [--ranks 1,2,4] [--preset minilm] [--globals 4]

Each configuration runs in fresh processes (gloo on CPU, NCCL when every rank has a GPU). Memory is
the peak resident set of each rank during one forward minus its peak before (model built, a short
warm-up forward done), the largest over ranks; on CUDA it is torch's peak allocated. Communication is
counted by wrapping torch.distributed: bytes each rank receives per layer through the halo (the
largest over ranks) and bytes it contributes to the tile all-gathers. Prints one table.
"""
from __future__ import annotations

import argparse
import resource
import time

import torch
import torch.distributed as dist

from longdoc.shard.attention import even_bounds
from longdoc.shard.encoder import shard_encoder
from longdoc.shard.launch import launch


def _peak_bytes(dev) -> int:
    if dev.type == "cuda":
        return torch.cuda.max_memory_allocated(dev)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _rank(preset_name, N, n_globals, seed):
    from longdoc.model.encoder import build, preset

    dev = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    torch.manual_seed(seed)
    cfg = preset(preset_name)
    net = shard_encoder(build(cfg).to(dev))
    R, r = dist.get_world_size(), dist.get_rank()
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, cfg.vocab_size, (1, N), generator=g)
    pos = (torch.arange(N) % cfg.usable_positions + cfg.position_offset)[None]
    gm = torch.zeros(1, N, dtype=torch.bool)
    gm[0, torch.linspace(0, N - 1, n_globals).long()] = True
    bounds = even_bounds(N, R)
    s, e = bounds[r], bounds[r + 1]
    sl = lambda t: t[:, s:e].to(dev)  # noqa: E731

    counts = {"halo": 0, "tile": 0}
    real = {"batch_isend_irecv": dist.batch_isend_irecv, "all_gather": dist.all_gather}

    def batch_isend_irecv(ops):  # the halo exchange posts its receives and sends as one batch
        counts["halo"] += sum(o.tensor.numel() * o.tensor.element_size() for o in ops if o.op.__name__ == "irecv")
        return real["batch_isend_irecv"](ops)

    def all_gather(outs, t, *a, **k):
        counts["tile"] += t.numel() * t.element_size()
        return real["all_gather"](outs, t, *a, **k)

    with torch.inference_mode():
        net(sl(ids)[:, :64], sl(pos)[:, :64])  # warm-up: every rank's first 64 rows form a short input
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
            torch.cuda.reset_peak_memory_stats(dev)
        before = _peak_bytes(dev)
        dist.barrier()
        dist.batch_isend_irecv, dist.all_gather = batch_isend_irecv, all_gather
        t0 = time.perf_counter()
        net(sl(ids), sl(pos), global_mask=sl(gm))
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        secs = time.perf_counter() - t0
        dist.batch_isend_irecv, dist.all_gather = real["batch_isend_irecv"], real["all_gather"]
        peak = _peak_bytes(dev) - (0 if dev.type == "cuda" else before)
    layers = cfg.num_layers
    mine = torch.tensor([peak, counts["halo"] / layers, counts["tile"] / layers, secs, e - s], dtype=torch.float64)
    every = [torch.zeros_like(mine) for _ in range(R)]
    dist.all_gather(every, mine)
    return torch.stack(every)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=8192)
    ap.add_argument("--ranks", default="1,2,4")
    ap.add_argument("--preset", default="minilm")
    ap.add_argument("--globals", type=int, default=4)
    args = ap.parse_args(argv)
    from longdoc.model.encoder import preset

    cfg = preset(args.preset)
    print(f"{args.preset}: C={cfg.hidden_size} layers={cfg.num_layers} w={cfg.windows[0]} "
          f"d={cfg.dilations[0]}; N={args.tokens} tokens, {args.globals} global; fp32")
    print(f"{'ranks':>5} {'rows/rank':>9} {'peak MiB/rank':>13} {'halo KiB/layer':>14} "
          f"{'gather B/layer':>14} {'forward s':>9}")
    for R in (int(x) for x in args.ranks.split(",")):
        t = launch(_rank, R, args.preset, args.tokens, args.globals, 0)
        peak, halo, tile, secs, rows = t.max(0).values.tolist()
        print(f"{R:>5} {int(rows):>9} {peak / 2**20:>13.1f} {halo / 2**10:>14.1f} {int(tile):>14} {secs:>9.2f}")


if __name__ == "__main__":
    main()
