"""The long-document encoder: ``load_encoder()`` gives an ``Encoder`` (tokenize, encode, embed_spans,
embed_texts). ``encoder.py`` is the model, ``load.py`` reads checkpoints, ``embed.py`` pools vectors."""
from longdoc.model.embed import Encoder, Tokens
from longdoc.model.encoder import PRESETS, EncoderConfig, LongEncoder, build, preset
from longdoc.model.load import load_encoder, load_tokenizer

__all__ = ["load_encoder", "load_tokenizer", "Encoder", "Tokens", "EncoderConfig", "LongEncoder",
           "PRESETS", "preset", "build"]
