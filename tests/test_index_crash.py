"""Durability: `python -m longdoc index` killed with SIGKILL at random instants, and concurrent
indexers and readers on one root. Children encode with HashEncoder (installed by sitecustomize), so
every stored vector can be recomputed from its stored text: a vector beside the wrong text, a
half-written file, or a database that fails to open is a failure.

The default run kills 12 times (about 20 s on two cores); set LONGDOC_SLOW_TESTS=1 for the 60-kill
variant (marked ``slow``).
"""
from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_index_fakes import DIM, HashEncoder, bag_vector, child_env  # noqa: E402

from longdoc.index import search  # noqa: E402
from longdoc.index.locate import db_path  # noqa: E402

N_FILES = 30
DELAY = 0.03  # seconds per encoded file in the child: a full run is ~1 s, so kills land mid-run


def write_tree(root: Path, rng: random.Random, generation: int) -> None:
    """(Re)write a tree of Python files; each generation changes some files, deletes and adds some."""
    root.mkdir(exist_ok=True)
    for i in range(N_FILES):
        p = root / f"pkg{i % 4}" / f"mod{i}.py"
        p.parent.mkdir(exist_ok=True)
        if generation and rng.random() < 0.1:
            p.unlink(missing_ok=True)
            continue
        if generation == 0 or rng.random() < 0.4 or not p.exists():
            funcs = "\n\n".join(
                f"def fn_{i}_{j}_{generation}(x):\n    \"\"\"Step {j} of {rng.choice(['parse', 'load', 'render'])}.\"\"\"\n"
                f"    return x * {rng.randint(1, 99)} + {j}\n" for j in range(rng.randint(3, 25)))
            p.write_text(funcs + "\n")


def check_db(root: Path) -> tuple[int, int]:
    """Open the index after a crash and verify it completely; returns (files, segments)."""
    db = db_path(root)
    if not db.exists():
        return 0, 0
    c = sqlite3.connect(db)
    try:
        assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        c.execute("INSERT INTO segments_fts(segments_fts) VALUES ('integrity-check')")  # FTS matches table
        files = {r[0]: r[1:] for r in c.execute("SELECT id, path, sha256, error FROM files")}
        n_seg = 0
        per_file: dict[int, list[int]] = {}
        for fid, ord_, start, end, text, blob, local in c.execute(
                "SELECT file_id, ord, char_start, char_end, text, vector, local FROM segments"):
            assert fid in files, "segment of a file row that does not exist"
            assert len(blob) == len(local) == DIM * 4
            np.testing.assert_allclose(np.frombuffer(blob, "<f4"), bag_vector(text), atol=1e-6)
            np.testing.assert_allclose(np.frombuffer(local, "<f4"), bag_vector(text), atol=1e-6)
            per_file.setdefault(fid, []).append(ord_)
            path, sha, _ = files[fid]
            disk = root / path
            if disk.exists():
                data = disk.read_bytes()
                if hashlib.sha256(data).hexdigest() == sha:  # unchanged since stored: text must match
                    assert data.decode().replace("\r\n", "\n")[start:end] == text
            n_seg += 1
        for fid, ords in per_file.items():
            assert sorted(ords) == list(range(len(ords))), "a file with missing or duplicated segments"
        return len(files), n_seg
    finally:
        c.close()


def committed_since(root: Path, t: float) -> bool:
    db = db_path(root)
    if not db.exists():
        return False
    c = sqlite3.connect(db, timeout=10)
    try:
        return (c.execute("SELECT MAX(indexed_at) FROM files").fetchone()[0] or 0) > t
    except sqlite3.OperationalError:  # tables not created yet
        return False
    finally:
        c.close()


def wait_for_commit(root: Path, t: float, child: subprocess.Popen, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while child.poll() is None and time.monotonic() < deadline and not committed_since(root, t):
        time.sleep(0.01)


def kill_loop(tmp_path: Path, kills: int, seed: int) -> None:
    rng = random.Random(seed)
    root = tmp_path / "tree"
    env = child_env(tmp_path, delay=DELAY)
    write_tree(root, rng, 0)
    cmd = [sys.executable, "-m", "longdoc", "index", str(root), "-q"]
    mid_run = 0
    for k in range(kills):
        if k and k % 4 == 0:
            write_tree(root, rng, k)  # give later runs changed and deleted files to process
        before = check_db(root)[0]
        t_spawn = time.time()
        child = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if k % 4 == 3:  # sometimes anywhere: during start-up, the walk, the hashing, the pruning
            time.sleep(rng.uniform(0.0, 1.0))
        else:  # mostly once this run has committed a file, i.e. in the middle of the writes
            wait_for_commit(root, t_spawn, child)
            time.sleep(rng.uniform(0.0, 0.3))
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        if child.returncode not in (0, -signal.SIGKILL):
            pytest.fail(f"indexer failed: {child.stderr.read().decode()[-500:]}")
        finished = child.returncode == 0  # it had ended before the signal (poll() first would race)
        files, _ = check_db(root)
        if not finished and files != before or not finished and committed_since(root, t_spawn):
            mid_run += 1
    print(f"{kills} kills, {mid_run} in the middle of an index run, 0 damaged")  # shown with -rP
    # the kills landed while files were being written, not only before or after the run
    assert mid_run >= kills // 3, f"only {mid_run} of {kills} kills interrupted an index run"
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    files, segs = check_db(root)
    on_disk = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.py"))
    with sqlite3.connect(db_path(root)) as c:
        stored = {p: sha for p, sha in c.execute("SELECT path, sha256 FROM files")}
    assert sorted(stored) == on_disk  # resumed: everything present, nothing deleted left over
    for rel in on_disk:
        assert stored[rel] == hashlib.sha256((root / rel).read_bytes()).hexdigest()
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    assert "up to date" in again.stdout
    assert search(root, ["load step"], encoder=HashEncoder(), update=False)[0].results


def test_kill9_loop(tmp_path):
    kill_loop(tmp_path, kills=12, seed=1)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("LONGDOC_SLOW_TESTS"), reason="set LONGDOC_SLOW_TESTS=1")
def test_kill9_loop_many(tmp_path):
    kill_loop(tmp_path, kills=60, seed=2)


def test_two_indexers_one_waits_one_refuses(tmp_path):
    rng = random.Random(3)
    root = tmp_path / "tree"
    write_tree(root, rng, 0)
    env = child_env(tmp_path, delay=DELAY)
    # The first indexer runs ~9 s so that the others, which take seconds just to start on a loaded
    # 2-core machine, certainly meet its lock.
    slow_env = child_env(tmp_path, delay=0.3)
    base = [sys.executable, "-m", "longdoc", "index", str(root), "-q"]
    first = subprocess.Popen(base, env=slow_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = db_path(root).with_name(db_path(root).name + ".lock")
    deadline = time.monotonic() + 20
    while not (lock.exists() and lock.read_text().strip() == str(first.pid)):
        assert time.monotonic() < deadline and first.poll() is None, "first indexer never took the lock"
        time.sleep(0.02)
    refused = subprocess.run(base + ["--no-wait"], env=env, capture_output=True, text=True, timeout=60)
    # without -q, which drops the note "waiting for another `longdoc index`" checked below
    waiter = subprocess.Popen(base[:-1], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # a reader in the middle of the write sees a consistent snapshot
    for _ in range(5):
        if db_path(root).exists():
            check_db(root)
            search(root, ["render"], encoder=HashEncoder(), update=False)
        time.sleep(0.1)
    out1, err1 = first.communicate(timeout=60)
    out2, err2 = waiter.communicate(timeout=60)
    assert refused.returncode == 2
    assert f"another `longdoc index` (pid {first.pid})" in refused.stderr
    assert first.returncode == 0 and "encoded" in out1, err1
    assert waiter.returncode == 0 and "up to date" in out2 and "waiting for another" in err2
    files, _ = check_db(root)
    assert files == N_FILES


def test_real_write_failure_mid_run_is_a_clear_error_and_resumes(tmp_path):
    """A real OS-level write failure, not a simulated one: the child's file-size limit (RLIMIT_FSIZE,
    with SIGXFSZ ignored, so write() fails with EFBIG as on a full disk) is set just above the index's
    size, and the run has 40 new files to store. It must end with one line and exit 2, leave an index
    that verifies completely, and a later run without the limit must resume and finish."""
    import resource

    rng = random.Random(4)
    root = tmp_path / "tree"
    write_tree(root, rng, 0)
    env = child_env(tmp_path)
    cmd = [sys.executable, "-m", "longdoc", "index", str(root), "-q"]
    assert subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120).returncode == 0
    before, _ = check_db(root)
    for i in range(40):
        (root / f"big{i}.py").write_text("\n\n".join(f"def big_{i}_{j}(x):\n    return x + {j}\n" for j in range(200)))
    limit = db_path(root).stat().st_size + 32 * 1024

    def cap_file_size():  # runs in the child before exec
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    full = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, preexec_fn=cap_file_size)
    assert full.returncode == 2, full.stderr
    lines = full.stderr.strip().splitlines()
    assert len(lines) == 1 and "no space left" in lines[0] and "Traceback" not in full.stderr
    assert check_db(root)[0] >= before  # verified completely; nothing indexed before was lost
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert check_db(root)[0] == before + 40


def _mount_tmpfs(where: Path, size: str) -> bool:
    """A real, small filesystem (tmpfs) at ``where``; False where this process may not mount."""
    if os.geteuid() != 0 or not sys.platform.startswith("linux"):
        return False
    where.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True).returncode == 0


def test_full_filesystem_mid_run_is_a_clear_error_and_resumes(tmp_path, monkeypatch):
    """The index lives on a real filesystem that fills up: a tmpfs shrunk to 96 KiB above what the
    first index uses, then 40 new files to store. write() fails with ENOSPC in the kernel. The run must
    end with one line and exit 2 and leave an index that verifies completely; once the filesystem is
    grown, a run resumes and stores the 40 files. Needs the right to mount (root); skipped otherwise."""
    fs = tmp_path / "fs"
    if not _mount_tmpfs(fs, "64m"):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        monkeypatch.setenv("LONGDOC_HOME", str(fs / "home"))
        rng = random.Random(5)
        root = tmp_path / "tree"  # the tree itself is elsewhere: only the index is on the small fs
        write_tree(root, rng, 0)
        env = child_env(tmp_path)
        cmd = [sys.executable, "-m", "longdoc", "index", str(root), "-q"]
        assert subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120).returncode == 0
        before, _ = check_db(root)
        assert db_path(root).resolve().is_relative_to(fs.resolve())
        for i in range(40):
            (root / f"big{i}.py").write_text("\n\n".join(f"def big_{i}_{j}(x):\n    return x + {j}\n" for j in range(200)))
        used = shutil.disk_usage(fs).used
        subprocess.run(["mount", "-o", f"remount,size={used // 1024 + 96}k", str(fs)], check=True)
        full = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert full.returncode == 2, full.stderr
        lines = full.stderr.strip().splitlines()
        assert len(lines) == 1 and "no space left" in lines[0] and "Traceback" not in full.stderr
        assert check_db(root)[0] >= before  # verified completely; nothing indexed before was lost
        subprocess.run(["mount", "-o", "remount,size=64m", str(fs)], check=True)
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert check_db(root)[0] == before + 40
    finally:
        subprocess.run(["umount", "-l", str(fs)], capture_output=True)
