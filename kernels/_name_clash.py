"""This folder imported as the top-level ``kernels``: give that name to the installed package.

The folder is meant to be imported as ``longdoc.kernels`` only (pyproject maps it), but with the
checkout's root on sys.path, as under ``python -m ...`` run from it, ``import kernels`` finds it
first. The PyPI package of that name is a dependency of transformers, which imports from it while
loading a model; it would get this folder and fail.
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from pathlib import Path


def hand_over_to_installed() -> None:
    """Load the first ``kernels`` on sys.path that is not a copy of this folder into sys.modules in
    place of the module being imported (the import statement returns what sys.modules holds once the
    module's code has run). With none installed, the folder keeps the name and exports nothing."""
    spec = next((s for s in map(_kernels_in, sys.path) if s is not None and not _is_ours(s)), None)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    sys.modules["kernels"] = module  # before running it: its own imports of kernels.* resolve to it
    spec.loader.exec_module(module)


def _kernels_in(entry: str):
    return importlib.machinery.PathFinder.find_spec("kernels", [entry])


def _is_ours(spec) -> bool:
    """A copy of this folder (this checkout, another checkout or worktree on PYTHONPATH): handing over
    to it would hand back, forever."""
    origin = Path(spec.origin) if spec.origin else None
    return origin is not None and (origin.parent / Path(__file__).name).exists()
