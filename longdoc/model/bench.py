"""Encoder throughput and peak memory: longdoc vs transformers' LongformerModel vs 512-token chunks.

    python -m longdoc.model.bench                      # CPU: MiniLM and base, n = 4k, 16k
    python -m longdoc.model.bench --sizes 4096,65536 --models minilm --impls longdoc,chunks
    python -m longdoc.model.bench --device cuda        # GPU: bf16, n up to 1M where it fits

All models have random weights of the named size (no download). longdoc runs its configured window
radius (MiniLM 128, base 256) with ``--globals`` global tokens at the start; LongformerModel runs HF
attention_window 512 (radius 256) with the same global tokens; "chunks" is a BertModel of the same
size over independent 512-token chunks through SDPA (no context across chunk boundaries), batch
``--chunk-batch``. Peak memory: CUDA max allocated, or the process's peak RSS growth on CPU (ru_maxrss
only grows, so CPU figures after the first big run are upper bounds; run one impl per process for
exact CPU peaks). Prints a Markdown table; ``--breakdown`` adds one more, from one profiled call per
cell: where the time goes, by kind of op (torch.profiler self time).
"""
from __future__ import annotations

import argparse
import gc
import resource
import time

import torch

from longdoc.model.encoder import build, preset

HF_SIZES = {
    "minilm": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536),
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
}


def _rss_gib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def _measure(fn, device, reps):
    """(seconds, peak GiB): best of reps after one warm-up call (the peak includes the warm-up)."""
    rss0 = _rss_gib()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    if device.type == "cuda":
        peak = (torch.cuda.max_memory_allocated() - base) / 2**30
    else:
        peak = max(0.0, _rss_gib() - rss0)
    return best, peak


# --breakdown: op name -> part of the layer (everything else is "other")
_PARTS = {
    "aten::addmm": "linear layers (GEMM)", "aten::addmm_": "linear layers (GEMM)", "aten::mm": "linear layers (GEMM)",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "attention (flash op)",
    "aten::bmm": "attention: global keys (bmm + softmax pieces)", "aten::amax": "attention: global keys (bmm + softmax pieces)",
    "aten::maximum": "attention: global keys (bmm + softmax pieces)", "aten::exp_": "attention: global keys (bmm + softmax pieces)",
    "aten::sub_": "attention: global keys (bmm + softmax pieces)", "aten::sum": "attention: global keys (bmm + softmax pieces)",
    "aten::div_": "attention: global keys (bmm + softmax pieces)", "aten::addcmul": "attention: global keys (bmm + softmax pieces)",
    "aten::log_": "attention: global keys (bmm + softmax pieces)",
    "aten::gelu": "GELU", "aten::gelu_": "GELU", "aten::native_layer_norm": "LayerNorm",
    "aten::copy_": "copies (incl. the GEMMs' bias fill)", "aten::add": "adds", "aten::add_": "adds",
}


def _breakdown(fn):
    """{part: seconds} of one profiled call: each op's self time on the calling thread (its intra-op
    threads run inside it), so the parts add up to about the wall time, plus the profiler's overhead."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    parts = {}
    for e in prof.key_averages():
        part = _PARTS.get(e.key, "other")
        parts[part] = parts.get(part, 0.0) + e.self_cpu_time_total / 1e6
    return parts


def _longdoc(size, n, device, dtype, globals_, int8=False):
    net = build(preset(size)).to(device, dtype)
    if int8:  # Linear layers in int8 dynamic quantisation (CPU); measured, not shipped (docs/encoder.md)
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torch.ao's deprecation notice, once per layer
            torch.ao.quantization.quantize_dynamic(net, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
    ids = torch.randint(1000, 30000, (1, n), device=device)
    pos = (torch.arange(n, device=device) % net.cfg.usable_positions)[None] + net.cfg.position_offset
    gm = torch.zeros(1, n, dtype=torch.bool, device=device)
    gm[0, :globals_] = True

    def run():
        with torch.inference_mode():
            net(ids, pos, global_mask=gm if globals_ else None)
    return run


def _longformer(size, n, device, dtype, globals_):
    from transformers import LongformerConfig, LongformerModel

    cfg = LongformerConfig(**HF_SIZES[size], attention_window=512, max_position_embeddings=n + 2 + 512,
                           vocab_size=30522, attn_implementation="eager")
    net = LongformerModel(cfg, add_pooling_layer=False).to(device, dtype).eval()
    ids = torch.randint(1000, 30000, (1, n), device=device)
    gm = torch.zeros(1, n, dtype=torch.long, device=device)
    gm[0, :globals_] = 1

    def run():
        with torch.inference_mode():
            net(ids, global_attention_mask=gm)
    return run


def _chunks(size, n, device, dtype, globals_, batch):
    from transformers import BertConfig, BertModel

    cfg = BertConfig(**HF_SIZES[size], attn_implementation="sdpa")
    net = BertModel(cfg, add_pooling_layer=False).to(device, dtype).eval()
    ids = torch.randint(1000, 30000, (-(-n // 512), 512), device=device)  # n rounded up to chunks

    def run():
        with torch.inference_mode():
            for i in range(0, ids.shape[0], batch):
                net(ids[i : i + batch])
    return run


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--models", default="minilm,base")
    ap.add_argument("--sizes", default="4096,16384", help="comma-separated token counts")
    ap.add_argument("--impls", default="longdoc,longformer,chunks")
    ap.add_argument("--globals", type=int, default=16, help="global tokens at the start (longdoc, Longformer)")
    ap.add_argument("--chunk-batch", type=int, default=8)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--max-seconds", type=float, default=120.0,
                    help="skip larger n for an impl once one run took longer than this")
    ap.add_argument("--breakdown", action="store_true", help="then a table of where the time goes (one profiled call per cell)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else f'{torch.get_num_threads()} threads'}), "
          f"{dtype}, torch {torch.__version__}, {args.globals} global tokens")
    print("| model | impl | n | s | tokens/s | peak GiB |")
    print("| --- | --- | --- | --- | --- | --- |")
    breakdowns = []
    for size in args.models.split(","):
        for impl in args.impls.split(","):
            for n in (int(x) for x in args.sizes.split(",")):
                make = {"longdoc": _longdoc, "longdoc-int8": lambda *a: _longdoc(*a, int8=True), "longformer": _longformer,
                        "chunks": lambda *a: _chunks(*a, args.chunk_batch)}[impl]
                try:
                    fn = make(size, n, device, dtype, args.globals)
                    secs, peak = _measure(fn, device, args.reps)
                    if args.breakdown:
                        breakdowns.append((size, impl, n, _breakdown(fn)))
                    del fn
                except torch.OutOfMemoryError:
                    print(f"| {size} | {impl} | {n:,} | OOM | - | - |", flush=True)
                    break
                finally:
                    gc.collect()
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                print(f"| {size} | {impl} | {n:,} | {secs:.2f} | {n / secs:,.0f} | {peak:.2f} |", flush=True)
                if secs > args.max_seconds:
                    break
    if breakdowns:
        print("\n| model | impl | n | part | s | share |")
        print("| --- | --- | --- | --- | --- | --- |")
        for size, impl, n, parts in breakdowns:
            total = sum(parts.values())
            for part, secs in sorted(parts.items(), key=lambda kv: -kv[1]):
                print(f"| {size} | {impl} | {n:,} | {part} | {secs:.2f} | {secs / total:.0%} |")


if __name__ == "__main__":
    main()
