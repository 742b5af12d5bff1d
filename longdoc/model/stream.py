"""The ``sinks`` pattern over a stream of unbounded length, with bounded memory.

Under ``sinks`` (variants.py) token i at layer l reads layer l-1 only at i-w..i+w and at the first
``s`` tokens (the sinks), and a sink reads only its own band and the sinks. So the states of tokens
[a, b) are exact when the encoder runs over the context [a - R, b + R) with R = sum over layers of
w*d (the receptive field), provided each layer also sees the sinks' keys and values of that layer,
which depend only on the start of the stream. ``StreamEncoder`` does exactly that:

* the first context starts at token 0 and holds the sinks: it runs the plain ``sinks`` pattern and
  records each layer's sink K/V (s x 2 x hidden floats per layer);
* every later chunk runs the band over its context plus the recorded sink K/V as extra keys, merged
  by log-sum-exp; the context starts at least s + w tokens in, so no sink is in any query's band;
* the rows of the halo (R tokens each side) are discarded: the chunk's states equal those of
  ``encoder.with_attention("sinks").encode`` over the whole stream (tests/test_attention_variants.py).

Memory is O(chunk + 2R) tokens whatever the stream's length; time is (chunk + 2R) / chunk times the
whole-sequence encode (1.375x with the defaults for MiniLM: chunk 4096, R = 6 x 128). What is lost
against ``local`` + globals or ``full``: nothing from beyond the window reaches a token except through
the s sink tokens at the start, so the middle of the stream is read locally only.
"""
from __future__ import annotations

import torch

from longdoc.kernels import local_global_attention
from longdoc.model import variants


class StreamEncoder:
    """Feed token ids with ``push``; ``ready`` yields (start, states) blocks of exact final-layer states
    in order. ``finish`` flushes the rest at the end of the stream."""

    def __init__(self, encoder, *, sinks: int = 4, chunk: int = 4096):
        self.enc, self.net, self.cfg = encoder, encoder.net, encoder.cfg
        self.s = int(sinks)
        self.halo = sum(w * d for w, d in zip(self.cfg.windows, self.cfg.dilations))
        self.chunk = max(int(chunk), self.s + 1)
        self.ids = torch.zeros(0, dtype=torch.long)  # tokens [base, base + len(ids)) kept
        self.base = 0  # absolute index of ids[0]
        self.done = 0  # final states emitted for [0, done)
        self.sink_kv = None  # per layer (k, v) of the sinks, (1, H, s, D) each
        self.peak_context = 0

    @property
    def n(self) -> int:
        return self.base + len(self.ids)

    def push(self, ids):
        self.ids = torch.cat([self.ids, torch.as_tensor(ids, dtype=torch.long)])

    def ready(self, final: bool = False):
        """Blocks whose right halo has arrived (all the rest when ``final``)."""
        while self.done < self.n and (final or self.done + self.chunk + self.halo <= self.n):
            a = self.done
            b = min(self.n, a + self.chunk)
            yield a, self._run(a, b)
            self.done = b
            keep = self._left(b)  # next context's left edge
            if keep > self.base:
                self.ids = self.ids[keep - self.base:]
                self.base = keep

    def _left(self, a: int) -> int:
        """Left edge of the context of a chunk starting at a: 0 while a sink could be in a band (the
        context then holds the sinks and runs the plain pattern)."""
        c0 = max(0, a - self.halo)
        return 0 if c0 < self.s + max(self.cfg.windows) * max(self.cfg.dilations) else c0

    @torch.inference_mode()
    def _run(self, a: int, b: int) -> torch.Tensor:
        """Final-layer states (b - a, C) of tokens [a, b)."""
        c0 = self._left(a)
        assert c0 >= self.base, "token buffer dropped a needed token"
        c1 = min(self.n, b + self.halo)
        self.peak_context = max(self.peak_context, c1 - c0)
        dev = self.enc.device
        ids = self.ids[c0 - self.base: c1 - self.base].to(dev)[None]
        n = c1 - c0
        # tiled positions (i mod P), computed for the context only: nothing grows with the stream
        pos = torch.arange(c0, c1, device=dev) % self.cfg.usable_positions + self.cfg.position_offset
        x = self.net.embeddings(ids, pos[None])
        record = self.sink_kv is None and c0 == 0 and n >= self.s
        if record:
            self.sink_kv = []
        for li, layer in enumerate(self.net.layers):
            att = layer.attention
            qkv = att.qkv(x).view(1, n, 3, att.heads, att.head_dim).permute(2, 0, 3, 1, 4)
            q, k, v = qkv.unbind(0)
            if c0 == 0:
                o = variants.sinks(q, k, v, window=att.window, dilation=att.dilation, sinks=self.s)
                if record:
                    self.sink_kv.append((k[:, :, : self.s].clone(), v[:, :, : self.s].clone()))
            else:
                o = _band_plus_kv(q, k, v, *self.sink_kv[li], window=att.window, dilation=att.dilation)
            x = layer.attention_norm(x + att.out(o.transpose(1, 2).reshape(1, n, -1)))
            x = layer.ffn_norm(x + layer.ffn_out(layer.act(layer.ffn_in(x))))
        return x[0, a - c0: b - c0].float()


def _band_plus_kv(q, k, v, ke, ve, *, window, dilation):
    """The band over the context plus extra keys/values (ke, ve) seen by every query, merged by lse."""
    import math

    ob, lb = local_global_attention(q, k, v, window=window, dilation=dilation, return_lse=True)
    cdt = variants._cdt(q.dtype)
    scale = 1.0 / math.sqrt(q.shape[-1])
    ok = torch.ones(1, 1, 1, ke.shape[2], dtype=torch.bool, device=q.device)
    oe, le = variants._attend(q.to(cdt), ke.to(cdt), ve.to(cdt), ok, scale)
    out, _ = variants.merge(ob.to(cdt), lb.to(cdt), oe, le)
    return out.to(q.dtype)


__all__ = ["StreamEncoder"]
