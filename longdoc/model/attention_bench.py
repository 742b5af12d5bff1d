"""What each attention variant costs and loses, on your document or on random tokens.

    python -m longdoc.model.attention_bench FILE [--question Q ...]        # your document
    python -m longdoc.model.attention_bench --tokens 16384,65536            # speed, random tokens
    python -m longdoc.model.attention_bench --tokens 16384,65536,1048576 --device cuda

On FILE (PDF, text, Markdown; the bundled model or --model), each variant encodes the whole
document with the same weights; reported: encode seconds, peak memory, and agreement with ``full``
(exact attention): the mean cosine of the token states, and for each --question the overlap of the
top-5 passages that ``longdoc ask`` returns (threshold off, so always 5). The passages, the ranker
and the question vectors are ask's own; only the pattern changes. With --tokens, random token ids
of each size through the same model: seconds, tokens/s and peak memory (no agreement column).

Peak memory: on CUDA ``max_memory_allocated`` beyond what was allocated before; on the CPU the growth
of the process's peak RSS (VmHWM, reset before each run through /proc/self/clear_refs). One run per
cell on the CPU (after a warm-up on a short input), so on a shared machine read ratios, not
absolutes; on CUDA, --tokens cells are timed on a second run at the same size (the first pays the
allocator's growth and the host's page faults for the output). Variants
whose estimated time exceeds --max-seconds (from the last size measured, O(n^2) for full, O(n^1.5) for
strided's auto stride, O(n) otherwise) are skipped and shown as such.
"""
from __future__ import annotations

import argparse
import re
import sys
import time

import torch

from longdoc.model.attention_spec import VARIANTS, canonical

GROWTH = {"full": 2.0, "strided": 1.5}


def _rss_peak_reset() -> float | None:
    """Reset the process's peak RSS; returns the current RSS in GiB (None where unsupported)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status("VmRSS")
    except OSError:
        return None


def _status(field: str) -> float:
    with open("/proc/self/status") as f:
        return int(re.search(rf"{field}:\s+(\d+)", f.read()).group(1)) / 2**20  # KiB -> GiB


def measure(fn, device: torch.device):
    """(result, seconds, peak GiB beyond the memory in use before)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_peak_reset()
    t = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t
    if device.type == "cuda":
        peak = (torch.cuda.max_memory_allocated() - base) / 2**30
    else:
        peak = None if base is None else max(0.0, _status("VmHWM") - base)
    return out, dt, peak


def _skip(spec, n, last, max_seconds):
    """True when the variant's time at n, extrapolated from its last measured (n, s), is too long."""
    if last is None or max_seconds is None:
        return False
    n0, s0 = last
    return s0 * (n / n0) ** GROWTH.get(spec.split(":")[0], 1.0) > max_seconds


def _fmt_gib(x):
    return "-" if x is None else f"{x:.2f}"


def bench_document(path, specs, questions, *, model=None, device=None, password=None, log=print):
    """Rows for FILE: one per variant (dicts), agreement measured against "full"."""
    import numpy as np

    from longdoc.model import load_encoder
    from longdoc.model.embed import pool_spans
    from longdoc.segment import segment
    from longdoc.sources import load
    from longdoc.tasks.ask import Engine, Passages, ask

    doc = load(path, password=password)
    segs = segment(doc)
    spans, labels = [(s.start, s.end) for s in segs], [s.label for s in segs]
    base = load_encoder(model, device=device)
    tok = base.tokenize(doc.text)
    n = len(tok)
    log(f"{path}: {len(doc.text):,} chars, {n:,} tokens, {len(spans)} passages", file=sys.stderr)
    warm = base.tokenize(doc.text[:2000])
    engine = Engine(model=base.path, use_cache=False)
    engine._encoder = base  # question vectors (short texts: the same under every variant)
    order = ["full"] + [s for s in specs if s != "full"]  # full first: the reference
    results, rows = {}, []
    for spec in order:
        enc = base.with_attention(spec)
        enc.encode(warm)
        states, dt, peak = measure(lambda: enc.encode(tok), enc.device)
        vecs = pool_spans(states, tok, spans).cpu().float().numpy()
        passages = Passages(doc, spans, labels, vecs, key="")
        engine.passages = lambda d, p=passages: p
        answers = ask(doc, questions, engine=engine, k=5, threshold=-1.0) if questions else []
        tops = [[(h.char_start, h.char_end) for h in a.results] for a in answers]
        results[spec] = (states.cpu(), tops)
        log(f"  {spec}: {dt:.2f} s", file=sys.stderr)
        rows.append({"attention": spec, "tokens": n, "seconds": dt, "tokens_per_s": n / dt, "peak_gib": peak})
    ref_states, ref_tops = results["full"]
    for row in rows:
        states, tops = results[row["attention"]]
        row["cosine_vs_full"] = float(torch.nn.functional.cosine_similarity(states, ref_states, dim=-1).mean())
        if questions:
            row["top5_overlap_vs_full"] = float(np.mean([len(set(a) & set(b)) / max(len(b), 1)
                                                         for a, b in zip(tops, ref_tops)]))
    shown = specs + ([] if "full" in specs else ["full"])
    return sorted(rows, key=lambda r: shown.index(r["attention"]))


def bench_tokens(sizes, specs, *, model=None, device=None, max_seconds=None, preset_name=None, log=print):
    """Rows for random token ids of each size: seconds, tokens/s, peak memory per variant. With
    ``preset_name``, random weights of that size (no model folder needed; bf16 on CUDA)."""
    from longdoc.model import load_encoder
    from longdoc.model.embed import Encoder, Tokens

    if preset_name:
        from longdoc.model.encoder import build, preset

        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        net = build(preset(preset_name)).to(dev, torch.bfloat16 if dev.type == "cuda" else torch.float32)
        base = Encoder(net.requires_grad_(False), None, name=preset_name, fingerprint="random")
    else:
        base = load_encoder(model, device=device)
    g = torch.Generator().manual_seed(0)
    rows, last = [], {}
    for spec in specs:
        enc = base.with_attention(spec)
        w = Tokens(torch.randint(1000, 30000, (1024,), generator=g), torch.zeros(1024, 2, dtype=torch.long),
                   torch.zeros(1024, dtype=torch.bool))
        enc.encode(w)  # warm-up (Triton compile on CUDA)
        for n in sizes:
            if _skip(spec, n, last.get(spec), max_seconds):
                rows.append({"attention": spec, "tokens": n, "seconds": None, "tokens_per_s": None,
                             "peak_gib": None, "note": f"skipped: estimated > {max_seconds:.0f} s"})
                continue
            ids = torch.randint(1000, 30000, (n,), generator=g)
            tok = Tokens(ids, torch.zeros(n, 2, dtype=torch.long), torch.zeros(n, dtype=torch.bool))
            try:
                _, dt, peak = measure(lambda: enc.encode(tok), enc.device)
                if enc.device.type == "cuda":  # the first call at a size pays allocator growth and
                    _, dt, peak = measure(lambda: enc.encode(tok), enc.device)  # host page faults: time the second
            except torch.OutOfMemoryError:
                rows.append({"attention": spec, "tokens": n, "seconds": None, "tokens_per_s": None,
                             "peak_gib": None, "note": "out of memory"})
                torch.cuda.empty_cache()
                continue
            last[spec] = (n, dt)
            log(f"  {spec} n={n:,}: {dt:.2f} s", file=sys.stderr)
            rows.append({"attention": spec, "tokens": n, "seconds": dt, "tokens_per_s": n / dt, "peak_gib": peak})
    return rows


def table(rows) -> str:
    agree = any("cosine_vs_full" in r for r in rows)
    top = any("top5_overlap_vs_full" in r for r in rows)
    head = ["attention", "tokens", "s", "tokens/s", "peak GiB"]
    if agree:
        head.append("cosine vs full")
    if top:
        head.append("top-5 overlap vs full")
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        if r.get("seconds") is None:
            cells = [r["attention"], f"{r['tokens']:,}", r.get("note", "-"), "-", "-"]
        else:
            cells = [r["attention"], f"{r['tokens']:,}", f"{r['seconds']:.2f}", f"{r['tokens_per_s']:,.0f}",
                     _fmt_gib(r["peak_gib"])]
        if agree:
            cells.append(f"{r['cosine_vs_full']:.4f}" if "cosine_vs_full" in r else "-")
        if top:
            cells.append(f"{r['top5_overlap_vs_full']:.2f}" if "top5_overlap_vs_full" in r else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file", nargs="?", help="document to measure on (omit with --tokens)")
    ap.add_argument("--attention", action="append", metavar="SPEC",
                    help=f"variant (repeatable; default all: {', '.join(VARIANTS)}), e.g. lsh:rounds=4")
    ap.add_argument("--question", action="append", default=[], help="a question for the top-5 overlap (repeatable)")
    ap.add_argument("--tokens", help="comma-separated sizes of random-token inputs (instead of FILE)")
    ap.add_argument("--model", help="local model folder (default: the bundled MiniLM)")
    ap.add_argument("--preset", default=None, help="--tokens: random weights of this size (minilm, base) instead of a model")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    ap.add_argument("--max-seconds", type=float, default=None,
                    help="--tokens: skip a variant whose estimated time at a size exceeds this")
    ap.add_argument("--password", default=None)
    ap.add_argument("--json", action="store_true", help="rows as JSON instead of the Markdown table")
    a = ap.parse_args(argv)
    try:
        specs = [canonical(s) for s in (a.attention or VARIANTS)]
    except ValueError as e:
        ap.error(str(e))
    if bool(a.file) == bool(a.tokens):
        ap.error("give FILE or --tokens (one of them)")
    torch.set_grad_enabled(False)
    if a.tokens:
        rows = bench_tokens([int(x) for x in a.tokens.split(",")], specs, model=a.model, device=a.device,
                            max_seconds=a.max_seconds, preset_name=a.preset)
    else:
        rows = bench_document(a.file, specs, a.question, model=a.model, device=a.device, password=a.password)
    if a.json:
        import json

        print(json.dumps(rows, indent=2))
    else:
        dev = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
        name = torch.cuda.get_device_name() if dev.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
        print(f"device: {name}; torch {torch.__version__}\n")
        print(table(rows))


if __name__ == "__main__":
    main()
