"""Run a function on N ranks: N local processes (``--devices N``), or the ranks torchrun started.

``launch(fn, devices, *args)`` calls ``fn(*args)`` on every rank with ``torch.distributed``
initialised (gloo on CPU, NCCL when every rank has a GPU) and returns rank 0's result; the other ranks'
results are dropped. A rank that fails ends the whole run: the remaining ranks are terminated and a
``LongdocError`` names the rank and carries its traceback.

Across machines, start the same program under torchrun on every machine; ``launch`` then finds
``RANK``/``WORLD_SIZE`` in the environment, initialises from it, runs ``fn`` on this rank and returns
rank 0's result on rank 0 (None elsewhere). docs/sharding.md has the command.
"""
from __future__ import annotations

import datetime
import os
import pickle
import socket
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from longdoc.errors import LongdocError

ENV_TIMEOUT = "LONGDOC_SHARD_TIMEOUT"  # seconds a rank waits in a collective before giving up


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def default_backend() -> str:
    return "nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"


def _timeout() -> datetime.timedelta:
    return datetime.timedelta(seconds=float(os.environ.get(ENV_TIMEOUT, 600)))


def _worker(rank, fn, args, world, port, backend, result_path, threads):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if threads:
        torch.set_num_threads(threads)  # N processes share this machine's cores
    if backend == "nccl":
        torch.cuda.set_device(rank)
    dist.init_process_group(backend, rank=rank, world_size=world, timeout=_timeout())
    try:
        result = fn(*args)
        if rank == 0:
            torch.save(result, result_path)
    finally:
        dist.destroy_process_group()


def under_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and not dist.is_initialized()


MIN_CPU_RANKS = 4  # CPU (gloo) ranks allowed even on smaller machines, to try the multi-rank path


def launch(fn, devices: int, *args, backend: str | None = None):
    """``fn(*args)`` on `devices` ranks; rank 0's return value (tensors, lists, dicts, numbers)."""
    backend = backend or default_backend()
    if under_torchrun():
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend, timeout=_timeout())
        try:
            result = fn(*args)
            return result if dist.get_rank() == 0 else None
        finally:
            dist.destroy_process_group()
    if devices < 1:
        raise LongdocError(f"--devices must be at least 1, got {devices}")
    if backend == "nccl" and devices > torch.cuda.device_count():
        raise LongdocError(f"--devices {devices} asks for more GPUs than the {torch.cuda.device_count()} visible")
    cores = os.cpu_count() or 1
    if backend == "gloo" and devices > max(cores, MIN_CPU_RANKS):
        # Each CPU rank is a process holding torch and the model: more than the cores only adds memory,
        # and a typo (--devices 1000) would start a thousand of them.
        raise LongdocError(f"--devices {devices} asks for more CPU processes than the {cores} cores "
                           f"(at most {max(cores, MIN_CPU_RANKS)} here)")
    threads = max(1, cores // devices) if backend == "gloo" else 0
    with tempfile.TemporaryDirectory(prefix="longdoc-shard-") as tmp:
        path = os.path.join(tmp, "rank0.pt")
        ctx = mp.start_processes(_worker, args=(fn, args, devices, _free_port(), backend, path, threads),
                                 nprocs=devices, join=False, start_method="spawn")
        try:
            while not ctx.join(grace_period=2):  # the peers of a failed rank get 2 s to report
                pass
        except (mp.ProcessRaisedException, mp.ProcessExitedException) as e:
            raise LongdocError(_first_failure(ctx, e, devices)) from None
        return torch.load(path, weights_only=True)


# How a rank fails when a peer died under it (gloo, NCCL, the TCP store): not the cause.
_PEER_GONE = ("Connection reset by peer", "Connection closed by peer", "Broken pipe", "Socket Timeout",
              "communicator was aborted", "DistNetworkError", "Connection refused")


def _secondary(traceback_text: str) -> bool:
    return any(m in traceback_text for m in _PEER_GONE)


def _first_failure(ctx, exc, devices) -> str:
    """The rank whose failure ended the run. When one rank dies its peers fail too (connection reset)
    and any of them may be noticed first: those are put last, then the tracebacks go by time."""
    written = []
    for rank, f in enumerate(ctx.error_files):
        if os.path.exists(f) and os.path.getsize(f):
            with open(f, "rb") as fh:  # torch.multiprocessing writes each rank's traceback, pickled
                written.append((os.path.getmtime(f), rank, pickle.load(fh)))
            os.unlink(f)
    if not written:
        code = getattr(exc, "exit_code", None)
        return f"sharded run failed: rank {exc.error_index} of {devices} exited with code {code}"
    written.sort(key=lambda t: (_secondary(t[2]), t[0], t[1]))
    _, rank, tb = written[0]
    also = [r for _, r, _ in written[1:]]
    more = f" (then rank{'s' if len(also) > 1 else ''} {', '.join(map(str, also))})" if also else ""
    return f"sharded run failed on rank {rank} of {devices}{more}:\n{tb}"


__all__ = ["launch", "default_backend", "under_torchrun"]
