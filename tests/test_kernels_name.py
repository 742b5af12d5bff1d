"""The top-level kernels/ folder is ``longdoc.kernels``; the name ``kernels`` belongs to a PyPI package
that transformers depends on. Run from the checkout's root (``python -m ...``), where the folder is
importable under that name too, transformers must still get the package it imports."""
from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _from_root(code: str) -> subprocess.CompletedProcess:
    # sys.path[0] is the checkout's root, exactly as `python -m pytest` or `python -m longdoc.eval.cuad` has it
    return subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(REPO)!r}); {code}"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)


def _pypi_kernels_installed() -> bool:
    try:
        importlib.metadata.version("kernels")
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


@pytest.mark.skipif(not _pypi_kernels_installed(), reason="the PyPI package kernels is not installed")
def test_import_kernels_from_the_root_gets_the_pypi_package():
    r = _from_root("import kernels, longdoc.kernels as ours; print(kernels.__file__); print(ours.__file__)")
    assert r.returncode == 0, r.stderr
    theirs, ours = r.stdout.split()
    assert not Path(theirs).resolve().is_relative_to(REPO), theirs
    assert Path(ours).resolve() == REPO / "kernels" / "__init__.py"


def test_transformers_hub_kernels_import_from_the_root():
    # transformers (5.x) imports names from `kernels` while it loads a model; this folder has none of them
    r = _from_root("import importlib.util as u\n"
                   "if u.find_spec('transformers.integrations.hub_kernels'):\n"
                   "    import transformers.integrations.hub_kernels\n"
                   "import longdoc.kernels as K; print(K.local_global_attention.__module__)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[-1] == "longdoc.kernels.dispatch"


@pytest.mark.skipif(not _pypi_kernels_installed(), reason="the PyPI package kernels is not installed")
def test_another_copy_of_the_folder_earlier_on_the_path_is_passed_over(tmp_path):
    """A second checkout or worktree on PYTHONPATH holds the same folder: each copy handed the import
    to the other, forever (RecursionError)."""
    import shutil

    shutil.copytree(REPO / "kernels", tmp_path / "kernels", ignore=shutil.ignore_patterns("__pycache__"))
    r = _from_root(f"sys.path.insert(0, {str(tmp_path)!r}); import kernels; print(kernels.__file__)")
    assert r.returncode == 0, r.stderr[-2000:]
    got = Path(r.stdout.split()[-1]).resolve()
    assert not got.is_relative_to(REPO) and not got.is_relative_to(tmp_path), got
