"""Sharding as a transform on a built ``LongEncoder`` (like gpt-fast's ``tp.py``): the model's code is
untouched; each layer's ``attention`` module is swapped for one that runs the same projections with the
sharded attention (``attention.py``). Embeddings, LayerNorms and the feed-forward are per token, so
they run unchanged on a shard's rows.

Three ways to run the encoder over a sequence longer than one device holds:

* ``shard_encoder(model)`` -> ``ShardedEncoder``: inside an initialised process group, each rank calls
  it with its own contiguous rows; differentiable (halo gradients go back to their owners).
* ``encode_on_devices(net, ids, ..., devices=N)``: spawns N local ranks (``launch``), rank 0 gathers
  the whole (N, C) output. Under torchrun the same call spans machines.
* ``encode_sequential(net, ids, ..., shard_len=K)``: one device, shards one after another with the same
  halo logic; the activations of the shards not being computed stay in host memory.

What this needs from ``longdoc.model.encoder`` (the hook contract): ``model.embeddings(ids, pos)``,
``model.layers``, each layer calling ``self.attention(x, global_idx, key_padding_mask, window)``, and
the attention module's ``qkv``, ``out``, ``global_qkv`` (``.proj`` when separate), ``heads``,
``head_dim``, ``window``, ``dilation``.
"""
from __future__ import annotations

import math
from contextlib import contextmanager

import torch
import torch.distributed as dist
import torch.nn as nn

from longdoc.shard.attention import (ShardLayout, ShardSpec, band, even_bounds, global_partial, halo_pieces, merge_partials, sharded_attention)


class _ShardAttentionBase(nn.Module):
    """Adopts a SelfAttention's projections under the same names, so state-dict keys do not change."""

    def __init__(self, attn: nn.Module):
        super().__init__()
        self.heads, self.head_dim = attn.heads, attn.head_dim
        self.window, self.dilation = attn.window, attn.dilation
        self.qkv, self.global_qkv, self.out = attn.qkv, attn.global_qkv, attn.out
        self._original = (attn,)  # a tuple, so it is not registered as a submodule
        self.separate = getattr(attn.global_qkv, "proj", None) is not None

    def project(self, x):
        """(B, n, C) -> q, k, v, qG, kG, vG, each (B, H, n, D); the last three are q, k, v unless the
        model has separate global projections."""
        B, n, C = x.shape
        q, k, v = self.qkv(x).view(B, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        if not self.separate:
            return q, k, v, q, k, v
        qG, kG, vG = self.global_qkv.proj(x).view(B, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        return q, k, v, qG, kG, vG

    def merge_heads(self, o):  # (B, H, n, D) -> (B, n, C) through the output projection
        B, H, n, D = o.shape
        return self.out(o.transpose(1, 2).reshape(B, n, H * D))


class _State:
    """Per-forward facts shared by every layer's swapped attention."""

    layout: ShardLayout | None = None
    rank: int = 0
    group = None


class ShardedSelfAttention(_ShardAttentionBase):
    """SelfAttention over this rank's rows, seeing the whole sequence through the sharded attention."""

    def __init__(self, attn: nn.Module, state: _State):
        super().__init__(attn)
        self.state = state

    def forward(self, x, global_idx=None, key_padding_mask=None, window=None):  # (B, n, C) -> (B, n, C)
        st = self.state
        if st.layout is None:
            raise RuntimeError("a sharded layer ran outside ShardedEncoder.forward")
        w = self.window if window is None else window
        spec = ShardSpec(st.layout, st.rank, w, self.dilation, 1.0 / math.sqrt(self.head_dim), st.group)
        q, k, v, qG, kG, vG = self.project(x)
        o = sharded_attention(q, k, v, spec, global_qkv=(qG, kG, vG) if self.separate else None)
        return self.merge_heads(o)


class ShardedEncoder(nn.Module):
    """The encoder over this rank's contiguous rows of a longer sequence (rank order = shard order).

    ``forward(ids, pos, global_mask=None, key_padding_mask=None, window=None)`` takes this rank's
    (B, n) slices and returns its (B, n, C) rows of the single-process result. Shards may have any
    length (0 included); one small metadata all-gather per forward, then per layer a halo exchange and,
    when there are global tokens, two tiny all-gathers."""

    def __init__(self, model: nn.Module, group=None):
        super().__init__()
        self.model = model
        self.group = group
        self._state = _State()
        self._state.group = group
        for layer in model.layers:
            if not isinstance(layer.attention, ShardedSelfAttention):
                layer.attention = ShardedSelfAttention(layer.attention, self._state)

    def forward(self, ids, pos, *, global_mask=None, key_padding_mask=None, window=None):
        B, n = ids.shape
        st = self._state
        st.rank = dist.get_rank(self.group)
        st.layout = ShardLayout.from_local(n, global_mask, key_padding_mask, batch=B, device=ids.device,
                                           group=self.group)
        try:
            return self.model(ids, pos, global_mask=global_mask, key_padding_mask=key_padding_mask,
                              window=window)
        finally:
            st.layout = None


def shard_encoder(model: nn.Module, group=None) -> ShardedEncoder:
    """Rewrites `model` in place for sequence parallelism over `group`; returns the module to call."""
    return ShardedEncoder(model, group)


def unshard_encoder(model: nn.Module) -> nn.Module:
    """Puts the original attention modules back (the parameters were shared all along)."""
    for layer in model.layers:
        if isinstance(layer.attention, _ShardAttentionBase):
            layer.attention = layer.attention._original[0]
    return model


# ---------------------------------------------------------------------------------------------------
# One device, shards one after another.


class _SequentialAttention(_ShardAttentionBase):
    """One shard's attention given the halo K|V and the global tile computed beforehand; collects the
    shard's partial global rows for the log-sum-exp merge."""

    def __init__(self, attn, layout, shard, tile, halo, window, partials):
        super().__init__(attn)
        self.layout, self.shard, self.tile, self.halo = layout, shard, tile, halo
        self.w, self.partials = window, partials

    def forward(self, x, global_idx=None, key_padding_mask=None, window=None):
        lay, D = self.layout, self.head_dim
        s, e = lay.shard(self.shard)
        kv_l, kv_r = self.halo
        hl, hr = kv_l.shape[2], kv_r.shape[2]
        q, k, v, qG, kG, vG = self.project(x)
        o = band(q, k, v, lay.excluded[:, s - hl : e + hr], self.tile[..., :D], self.tile[..., D : 2 * D],
                 lay.tile_valid, lambda: self.halo, hl=hl, hr=hr, window=self.w, dilation=self.dilation,
                 scale=1.0 / math.sqrt(D))
        if self.tile.shape[2]:
            self.partials.append(global_partial(self.tile[..., 2 * D :], kG, vG, lay.key_valid[:, s:e],
                                                1.0 / math.sqrt(D)))
        return self.merge_heads(o)


class _Precomputed(_ShardAttentionBase):
    """The attention output already known (the merged global rows): only the output projection."""

    def __init__(self, attn, o):
        super().__init__(attn)
        self.o = o

    def forward(self, x, global_idx=None, key_padding_mask=None, window=None):
        return self.merge_heads(self.o)


@contextmanager
def _swapped(layer, attn):
    original = layer.attention
    layer.attention = attn
    try:
        yield layer
    finally:
        layer.attention = original


@torch.inference_mode()
def encode_sequential(model: nn.Module, ids, pos, *, global_mask=None, key_padding_mask=None,
                      shard_len: int, window=None, device=None) -> torch.Tensor:
    """The encoder's (B, N, C) output computed shard by shard on one device, equal to ``model(...)``.

    ``ids, pos`` (B, N) and the masks stay on the host; the device holds one shard of ``shard_len``
    rows (plus its halo, the global tile and the edge rows of every shard) at a time. Per layer: the
    edge K/V of every shard and the global tile are projected first (2h + G rows per shard), then each
    shard runs the layer once; the global rows, which need every shard's keys, are merged by
    log-sum-exp and their layer output recomputed at the end (their MLP is per token)."""
    dev = device or next(model.parameters()).device
    B, N = ids.shape
    if shard_len < 1:
        raise ValueError(f"shard_len must be >= 1, got {shard_len}")
    bounds = tuple(range(0, N, shard_len)) + (N,) if N else (0, 0)
    lay = ShardLayout.build(bounds, global_mask, key_padding_mask, batch=B, device=dev)
    pin = dev.type == "cuda"
    host = lambda t: t.to("cpu").pin_memory() if pin else t.to("cpu")  # noqa: E731
    xs = [host(model.embeddings(ids[:, s:e].to(dev), pos[:, s:e].to(dev))) for s, e in zip(bounds, bounds[1:])]
    S = lay.tile_pos.shape[1]
    tpos = lay.tile_pos.cpu()

    def rows(xs_, pos_):  # (B, G) positions (-1 unused) -> (B, G, C) rows of the host activations
        C = xs_[0].shape[-1]
        out = torch.zeros(B, pos_.shape[1], C, dtype=xs_[0].dtype)
        for (s, e), x in zip(zip(bounds, bounds[1:]), xs_):
            hit = (pos_ >= s) & (pos_ < e)
            b, g = torch.nonzero(hit, as_tuple=True)
            out[b, g] = x[b, pos_[b, g] - s]
        return out

    for layer in model.layers:
        attn = layer.attention
        w = attn.window if window is None else window
        h = w * attn.dilation
        proj = _ShardAttentionBase(attn)
        # Edges: the first and last min(h, n) rows' K|V of every shard, and the global tile.
        heads, tails = [], []
        for x in xs:
            m = min(h, x.shape[1])
            _, k, v, *_ = proj.project(x[:, :m].to(dev))
            heads.append(torch.cat([k, v], -1))
            _, k, v, *_ = proj.project(x[:, x.shape[1] - m :].to(dev))
            tails.append(torch.cat([k, v], -1))
        x_glob = rows(xs, tpos)  # (B, S, C) layer inputs of the global slots
        q, k, v, qG, *_ = proj.project(x_glob.to(dev))
        tile = torch.cat([k, v, qG], -1)  # (B, H, S, 3D)

        partials, new = [], []
        for i, x in enumerate(xs):
            s, e = lay.shard(i)
            left, right = [], []
            for p, a, b in halo_pieces(bounds, i, h):
                ps, pe = lay.shard(p)
                if a < s:  # from the tail of shard p, which starts at pe - len(tail)
                    t0 = pe - tails[p].shape[2]
                    left.append(tails[p][:, :, a - t0 : b - t0])
                else:
                    right.append(heads[p][:, :, a - ps : b - ps])
            empty = tile.new_zeros(B, tile.shape[1], 0, 2 * attn.head_dim)
            halo = (torch.cat(left, 2) if left else empty, torch.cat(right, 2) if right else empty)
            seq = _SequentialAttention(attn, lay, i, tile, halo, w, partials)
            with _swapped(layer, seq):
                new.append(host(layer(x.to(dev), None, None, window)))
        if S:
            O, _ = merge_partials(torch.stack([o for o, _ in partials]), torch.stack([l for _, l in partials]))
            with _swapped(layer, _Precomputed(attn, O.to(q.dtype))):
                fixed = layer(x_glob.to(dev), None, None, window).cpu()  # (B, S, C)
            valid = lay.tile_valid.cpu()
            for (s, e), x in zip(zip(bounds, bounds[1:]), new):
                b, g = torch.nonzero(valid & (tpos >= s) & (tpos < e), as_tuple=True)
                x[b, tpos[b, g] - s] = fixed[b, g].to(x.dtype)
        xs = new
    return torch.cat(xs, 1) if xs else torch.zeros(B, 0, model.cfg.hidden_size)


# ---------------------------------------------------------------------------------------------------
# Ranks: every rank holds the whole (small) token input; each encodes its rows; rank 0 gathers.


@torch.inference_mode()
def encode_shard(model: nn.Module, ids, pos, *, global_mask=None, key_padding_mask=None, group=None,
                 bounds=None, gather=True):
    """Inside a process group: this rank encodes its even share of the (B, N) input every rank holds.
    With ``gather`` rank 0 returns the whole (B, N, C) float32 output on the CPU and the other ranks
    None; without, each rank returns its own rows."""
    R, r = dist.get_world_size(group), dist.get_rank(group)
    B, N = ids.shape
    bounds = bounds or even_bounds(N, R)
    s, e = bounds[r], bounds[r + 1]
    dev = next(model.parameters()).device
    sl = lambda t: None if t is None else t[:, s:e].to(dev)  # noqa: E731
    net = model if isinstance(model, ShardedEncoder) else shard_encoder(model, group)
    out = net(sl(ids), sl(pos), global_mask=sl(global_mask), key_padding_mask=sl(key_padding_mask)).float()
    if not gather:
        return out
    # Point to point to rank 0 (every backend has it; shard lengths differ).
    if r != 0:
        dist.send(out.contiguous(), _global(group, 0), group=group)
        return None
    parts = [out.cpu()]
    for p in range(1, R):
        buf = out.new_empty(B, bounds[p + 1] - bounds[p], out.shape[-1])
        dist.recv(buf, _global(group, p), group=group)
        parts.append(buf.cpu())
    return torch.cat(parts, 1)


def _global(group, p):
    return p if group is None else dist.get_global_rank(group, p)


def _encode_worker(cfg, state, ids, pos, global_mask, key_padding_mask):
    from longdoc.model.encoder import LongEncoder

    dev = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    net = LongEncoder(cfg)
    net.load_state_dict(state)
    net.to(dev).eval()
    return encode_shard(net, ids, pos, global_mask=global_mask, key_padding_mask=key_padding_mask)


def encode_on_devices(model: nn.Module, ids, pos, *, global_mask=None, key_padding_mask=None,
                      devices: int, backend=None) -> torch.Tensor:
    """``model(ids, pos, ...)`` as (B, N, C) float32 on the CPU, computed by `devices` ranks (local
    processes, or torchrun's). Each rank rebuilds the model from its config and weights."""
    from longdoc.shard.launch import launch

    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    cpu = lambda t: None if t is None else t.cpu()  # noqa: E731
    return launch(_encode_worker, devices, model.cfg, state, ids.cpu(), pos.cpu(), cpu(global_mask),
                  cpu(key_padding_mask), backend=backend)


def encoder_on_devices(encoder, tokens, *, devices: int, global_mask=None, position_ids=None,
                       positions=None, segment_starts=None, backend=None) -> torch.Tensor:
    """``Encoder.encode`` spread over `devices` ranks: (N, C) float32 on the CPU."""
    n = len(tokens)
    if position_ids is None:
        position_ids = encoder.position_ids(n, positions=positions, segment_starts=segment_starts)
    gm = None if global_mask is None else global_mask.bool()[None]
    out = encode_on_devices(encoder.net, tokens.ids[None], position_ids.cpu()[None], global_mask=gm,
                            devices=devices, backend=backend)
    return out[0]


# ---------------------------------------------------------------------------------------------------
# The Encoder API (longdoc.model.Encoder) with sharding: what `longdoc ask --devices N` uses.


def _sharded_encoder_class():
    from longdoc.model.embed import Encoder

    class ShardedEncode(Encoder):
        """An ``Encoder`` whose ``encode`` (and so ``embed_spans``) runs sharded; same results, same
        fingerprint. ``devices > 1``: that many local ranks; ``shard_tokens``: one device, shards of
        that many tokens one after another."""

        def __init__(self, enc, devices, shard_tokens, backend):
            super().__init__(enc.net, enc.tokenizer, name=enc.name, fingerprint=enc.fingerprint, path=enc.path)
            self.devices, self.shard_tokens, self.backend = devices, shard_tokens, backend

        @torch.inference_mode()
        def encode(self, tokens, *, global_mask=None, position_ids=None, positions=None, segment_starts=None):
            n = len(tokens)
            if position_ids is None:
                position_ids = self.position_ids(n, positions=positions, segment_starts=segment_starts)
            gm = None if global_mask is None else global_mask.bool().cpu()[None]
            ids, pos = tokens.ids[None], position_ids.cpu()[None]
            if self.devices > 1:
                out = encode_on_devices(self.net, ids, pos, global_mask=gm, devices=self.devices, backend=self.backend)
            elif self.shard_tokens and n > self.shard_tokens:
                out = encode_sequential(self.net, ids, pos, global_mask=gm, shard_len=self.shard_tokens)
            else:
                return super().encode(tokens, global_mask=global_mask, position_ids=position_ids)
            return out[0].float().to(self.device)

    return ShardedEncode


def on_devices(encoder, devices: int = 1, *, shard_tokens: int | None = None, backend=None):
    """``encoder`` (a ``longdoc.model.Encoder``) with ``encode`` spread over `devices` local ranks
    (torchrun's ranks when run under it), or, with one device and ``shard_tokens``, computed in shards
    of that many tokens one after another. Returns the encoder itself when neither applies."""
    if devices <= 1 and not shard_tokens:
        return encoder
    return _sharded_encoder_class()(encoder, devices, shard_tokens, backend)


def resolve_devices(devices, n_tokens: int, cfg) -> int:
    """``--devices`` as a count: an int as given; "auto" = every visible GPU when the estimated memory
    of one forward over n_tokens exceeds 80% of one GPU's free memory, else 1."""
    if devices != "auto":
        return int(devices)
    if not torch.cuda.is_available() or torch.cuda.device_count() < 2:
        return 1
    free, _ = torch.cuda.mem_get_info(0)
    return torch.cuda.device_count() if estimate_bytes(cfg, n_tokens, 1) > 0.8 * free else 1


def estimate_bytes(cfg, n_tokens: int, ranks: int, dtype_bytes: int = 2) -> int:
    """Peak bytes of one rank's inference forward, the fit of docs/sharding.md "Memory": weights, about
    10 live values per row and channel (x, q|k|v, the kernel's padded copies, output, FFN chunk) over
    the rank's rows plus its halo, a fixed 256 MiB for the CPU kernel's score working set, and one
    byte per token of layout flags."""
    C, h = cfg.hidden_size, max(w * d for w, d in zip(cfg.windows, cfg.dilations))
    params = cfg.num_layers * (12 * C * C + 13 * C) + (cfg.vocab_size + cfg.max_positions) * C
    rows = -(-n_tokens // ranks) + 2 * h
    return (params + 10 * rows * C) * dtype_bytes + (256 << 20) + n_tokens


__all__ = ["on_devices", "resolve_devices", "estimate_bytes", "ShardedEncoder", "ShardedSelfAttention", "shard_encoder", "unshard_encoder", "encode_sequential",
           "encode_shard", "encode_on_devices", "encoder_on_devices"]
