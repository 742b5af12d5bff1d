"""One device, inputs larger than it holds: the sequential shard mode against the whole-input forward.

    python -m longdoc.shard.bench_sequential [--preset base] [--tokens 1M,4M,8M] [--shard-tokens 1M]

For each n: the whole input in one forward (reported as "does not fit" when the device runs out of
memory), then ``encode_sequential`` with shards of --shard-tokens, the other shards' activations in
pinned host memory. Columns: time of one forward after one warm-up (the sequential mode's warm-up is
skipped above --once-above tokens, where a second pass costs more than it tells), the device's peak
allocated memory, the process's peak resident memory. At the smallest n both modes are compared
elementwise (the same weights and input; the tolerance is the dtype's, as in longdoc.shard.scaling).
In bf16 a random 12-layer model's own bf16-vs-fp32 difference already exceeds that tolerance (see
docs/sharding.md), so decide exactness with --dtype fp32; bf16 is for time and memory.
Random weights from --seed, 16 global tokens spread over the input. Prints a markdown table and writes
it to ``$OUT/sequential.md`` when OUT is set.
"""
from __future__ import annotations

import argparse
import datetime
import os
import resource
import sys
import time

import torch

from longdoc.model.encoder import build, preset
from longdoc.shard.encoder import encode_sequential
from longdoc.shard.scaling import DTYPES, TOLERANCE


def _n(text: str) -> int:
    text = text.strip().lower()
    mult = {"k": 1 << 10, "m": 1 << 20}.get(text[-1:], 1)
    return int(float(text.rstrip("km")) * mult)


def _fmt(n: int) -> str:
    return f"{n >> 20}M" if n % (1 << 20) == 0 else f"{n >> 10}k" if n % 1024 == 0 else str(n)


def _rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def inputs(cfg, n: int, G: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, cfg.vocab_size, (1, n), generator=g)
    pos = (torch.arange(n) % cfg.usable_positions)[None] + cfg.position_offset
    gm = torch.zeros(1, n, dtype=torch.bool)
    gm[0, torch.linspace(0, n - 1, G).long()] = True
    return ids, pos, gm


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def timed(fn, dev, reps: int):
    """(output, seconds) of the last of `reps` calls; earlier calls are warm-up."""
    out, t = None, 0.0
    for _ in range(reps):
        out = None  # the previous output is freed before the next call allocates its own
        _sync(dev)
        t0 = time.perf_counter()
        out = fn()
        _sync(dev)
        t = time.perf_counter() - t0
    return out, t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="base")
    ap.add_argument("--dtype", choices=tuple(DTYPES), default="bf16")
    ap.add_argument("--tokens", default="1M,4M,8M", help="comma list (k/M suffixes)")
    ap.add_argument("--shard-tokens", default="1M")
    ap.add_argument("--globals", type=int, default=16)
    ap.add_argument("--once-above", default="4M", help="above this n, one sequential forward, no warm-up")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args(argv)
    dev, dtype = torch.device(a.device), DTYPES[a.dtype]
    sizes, K, once = sorted(_n(t) for t in a.tokens.split(",")), _n(a.shard_tokens), _n(a.once_above)
    torch.manual_seed(a.seed)
    cfg = preset(a.preset)
    net = build(cfg).to(dev, dtype).eval()
    atol, rtol = TOLERANCE[a.dtype]
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU"
    total = torch.cuda.get_device_properties(dev).total_memory / 2**30 if dev.type == "cuda" else float("nan")
    rows, exact = [], None
    for n in sizes:
        ids, pos, gm = inputs(cfg, n, a.globals, a.seed)
        whole = None
        if dev.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(dev)
        try:
            with torch.inference_mode():
                on_dev = [x.to(dev) for x in (ids, pos, gm)]
                out, t = timed(lambda: net(on_dev[0], on_dev[1], global_mask=on_dev[2]), dev, 2)
                whole = out.cpu() if n == sizes[0] else None
                out = on_dev = None  # freed before the sequential run
            peak = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else float("nan")
            rows.append((n, "whole", f"{t:.2f}", f"{n / t:,.0f}", f"{peak:.1f}", f"{_rss_gib():.1f}"))
        except torch.OutOfMemoryError:
            rows.append((n, "whole", "does not fit", "", "", f"{_rss_gib():.1f}"))
        print(f"[seq {time.strftime('%H:%M:%S')}] {rows[-1]}", file=sys.stderr, flush=True)
        if dev.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(dev)
        try:
            fn = lambda: encode_sequential(net, ids, pos, global_mask=gm, shard_len=K)  # noqa: E731
            out, t = timed(fn, dev, 1 if n > once else 2)
            peak = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else float("nan")
            rows.append((n, f"sequential, {_fmt(K)} shards", f"{t:.2f}", f"{n / t:,.0f}", f"{peak:.1f}",
                         f"{_rss_gib():.1f}"))
            if whole is not None:
                ref = whole.float()
                bad = ((out.float() - ref).abs() > atol + rtol * ref.abs()).sum().item()
                rel = ((out.float() - ref).abs().max() / ref.abs().max()).item()
                finite = bool(torch.isfinite(out).all())
                exact = (n, rel, bad, finite)
            del out
        except torch.OutOfMemoryError as e:
            rows.append((n, f"sequential, {_fmt(K)} shards", f"out of memory: {str(e).splitlines()[0][:80]}",
                         "", "", f"{_rss_gib():.1f}"))
        print(f"[seq {time.strftime('%H:%M:%S')}] {rows[-1]}", file=sys.stderr, flush=True)
    L = ["# One device, sequential shards vs the whole input", "",
         f"- device: {name} ({total:.0f} GiB), torch {torch.__version__}, "
         f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d}",
         f"- model: preset {a.preset} (random weights), {a.dtype}, {a.globals} global tokens, batch 1",
         f"- command: `python -m longdoc.shard.bench_sequential {' '.join(argv or sys.argv[1:])}`", "",
         "| n | mode | s | tokens/s | device peak GiB | host peak RSS GiB |", "|---|---|---|---|---|---|"]
    L += [f"| {_fmt(r[0])} | " + " | ".join(r[1:]) + " |" for r in rows]
    if exact:
        n, rel, bad, finite = exact
        verdict = "PASS" if bad == 0 and finite else "FAIL"
        L += ["", f"Exactness at n = {_fmt(n)}: sequential vs whole, max |diff| / max |whole| = {rel:.2e}, "
                  f"{bad} elements beyond atol {atol:g} + rtol {rtol:g}, all finite: {finite}: {verdict}"]
    text = "\n".join(L) + "\n"
    print(text, flush=True)
    if os.environ.get("OUT"):
        with open(os.path.join(os.environ["OUT"], "sequential.md"), "w") as f:
            f.write(text)
    return 0 if not exact or (exact[2] == 0 and exact[3]) else 1


if __name__ == "__main__":
    sys.exit(main())
