"""The Triton kernels on the CPU under TRITON_INTERPRET=1, against the blocked reference.

Triton decides at import whether kernels are interpreted, so the kernels run in one child process
(``python tests/test_kernels_triton.py``) with the variable set; it returns every case's relative
errors as JSON and the tests below check them. Small tiles (16 x 16) in interpreter mode let these
small shapes reach interior (unmasked) band blocks as well as the edges.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
# fp32 runs with exact fp32 products (input_precision="ieee"); fp16 operands round to 11 bits.
# bf16 is checked on the GPU only: Triton 3.7.1's interpreter multiplies bf16 tiles wrongly on the
# CPU (a plain 16 x 16 bf16 tl.dot returns values near 1e10), which is not a fault of these kernels.
TOL = {"float32": 1e-5, "float16": 5e-3}
HALF_CASES = ("padding_dilation3_globals", "global_projections")


def _worker() -> dict:
    os.environ["TRITON_INTERPRET"] = "1"
    import torch

    sys.path.insert(0, str(HERE))
    from test_kernels import CASES, fresh_generator, make_inputs, rel_err

    from longdoc.kernels.reference import local_global_attention_reference as ref
    from longdoc.kernels.triton_attention import _INTERPRET, local_global_attention_triton as tri

    assert _INTERPRET
    results = {}
    jobs = [(c, torch.float32) for c in sorted(CASES)] + [(c, torch.float16) for c in HALF_CASES]
    for case, dtype in jobs:
        gen, seed = fresh_generator()
        (q, k, v), kw = make_inputs(case, dtype, gen)
        inputs = [q, k, v] + (list(kw["global_qkv"]) if kw["global_qkv"] else [])
        out, lse = tri(q, k, v, **kw, return_lse=True)
        dout = torch.randn(out.shape, generator=gen, dtype=torch.float64).to(dtype)
        grads = torch.autograd.grad(out, inputs, dout)
        # the reference in float64 on the same (rounded) inputs
        ins64 = [t.detach().double().requires_grad_() for t in inputs]
        kw64 = dict(kw, global_qkv=tuple(ins64[3:]) if kw["global_qkv"] else None)
        r_out, r_lse = ref(*ins64[:3], **kw64, return_lse=True)
        r_grads = torch.autograd.grad(r_out, ins64, dout.double())
        errs = {"out": rel_err(out, r_out), "lse": rel_err(lse, r_lse)}
        for name, a, b in zip(["dq", "dk", "dv", "dq_g", "dk_g", "dv_g"], grads, r_grads):
            errs[name] = rel_err(a, b)
        if case == "padding_dilation3_globals" and dtype == torch.float32:
            # deterministic backward: a second run gives the same bits
            again = torch.autograd.grad(tri(q, k, v, **kw), inputs, dout)
            errs["bitwise_repeat"] = 0.0 if all(torch.equal(a, b) for a, b in zip(grads, again)) else math.inf
        results[f"{case}-{str(dtype).split('.')[-1]}"] = {"seed": seed, "errs": errs}
    results["global_rows_partial-float32"] = _global_rows_case()
    results["band_with_tile-float32"] = _band_tile_case()
    return results


def _band_tile_case() -> dict:
    """The sharded encoder's band runs: the kernel with an external tile of extra keys (5 slots, one
    invalid) against the differentiable composition (the run extended by a gap and the tile rows as
    global tokens) in float64, over runs longer and shorter than the band, dilation 1 and 2, padded
    keys and a fully padded run whose rows still see the tile."""
    import torch

    from longdoc.kernels import band_with_tile
    from longdoc.kernels.triton_attention import band_with_tile_triton
    from test_kernels import fresh_generator, rel_err

    gen, seed = fresh_generator()
    errs = {}
    for L, w, dil in ((300, 40, 1), (150, 16, 2), (20, 40, 1)):
        B, H, S, D = 2, 2, 5, 32
        q, k, v = (torch.randn(B, H, L, D, generator=gen) for _ in range(3))
        tk, tv = (torch.randn(B, H, S, D, generator=gen) for _ in range(2))
        valid = torch.ones(B, S, dtype=torch.bool)
        valid[0, 3] = False
        pad = torch.zeros(B, L, dtype=torch.bool)
        pad[0, L // 3 : L // 2] = True
        pad[1] = True
        out = band_with_tile_triton(q, k, v, tk, tv, valid, window=w, dilation=dil, key_padding_mask=pad, scale=0.3)
        ref = band_with_tile(*(t.double() for t in (q, k, v, tk, tv)), valid, window=w, dilation=dil,
                             key_padding_mask=pad, scale=0.3)
        errs[f"L{L}_w{w}_d{dil}"] = rel_err(out, ref) if not torch.isnan(out).any() else math.inf
    return {"seed": seed, "errs": errs}


def _global_rows_case() -> dict:
    """The sharded encoder's global-rows pass: S = 5 rows (padded to 16 inside) over n = 300 keys with
    a padded run, a fully padded batch element (must give 0 and -inf, never NaN), against float64."""
    import torch

    from longdoc.kernels.triton_attention import global_rows_partial
    from test_kernels import fresh_generator, rel_err

    gen, seed = fresh_generator()
    B, H, S, n, D = 2, 2, 5, 300, 32
    qg, k, v = (torch.randn(B, H, m, D, generator=gen) for m in (S, n, n))
    pad = torch.zeros(B, n, dtype=torch.bool)
    pad[0, 170:230] = True
    pad[1] = True
    out, lse = global_rows_partial(qg, k, v, key_padding_mask=pad, scale=0.3)
    s = torch.einsum("bhgd,bhnd->bhgn", qg.double(), k.double()) * 0.3
    s = s.masked_fill(pad[:, None, None], -math.inf)
    r_lse = torch.logsumexp(s[0], -1)
    r_out = torch.softmax(s[0], -1) @ v[0].double()
    empty_ok = bool((out[1] == 0).all() and torch.isneginf(lse[1]).all() and not torch.isnan(out).any())
    return {"seed": seed, "errs": {"out": rel_err(out[0], r_out), "lse": rel_err(lse[0], r_lse),
                                   "empty_rows": 0.0 if empty_ok else math.inf}}


@pytest.fixture(scope="module")
def interp_results():
    try:
        import triton  # noqa: F401
    except ImportError:
        pytest.skip("triton is not installed")
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run([sys.executable, str(Path(__file__))], capture_output=True, text=True, env=env,
                          timeout=600, cwd=HERE.parent)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _ids():
    sys.path.insert(0, str(HERE))
    from test_kernels import CASES

    return ([f"{c}-float32" for c in sorted(CASES)] + [f"{c}-float16" for c in HALF_CASES]
            + ["global_rows_partial-float32", "band_with_tile-float32"])


@pytest.mark.parametrize("key", _ids())
def test_triton_interpreted_matches_reference(interp_results, key):
    res = interp_results[key]
    tol = TOL[key.rsplit("-", 1)[1]]
    bad = {n: e for n, e in res["errs"].items() if not e <= tol}  # NaN / inf never pass
    assert not bad, f"{key} seed {res['seed']}: {bad}"


if __name__ == "__main__":
    print(json.dumps(_worker()))
