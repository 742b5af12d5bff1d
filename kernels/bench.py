"""Benchmark: longdoc's local+global attention against its peers, one table from one run on one GPU.

    python -m longdoc.kernels.bench --ref-max-n 65536   # the table in docs/kernels.md (about 4 minutes on an H100)
    python -m longdoc.kernels.bench --quick    # d=64, w=256, G in 0/16, n in 16k/64k; no peers but SDPA
    python -m longdoc.kernels.bench --n 65536 --G 16 --d 64 --w 256 --peers flex,sdpa,hf
    python -m longdoc.kernels.bench --n 65536 --G 0 --peers blocks-cudnn,blocks-flash   # the dense ceiling

Columns: median ms (CUDA events, triton.testing.do_bench), useful TFLOP/s (only the FLOPs inside the
mask, BENCHMARKS.md: forward 4*d*H*(n*(2w+1) + 2*n*G), forward+backward 3.5x that, the usual count
for attention: the backward does 5 matmuls against the forward's 2), executed TFLOP/s (the FLOPs the
kernel actually issues, tile waste included; longdoc and the dense blocks only), peak GiB
(torch.cuda.max_memory_allocated during the call, inputs included), first-call seconds (compile; 0.0
means no recompile),
and the max relative error (||out - ref|| / ||ref||, over out and, for fwd+bwd, dq/dk/dv) against the
blocked fp32 reference (checked up to ``--ref-max-n`` tokens).

Every implementation sees the same bf16 inputs, batch 1, 12 heads, globals at scattered positions.
Each row is timed after a warm-up of its own callable, and the process is warmed by one throwaway
fp16 longdoc call before the first row (so its one-time costs land in no row).
"""
from __future__ import annotations

import argparse
import math
import signal
import time

import torch

HEADS = 12


def useful_flops(n, d, w, G, H=HEADS, bwd=False):
    f = 4 * d * H * (n * (2 * w + 1) + 2 * n * G)
    return f * 3.5 if bwd else f


def executed_flops(n, d, w, G, H=HEADS, bwd=False, hopper=False):
    """FLOPs the longdoc kernels issue with the forward's chosen tiles (edge tiles included). With
    ``hopper`` the forward band ran on the sm_90 kernel, whose 64-row consumers each walk only the key
    blocks their rows reach; the backward's share stays the Triton tiles' (3.5x the forward's)."""
    from . import hopper_attention as ha
    from . import triton_attention as ta

    g_pad = max(16, 1 << (G - 1).bit_length()) if G else 0
    bm, bn = ta._fwd_tiles(d, torch.bfloat16)[:2]
    per_block = bm * (-(-(bm + 2 * w) // bn) * bn + g_pad)
    triton_band = -(-n // bm) * per_block
    band = triton_band
    if hopper:
        hbn, _, num_c = ha.TILES[d][:3]
        n_blk = -(-(num_c * ha.SUB_M + 2 * w) // hbn)
        blocks = sum(min((c * ha.SUB_M + ha.SUB_M - 1 + 2 * w) // hbn + 1, n_blk) - (c * ha.SUB_M) // hbn
                     for c in range(num_c))
        band = -(-n // (num_c * ha.SUB_M)) * ha.SUB_M * (blocks * hbn + num_c * g_pad)
    fwd = 4 * d * H * (band + g_pad * n)
    return fwd + 2.5 * 4 * d * H * (triton_band + g_pad * n) if bwd else fwd


def rel_err(a, b):
    a, b = a.detach().double(), b.detach().double()
    if torch.isnan(a).any():
        return math.inf
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout()


def with_timeout(seconds, fn, *args):
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(int(seconds))
    try:
        return fn(*args)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def warm_up(step, min_calls=10, min_s=0.25):
    """Run the exact timed callable at least ``min_calls`` times and ``min_s`` seconds (each call
    synchronised) before anything is timed. do_bench sizes its own warm-up and its sample from a 5-call
    estimate taken right after one call, so a slow stretch there (allocator growth, first uses after
    a compile) both lengthens the estimate and shortens the warm-up that should absorb it; the
    process's first fwd+bwd row read 1.95 ms against 1.49 ms re-measured later (docs/kernels.md)."""
    t0 = time.perf_counter()
    calls = 0
    while calls < min_calls or time.perf_counter() - t0 < min_s:
        step()
        torch.cuda.synchronize()
        calls += 1


def measure(fn, bwd, inputs):
    """(first-call s, median ms, peak GiB) of fn() or of fn() + backward."""
    from triton.testing import do_bench

    def step():
        out = fn()
        if bwd:
            torch.autograd.grad(out, inputs, grad_out[0])
        return out

    grad_out = [None]
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    with torch.no_grad() if not bwd else torch.enable_grad():
        out = fn()
        if bwd:
            grad_out[0] = torch.randn_like(out)
            torch.autograd.grad(out, inputs, grad_out[0])
    torch.cuda.synchronize()
    first = time.perf_counter() - t0
    del out  # so the peak below holds one output, not two
    with torch.no_grad() if not bwd else torch.enable_grad():
        warm_up(step)
    torch.cuda.reset_peak_memory_stats()
    with torch.no_grad() if not bwd else torch.enable_grad():
        step()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() / 2**30
    with torch.no_grad() if not bwd else torch.enable_grad():
        ms = do_bench(step, warmup=50, rep=300, return_mode="median")
    return first, ms, peak


def make_inputs(n, d, G, seed=0, dtype=torch.bfloat16):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    q, k, v = (torch.randn(1, HEADS, n, d, device="cuda", generator=gen, dtype=dtype) for _ in range(3))
    gidx = torch.sort(torch.randperm(n, device="cuda", generator=gen)[:G])[0][None] if G else None
    return q, k, v, gidx


def bench_longdoc(n, d, w, G, bwd, ref_max_n):
    from . import triton_attention as ta
    from .reference import local_global_attention_reference
    from .triton_attention import local_global_attention_triton

    q, k, v, gidx = make_inputs(n, d, G)
    for t in (q, k, v):
        t.requires_grad_(bwd)
    fn = lambda: local_global_attention_triton(q, k, v, window=w, global_idx=gidx)  # noqa: E731
    first, ms, peak = measure(fn, bwd, (q, k, v))
    err = float("nan")
    if n <= ref_max_n:
        ins32 = [t.detach().float().requires_grad_(bwd) for t in (q, k, v)]
        ref = local_global_attention_reference(*ins32, window=w, global_idx=gidx)
        with torch.enable_grad() if bwd else torch.no_grad():
            out = fn()
        errs = [rel_err(out, ref)]
        if bwd:
            do = torch.randn_like(out)
            g = torch.autograd.grad(out, (q, k, v), do)
            g_ref = torch.autograd.grad(ref, ins32, do.float())
            errs += [rel_err(a, b) for a, b in zip(g, g_ref)]
        err = max(errs)
        del ins32, ref
    g_pad = max(16, 1 << (G - 1).bit_length()) if G else 0
    fuse = G > 0 and ta._fuses_global_rows(n, 1, d, q.dtype)
    hopper = ta._on_hopper_kernel(q, k, v, q, 1, False, g_pad, fuse)
    ex = executed_flops(n, d, w, G, bwd=bwd, hopper=hopper) / (ms * 1e-3) / 1e12
    return dict(first=first, ms=ms, peak=peak, err=err, exec_tflops=ex)


def bench_sdpa(n, d, w, G, bwd, ref_max_n):
    import torch.nn.functional as F

    q, k, v, _ = make_inputs(n, d, G)
    for t in (q, k, v):
        t.requires_grad_(bwd)
    fn = lambda: F.scaled_dot_product_attention(q, k, v)  # noqa: E731
    first, ms, peak = measure(fn, bwd, (q, k, v))
    ex = (4 * d * HEADS * n * n * (3.5 if bwd else 1)) / (ms * 1e-3) / 1e12
    return dict(first=first, ms=ms, peak=peak, err=float("nan"), exec_tflops=ex, note="exact n^2")


_FLEX = {}


def dense_blocks(q, k, v, w, bm=128):
    """(1, H, n, d) inputs, n a multiple of bm -> query blocks (n/bm, H, bm, d) and, for each, the
    bm + 2w keys and values around it, (n/bm, H, bm + 2w, d), zeros past either end."""
    import torch.nn.functional as F

    _, H, n, d = q.shape
    nb, span = n // bm, bm + 2 * w
    qb = q[0].view(H, nb, bm, d).transpose(0, 1).contiguous()
    kb, vb = (F.pad(t[0], (0, 0, w, w)).unfold(1, span, bm).permute(1, 0, 3, 2).contiguous() for t in (k, v))
    return qb, kb, vb


def bench_blocks(n, d, w, G, bwd, ref_max_n, backend="cudnn"):
    """A ceiling, not a peer that computes the band: longdoc's forward tiles run as dense attention.
    Each 128-row query block attends to all 128 + 2w keys around it in one dense SDPA call (no mask, no
    globals), the K/V windows gathered once outside the timing. That is the work longdoc's forward
    issues, edges included, handed to the library's best dense kernel (cuDNN or FlashAttention-2 in
    torch), so the gap between this row and longdoc's G = 0 row is what the band kernel loses to its
    masking, edge handling and code generation rather than to the tile shape. The useful TFLOP/s column
    counts the band's FLOPs, as for every row; executed counts the dense blocks'."""
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    bm, span = 128, 128 + 2 * w
    q, k, v, _ = make_inputs(-(-n // bm) * bm, d, 0)
    H = q.shape[1]
    qb, kb, vb = dense_blocks(q, k, v, w, bm)
    nb = qb.shape[0]
    del q, k, v
    for t in (qb, kb, vb):
        t.requires_grad_(bwd)
    which = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION}[backend]

    def fn():
        with sdpa_kernel(which):
            return F.scaled_dot_product_attention(qb, kb, vb)

    first, ms, peak = measure(fn, bwd, (qb, kb, vb))
    ex = 4 * d * H * nb * bm * span * (3.5 if bwd else 1) / (ms * 1e-3) / 1e12
    return dict(first=first, ms=ms, peak=peak, err=float("nan"), exec_tflops=ex,
                note=f"{backend}, dense {bm}x{span} blocks")


def bench_flex(n, d, w, G, bwd, ref_max_n):
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    from .reference import local_global_attention_reference

    q, k, v, gidx = make_inputs(n, d, G)
    for t in (q, k, v):
        t.requires_grad_(bwd)
    is_g = torch.zeros(n, dtype=torch.bool, device="cuda")
    if G:
        is_g[gidx[0]] = True

    def band(b, h, qi, ki):
        return (qi - ki <= w) & (ki - qi <= w)

    def band_global(b, h, qi, ki):
        return band(b, h, qi, ki) | is_g[ki] | is_g[qi]

    # A fresh compile per shape and pattern: with one compiled function shared across block masks, an
    # earlier run of this program measured the band-only pattern 20x slower (9.3 ms at n=64k).
    torch._dynamo.reset()
    _FLEX["fn"] = torch.compile(flex_attention, dynamic=False)
    t0 = time.perf_counter()
    bm = create_block_mask(band_global if G else band, None, None, n, n, device="cuda", _compile=True)
    mask_s = time.perf_counter() - t0
    fn = lambda: _FLEX["fn"](q, k, v, block_mask=bm)  # noqa: E731
    first, ms, peak = measure(fn, bwd, (q, k, v))
    err = float("nan")
    if n <= ref_max_n:
        with torch.no_grad():
            ref = local_global_attention_reference(q.float(), k.float(), v.float(), window=w, global_idx=gidx)
            err = rel_err(fn(), ref)
    return dict(first=first + mask_s, ms=ms, peak=peak, err=err, exec_tflops=float("nan"))


def bench_hf(n, d, w, G, bwd, ref_max_n):
    """Hugging Face LongformerSelfAttention (its own QKV projections included), bf16."""
    from transformers import LongformerConfig
    from transformers.models.longformer.modeling_longformer import LongformerSelfAttention

    cfg = LongformerConfig(hidden_size=HEADS * d, num_attention_heads=HEADS, attention_window=[2 * w])
    layer = LongformerSelfAttention(cfg, layer_id=0).to("cuda", torch.bfloat16)
    gen = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(1, n, HEADS * d, device="cuda", dtype=torch.bfloat16, generator=gen).requires_grad_(bwd)
    mask = torch.zeros(1, n, device="cuda", dtype=torch.bfloat16)  # HF: 0 local, +1 global, -1 padding
    if G:
        mask[0, torch.randperm(n, device="cuda", generator=gen)[:G]] = 1
    is_index_masked = mask < 0
    is_index_global_attn = mask > 0
    is_global_attn = bool(G)

    def fn():
        return layer(x, attention_mask=mask, is_index_masked=is_index_masked,
                     is_index_global_attn=is_index_global_attn, is_global_attn=is_global_attn)[0]

    first, ms, peak = measure(fn, bwd, (x,))
    return dict(first=first, ms=ms, peak=peak, err=float("nan"), exec_tflops=float("nan"), note="incl. QKV proj")


def warm_process(bwd, n=16_384, d=64, G=16, w=256):
    """A throwaway longdoc call, measured like a row and discarded, before the first row: the one-time
    costs of a process's first (forward+)backward (the autograd engine's device thread, the Triton
    launchers' first use, allocator growth) are paid here instead of in the first row. fp16,
    which no row uses: the kernels compile apart from every row's bf16 ones, so each row's first-call
    column still holds its own compile. Returns the seconds it took."""
    from .triton_attention import local_global_attention_triton

    t0 = time.perf_counter()
    q, k, v, gidx = make_inputs(n, d, G, dtype=torch.float16)
    for t in (q, k, v):
        t.requires_grad_(bwd)
    measure(lambda: local_global_attention_triton(q, k, v, window=w, global_idx=gidx), bwd, (q, k, v))
    del q, k, v, gidx
    torch.cuda.empty_cache()
    return time.perf_counter() - t0


IMPLS = {"longdoc": bench_longdoc, "flex": bench_flex, "sdpa": bench_sdpa, "hf": bench_hf,
         "blocks-cudnn": lambda *a: bench_blocks(*a, backend="cudnn"),
         "blocks-flash": lambda *a: bench_blocks(*a, backend="flash")}
# largest n each peer is run at (the dense blocks hold 2 * (1 + 2w/128) copies of K/V)
LIMITS = {"sdpa": 65_536, "hf": 65_536, "flex": 65_536, "blocks-cudnn": 1_048_576, "blocks-flash": 1_048_576}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", default="4096,16384,65536,262144,1048576")
    p.add_argument("--G", default="0,16,64")
    p.add_argument("--d", default="32,64,128")
    p.add_argument("--w", default="256,512")
    p.add_argument("--peers", default="flex,sdpa,hf,blocks-cudnn",
                   help="any of flex, sdpa, hf, blocks-cudnn, blocks-flash (see bench_blocks)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--full-grid", action="store_true", help="every combination (else: sweeps around d=64, w=256, G=16)")
    p.add_argument("--ref-max-n", type=int, default=262_144)
    p.add_argument("--peer-timeout", type=int, default=240, help="seconds before a peer's first call is abandoned")
    p.add_argument("--no-bwd", action="store_true")
    a = p.parse_args(argv)
    if a.quick:
        a.n, a.G, a.d, a.w, a.peers = "16384,65536", "0,16", "64", "256", "sdpa"
    ns = [int(x) for x in a.n.split(",")]
    Gs = [int(x) for x in a.G.split(",")]
    ds = [int(x) for x in a.d.split(",")]
    ws = [int(x) for x in a.w.split(",")]
    peers = [x for x in a.peers.split(",") if x]

    if a.full_grid:
        shapes = [(n, d, w, G) for n in ns for d in ds for w in ws for G in Gs]
    else:  # the main line (d=64, w=256, G=16) over every n; one axis varied at a time at 64k; G at 1M
        d0 = 64 if 64 in ds else ds[0]
        w0 = 256 if 256 in ws else ws[0]
        G0 = 16 if 16 in Gs else Gs[0]
        shapes = [(n, d0, w0, G0) for n in ns]
        n64 = 65_536 if 65_536 in ns else ns[-1]
        shapes += [(n64, d0, w0, G) for G in Gs if G != G0]
        shapes += [(n64, d, w0, G0) for d in ds if d != d0]
        shapes += [(n64, d0, w, G0) for w in ws if w != w0]
        if 1_048_576 in ns:
            shapes += [(1_048_576, d0, w0, G) for G in Gs if G != G0]

    dev = torch.cuda.get_device_name()
    print(f"# {dev}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}, bf16, B=1, H={HEADS}", flush=True)
    warm_s = warm_process(bwd=not a.no_bwd)
    print(f"# process warm-up: one fp16 longdoc {'fwd' if a.no_bwd else 'fwd+bwd'} call, not a row ({warm_s:.1f} s)",
          flush=True)
    rows = []
    hdr = "| impl | n | d | w | G | pass | ms | useful TFLOP/s | executed TFLOP/s | peak GiB | first call s | max rel err |"
    print(hdr, flush=True)
    dead = set()
    for impl in ["longdoc"] + peers:  # longdoc first: a slow peer compile cannot cost its rows
        for n, d, w, G in shapes:
            if impl != "longdoc" and (n > LIMITS.get(impl, 0) or impl in dead):
                continue
            if impl == "flex" and (n != 65_536 or G not in (0, 16) or d != 64 or w != 256):
                continue  # each shape is a fresh compile of up to minutes: the two rows BENCHMARKS.md has
            if impl == "sdpa" and (G or w != 256 or d != 64):  # one full-attention row per n is enough
                continue
            if impl == "hf" and (d != 64 or w != 256):
                continue
            if impl.startswith("blocks") and G:  # a band-only ceiling: no global tokens
                continue
            for bwd in ([False] if a.no_bwd else [False, True]):
                if impl == "hf" and bwd:
                    continue
                try:
                    if impl == "longdoc":
                        r = IMPLS[impl](n, d, w, G, bwd, a.ref_max_n)
                    else:
                        r = with_timeout(a.peer_timeout, IMPLS[impl], n, d, w, G, bwd, a.ref_max_n)
                except _Timeout:
                    print(f"| {impl} | {n} | {d} | {w} | {G} | {'fwd+bwd' if bwd else 'fwd'} | timed out after {a.peer_timeout} s |", flush=True)
                    dead.add(impl)
                    continue
                except torch.OutOfMemoryError:
                    print(f"| {impl} | {n} | {d} | {w} | {G} | {'fwd+bwd' if bwd else 'fwd'} | out of memory |", flush=True)
                    torch.cuda.empty_cache()
                    continue
                except Exception as e:  # a peer that cannot run this shape: say so, keep the table going
                    if impl == "longdoc":
                        raise
                    print(f"| {impl} | {n} | {d} | {w} | {G} | {'fwd+bwd' if bwd else 'fwd'} | failed: "
                          f"{type(e).__name__}: {str(e)[:80]} |", flush=True)
                    dead.add(impl)
                    continue
                tf = useful_flops(n, d, w, G, bwd=bwd) / (r["ms"] * 1e-3) / 1e12
                ex = "-" if math.isnan(r["exec_tflops"]) else f"{r['exec_tflops']:.0f}"
                err = "-" if math.isnan(r["err"]) else f"{r['err']:.1e}"
                name = impl + (f" ({r['note']})" if r.get("note") else "")
                line = (f"| {name} | {n} | {d} | {w} | {G} | {'fwd+bwd' if bwd else 'fwd'} | {r['ms']:.3f} | "
                        f"{tf:.0f} | {ex} | {r['peak']:.2f} | {r['first']:.1f} | {err} |")
                rows.append(line)
                print(line, flush=True)
                torch.cuda.empty_cache()
    return rows


if __name__ == "__main__":
    main()
