"""Short-text (question) vectors without torch: a numpy forward pass of a BERT-family checkpoint.

Why: a question over an indexed tree must answer in well under a second from a fresh process, and
``import torch`` alone costs about 2 s on a small CPU. A question fits in one window of the checkpoint's
positions, where ``Encoder.embed_texts`` runs full attention (as the checkpoint was trained), so the
same vector is a plain transformer forward: this module computes it from the same safetensors file
(memory-mapped, so only the rows and matrices used are read) and the same ``tokenizer.json``, with the
same pooling (mean over every token, special tokens included, then L2 normalisation).

It agrees with the torch path to float32 rounding (tests/test_numpy_embed.py checks 1e-5). What it does
not cover returns None, and the caller falls back to the torch encoder: Longformer checkpoints (trained
with their windows even on short inputs), texts longer than the position table, folders without a
``tokenizer.json``, weight layouts or activations the loader would reject (the torch path then gives
its one-line error).
"""
from __future__ import annotations

import json
import math
import os

import numpy as np

from longdoc.model.files import read_json, safetensors_files

# Checkpoint families whose short-input path is full attention (load.config_from_hf): BERT and
# RoBERTa-family; their position rows start at 0 (BERT) or pad_token_id + 1 (RoBERTa's offset).
_FAMILY_OFFSET = {"bert": False, "roberta": True, "xlm-roberta": True, "camembert": True}
_PREFIXES = ("", "bert.", "roberta.", "longformer.", "model.")
_DTYPES = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "BF16": "<u2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
           "I8": "i1", "U8": "u1", "BOOL": "?"}


def _erf(x: np.ndarray) -> np.ndarray:
    """erf to about 1e-14 (float64), vectorised: numpy has none and scipy costs an import.

    Maclaurin series below |x| = 2.5, continued fraction for erfc above (both converge fast there).
    """
    x = np.asarray(x, dtype=np.float64)
    ax = np.abs(x)
    out = np.empty_like(x)
    small = ax < 2.5
    if small.any():
        z = x[small]
        z2 = z * z
        term, total = z.copy(), z.copy()
        for n in range(1, 60):  # |x| < 2.5: terms fall below 1e-16 of the sum by n ~ 45
            term = term * (-z2) / n
            total += term / (2 * n + 1)
        out[small] = total * (2.0 / math.sqrt(math.pi))
    big = ~small
    if big.any():
        z = ax[big]
        # erfc(z) = exp(-z^2)/sqrt(pi) * 1/(z + 1/2 / (z + 1 / (z + 3/2 / (z + ...)))), evaluated
        # bottom-up; 60 levels are ample for z >= 2.5.
        f = z.copy()
        for n in range(60, 0, -1):
            f = z + (n / 2.0) / f
        erfc = np.exp(-z * z) / math.sqrt(math.pi) / f
        out[big] = np.sign(x[big]) * (1.0 - erfc)
    return out


def _gelu(x):
    return (0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))).astype(np.float32)


def _gelu_tanh(x):
    return (0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))).astype(np.float32)


_ACTIVATIONS = {"gelu": _gelu, "gelu_new": _gelu_tanh, "gelu_pytorch_tanh": _gelu_tanh,
                "relu": lambda x: np.maximum(x, 0)}


def read_safetensors(path: str) -> dict[str, np.ndarray]:
    """Every tensor of a safetensors file as a read-only array over a memory map (no copy for float32).

    The format (https://huggingface.co/docs/safetensors): an 8-byte little-endian header length, a
    JSON header naming each tensor's dtype, shape and byte range, then the data.
    """
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n)
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        dt = _DTYPES.get(t["dtype"])
        if dt is None:
            raise ValueError(f"tensor {name} has dtype {t['dtype']}")
        a, b = t["data_offsets"]
        arr = data[a:b].view(dt).reshape(t["shape"])
        if t["dtype"] == "BF16":  # bfloat16 is the top half of a float32: widening is exact
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        out[name] = arr
    return out


class NumpyEmbedder:
    """A BERT-family checkpoint's short-text embeddings in numpy (see module doc). Build it with
    ``NumpyEmbedder.load(folder)``, which returns None for what it does not cover."""

    def __init__(self, hf: dict, w: dict[str, np.ndarray], tokenizer):
        """``w``: the checkpoint's tensors under their Hugging Face names, model-class prefix removed."""
        self.tokenizer = tokenizer
        self.hidden = self.dim = int(hf["hidden_size"])
        self.heads = int(hf["num_attention_heads"])
        self.eps = float(hf.get("layer_norm_eps", 1e-12))
        self.act = _ACTIVATIONS[hf.get("hidden_act", "gelu")]
        pad = int(hf.get("pad_token_id") or 0)
        self.offset = pad + 1 if _FAMILY_OFFSET[hf["model_type"]] else 0
        self.limit = int(hf["max_position_embeddings"]) - self.offset  # = EncoderConfig.usable_positions

        def f32(name):  # a memory-mapped float32 tensor stays a view: nothing is read until used
            return np.asarray(w[name], dtype=np.float32)

        self.word = w["embeddings.word_embeddings.weight"]  # rows gathered per text
        self.position = w["embeddings.position_embeddings.weight"]
        types = w.get("embeddings.token_type_embeddings.weight")
        self.type0 = np.asarray(types[0], dtype=np.float32) if types is not None else np.float32(0)
        self.emb_norm = (f32("embeddings.LayerNorm.weight"), f32("embeddings.LayerNorm.bias"))
        self.blocks = []
        for i in range(int(hf["num_hidden_layers"])):
            p = f"encoder.layer.{i}."
            qkv = [p + f"attention.self.{t}" for t in ("query", "key", "value")]
            self.blocks.append(dict(
                # one (C, 3C) matrix: fewer, larger products than three
                qkv_w=np.concatenate([f32(n + ".weight") for n in qkv]).T,
                qkv_b=np.concatenate([f32(n + ".bias") for n in qkv]),
                out=(f32(p + "attention.output.dense.weight").T, f32(p + "attention.output.dense.bias")),
                attn_norm=(f32(p + "attention.output.LayerNorm.weight"), f32(p + "attention.output.LayerNorm.bias")),
                ffn_in=(f32(p + "intermediate.dense.weight").T, f32(p + "intermediate.dense.bias")),
                ffn_out=(f32(p + "output.dense.weight").T, f32(p + "output.dense.bias")),
                ffn_norm=(f32(p + "output.LayerNorm.weight"), f32(p + "output.LayerNorm.bias")),
            ))

    @classmethod
    def load(cls, folder: str) -> "NumpyEmbedder | None":
        """The embedder for a model folder, or None when the torch path must be used instead."""
        try:
            hf = read_json(os.path.join(folder, "config.json"))
            if (hf.get("model_type") not in _FAMILY_OFFSET
                    or hf.get("position_embedding_type", "absolute") != "absolute"
                    or hf.get("hidden_act", "gelu") not in _ACTIVATIONS
                    or int(hf["hidden_size"]) % int(hf["num_attention_heads"])):
                return None
            if not os.path.exists(os.path.join(folder, "tokenizer.json")):
                return None  # the torch path builds one through transformers
            state = {}
            for path in safetensors_files(folder):
                for k, v in read_safetensors(path).items():  # old TF-converted names, as load.convert_state
                    k = k.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
                    state[k] = v
            prefix = next((p for p in _PREFIXES if p + "embeddings.word_embeddings.weight" in state), None)
            if prefix is None:
                return None
            w = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            from longdoc.model.files import _tokenizer

            return cls(hf, w, _tokenizer(folder))
        except Exception:  # a missing tensor, an odd dtype...: the torch path decides and reports it
            return None

    def _norm(self, x, wb):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + self.eps) * wb[0] + wb[1]

    def forward(self, ids: list[int]) -> np.ndarray:
        """(N,) token ids (special tokens included) -> (N, hidden) float32 states, full attention."""
        n, H, C = len(ids), self.heads, self.hidden
        D = C // H
        x = (np.asarray(self.word[np.asarray(ids, dtype=np.int64)], dtype=np.float32)
             + np.asarray(self.position[self.offset:self.offset + n], dtype=np.float32) + self.type0)
        x = self._norm(x, self.emb_norm)
        scale = np.float32(1.0 / math.sqrt(D))
        for b in self.blocks:
            qkv = (x @ b["qkv_w"] + b["qkv_b"]).reshape(n, 3, H, D).transpose(1, 2, 0, 3)  # (3, H, N, D)
            s = (qkv[0] @ qkv[1].transpose(0, 2, 1)) * scale  # (H, N, N)
            s = np.exp(s - s.max(-1, keepdims=True))
            o = (s / s.sum(-1, keepdims=True)) @ qkv[2]  # (H, N, D)
            a = o.transpose(1, 0, 2).reshape(n, C) @ b["out"][0] + b["out"][1]
            x = self._norm(x + a, b["attn_norm"])
            h = self.act(x @ b["ffn_in"][0] + b["ffn_in"][1])
            x = self._norm(x + h @ b["ffn_out"][0] + b["ffn_out"][1], b["ffn_norm"])
        return x.astype(np.float32)

    def embed_texts(self, texts: list[str]) -> list[np.ndarray | None]:
        """Each text's L2-normalised mean token state, (dim,) float32; None for a text longer than the
        position table (the torch encoder's long path handles those)."""
        out: list[np.ndarray | None] = []
        with _one_blas_thread():
            for enc in self.tokenizer.encode_batch(list(texts)):
                if len(enc.ids) > self.limit:
                    out.append(None)
                    continue
                mean = self.forward(enc.ids).mean(0)
                out.append((mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32))  # F.normalize
        return out


def _one_blas_thread():
    """These products are tiny (a question is tens of tokens): on a busy 2-core machine a threaded BLAS
    made the forward 6-12x slower (0.23-0.45 s against 37 ms single-threaded), so hold BLAS to one thread
    while it runs. Without threadpoolctl (an older install) it only runs slower."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")
