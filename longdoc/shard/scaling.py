"""Multi-GPU figures of the sharded encoder in one run (issue 10): exactness, weak and strong scaling.

    NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 python -m longdoc.shard.scaling
    python -m longdoc.shard.scaling --device cpu --preset tiny --tokens-per-rank 2048 --ranks 1,2

One spawn of W = max(--ranks) processes (NCCL with one GPU each, or gloo on the CPU); every rank builds
the same random-weight encoder from --seed, so no weights travel and spawning, model building and
Triton compilation are outside every timed region. In that one spawn:

1. Preflight (GPU): the Triton kernel is importable and agrees with the reference on a small input.
   If not, the error is reported and nothing is run on the GPU (no silent fallback to the reference).
2. One GPU (rank 0, the unsharded model, the others waiting): n = T (weak baseline), n = S (strong
   baseline) and the --exact-tokens sizes; with bf16 also an fp32 run at the smallest exact size, the
   bf16 noise floor printed beside the exactness figures.
3. For each R > 1 in --ranks, on the sub-group of ranks 0..R-1: weak scaling at R*T tokens and strong
   scaling at S tokens (even shards), each timed; and for every exact size one forward over uneven
   shards (not multiples of any block) whose output is sent to rank 0 and compared with the
   single-GPU output of the same input. 16 global tokens, several on shard boundaries.

Timing: --warmup forwards, then --reps forwards, each started after a group-wide sync and ended by
``cuda.synchronize``; a rep's time is the slowest rank's, the table shows the median. Efficiency:
weak t1 / tR, strong t1 / (R * tR), t1 always the unsharded model on one GPU (no sharding overhead
in the baseline). Peak memory: ``torch.cuda.max_memory_allocated`` over the timed reps, the largest
over ranks (weights, input and output included); on the CPU the process's peak RSS. Communication:
one extra forward with CUDA events recorded on the compute stream around every halo wait and every
global-tile / global-row all-gather: the time the compute stream stalls for them (the exposed part,
i.e. what the interior rows did not hide, plus waiting for a slower neighbour), summed over layers,
the largest over ranks. The timed forwards carry no events.

Writes the report (markdown, with the GPU name, torch/triton/CUDA/NCCL versions and the date) to
``$OUT/shard_scaling.md`` and the raw records to ``$OUT/shard_scaling.jsonl`` when OUT is set. A failed
rank ends the spawn; what was measured before is still reported, with the error. Exit status 1 on an
error or a failed exactness check.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
import traceback

import torch
import torch.distributed as dist

from longdoc.errors import LongdocError
from longdoc.shard.attention import even_bounds

# Tolerance of the exactness check, |sharded - single| <= atol + rtol * |single| elementwise, by dtype.
# bf16 keeps 8 significant bits (1 ulp = 2^-7 relative at most): 2^-5 allows a few ulp of drift through
# 12 layers where the shards' kernel runs round differently; a wrong halo or global row gives O(1).
TOLERANCE = {"bf16": (2**-5, 2**-5), "fp16": (2**-8, 2**-8), "fp32": (1e-4, 1e-4)}
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
TINY = dict(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=256, window=32, vocab_size=2000)
GLOBALS_ON_BOUNDARIES_CAP = 0.75  # at most this share of the global tokens are put on shard boundaries


# ---------------------------------------------------------------------------------------------------
# Inputs


def config(preset_name: str, window: int | None = None):
    from longdoc.model.encoder import preset

    cfg = preset("minilm", **TINY) if preset_name == "tiny" else preset(preset_name)
    return cfg.replace(window=window) if window else cfg


def uneven_bounds(n: int, R: int) -> tuple[int, ...]:
    """R contiguous shards of alternating 0.8 / 1.2 shares, each boundary moved by an odd offset so
    no boundary is a multiple of a kernel block."""
    if R == 1:
        return (0, n)
    weights = [0.8 if p % 2 == 0 else 1.2 for p in range(R)]
    total, acc, out = sum(weights), 0.0, [0]
    for w in weights[:-1]:
        acc += w
        out.append(min(n, max(out[-1], int(n * acc / total) + 37)))
    return tuple(out) + (n,)


def global_positions(n: int, ranks, G: int, h: int) -> list[int]:
    """G global positions: the two rows at each internal boundary of the uneven shards of every R in
    `ranks` (the most ranks first), one just inside the first halo, the rest spread evenly."""
    if n == 0 or G == 0:
        return []
    chosen: list[int] = []
    cap = int(G * GLOBALS_ON_BOUNDARIES_CAP)
    first = True
    for R in sorted(ranks, reverse=True):
        for b in uneven_bounds(n, R)[1:-1]:
            extra = [b + min(h // 2, n - 1 - b)] if first else []
            first = False
            for p in (b - 1, b, *extra):
                if 0 <= p < n and p not in chosen and len(chosen) < cap:
                    chosen.append(p)
    for p in torch.linspace(0, n - 1, G).long().tolist():
        if len(chosen) >= min(G, n):
            break
        while p in chosen:
            p = (p + 1) % n
        chosen.append(p)
    return sorted(chosen)


def inputs(cfg, n: int, ranks, G: int, seed: int):
    """(1, n) ids, positions and global mask on the CPU, the same on every rank."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + n)
    low = 1000 if cfg.vocab_size > 2000 else 1
    ids = torch.randint(low, cfg.vocab_size, (1, n), generator=g)
    pos = (torch.arange(n) % cfg.usable_positions + cfg.position_offset)[None]
    gpos = global_positions(n, ranks, G, max(w * d for w, d in zip(cfg.windows, cfg.dilations)))
    gm = torch.zeros(1, n, dtype=torch.bool)
    gm[0, gpos] = True
    return ids, pos, gm, gpos


# ---------------------------------------------------------------------------------------------------
# Measuring


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _group_sync(dev, group):
    t = torch.zeros(1, device=dev)
    dist.all_reduce(t, group=group)
    _sync(dev)


def _reset_peak(dev):
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)


def _peak(dev) -> int:
    if dev.type == "cuda":
        return torch.cuda.max_memory_allocated(dev)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


class CommClock:
    """Times, on the compute stream, the halo waits and the tile/global-row all-gathers of the sharded
    attention while ``on``: CUDA events around each call on GPUs, the host clock on the CPU."""

    def __init__(self, dev):
        self.dev, self.on = dev, False
        self.spans = {"halo": [], "gather": []}

    def wrap(self, kind, fn):
        def timed(*a, **k):
            if not self.on:
                return fn(*a, **k)
            if self.dev.type == "cuda":
                e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                e0.record()
                out = fn(*a, **k)
                e1.record()
                self.spans[kind].append((e0, e1))
            else:
                t0 = time.perf_counter()
                out = fn(*a, **k)
                self.spans[kind].append(time.perf_counter() - t0)
            return out
        return timed

    def install(self):
        from longdoc.shard import attention as A

        A._Halo.wait = self.wrap("halo", A._Halo.wait)
        A._all_gather_cat = self.wrap("gather", A._all_gather_cat)  # looked up by name at call time
        return self

    def start(self):
        self.spans = {"halo": [], "gather": []}
        self.on = True

    def stop(self) -> dict:
        _sync(self.dev)
        self.on = False
        ms = lambda s: s[0].elapsed_time(s[1]) if isinstance(s, tuple) else s * 1e3  # noqa: E731
        return {k: sum(ms(s) for s in v) for k, v in self.spans.items()} | {"calls": len(self.spans["halo"])}


def time_forwards(fn, dev, group, reps: int, warmup: int):
    """(seconds of each rep on this rank, peak bytes over the reps, the last rep's output)."""
    out = None
    for _ in range(warmup):
        out = None
        out = fn()
    out = None
    _sync(dev)
    _reset_peak(dev)
    times = []
    for _ in range(reps):
        if group is not False:
            _group_sync(dev, group)
        out = None
        t0 = time.perf_counter()
        out = fn()
        _sync(dev)
        times.append(time.perf_counter() - t0)
    return times, _peak(dev), out


class Comparison:
    """Running comparison of a (1, n, C) output, arriving in row blocks, with a reference."""

    def __init__(self, n, dev, atol, rtol):
        self.atol, self.rtol = atol, rtol
        self.max_abs = self.max_ref = self.worst = self.sum_abs = 0.0
        self.count = self.exceed = self.nonfinite = 0
        self.row_max = torch.zeros(n, device=dev)

    def add(self, row0: int, out: torch.Tensor, ref: torch.Tensor, chunk: int = 1 << 16):
        dev = self.row_max.device
        for a in range(0, out.shape[1], chunk):
            x = out[0, a : a + chunk].to(dev).float()
            y = ref[0, a : a + chunk].to(dev).float()
            d = (x - y).abs()
            self.nonfinite += int((~torch.isfinite(x)).sum())
            self.max_abs = max(self.max_abs, float(d.max()))
            self.max_ref = max(self.max_ref, float(y.abs().max()))
            ratio = d / (self.atol + self.rtol * y.abs())
            self.worst = max(self.worst, float(ratio.max()))
            self.exceed += int((ratio > 1).sum())
            self.sum_abs += float(d.double().sum())
            self.count += d.numel()
            self.row_max[row0 + a : row0 + a + d.shape[0]] = d.amax(-1)

    def summary(self, bounds, gpos, h) -> dict:
        n = self.row_max.shape[0]
        near = torch.zeros(n, dtype=torch.bool, device=self.row_max.device)
        for b in bounds[1:-1]:
            near[max(0, b - h) : b + h] = True
        glob = torch.tensor(gpos, dtype=torch.long, device=near.device)
        return dict(max_abs=self.max_abs, rel=self.max_abs / max(self.max_ref, 1e-30),
                    mean_abs=self.sum_abs / max(self.count, 1), worst=self.worst, exceed=self.exceed,
                    near_boundary=float(self.row_max[near].max()) if bool(near.any()) else 0.0,
                    at_globals=float(self.row_max[glob].max()) if len(gpos) else 0.0,
                    atol=self.atol, rtol=self.rtol, nonfinite=self.nonfinite,
                    ok=self.exceed == 0 and self.nonfinite == 0)


# ---------------------------------------------------------------------------------------------------
# The ranks


class Recorder:
    def __init__(self, path):
        self.path = path

    def __call__(self, **rec):
        with open(self.path, "a") as f:
            f.write(json.dumps(rec) + "\n")
        # Progress on stderr as each record lands: a run cut off by a time limit still shows how far it got.
        if rec.get("kind") == "error":
            print(f"[scaling] ERROR in {rec.get('phase')}: {rec.get('msg')}", file=sys.stderr, flush=True)
        else:
            brief = {k: v for k, v in rec.items() if k not in ("times", "globals")}
            if "times" in rec:
                brief["median_ms"] = round(1e3 * statistics.median(rec["times"]), 2)
            print(f"[scaling {time.strftime('%H:%M:%S')}] {json.dumps(brief)}", file=sys.stderr, flush=True)


def describe(exc: BaseException) -> str:
    tb = "".join(traceback.format_exception(exc))
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        kind = "out of memory"
    elif "triton" in tb.lower():
        kind = "Triton failure"
    else:
        kind = type(exc).__name__
    return f"{kind}: {exc}\n{tb[-3000:]}"


def preflight(dev, dtype) -> tuple[bool, str]:
    """The Triton kernel exists and matches the reference on a small input with global tokens."""
    try:
        import longdoc.kernels as K

        if K.local_global_attention_triton is None:
            try:
                import longdoc.kernels.triton_attention  # noqa: F401  (to surface the import error)
            except Exception as e:  # noqa: BLE001
                return False, f"Triton kernels not importable: {e!r}"
            return False, "Triton kernels not importable (longdoc.kernels.local_global_attention_triton is None)"
        g = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(1, 4, 1000, 64, generator=g) for _ in range(3))
        gidx = torch.tensor([[0, 499, 500, 999]])
        ref = K.local_global_attention_reference(q, k, v, window=64, global_idx=gidx)
        out = K.local_global_attention(*(t.to(dev, dtype) for t in (q, k, v)), window=64, global_idx=gidx.to(dev))
        _sync(dev)
        err = float((out.float().cpu() - ref).abs().max())
        tol = 2e-2 if dtype == torch.float32 else 5e-2
        if not err <= tol:
            return False, f"Triton kernel disagrees with the reference on a 1000-token check: max abs {err:.3g} > {tol}"
        return True, f"Triton kernel ok (max abs {err:.1e} vs the reference on a 1000-token check)"
    except Exception as e:  # noqa: BLE001
        return False, describe(e)


def environment(dev) -> dict:
    try:
        import triton
        tv = triton.__version__
    except Exception:  # noqa: BLE001
        tv = "absent"
    env = dict(torch=torch.__version__, triton=tv, python=platform.python_version(), host=platform.node(),
               date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               world=dist.get_world_size(), backend=dist.get_backend(),
               NCCL_NVLS_ENABLE=os.environ.get("NCCL_NVLS_ENABLE"),
               TORCH_SYMM_MEM_DISABLE_MULTICAST=os.environ.get("TORCH_SYMM_MEM_DISABLE_MULTICAST"))
    if dev.type == "cuda":
        try:
            v = torch.cuda.nccl.version()
            nccl = ".".join(map(str, v)) if isinstance(v, tuple) else str(v)
        except Exception:  # noqa: BLE001
            nccl = "?"
        env.update(device=torch.cuda.get_device_name(dev), cuda=torch.version.cuda, nccl=nccl,
                   gpus=torch.cuda.device_count(),
                   gpu_mem_gib=round(torch.cuda.get_device_properties(dev).total_memory / 2**30, 1))
    else:
        env.update(device=f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)")
    return env


def _rank_main(o: dict, path: str):
    from longdoc.model.encoder import build
    from longdoc.shard.encoder import shard_encoder, unshard_encoder

    rank, W = dist.get_rank(), dist.get_world_size()
    dev = torch.device("cuda", torch.cuda.current_device()) if o["device"] == "cuda" else torch.device("cpu")
    dtype = DTYPES[o["dtype"]]
    rec = Recorder(path)
    lead = rank == 0
    multi = [R for R in o["ranks"] if R > 1]
    groups = {R: (None if R == W else dist.new_group(list(range(R)))) for R in multi}
    clock = CommClock(dev).install()
    if lead:
        rec(kind="env", **environment(dev))

    if dev.type == "cuda":
        ok, msg = preflight(dev, dtype)
        flags = [None] * W
        dist.all_gather_object(flags, (ok, msg))
        if lead:
            bad = [(r, m) for r, (k, m) in enumerate(flags) if not k]
            rec(kind="preflight", ok=not bad, msg=msg if not bad else "")
            for r, m in bad:
                rec(kind="error", phase=f"preflight (rank {r})", msg=m)
        if not all(k for k, _ in flags):
            return None

    cfg = config(o["preset"], o["window"])
    h = max(w * d for w, d in zip(cfg.windows, cfg.dilations))
    torch.manual_seed(o["seed"])
    model32 = build(cfg)  # the same weights on every rank; nothing is sent
    want_floor = lead and o["noise_floor"] and dtype != torch.float32 and o["exact"]
    net = (copy.deepcopy(model32) if want_floor else model32).to(dev, dtype).eval()
    if not want_floor:
        model32 = None
    atol, rtol = o["atol"], o["rtol"]
    T, S = o["tokens_per_rank"], o["strong_tokens"]
    reps, warmup = o["reps"], o["warmup"]
    refs = {}

    def world_sync():
        _group_sync(dev, None)

    # -- one GPU: the unsharded model on rank 0 ------------------------------------------------------
    singles = sorted({T, *([S] if S else []), *o["exact"]})
    if lead:
        for n in singles:
            try:
                ids, pos, gm, gpos = inputs(cfg, n, o["ranks"], o["globals"], o["seed"])
                ids, pos, gm = ids.to(dev), pos.to(dev), gm.to(dev)
                with torch.inference_mode():
                    fn = lambda: net(ids, pos, global_mask=gm)  # noqa: E731
                    times, peak, out = time_forwards(fn, dev, False, reps, warmup)
                    if n in o["exact"]:
                        refs[n] = out.cpu()
                    del out
                    rec(kind="time", R=1, n=n, mode="single", times=times, peak=[peak], halo_ms=0.0,
                        gather_ms=0.0)
                    if want_floor and n == min(o["exact"]):
                        m32 = model32.to(dev)
                        out32 = m32(ids, pos, global_mask=gm).cpu()
                        model32 = m32 = None
                        cmp = Comparison(n, dev, atol, rtol)
                        cmp.add(0, refs[n], out32)
                        del out32
                        rec(kind="floor", n=n, **cmp.summary((0, n), gpos, h))
            except Exception as e:  # noqa: BLE001  (one GPU, no peer waits: record and go on)
                rec(kind="error", phase=f"1 GPU, n={n}", msg=describe(e))
            finally:
                if dev.type == "cuda":
                    torch.cuda.empty_cache()
    model32 = None
    world_sync()

    # -- R ranks ---------------------------------------------------------------------------------------
    for R in multi:
        group = groups[R]
        member = rank < R
        jobs = [("weak", R * T, even_bounds(R * T, R))]
        if S:
            jobs.append(("strong", S, even_bounds(S, R)))
        jobs += [("exact", n, uneven_bounds(n, R)) for n in o["exact"]]
        for mode, n, bounds in jobs:
            if member:
                phase = f"{R} ranks, {mode}, n={n}"
                try:
                    _sharded(o, rec, net, cfg, dev, group, R, n, bounds, mode, clock, refs, h, lead,
                             shard_encoder, unshard_encoder)
                except Exception as e:
                    rec(kind="error", phase=f"{phase} (rank {rank})", msg=describe(e))
                    raise  # the peers wait in a collective: end the spawn (launch names this rank)
                finally:
                    if dev.type == "cuda":
                        torch.cuda.empty_cache()
            world_sync()
    if lead:
        rec(kind="done")
    return None


def _sharded(o, rec, net, cfg, dev, group, R, n, bounds, mode, clock, refs, h, lead, shard_encoder,
             unshard_encoder):
    rank = dist.get_rank()
    ids, pos, gm, gpos = inputs(cfg, n, o["ranks"], o["globals"], o["seed"])
    s, e = bounds[rank], bounds[rank + 1]
    ids, pos, gm = (t[:, s:e].to(dev) for t in (ids, pos, gm))
    sharded = shard_encoder(unshard_encoder(net), group)
    fn = lambda: sharded(ids, pos, global_mask=gm)  # noqa: E731
    with torch.inference_mode():
        if mode == "exact":
            out = fn()
            _sync(dev)
            if rank != 0:
                dist.send(out.contiguous(), 0, group=group)  # group rank = global rank (ranks 0..R-1)
                return
            ref = refs.get(n)
            cmp = Comparison(n, dev, o["atol"], o["rtol"]) if ref is not None else None
            if cmp:
                cmp.add(s, out, ref[:, s:e])
            del out
            for p in range(1, R):
                buf = torch.empty(1, bounds[p + 1] - bounds[p], cfg.hidden_size, dtype=DTYPES[o["dtype"]], device=dev)
                dist.recv(buf, p, group=group)
                if cmp:
                    cmp.add(bounds[p], buf, ref[:, bounds[p] : bounds[p + 1]])
                del buf
            if cmp is None:
                rec(kind="error", phase=f"{R} ranks, exact, n={n}", msg="no single-GPU reference (its run failed)")
            else:
                rec(kind="exact", R=R, n=n, shards=[b - a for a, b in zip(bounds, bounds[1:])],
                    globals=gpos if len(gpos) <= 32 else len(gpos), **cmp.summary(bounds, gpos, h))
            return
        times, peak, out = time_forwards(fn, dev, group, o["reps"], o["warmup"])
        del out
        clock.start()
        out = fn()
        comm = clock.stop()
        del out
    mine = torch.tensor([peak, comm["halo"], comm["gather"], *times], dtype=torch.float64, device=dev)
    every = [torch.zeros_like(mine) for _ in range(R)]
    dist.all_gather(every, mine, group=group)
    if lead:
        t = torch.stack(every).cpu()
        rec(kind="time", R=R, n=n, mode=mode, times=t[:, 3:].max(0).values.tolist(), peak=t[:, 0].tolist(),
            halo_ms=float(t[:, 1].max()), gather_ms=float(t[:, 2].max()), layers=cfg.num_layers)


# ---------------------------------------------------------------------------------------------------
# Report


def _fmt_n(n: int) -> str:
    for unit, div in (("M", 2**20), ("k", 2**10)):
        if n >= div and n % div == 0:
            return f"{n // div}{unit}"
    return str(n)


def verdict(r: dict) -> str:
    if r["ok"]:
        return "PASS"
    return f"FAIL ({r['exceed']} elements over, {r['nonfinite']} not finite)"


def report(records: list[dict], o: dict, failure: str | None, wall: float, argv) -> tuple[str, bool]:
    env = next((r for r in records if r["kind"] == "env"), {})
    errors = [r for r in records if r["kind"] == "error"]
    times = [r for r in records if r["kind"] == "time"]
    exact = [r for r in records if r["kind"] == "exact"]
    floor = next((r for r in records if r["kind"] == "floor"), None)
    pre = next((r for r in records if r["kind"] == "preflight"), None)
    cfg = config(o["preset"], o["window"])
    gpu = o["device"] == "cuda"
    mem = "peak GiB/GPU" if gpu else "peak RSS GiB/rank"
    L = []
    L.append("# Sharded encoder: exactness and scaling")
    L.append("")
    L.append(f"- machine: {env.get('device', '?')} x {env.get('world', '?')} ({env.get('backend', '?')}), "
             f"host {env.get('host', '?')}, {env.get('date', '?')}")
    L.append(f"- torch {env.get('torch', '?')}, triton {env.get('triton', '?')}"
             + (f", CUDA {env.get('cuda')}, NCCL {env.get('nccl')}" if gpu else "")
             + f"; NCCL_NVLS_ENABLE={env.get('NCCL_NVLS_ENABLE')}, "
               f"TORCH_SYMM_MEM_DISABLE_MULTICAST={env.get('TORCH_SYMM_MEM_DISABLE_MULTICAST')}")
    L.append(f"- model: preset {o['preset']} (random weights, seed {o['seed']}): {cfg.num_layers} layers, "
             f"hidden {cfg.hidden_size}, {cfg.num_heads} heads, window radius {cfg.windows[0]}, "
             f"{o['globals']} global tokens; {o['dtype']}; batch 1")
    L.append(f"- timing: median of {o['reps']} forwards after {o['warmup']} warm-up, slowest rank per forward"
             + (", CUDA-synchronised" if gpu else "") + "; inference_mode; spawn, model build and compilation "
             "outside the timed region")
    L.append(f"- command: `{' '.join(argv)}`; wall time of the whole run {wall:.0f} s")
    if pre:
        L.append(f"- preflight: {pre['msg'] or 'FAILED'}")
    L.append("")

    base = {r["n"]: statistics.median(r["times"]) for r in times if r["R"] == 1}
    T, S = o["tokens_per_rank"], o["strong_tokens"]
    L.append("## Scaling")
    L.append("")
    dev_col = "GPUs" if gpu else "ranks"
    L.append(f"| scaling | {dev_col} | n | tokens/GPU | ms | tokens/s | efficiency | {mem} | halo wait ms | gather ms |")
    L.append("|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for mode, n_of in (("weak", lambda R: R * T), ("strong", lambda R: S)):
        if mode == "strong" and not S:
            continue
        for R in sorted(set(o["ranks"]) | {1}):
            n = n_of(R)
            rec = next((r for r in times if r["R"] == R and r["n"] == n and (R == 1 or r["mode"] == mode)), None)
            if rec is None:
                rows.append(f"| {mode} | {R} | {_fmt_n(n)} | {_fmt_n(n // R)} | not run | | | | | |")
                continue
            t = statistics.median(rec["times"])
            t1 = base.get(T if mode == "weak" else S)
            eff = "" if t1 is None else f"{100 * (t1 / t if mode == 'weak' else t1 / (R * t)):.1f}%"
            comm = ("-", "-") if R == 1 else (f"{rec['halo_ms']:.1f}", f"{rec['gather_ms']:.1f}")
            rows.append(f"| {mode} | {R} | {_fmt_n(n)} | {_fmt_n(n // R)} | {1e3 * t:.1f} | {n / t:,.0f} | {eff} | "
                        f"{max(rec['peak']) / 2**30:.2f} | {comm[0]} | {comm[1]} |")
    L += rows
    L.append("")
    L.append("Efficiency: weak t1/tN, strong t1/(N tN); t1 is the unsharded model on one GPU. Halo wait: time "
             "the compute stream stalls in the halo waits of one forward (all layers; CUDA events around each "
             "wait, in a separate instrumented forward), i.e. transfer not hidden behind the interior rows plus "
             "waiting for a slower neighbour; gather: the same for the global-tile and global-row all-gathers. "
             "Largest over ranks. Peak memory includes weights, input and output.")
    L.append("")

    L.append("## Exactness (sharded over uneven shards vs the single-GPU output of the same input)")
    L.append("")
    if exact:
        atol, rtol = exact[0]["atol"], exact[0]["rtol"]
        L.append(f"Pass: every element |sharded - single| <= {atol:g} + {rtol:g} |single| ({o['dtype']} vs "
                 f"{o['dtype']}). worst = max of |diff| / ({atol:g} + {rtol:g} |single|), must be <= 1. "
                 "rel = max |diff| / max |single|. The fp32 check (1e-5) is in the CPU tests (tests/test_shard.py).")
        L.append("")
        L.append(f"| {dev_col} | n | shard lengths | max abs | rel | mean abs | worst | rows near boundaries: max abs "
                 "| global rows: max abs | result |")
        L.append("|---|---|---|---|---|---|---|---|---|---|")
        for r in exact:
            L.append(f"| {r['R']} | {_fmt_n(r['n'])} | {', '.join(map(str, r['shards']))} | {r['max_abs']:.3g} | "
                     f"{r['rel']:.2g} | {r['mean_abs']:.2g} | {r['worst']:.3g} | {r['near_boundary']:.3g} | "
                     f"{r['at_globals']:.3g} | {verdict(r)} |")
    else:
        L.append("No exactness check ran.")
    if floor:
        L.append("")
        L.append(f"bf16 noise floor for scale: the single-GPU {o['dtype']} output vs the single-GPU fp32 output at "
                 f"n = {_fmt_n(floor['n'])}: max abs {floor['max_abs']:.3g}, mean abs {floor['mean_abs']:.2g}, "
                 f"worst {floor['worst']:.3g} on the same scale.")
    L.append("")
    ok = not errors and failure is None and all(r["ok"] for r in exact) and bool(exact or not o["exact"])
    if errors or failure:
        L.append("## Errors")
        L.append("")
        for r in errors:
            L.append(f"- {r['phase']}:")
            L.append("```")
            L.append(r["msg"].rstrip())
            L.append("```")
        if failure:
            L.append("- the spawn ended:")
            L.append("```")
            L.append(failure.rstrip()[-4000:])
            L.append("```")
        L.append("")
    if not any(r["kind"] == "done" for r in records) and not (pre and not pre["ok"]):
        L.append("The run did not finish: rows marked 'not run' were not measured.")
        ok = False
    return "\n".join(L) + "\n", ok


# ---------------------------------------------------------------------------------------------------


def _ints(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x.strip()]


def parse(argv=None):
    ap = argparse.ArgumentParser(prog="python -m longdoc.shard.scaling", description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("cuda", "cpu"), default=None, help="default: cuda when available")
    ap.add_argument("--preset", default="base", help="an encoder preset (base, minilm, ...) or 'tiny'")
    ap.add_argument("--window", type=int, default=None, help="override the preset's window radius")
    ap.add_argument("--dtype", choices=tuple(DTYPES), default=None, help="default: bf16 on cuda, fp32 on cpu")
    ap.add_argument("--ranks", default=None, help="comma list; default 1,2,4,8 up to and including every visible GPU")
    ap.add_argument("--tokens-per-rank", type=int, default=256 * 1024, help="weak scaling: tokens per GPU")
    ap.add_argument("--strong-tokens", type=int, default=None, help="strong scaling total; default 4 x tokens-per-rank; 0 skips")
    ap.add_argument("--exact-tokens", default=None, help="comma list of sizes to check; default tokens-per-rank and "
                                                          "4 x tokens-per-rank; '' skips")
    ap.add_argument("--globals", type=int, default=16)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--atol", type=float, default=None)
    ap.add_argument("--rtol", type=float, default=None)
    ap.add_argument("--no-noise-floor", dest="noise_floor", action="store_false",
                    help="skip the fp32 single-GPU run that shows the bf16 noise floor")
    a = ap.parse_args(argv)
    a.device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    a.dtype = a.dtype or ("bf16" if a.device == "cuda" else "fp32")
    if a.ranks is None:
        count = torch.cuda.device_count() if a.device == "cuda" else 2
        a.ranks = ",".join(map(str, sorted({R for R in (1, 2, 4, 8) if R <= count} | {max(1, count)})))
    a.ranks = sorted(set(_ints(a.ranks)))
    if a.strong_tokens is None:
        a.strong_tokens = 4 * a.tokens_per_rank
    a.exact = sorted(set(_ints(a.exact_tokens))) if a.exact_tokens is not None else \
        sorted({a.tokens_per_rank, 4 * a.tokens_per_rank})
    at, rt = TOLERANCE[a.dtype]
    a.atol = at if a.atol is None else a.atol
    a.rtol = rt if a.rtol is None else a.rtol
    return a


def main(argv=None) -> int:
    # Before any process (and so any NCCL communicator) starts: never NVLink multicast / NVLS.
    os.environ["NCCL_NVLS_ENABLE"] = "0"
    os.environ["TORCH_SYMM_MEM_DISABLE_MULTICAST"] = "1"
    from longdoc.shard.launch import launch, under_torchrun

    argv = sys.argv[1:] if argv is None else list(argv)
    a = parse(argv)
    try:
        config(a.preset, a.window)
    except ValueError as e:
        print(e, file=sys.stderr)
        return 2
    if not a.ranks or a.ranks[0] < 1:
        print("--ranks must list positive counts", file=sys.stderr)
        return 2
    W = max(a.ranks)
    if a.device == "cuda":
        if not torch.cuda.is_available():
            print("--device cuda but no GPU is visible", file=sys.stderr)
            return 2
        if W > torch.cuda.device_count() and not under_torchrun():
            print(f"--ranks asks for {W} GPUs but {torch.cuda.device_count()} are visible", file=sys.stderr)
            return 2
    o = dict(device=a.device, preset=a.preset, window=a.window, dtype=a.dtype, ranks=a.ranks,
             tokens_per_rank=a.tokens_per_rank, strong_tokens=a.strong_tokens, exact=a.exact, globals=a.globals,
             reps=a.reps, warmup=a.warmup, seed=a.seed, atol=a.atol, rtol=a.rtol, noise_floor=a.noise_floor)
    t0 = time.perf_counter()
    failure = None
    with tempfile.TemporaryDirectory(prefix="longdoc-scaling-") as tmp:
        path = os.path.join(tmp, "records.jsonl")
        open(path, "w").close()
        try:
            launch(_rank_main, W, o, path, backend="nccl" if a.device == "cuda" else "gloo")
        except LongdocError as e:
            failure = str(e)
        except Exception as e:  # noqa: BLE001  (report what was measured, whatever ended the run)
            failure = describe(e)
        if int(os.environ.get("RANK", "0")) != 0:
            return 0  # under torchrun only rank 0 reports
        with open(path) as f:
            records = [json.loads(line) for line in f if line.strip()]
    text, ok = report(records, o, failure, time.perf_counter() - t0, ["python -m longdoc.shard.scaling", *argv])
    print(text, end="", flush=True)
    out_dir = os.environ.get("OUT")
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "shard_scaling.md"), "w") as f:
            f.write(text)
        with open(os.path.join(out_dir, "shard_scaling.jsonl"), "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)
        print(f"written: {os.path.join(out_dir, 'shard_scaling.md')}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
