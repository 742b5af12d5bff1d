"""Each attention variant against a dense masked float64 reference of the same pattern.

Fresh random inputs per run (seed in the failure message), edges: n < window, n not a multiple of the
block / chunk, padding (including a row of pure padding), dilation, global tokens; forward and the
gradients of q, k, v. NaN never passes (rel_err gives inf)."""
from __future__ import annotations

import math
import os

import pytest
import torch

from longdoc.model import variants as V


def rel_err(a, b) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    if torch.isnan(a).any() or torch.isnan(b).any() or torch.isinf(a).any() or torch.isinf(b).any():
        return math.inf
    den = b.norm().item()
    num = (a - b).norm().item()
    return num / den if den > 0 else num


def fresh():
    seed = int.from_bytes(os.urandom(4), "little")
    return torch.Generator().manual_seed(seed), seed


def dense(q, k, v, allowed, scale=None):
    """Softmax attention with an explicit (B, N, N) bool mask, float64; empty rows -> 0."""
    D = q.shape[-1]
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    s = torch.einsum("bhid,bhjd->bhij", q, k) * scale
    s = s.masked_fill(~allowed[:, None], float("-inf"))
    m = s.amax(-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m)).detach()
    e = torch.exp(s - m)
    z = e.sum(-1, keepdim=True)
    return (e / torch.where(z > 0, z, torch.ones_like(z))) @ v


def local_mask(B, N, window, dilation, global_idx, key_valid):
    """The Longformer pattern as an (B, N, N) mask (kernels/reference.py semantics)."""
    i = torch.arange(N)[:, None]
    j = torch.arange(N)[None, :]
    off = j - i
    band = (off.abs() <= window * dilation) & (off.remainder(dilation) == 0)
    is_g = torch.zeros(B, N, dtype=torch.bool)
    if global_idx is not None:
        for b in range(B):
            for g in global_idx[b].tolist():
                if g >= 0:
                    is_g[b, g] = True
    is_g &= key_valid  # a padded token is never global (kernels' rule)
    allowed = band[None] | is_g[:, None, :] | is_g[:, :, None]  # global keys for all; global rows see all
    return allowed & key_valid[:, None, :]


def with_columns(mask, cols, key_valid):
    out = mask.clone()
    out[:, :, cols] = True
    return out & key_valid[:, None, :]


# name: (B, H, N, D, window, dilation, globals or None, padding (lo, hi) per row or None)
CASES = {
    "plain": (1, 2, 100, 16, 12, 1, None, None),
    "n_lt_window": (1, 1, 9, 16, 24, 1, None, None),
    "n_not_block_multiple": (2, 2, 77, 16, 10, 1, None, None),
    "dilation2_globals": (1, 2, 150, 16, 8, 2, [[0, 33, 149]], None),
    "padding_globals": (2, 1, 120, 16, 10, 1, [[0, 37, 110], [16, -1, 2]], [(100, 120), (0, 5)]),
    "pure_padding_row": (2, 1, 70, 16, 6, 1, None, [(20, 40), (0, 70)]),
}


def _inputs(case, dtype=torch.float64, grad=True):
    B, H, N, D, w, d, gl, pad = CASES[case]
    g, seed = fresh()
    q, k, v = (torch.randn(B, H, N, D, generator=g, dtype=dtype).requires_grad_(grad) for _ in range(3))
    kpm = None
    if pad is not None:
        kpm = torch.zeros(B, N, dtype=torch.bool)
        for b, (lo, hi) in enumerate(pad):
            kpm[b, lo:hi] = True
    gidx = torch.tensor(gl) if gl is not None else None
    key_valid = torch.ones(B, N, dtype=torch.bool) if kpm is None else ~kpm
    return dict(q=q, k=k, v=v, window=w, dilation=d, global_idx=gidx, key_padding_mask=kpm), key_valid, seed, g


def _reference(name, a, key_valid, params):
    q, k, v = a["q"], a["k"], a["v"]
    B, H, N, D = q.shape
    w, d, gidx = a["window"], a["dilation"], a["global_idx"]
    if name == "local":
        return dense(q, k, v, local_mask(B, N, w, d, gidx, key_valid))
    if name == "strided":
        cols = V.strided_columns(N, params.get("stride", 0), w)
        return dense(q, k, v, with_columns(local_mask(B, N, w, d, gidx, key_valid), cols, key_valid))
    if name == "sinks":
        cols = torch.arange(min(params.get("sinks", 4), N))
        return dense(q, k, v, with_columns(local_mask(B, N, w, d, gidx, key_valid), cols, key_valid))
    if name == "full":
        return dense(q, k, v, key_valid[:, None, :].expand(B, N, N))
    if name == "linear":
        fq, fk = V.elu1(q), V.elu1(k)
        A = torch.einsum("bhid,bhjd->bhij", fq, fk) * key_valid[:, None, None, :]
        z = A.sum(-1, keepdim=True)
        return (A / torch.where(z > 0, z, torch.ones_like(z))) @ v
    if name == "lsh":
        buckets, chunk = V.lsh_defaults(N, w, params.get("buckets", 0), params.get("chunk", 0))
        rounds = params.get("rounds", 2)
        _, _, qc, kc = V.lsh_chunk_ids(q, k, key_valid, buckets=buckets, rounds=rounds, chunk=chunk,
                                       seed=params.get("seed", 0))
        nc = -(-N // chunk)
        allowed = torch.zeros(B, H, N, N, dtype=torch.bool)
        for r in range(rounds):
            dd = (qc[r][..., :, None] - kc[r][..., None, :]).remainder(nc)
            allowed |= dd <= 1
        allowed &= key_valid[:, None, None, :]
        # per-head mask: run dense per head
        outs = [dense(q[:, h:h + 1], k[:, h:h + 1], v[:, h:h + 1], allowed[:, h]) for h in range(H)]
        return torch.cat(outs, 1)
    raise AssertionError(name)


PARAM_SETS = {
    "local": [{}],
    "full": [{}],
    "linear": [{}],
    "strided": [{}, {"stride": 7}, {"stride": 1}],
    "sinks": [{}, {"sinks": 1}, {"sinks": 40}],
    "lsh": [{"rounds": 1}, {"rounds": 3, "chunk": 16}, {"rounds": 2, "chunk": 13, "buckets": 6}],
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("name", list(PARAM_SETS))
def test_variant_matches_dense(name, case):
    for params in PARAM_SETS[name]:
        a, key_valid, seed, g = _inputs(case)
        if name in ("lsh", "linear", "full"):
            a["global_idx"] = None  # these patterns ignore global tokens
        out = V.attention(name, **a, **params)
        ref = _reference(name, a, key_valid, params)
        msg = f"{name} {params} case={case} seed={seed}"
        assert out.dtype == torch.float64 and out.shape == a["q"].shape, msg
        assert rel_err(out, ref) < 1e-10, msg + f" fwd err {rel_err(out, ref):.2e}"
        do = torch.randn(out.shape, generator=g, dtype=torch.float64)
        gi = torch.autograd.grad((out * do).sum(), (a["q"], a["k"], a["v"]))
        gr = torch.autograd.grad((ref * do).sum(), (a["q"], a["k"], a["v"]))
        for nm, x, y in zip("qkv", gi, gr):
            assert rel_err(x, y) < 1e-9, msg + f" d{nm} err {rel_err(x, y):.2e}"


@pytest.mark.parametrize("name", list(PARAM_SETS))
def test_variant_fp32_inference(name):
    """fp32 under inference mode (the encoder's CPU path, fused kernels) against float64."""
    a, key_valid, seed, _ = _inputs("padding_globals", dtype=torch.float64, grad=False)
    if name in ("lsh", "linear", "full"):
        a["global_idx"] = None
    params = PARAM_SETS[name][-1]
    ref = V.attention(name, **a, **params)
    a32 = dict(a, q=a["q"].float(), k=a["k"].float(), v=a["v"].float())
    with torch.inference_mode():
        out = V.attention(name, **a32, **params)
    assert out.dtype == torch.float32
    tol = 1e-5 if name != "lsh" else 1e-4  # lsh: an fp32 hash may pick another bucket for a near tie
    if name == "lsh":  # compare only when fp32 hashing agrees with fp64 hashing
        b, c = V.lsh_defaults(a["q"].shape[2], a["window"], params.get("buckets", 0), params.get("chunk", 0))
        h64 = V.lsh_chunk_ids(a["q"], a["k"], key_valid, buckets=b, rounds=params["rounds"], chunk=c)
        h32 = V.lsh_chunk_ids(a32["q"], a32["k"], key_valid, buckets=b, rounds=params["rounds"], chunk=c)
        if not all(torch.equal(x, y) for x, y in zip(h64, h32)):
            pytest.skip(f"fp32 and fp64 hashes differ (seed {seed})")
    assert rel_err(out, ref) < tol, f"{name} seed={seed} err {rel_err(out, ref):.2e}"


def test_lsh_deterministic_and_seeded():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 300, 16, generator=g) for _ in range(3))
    a = V.attention("lsh", q, k, v, window=16, seed=3)
    b = V.attention("lsh", q, k, v, window=16, seed=3)
    c = V.attention("lsh", q, k, v, window=16, seed=4)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_lsh_one_chunk_is_full_attention():
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 2, 50, 16, generator=g, dtype=torch.float64) for _ in range(3))
    out = V.attention("lsh", q, k, v, window=64, rounds=3)  # chunk 64 >= n: one chunk
    assert rel_err(out, V.attention("full", q, k, v, window=64)) < 1e-12


def test_parse_spec():
    assert V.parse_spec("lsh:rounds=4, buckets=8") == ("lsh", {"rounds": 4, "buckets": 8})
    assert V.parse_spec("Full") == ("full", {})
    for bad in ("nope", "lsh:stride=3", "sinks:sinks=x", "strided:stride"):
        with pytest.raises(ValueError):
            V.parse_spec(bad)


def test_parse_spec_refuses_values_above_each_limit():
    from longdoc.model.attention_spec import MAX

    assert set(MAX) == {"buckets", "rounds", "chunk", "sinks", "seed"}  # stride: a larger one costs less
    for key, top in MAX.items():
        name = "sinks" if key == "sinks" else "lsh"
        assert V.parse_spec(f"{name}:{key}={top}") == (name, {key: top})
        with pytest.raises(ValueError, match=f"{key} must be at most {top}, got {top + 1}"):
            V.parse_spec(f"{name}:{key}={top + 1}")
    assert V.parse_spec(f"strided:stride={10**30}") == ("strided", {"stride": 10**30})


def test_lsh_chunk_longer_than_the_input_is_one_chunk():
    # the sorted layout was padded to the chunk's length: 10**12 tokens' worth of memory
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(1, 2, 40, 16, generator=g, dtype=torch.float64) for _ in range(3))
    out = V.attention("lsh", q, k, v, window=8, rounds=2, chunk=10**12)
    assert rel_err(out, V.attention("full", q, k, v, window=8)) < 1e-12


# ---- selection: config, encoder, ask engine and CLI ------------------------------------------------


def test_encoder_runs_every_variant_and_local_is_unchanged(tiny_model_dir):
    from longdoc.model import load_encoder

    enc = load_encoder(str(tiny_model_dir), device="cpu")
    text = "Payment is due in thirty days. Either party may terminate on notice. " * 40
    tok = enc.tokenize(text)
    base = enc.encode(tok)
    fps = {enc.fingerprint}
    for spec in ("local", "strided:stride=16", "lsh:rounds=2,chunk=32", "sinks:sinks=2", "linear", "full"):
        e = enc.with_attention(spec)
        assert e.cfg.attention == spec.split(":")[0]
        s = e.encode(tok)
        assert s.shape == base.shape and torch.isfinite(s).all(), spec
        if spec == "local":
            assert torch.equal(s, base) and e.fingerprint == enc.fingerprint
        else:
            assert not torch.equal(s, base), spec
            fps.add(e.fingerprint)
        loaded = load_encoder(str(tiny_model_dir), device="cpu", attention=spec)
        assert loaded.fingerprint == e.fingerprint
        assert torch.equal(loaded.encode(tok), s), spec
    assert len(fps) == 6


def test_ask_engine_cache_key_includes_the_variant(tiny_model_dir):
    from longdoc.errors import LongdocError
    from longdoc.tasks.ask import Engine

    plain = Engine(model=str(tiny_model_dir), use_cache=False)
    assert Engine(model=str(tiny_model_dir), use_cache=False, attention="local").identity == plain.identity
    ids = {Engine(model=str(tiny_model_dir), use_cache=False, attention=a).identity
           for a in ("lsh", "lsh:rounds=3", "sinks", "strided", "linear", "full")}
    assert len(ids) == 6 and plain.identity not in ids
    with pytest.raises(LongdocError):
        Engine(model=str(tiny_model_dir), use_cache=False, attention="bogus")


def test_cli_ask_attention_option(tiny_model_dir, tmp_path):
    import json
    import subprocess
    import sys

    doc = tmp_path / "doc.txt"
    doc.write_text("1. Payment. Customer shall pay within thirty days.\n\n2. Governing law. Delaware law "
                   "governs this agreement.\n\n3. Termination. Either party may terminate on notice.\n" * 5)
    env = dict(os.environ, LONGDOC_HOME=str(tmp_path / "home"))
    run = lambda *args, **kw: subprocess.run([sys.executable, "-m", "longdoc", "ask", str(doc), "governing law?",
                                              "--model", str(tiny_model_dir), "--threshold", "-1", "--json", *args],
                                             capture_output=True, text=True, timeout=300, **kw)
    r = run("--attention", "lsh:rounds=2", env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)[0]["results"]
    r = run(env=dict(env, LONGDOC_ATTENTION="sinks"))
    assert r.returncode == 0, r.stderr
    r = run("--attention", "nope", env=env)
    assert r.returncode == 2 and "attention must be one of" in r.stdout + r.stderr
    # a parameter above its limit (1000 rounds ran for minutes), with and without --stream: one line
    for args in (("--attention", "lsh:rounds=1000"), ("--stream", "--attention", "sinks:sinks=5000")):
        r = subprocess.run([sys.executable, "-m", "longdoc", "ask", str(doc), "law?", "--model", str(tiny_model_dir),
                            *args], capture_output=True, text=True, timeout=120, env=env)
        assert r.returncode == 2 and r.stdout == "", args
        assert r.stderr.count("\n") == 1 and "must be at most" in r.stderr, r.stderr


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", list(PARAM_SETS))
def test_variant_cuda_bf16_against_fp64(name):
    """The GPU path (Triton band for local/strided/sinks, SDPA flash for full, torch elsewhere) in bf16
    against the same pattern in float64 on the CPU, n = 5,000 with padding and scattered globals."""
    g, seed = fresh()
    B, H, N, D, w = 2, 4, 5000, 64, 128
    q, k, v = (torch.randn(B, H, N, D, generator=g) for _ in range(3))
    kpm = torch.zeros(B, N, dtype=torch.bool)
    kpm[1, 4500:] = True
    gidx = torch.tensor([[0, 1777, 4999], [3, 2500, -1]])
    params = PARAM_SETS[name][-1]
    if name in ("lsh", "linear", "full"):
        gidx = None
    bf = [t.cuda().bfloat16() for t in (q, k, v)]
    out = V.attention(name, *bf, window=w, global_idx=None if gidx is None else gidx.cuda(),
                      key_padding_mask=kpm.cuda(), **params)
    ref = V.attention(name, *(t.cpu().double() for t in bf), window=w, global_idx=gidx, key_padding_mask=kpm,
                      **params)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
    err = rel_err(out.float(), ref)
    assert err < 2e-2, f"{name} seed={seed} err {err:.2e}"


# ---- streaming sinks ----------------------------------------------------------------------------


@pytest.mark.parametrize("chunk,sinks,piece", [(300, 4, 97), (1000, 1, 1500), (257, 16, 1)])
def test_stream_encoder_equals_whole_sequence_sinks(tiny_model_dir, chunk, sinks, piece):
    from longdoc.model import load_encoder
    from longdoc.model.stream import StreamEncoder

    enc = load_encoder(str(tiny_model_dir), device="cpu")
    text = " ".join(f"line {i} worker-{i % 7} took {i * 37 % 500} ms" for i in range(260))
    tok = enc.tokenize(text)
    ref = enc.with_attention(f"sinks:sinks={sinks}").encode(tok)
    se = StreamEncoder(enc.with_attention(f"sinks:sinks={sinks}"), sinks=sinks, chunk=chunk)
    blocks = []
    for i in range(0, len(tok), piece):
        se.push(tok.ids[i:i + piece])
        blocks += list(se.ready())
    blocks += list(se.ready(final=True))
    assert [a for a, _ in blocks] == list(range(0, len(tok), max(chunk, sinks + 1)))
    got = torch.cat([s for _, s in blocks])
    bound = max(chunk, sinks + 1) + 2 * se.halo + sinks + max(enc.cfg.windows)  # early chunks start at 0
    assert se.peak_context <= bound
    assert rel_err(got, ref) < 1e-5
    assert len(se.ids) <= bound + piece  # bounded token buffer


def test_cli_ask_stream(tiny_model_dir, tmp_path):
    import subprocess
    import sys

    lines = [f"2026-11-22 12:00:{i % 60:02d} INFO job {i} ok" for i in range(400)]
    lines[250] = "2026-11-22 13:00:00 ERROR database connection refused"
    env = dict(os.environ, LONGDOC_HOME=str(tmp_path / "home"))
    r = subprocess.run([sys.executable, "-m", "longdoc", "ask", "-", "database error", "--stream", "-k", "3",
                        "--model", str(tiny_model_dir), "--jsonl"], input="\n".join(lines), capture_output=True,
                       text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    import json

    hits = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(hits) == 3 and all(h["path"] == "-" for h in hits)
    text = "\n".join(lines)
    assert all(text[h["char_start"]:h["char_end"]] == h["text"] for h in hits)
    r = subprocess.run([sys.executable, "-m", "longdoc", "ask", "-", "q", "--stream", "--attention", "lsh",
                        "--model", str(tiny_model_dir)], input="x\n", capture_output=True, text=True, timeout=300,
                       env=env)
    assert r.returncode == 2 and "sinks pattern only" in r.stderr
