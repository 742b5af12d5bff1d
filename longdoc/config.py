"""Settings with one precedence rule: flag > LONGDOC_* environment variable > default.

The model folder lookup itself lives in ``longdoc.model.files`` (no torch import); this module adds
the checks a caller needs before hashing the folder for the cache.
"""
from __future__ import annotations

import os
from pathlib import Path

from longdoc.errors import LongdocError


def resolve_model_dir(model: str | os.PathLike | None = None) -> Path:
    """The model folder to use: ``model`` (the --model flag) > $LONGDOC_MODEL > the bundled default;
    refused unless it has a config.json and safetensors weights (pickle is never loaded)."""
    from longdoc.model.files import resolve_model, safetensors_files

    folder, _ = resolve_model(str(model) if model else None)
    if not os.path.isfile(os.path.join(folder, "config.json")):
        raise LongdocError(f"{folder}: not a model folder (no config.json); longdoc never downloads models")
    safetensors_files(folder)  # raises a one-line error for pickle-only or weightless folders
    return Path(folder).resolve()
