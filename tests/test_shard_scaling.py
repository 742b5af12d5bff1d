"""`python -m longdoc.shard.scaling` on the CPU (gloo, tiny preset): the whole program once in a
subprocess (one spawn of 2 ranks, ~20 s on the shared 2-core machine), plus its pure pieces."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from longdoc.shard import scaling
from longdoc.shard.scaling import Comparison, global_positions, report, uneven_bounds

REPO = Path(__file__).resolve().parents[1]


def test_cpu_run_prints_table_and_writes_out(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "PYTHONPATH": str(REPO)}
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "longdoc.shard.scaling", "--device", "cpu", "--preset", "tiny",
           "--tokens-per-rank", "1024", "--ranks", "1,2", "--strong-tokens", "4096", "--exact-tokens", "1024,4096",
           "--reps", "2", "--warmup", "1"]
    p = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stdout + p.stderr
    out = p.stdout
    assert "| scaling | ranks | n | tokens/GPU | ms | tokens/s | efficiency |" in out
    for row in ("| weak | 1 | 1k | 1k |", "| weak | 2 | 2k | 1k |", "| strong | 1 | 4k | 4k |", "| strong | 2 | 4k | 2k |"):
        assert row in out, out
    assert "not run" not in out and "Errors" not in out
    assert out.count("| PASS |") == 2, out  # n = 1k and 4k over 2 uneven shards
    md = (tmp_path / "shard_scaling.md").read_text()
    assert md == out[: len(md)] and "torch " in md and "triton " in md
    recs = [json.loads(line) for line in (tmp_path / "shard_scaling.jsonl").read_text().splitlines()]
    kinds = [r["kind"] for r in recs]
    assert kinds[0] == "env" and kinds[-1] == "done" and "error" not in kinds
    sharded = [r for r in recs if r["kind"] == "time" and r["R"] == 2]
    assert {r["mode"] for r in sharded} == {"weak", "strong"}
    for r in sharded:
        assert len(r["times"]) == 2 and len(r["peak"]) == 2 and r["halo_ms"] >= 0 and r["gather_ms"] > 0
    for r in (r for r in recs if r["kind"] == "exact"):
        assert r["max_abs"] <= 1e-5 and r["worst"] <= 1 and r["nonfinite"] == 0
        assert sum(r["shards"]) == r["n"] and len(set(r["shards"])) == 2  # uneven


def test_uneven_bounds_and_globals_on_boundaries():
    for n, R in ((1 << 18, 2), (1 << 20, 8), (1000, 3), (5, 4)):
        b = uneven_bounds(n, R)
        assert b[0] == 0 and b[-1] == n and len(b) == R + 1 and all(x <= y for x, y in zip(b, b[1:]))
    b = uneven_bounds(1 << 18, 2)
    assert b[1] % 16 and b[1] != (1 << 17)  # uneven, and not on a block multiple
    g = global_positions(1 << 18, [1, 2], 16, 256)
    assert len(g) == 16 == len(set(g)) and g == sorted(g)
    assert {b[1] - 1, b[1], b[1] + 128} <= set(g)  # on the boundary, and inside the halo
    g8 = global_positions(1 << 20, [1, 2, 4, 8], 16, 256)
    assert len(g8) == 16 and uneven_bounds(1 << 20, 8)[1] in g8
    assert global_positions(3, [2], 16, 4) == [0, 1, 2]


def test_comparison_flags_a_wrong_row():
    ref = torch.randn(1, 300, 8)
    cmp = Comparison(300, torch.device("cpu"), 1e-3, 1e-3)
    cmp.add(0, ref.clone(), ref)
    assert cmp.summary((0, 300), [5], 10)["ok"]
    bad = ref.clone()
    bad[0, 150] += 1.0
    cmp = Comparison(300, torch.device("cpu"), 1e-3, 1e-3)
    cmp.add(0, bad[:, :100], ref[:, :100], chunk=64)
    cmp.add(100, bad[:, 100:], ref[:, 100:], chunk=64)
    s = cmp.summary((0, 145, 300), [5], 10)
    assert not s["ok"] and s["exceed"] == 8 and abs(s["near_boundary"] - 1.0) < 1e-6 and s["at_globals"] == 0


def test_report_shows_errors_and_fails():
    o = vars(scaling.parse(["--device", "cpu", "--preset", "tiny", "--tokens-per-rank", "1024", "--ranks", "1,2"]))
    recs = [{"kind": "env", "device": "X", "world": 2, "backend": "nccl"},
            {"kind": "preflight", "ok": False, "msg": ""},
            {"kind": "error", "phase": "preflight (rank 1)", "msg": "Triton failure: boom"}]
    text, ok = report(recs, o, None, 1.0, ["prog"])
    assert not ok and "Triton failure: boom" in text and "| weak | 1 | 1k | 1k | not run |" in text
    recs = [{"kind": "env"}, {"kind": "time", "R": 1, "n": 1024, "mode": "single", "times": [0.1], "peak": [2**30],
                              "halo_ms": 0, "gather_ms": 0}]
    text, ok = report(recs, o, "sharded run failed on rank 1 of 2:\nRuntimeError: x", 1.0, ["prog"])
    assert not ok and "the spawn ended" in text and "| weak | 1 | 1k | 1k | 100.0 |" in text
    assert "did not finish" in text


def test_preflight_reports_a_missing_triton(monkeypatch):
    import longdoc.kernels as K

    ok, msg = scaling.preflight(torch.device("cpu"), torch.float32)  # the reference on the CPU: agrees
    assert ok, msg
    monkeypatch.setattr(K, "local_global_attention_triton", None)
    ok, msg = scaling.preflight(torch.device("cpu"), torch.float32)
    assert not ok and "Triton" in msg


def test_sequential_bench_runs_and_checks_exactness(capsys):
    """The one-device benchmark on the CPU: a table row per mode and a passing fp32 exactness line."""
    from longdoc.shard.bench_sequential import main as bench_main

    assert bench_main(["--preset", "minilm", "--dtype", "fp32", "--tokens", "300", "--shard-tokens", "128",
                       "--globals", "3", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "| 300 | whole |" in out and "| 300 | sequential, 128 shards |" in out
    assert "PASS" in out
