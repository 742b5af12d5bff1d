"""Loading a local Hugging Face folder into the longdoc encoder, offline, from safetensors only.

Every checkpoint quirk is resolved here, once, into an ``EncoderConfig`` and a state dict in the
encoder's own names:

* BERT (``BertModel``, e.g. the default all-MiniLM-L6-v2) and RoBERTa-family: converted
  Longformer-style; global rows reuse the local projections; positions start at row 0 (BERT) or at
  ``pad_token_id + 1`` (RoBERTa's offset).
* Longformer: per-layer ``attention_window`` (HF's W is a full width: radius w = W // 2), separate
  ``query_global/key_global/value_global`` projections, RoBERTa's position offset.
* Old TF-converted names (``LayerNorm.gamma/beta``), model-class prefixes (``bert.``, ``roberta.``,
  ``longformer.``), sharded ``model-0000x-of-0000y.safetensors``.

Which model: ``load_encoder(model)`` > ``$LONGDOC_MODEL`` > the bundled all-MiniLM-L6-v2.
"""
from __future__ import annotations

import hashlib
import json
import os

import torch

from longdoc.errors import LongdocError
from longdoc.model.attention_spec import PARAMS, parse_spec
from longdoc.model.encoder import ATTENTION_FIELDS, EncoderConfig, LongEncoder
from longdoc.model.files import (ENV_MODEL, _tokenizer, default_model_path, load_tokenizer,  # noqa: F401
                                 read_json, resolve_model, safetensors_files)


# Families whose position rows start after the padding row (RoBERTa's create_position_ids...).
_OFFSET_FAMILIES = {"roberta", "xlm-roberta", "camembert", "longformer"}
_SUPPORTED = {"bert"} | _OFFSET_FAMILIES
_REQUIRED = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
             "max_position_embeddings")
_PREFIXES = ("", "bert.", "roberta.", "longformer.", "model.")


def config_from_hf(hf: dict, *, window: int | None = None, positions: str | None = None,
                   attention: str | None = None) -> EncoderConfig:
    """A Hugging Face config.json (as a dict) -> EncoderConfig; window is a radius overriding all layers;
    attention a variant spec ("lsh" or "lsh:rounds=4", see attention_spec.py)."""
    family = hf.get("model_type", "")
    if family not in _SUPPORTED:
        raise LongdocError(f"model type {family!r} is not supported (BERT, RoBERTa or Longformer checkpoints)")
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise LongdocError(f"position_embedding_type {hf['position_embedding_type']!r} is not supported")
    missing = [k for k in _REQUIRED if k not in hf]
    if missing:
        raise LongdocError(f"config.json lacks {', '.join(missing)}")
    pad = int(hf.get("pad_token_id") or 0)
    layers = int(hf["num_hidden_layers"])
    longformer = family == "longformer"
    if window is not None:
        radius = int(window)
    elif longformer:
        W = hf.get("attention_window", 512)
        radius = tuple(int(x) // 2 for x in (W if isinstance(W, list) else [W] * layers))
    else:
        radius = 128  # the BERT default: see docs/encoder.md for the measurement
    kwargs = dict(
        vocab_size=int(hf["vocab_size"]), hidden_size=int(hf["hidden_size"]), num_layers=layers,
        num_heads=int(hf["num_attention_heads"]), intermediate_size=int(hf["intermediate_size"]),
        max_positions=int(hf["max_position_embeddings"]),
        position_offset=pad + 1 if family in _OFFSET_FAMILIES else 0,
        type_vocab_size=int(hf.get("type_vocab_size", 2)), layer_norm_eps=float(hf.get("layer_norm_eps", 1e-12)),
        hidden_act=hf.get("hidden_act", "gelu"), pad_token_id=pad, window=radius,
        separate_global_projections=longformer, full_attention_when_short=not longformer,
    )
    if positions is not None:
        kwargs["positions"] = positions
    try:
        if attention is not None:
            name, params = parse_spec(attention)
            kwargs.update(attention=name, **params)
        return EncoderConfig(**kwargs)
    except ValueError as e:
        raise LongdocError(str(e)) from None


def read_hf_state(folder: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    state = {}
    for path in safetensors_files(folder):
        try:
            state.update(load_file(path))
        except Exception as e:  # safetensors raises its own error types for corrupt headers
            raise LongdocError(f"cannot read {path}: {e}") from None
    return state


def convert_state(hf_state: dict[str, torch.Tensor], cfg: EncoderConfig) -> dict[str, torch.Tensor]:
    """Hugging Face tensor names -> the encoder's names (fused QKV, row 0 of the type table)."""
    state = {k.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias"): v
             for k, v in hf_state.items()}
    prefix = next((p for p in _PREFIXES if p + "embeddings.word_embeddings.weight" in state), None)
    if prefix is None:
        raise LongdocError("checkpoint has no embeddings.word_embeddings.weight: not a BERT-family model")

    def take(name):
        try:
            return state[prefix + name]
        except KeyError:
            raise LongdocError(f"checkpoint is missing tensor {prefix + name}") from None

    out = {
        "embeddings.word.weight": take("embeddings.word_embeddings.weight"),
        "embeddings.position.weight": take("embeddings.position_embeddings.weight"),
        "embeddings.norm.weight": take("embeddings.LayerNorm.weight"),
        "embeddings.norm.bias": take("embeddings.LayerNorm.bias"),
    }
    types = state.get(prefix + "embeddings.token_type_embeddings.weight")
    out["embeddings.type0"] = types[0] if types is not None else torch.zeros(cfg.hidden_size)
    for i in range(cfg.num_layers):
        src, dst = f"encoder.layer.{i}.", f"layers.{i}."
        for part in ("weight", "bias"):
            out[dst + f"attention.qkv.{part}"] = torch.cat(
                [take(src + f"attention.self.{n}.{part}") for n in ("query", "key", "value")])
            if cfg.separate_global_projections:
                out[dst + f"attention.global_qkv.proj.{part}"] = torch.cat(
                    [take(src + f"attention.self.{n}_global.{part}") for n in ("query", "key", "value")])
            out[dst + f"attention.out.{part}"] = take(src + f"attention.output.dense.{part}")
            out[dst + f"attention_norm.{part}"] = take(src + f"attention.output.LayerNorm.{part}")
            out[dst + f"ffn_in.{part}"] = take(src + f"intermediate.dense.{part}")
            out[dst + f"ffn_out.{part}"] = take(src + f"output.dense.{part}")
            out[dst + f"ffn_norm.{part}"] = take(src + f"output.LayerNorm.{part}")
    return out


def weights_digest(folder: str) -> str:
    """A cheap content digest of the weight files: size, safetensors header, first and last MiB."""
    h = hashlib.sha256()
    for path in safetensors_files(folder):
        size = os.path.getsize(path)
        h.update(f"{os.path.basename(path)}:{size}".encode())
        with open(path, "rb") as f:
            h.update(f.read(1 << 20))
            f.seek(max(0, size - (1 << 20)))
            h.update(f.read(1 << 20))
    return h.hexdigest()


def load_encoder(model: str | None = None, *, device=None, window: int | None = None,
                 positions: str | None = None, dtype: torch.dtype | None = None, attention: str | None = None):
    """Load an encoder from a local folder (see module doc for which one); offline, safetensors only.

    ``window`` is a radius (token i sees i-w..i+w) for every layer; ``positions`` picks how positions
    beyond the checkpoint's table are made ("tile" or "restart"); ``attention`` the pattern of the long
    path ("local" by default; docs/attention.md). bf16 on CUDA, fp32 on CPU.
    """
    from longdoc.model.embed import Encoder

    folder, name = resolve_model(model)
    net = load_net(folder, device=device, window=window, positions=positions, dtype=dtype, attention=attention)
    return Encoder(net, _tokenizer(folder), name=name, fingerprint=_fingerprint(folder, net.cfg), path=folder)


def load_net(folder: str, *, device=None, window: int | None = None, positions: str | None = None,
             dtype: torch.dtype | None = None, attention: str | None = None) -> LongEncoder:
    """The bare network from a local Hugging Face folder (no tokenizer)."""
    safetensors_files(folder)  # refuse pickle-only folders before anything else
    cfg = config_from_hf(read_json(os.path.join(folder, "config.json")), window=window, positions=positions,
                         attention=attention)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    with torch.device("meta"):
        net = LongEncoder(cfg)
    state = convert_state(read_hf_state(folder), cfg)
    try:
        net.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as e:
        raise LongdocError(f"weights in {folder} do not match config.json: {str(e).splitlines()[0]}") from None
    return net.to(device=device, dtype=dtype).eval().requires_grad_(False)


def _fingerprint(folder: str, cfg: EncoderConfig) -> str:
    # The attention fields enter only for a non-default variant, so "local" keeps its earlier fingerprint.
    keep = set(PARAMS[cfg.attention]) | ({"attention"} if cfg.attention != "local" else set())
    fields = {k: v for k, v in vars(cfg).items() if k != "ffn_chunk" and (k not in ATTENTION_FIELDS or k in keep)}
    blob = json.dumps({"weights": weights_digest(folder), "config": fields}, sort_keys=True, default=list)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
