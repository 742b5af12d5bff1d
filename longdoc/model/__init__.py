"""The long-document encoder: ``load_encoder()`` gives an ``Encoder`` (tokenize, encode, embed_spans,
embed_texts). ``encoder.py`` is the model, ``load.py`` reads checkpoints, ``embed.py`` pools vectors,
``files.py`` finds model folders and tokenizers (without torch, so token counting starts fast)."""
from __future__ import annotations

import importlib

# name -> submodule; resolved on first use so `import longdoc.model.files` does not import torch.
_EXPORTS = {
    "load_encoder": "load", "load_net": "load", "load_tokenizer": "files", "resolve_model": "files",
    "Encoder": "embed", "Tokens": "embed",
    "EncoderConfig": "encoder", "LongEncoder": "encoder", "PRESETS": "encoder", "preset": "encoder",
    "build": "encoder",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'longdoc.model' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"longdoc.model.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value
