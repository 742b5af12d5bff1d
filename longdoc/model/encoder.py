"""The longdoc encoder: a BERT/Longformer-style transformer whose self-attention is a sliding window
plus a few global tokens, run over a whole document at once.

Read top to bottom: the config and its presets, position strategies, then the modules named after the
paper's parts (embeddings, self-attention, layer, encoder). Checkpoint quirks (RoBERTa's position
offset, Longformer's separate global projections, per-layer windows, renamed or split tensors) are
resolved by ``load.py`` into this config and these weights; ``forward`` has no branch for them.

Shapes: B batch, N tokens, C hidden size, H heads, D head dim (C = H * D), G global slots.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F

from longdoc.kernels import local_global_attention
from longdoc.model import variants
from longdoc.model.attention_spec import ALL_PARAMS, PARAMS


@dataclass
class EncoderConfig:
    """Architecture and runtime choices of one encoder. Windows are radii: token i sees i-w..i+w."""

    vocab_size: int = 30522
    hidden_size: int = 384
    num_layers: int = 6
    num_heads: int = 12
    intermediate_size: int = 1536
    max_positions: int = 512  # rows of the learned position table
    position_offset: int = 0  # first usable row: 0 for BERT, pad_token_id + 1 = 2 for RoBERTa/Longformer
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    pad_token_id: int = 0
    window: int | tuple[int, ...] = 128  # radius, one for all layers or one per layer
    dilation: int | tuple[int, ...] = 1
    separate_global_projections: bool = False  # Longformer's query_global/key_global/value_global
    # How positions beyond the learned table are made (see POSITION_STRATEGIES): "tile" or "restart".
    positions: str = "tile"
    # Short inputs (<= usable_positions tokens) in `embed_texts` use full attention, as the checkpoint
    # was trained; False for Longformer checkpoints, which were trained with their windows.
    full_attention_when_short: bool = True
    # Rows of the feed-forward at once (bounds the (N, 4C) activation); on the CPU also the rows of each
    # step of Layer.forward_inplace. 8192: as fast as 4096 on idle cores, faster on shared ones.
    ffn_chunk: int = 8192
    # Attention pattern of the long path (variants.py, docs/attention.md): "local" (Longformer: band +
    # globals), "strided", "lsh", "sinks", "linear" or "full"; then its parameters (0 = auto).
    attention: str = "local"
    stride: int = 0  # strided: summary column every `stride` tokens (auto: max(2w+1, ceil(sqrt(N))))
    buckets: int = 0  # lsh: hash buckets (auto: N / chunk, even)
    rounds: int = 2  # lsh: hash rounds
    chunk: int = 0  # lsh: chunk length (auto: max(w, 32))
    sinks: int = 4  # sinks: first tokens every query sees
    seed: int = 0  # lsh: seed of the random rotations
    # derived
    head_dim: int = field(init=False)
    windows: tuple[int, ...] = field(init=False)
    dilations: tuple[int, ...] = field(init=False)
    usable_positions: int = field(init=False)

    def __post_init__(self):
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of num_heads {self.num_heads}")
        if self.attention not in PARAMS:
            raise ValueError(f"attention must be one of {', '.join(PARAMS)}, got {self.attention!r}")
        if self.positions not in POSITION_STRATEGIES:
            raise ValueError(f"positions must be one of {sorted(POSITION_STRATEGIES)}, got {self.positions!r}")
        self.head_dim = self.hidden_size // self.num_heads
        self.windows = _per_layer(self.window, self.num_layers, "window")
        self.dilations = _per_layer(self.dilation, self.num_layers, "dilation")
        self.usable_positions = self.max_positions - self.position_offset

    def attention_params(self) -> dict[str, int]:
        """The parameters the configured attention variant reads."""
        return {p: getattr(self, p) for p in PARAMS[self.attention]}

    def replace(self, **changes) -> "EncoderConfig":
        """A copy with some init fields changed (derived fields are recomputed)."""
        init = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}
        init.update(changes)
        return EncoderConfig(**init)


def _per_layer(value, n, name):
    values = (value,) * n if isinstance(value, int) else tuple(int(v) for v in value)
    if len(values) != n:
        raise ValueError(f"{name} has {len(values)} entries for {n} layers")
    return values


# Named architectures. Weights come from a checkpoint (load.py); these are for building random models
# of the right size (tests, benchmarks) and document what the loader produces.
PRESETS: dict[str, dict] = {
    # all-MiniLM-L6-v2, the default model (BertModel)
    "minilm": dict(hidden_size=384, num_layers=6, num_heads=12, intermediate_size=1536, window=128),
    # BERT-base / RoBERTa-base size
    "base": dict(hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072, window=256),
    # allenai/longformer-base-4096: HF attention_window 512 -> radius 256, 4096 positions after offset 2
    "longformer-base": dict(vocab_size=50265, hidden_size=768, num_layers=12, num_heads=12,
                            intermediate_size=3072, max_positions=4098, position_offset=2,
                            type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=1, window=256,
                            separate_global_projections=True, full_attention_when_short=False),
}


def preset(name: str, **overrides) -> EncoderConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(sorted(PRESETS))}")
    return EncoderConfig(**{**PRESETS[name], **overrides})


# ---------------------------------------------------------------------------------------------------
# Positions. The checkpoint learned `P = usable_positions` position vectors; a document is longer.
# Each strategy maps token index -> row of the table, in [offset, offset + P).


def tile_positions(n: int, P: int, starts=None, device=None) -> torch.Tensor:
    """Longformer paper: copy the learned positions over and over, position i -> i mod P."""
    return torch.arange(n, device=device) % P


def restart_positions(n: int, P: int, starts=None, device=None) -> torch.Tensor:
    """Positions restart at 0 at each segment start (token indices); tiled within a long segment."""
    idx = torch.arange(n, device=device)
    if starts is None or len(starts) == 0:
        return idx % P
    s = torch.as_tensor(sorted(set(int(x) for x in starts) | {0}), device=device)
    s = s[(s >= 0) & (s < n)]
    seg_start = s[torch.searchsorted(s, idx, right=True) - 1]  # (n,) start of the segment holding i
    return (idx - seg_start) % P


POSITION_STRATEGIES = {"tile": tile_positions, "restart": restart_positions}


def position_ids(cfg: EncoderConfig, n: int, *, starts=None, mode: str | None = None, device=None):
    """(n,) rows of the position table for n tokens under `mode` (default: the config's)."""
    mode = mode or cfg.positions
    if mode not in POSITION_STRATEGIES:
        raise ValueError(f"positions must be one of {sorted(POSITION_STRATEGIES)}, got {mode!r}")
    return POSITION_STRATEGIES[mode](n, cfg.usable_positions, starts, device) + cfg.position_offset


# ---------------------------------------------------------------------------------------------------
# Modules


class Embeddings(nn.Module):
    """word + position + token type 0, then LayerNorm (BERT/RoBERTa/Longformer share this)."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.word = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position = nn.Embedding(cfg.max_positions, cfg.hidden_size)
        # Only type 0 is ever used (single segment); the loader stores row 0 of the type table.
        self.type0 = nn.Parameter(torch.zeros(cfg.hidden_size))
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, ids, pos):  # (B, N), (B, N) -> (B, N, C)
        return self.norm(self.word(ids) + self.position(pos) + self.type0)


class LocalQKV(nn.Module):
    """Global rows reuse the local projections (BERT-family checkpoints converted Longformer-style)."""

    def forward(self, x, global_idx):
        return None  # local_global_attention then uses q, k, v for the global rows


class GlobalQKV(nn.Module):
    """Longformer's separate projections for global attention rows: query_global/key_global/value_global."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.proj = nn.Linear(cfg.hidden_size, 3 * cfg.hidden_size)  # fused (q_g | k_g | v_g)
        self.heads, self.head_dim = cfg.num_heads, cfg.head_dim

    def forward(self, x, global_idx):  # (B, N, C), (B, G) -> ((B,H,G,D), (B,H,N,D), (B,H,N,D))
        if global_idx is None:
            return None
        B, N, C = x.shape
        qkv = self.proj(x).view(B, N, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (3, B, H, N, D)
        q, k, v = qkv.unbind(0)
        gather = global_idx.clamp(min=0)[:, None, :, None].expand(B, self.heads, -1, self.head_dim)
        return torch.gather(q, 2, gather), k, v  # q gathered at the global slots: (B, H, G, D)


class SelfAttention(nn.Module):
    """Fused QKV projection, sliding-window + global attention (or the configured variant), output
    projection. A `window` override (full attention on short inputs) always takes the kernel."""

    def __init__(self, cfg: EncoderConfig, layer: int):
        super().__init__()
        self.heads, self.head_dim = cfg.num_heads, cfg.head_dim
        self.window, self.dilation = cfg.windows[layer], cfg.dilations[layer]
        self.qkv = nn.Linear(cfg.hidden_size, 3 * cfg.hidden_size)  # (query | key | value)
        self.global_qkv = GlobalQKV(cfg) if cfg.separate_global_projections else LocalQKV()
        self.out = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.variant, self.variant_params = cfg.attention, cfg.attention_params()

    def forward(self, x, global_idx, key_padding_mask, window=None):  # (B, N, C) -> (B, N, C)
        B, N, C = x.shape
        o = self.attend(self.qkv(x), x, global_idx, key_padding_mask, window)  # (B, H, N, D)
        return self.out(o.transpose(1, 2).reshape(B, N, C))

    def attend(self, qkv, x, global_idx, key_padding_mask, window=None, out=None):
        """(B, N, 3C) fused projections of x -> attention output (B, H, N, D); with `out` (a (B, N, H, D)
        buffer) the output is written there and returned as a view of it."""
        B, N, _ = qkv.shape
        q, k, v = qkv.view(B, N, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)  # (B, H, N, D)
        kw = dict(window=self.window if window is None else window, dilation=self.dilation,
                  global_idx=global_idx, key_padding_mask=key_padding_mask,
                  global_qkv=self.global_qkv(x, global_idx))
        if window is not None or self.variant == "local":
            return local_global_attention(q, k, v, **kw, out=out)
        o = variants.attention(self.variant, q, k, v, **self.variant_params, **kw)
        if out is None:
            return o
        out.copy_(o.transpose(1, 2))
        return out.transpose(1, 2)


class Layer(nn.Module):
    """Post-LayerNorm transformer block (BERT): x = LN(x + attn(x)); x = LN(x + FFN(x))."""

    def __init__(self, cfg: EncoderConfig, layer: int):
        super().__init__()
        self.attention = SelfAttention(cfg, layer)
        self.attention_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.ffn_in = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.ffn_out = nn.Linear(cfg.intermediate_size, cfg.hidden_size)
        self.ffn_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.act = _ACTIVATIONS[cfg.hidden_act]
        self.act_ = _ACTIVATIONS_INPLACE[cfg.hidden_act]
        self.ffn_chunk = cfg.ffn_chunk

    def forward(self, x, global_idx, key_padding_mask, window=None):  # (B, N, C) -> (B, N, C)
        x = self.attention_norm(x + self.attention(x, global_idx, key_padding_mask, window))
        flat = x.view(-1, x.shape[-1])  # (B*N, C); the FFN is per token, so rows go in chunks
        out = torch.empty_like(flat)
        for s in range(0, flat.shape[0], self.ffn_chunk):
            h = flat[s : s + self.ffn_chunk]
            out[s : s + self.ffn_chunk] = self.ffn_norm(h + self.ffn_out(self.act(self.ffn_in(h))))
        return out.view_as(x)

    def forward_inplace(self, x, global_idx, key_padding_mask, window, qkv, attn, hidden):
        """The same block for CPU inference, overwriting x (B, N, C) in place; qkv (B*N, 3C), attn
        (B, N, H, D) and hidden (ffn_chunk, I) are buffers shared by all layers.

        On a CPU the cost beyond the arithmetic is whole-sequence tensors (100 MB each at 64k tokens):
        each new one is fresh pages from the OS (page faults took a fifth of the time), and each pass
        over one streams it through RAM. So the projection and the attention write into the reused
        buffers, and everything after the attention (output projection, residual, LayerNorm, FFN,
        residual, LayerNorm) runs per chunk of rows, in cache, ending in x's own rows (x is no longer
        needed once qkv holds its projections), with as few passes over a chunk as eager ops allow."""
        B, N, C = x.shape
        att, step = self.attention, self.ffn_chunk
        rows = x.view(B * N, C)
        for s in range(0, B * N, step):
            torch.addmm(att.qkv.bias, rows[s : s + step], att.qkv.weight.t(), out=qkv[s : s + step])
        att.attend(qkv.view(B, N, 3 * C), x, global_idx, key_padding_mask, window, out=attn)
        a = attn.view(B * N, C)  # heads already merged: attn is in (B, N, H, D) memory
        for s in range(0, B * N, step):
            xs = rows[s : s + step]
            # The residuals are summed in place by addmm_ (beta = 1): no bias fill, no extra add.
            xs.add_(att.out.bias).addmm_(a[s : s + step], att.out.weight.t())  # x + attention(x)
            h = self.attention_norm(xs)
            f = self.act_(torch.addmm(self.ffn_in.bias, h, self.ffn_in.weight.t(), out=hidden[: len(xs)]))
            h.add_(self.ffn_out.bias).addmm_(f, self.ffn_out.weight.t())  # h + FFN(h)
            _layer_norm_into(self.ffn_norm, h, xs)


def _layer_norm_into(norm: nn.LayerNorm, x, out):
    """norm(x) written into `out` (rows, C), with no new (rows, C) tensor and no copy."""
    stats = x.new_empty(2, x.shape[0], 1)  # mean and 1/std, unused
    torch.ops.aten.native_layer_norm.out(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps,
                                         out0=out, out1=stats[0], out2=stats[1])


def _gelu_tanh(x):
    return F.gelu(x, approximate="tanh")


_ACTIVATIONS = {"gelu": F.gelu, "gelu_new": _gelu_tanh, "gelu_pytorch_tanh": _gelu_tanh, "relu": F.relu}
# In-place forms for the CPU inference path (the same kernels, without a new (rows, I) tensor).
_ACTIVATIONS_INPLACE = {
    "gelu": torch.ops.aten.gelu_, "gelu_new": partial(torch.ops.aten.gelu_, approximate="tanh"),
    "gelu_pytorch_tanh": partial(torch.ops.aten.gelu_, approximate="tanh"), "relu": torch.relu_,
}


class LongEncoder(nn.Module):
    """Token ids -> contextual token states, every layer a sliding window plus global tokens."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        if cfg.hidden_act not in _ACTIVATIONS:
            raise ValueError(f"unsupported activation {cfg.hidden_act!r}")
        self.cfg = cfg
        self.embeddings = Embeddings(cfg)
        self.layers = nn.ModuleList(Layer(cfg, i) for i in range(cfg.num_layers))

    def forward(self, ids, pos, *, global_mask=None, key_padding_mask=None, window=None):
        """ids, pos: (B, N) long; global_mask, key_padding_mask: (B, N) bool or None; window: a radius
        for every layer instead of the configured ones (full attention on short inputs). -> (B, N, C)"""
        global_idx = _global_slots(global_mask)  # (B, G) with -1 in unused slots, or None
        # CPU inference runs layers in place over shared buffers (Layer.forward_inplace). Autograd, the
        # GPU, and swapped attention modules (longdoc.shard's hook contract) take the plain forward.
        if not ids.is_cuda and not torch.is_grad_enabled() and all(
                type(layer.attention) is SelfAttention for layer in self.layers):
            return self._forward_inplace(ids, pos, global_idx, key_padding_mask, window)
        x = self.embeddings(ids, pos)  # (B, N, C)
        for layer in self.layers:
            x = layer(x, global_idx, key_padding_mask, window)
        return x

    def _forward_inplace(self, ids, pos, global_idx, key_padding_mask, window):
        cfg = self.cfg
        (B, N), C, step = ids.shape, cfg.hidden_size, cfg.ffn_chunk
        new = partial(torch.empty, dtype=self.embeddings.word.weight.dtype, device=ids.device)
        x = new(B, N, C)
        for s in range(0, N, step):  # embeddings by chunks too: no whole-sequence intermediates
            x[:, s : s + step] = self.embeddings(ids[:, s : s + step], pos[:, s : s + step])
        bufs = new(B * N, 3 * C), new(B, N, cfg.num_heads, cfg.head_dim), new(min(step, B * N), cfg.intermediate_size)
        for layer in self.layers:
            layer.forward_inplace(x, global_idx, key_padding_mask, window, *bufs)
        return x


def _global_slots(global_mask):
    """(B, N) bool -> (B, G) int64 positions, -1 padding the rows with fewer globals; None if none."""
    if global_mask is None or not bool(global_mask.any()):
        return None
    counts = global_mask.sum(1)  # (B,)
    G = int(counts.max())
    # Stable sort puts the True positions first, in order.
    order = torch.argsort((~global_mask).to(torch.int8), dim=1, stable=True)[:, :G]  # (B, G)
    slot = torch.arange(G, device=global_mask.device)[None, :]
    return torch.where(slot < counts[:, None], order, torch.full_like(order, -1))


def build(cfg: EncoderConfig) -> LongEncoder:
    """A randomly initialised encoder (BERT's init: normal(0, 0.02), zero biases, unit LayerNorm)."""
    model = LongEncoder(cfg)
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)
    return model.eval()


ATTENTION_FIELDS = ("attention",) + ALL_PARAMS  # config fields that only matter for a non-local variant

__all__ = ["EncoderConfig", "ATTENTION_FIELDS", "PRESETS", "preset", "position_ids", "POSITION_STRATEGIES",
           "LongEncoder", "build"]
