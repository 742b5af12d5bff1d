"""The encoder as the rest of longdoc uses it: tokenize with char offsets, encode a whole document,
pool span vectors, embed short texts. Built by ``longdoc.model.load_encoder``."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from longdoc.model.encoder import EncoderConfig, LongEncoder, position_ids


@dataclass(frozen=True)
class Tokens:
    """One text's tokens. ``offsets[i] = (start, end)`` is token i's char span in the text; special
    tokens ([CLS], [SEP], <s>, </s>) have ``special[i]`` True and an empty span."""

    ids: torch.Tensor  # (N,) int64
    offsets: torch.Tensor  # (N, 2) int64, char offsets into the text
    special: torch.Tensor  # (N,) bool

    def __len__(self) -> int:
        return int(self.ids.shape[0])


class Encoder:
    """A loaded model plus its tokenizer. All methods run without gradients."""

    def __init__(self, net: LongEncoder, tokenizer, *, name: str, fingerprint: str, path: str | None = None):
        self.net = net
        self.cfg = net.cfg
        self.tokenizer = tokenizer
        self.name = name
        self.fingerprint = fingerprint  # hash of weights content, config, windows and positions mode
        self.path = path
        self.dim = self.cfg.hidden_size

    @property
    def device(self) -> torch.device:
        return self.net.embeddings.word.weight.device

    def __repr__(self):
        return (f"Encoder({self.name!r}, dim={self.dim}, window={self.cfg.windows[0]}, "
                f"positions={self.cfg.positions!r}, attention={self.cfg.attention!r}, device={self.device})")

    def with_attention(self, spec: str | None) -> "Encoder":
        """The same weights (shared, not copied) under another attention pattern ("lsh",
        "strided:stride=64", ...; None = "local"); this encoder is unchanged."""
        from longdoc.model.attention_spec import PARAMS, parse_spec
        from longdoc.model.load import _fingerprint

        name, params = parse_spec(spec or "local")
        defaults = EncoderConfig()
        cfg = self.cfg.replace(attention=name, **{p: params.get(p, getattr(defaults, p)) for p in PARAMS[name]})
        with torch.device("meta"):
            net = LongEncoder(cfg)
        net.load_state_dict(self.net.state_dict(), strict=True, assign=True)
        net.eval().requires_grad_(False)
        fp = _fingerprint(self.path, cfg) if self.path else f"{self.fingerprint}:{name}:{sorted(params.items())}"
        return Encoder(net, self.tokenizer, name=self.name, fingerprint=fp, path=self.path)

    # ---- tokens ----------------------------------------------------------------------------------

    def tokenize(self, text: str) -> Tokens:
        """The whole text (never truncated), with the model's special tokens around it."""
        return _tokens(self.tokenizer.encode(text))

    # ---- whole documents -------------------------------------------------------------------------

    @torch.inference_mode()
    def encode(self, tokens: Tokens, *, global_mask: torch.Tensor | None = None,
               position_ids: torch.Tensor | None = None, positions: str | None = None,
               segment_starts=None) -> torch.Tensor:
        """Contextual states of every token, (N, hidden) float32 on the encoder's device.

        ``global_mask`` (N,) bool marks tokens that attend to and are attended by every token.
        ``position_ids`` (N,) are rows of the position table; by default they come from the
        ``positions`` strategy (the config's unless given) with ``segment_starts`` (token indices)
        for "restart".
        """
        n = len(tokens)
        dev = self.device
        if position_ids is None:
            position_ids = self.position_ids(n, positions=positions, segment_starts=segment_starts)
        gm = None if global_mask is None else global_mask.to(dev, torch.bool)[None]
        states = self.net(tokens.ids.to(dev)[None], position_ids.to(dev)[None], global_mask=gm)  # (1, N, C)
        return states[0].float()

    def position_ids(self, n: int, *, positions: str | None = None, segment_starts=None) -> torch.Tensor:
        return position_ids(self.cfg, n, starts=segment_starts, mode=positions, device=self.device)

    def embed_spans(self, text: str, spans: list[tuple[int, int]], *, positions: str | None = None,
                    global_spans: list[tuple[int, int]] | None = None,
                    tokens: Tokens | None = None) -> torch.Tensor:
        """Encode the whole text once; each char span -> the L2-normalised mean of the states of the
        tokens overlapping it, (S, dim) float32 on the CPU. An empty span gives a zero vector.

        ``positions``: "tile" or "restart" (positions restart at each span's first token); default
        the config's. ``global_spans``: char spans whose tokens get global attention.
        """
        tokens = tokens if tokens is not None else self.tokenize(text)
        S = len(spans)
        if S == 0:
            return torch.zeros(0, self.dim)
        global_mask = None if not global_spans else token_mask(tokens, global_spans)
        starts = None
        if (positions or self.cfg.positions) == "restart":
            starts = [int(t) for t in span_first_tokens(tokens, spans)]
        states = self.encode(tokens, global_mask=global_mask, positions=positions, segment_starts=starts)
        return pool_spans(states, tokens, spans).cpu()

    # ---- many short texts ------------------------------------------------------------------------

    @torch.inference_mode()
    def embed_texts(self, texts: list[str], batch_size: int = 32) -> torch.Tensor:
        """Each text encoded alone: mean of its token states (special tokens included, as
        sentence-transformers does), L2-normalised; (T, dim) float32 on the CPU.

        Texts that fit the checkpoint's positions run batched; for BERT-family checkpoints with full
        attention, exactly as the checkpoint was trained. Longer texts run through the long
        (sliding-window) path one by one, whole: nothing is truncated.
        """
        out = torch.zeros(len(texts), self.dim)
        if not texts:
            return out
        encs = [_tokens(e) for e in self.tokenizer.encode_batch(list(texts))]
        limit = self.cfg.usable_positions
        short = sorted((i for i, t in enumerate(encs) if len(t) <= limit), key=lambda i: len(encs[i]))
        for s in range(0, len(short), batch_size):
            idx = short[s : s + batch_size]
            out[idx] = self._embed_batch([encs[i] for i in idx])
        for i, t in enumerate(encs):
            if len(t) > limit:
                out[i] = F.normalize(self.encode(t).mean(0), dim=-1).cpu()
        return out

    def _embed_batch(self, batch: list[Tokens]) -> torch.Tensor:
        dev, cfg = self.device, self.cfg
        L = max(len(t) for t in batch)
        ids = torch.full((len(batch), L), cfg.pad_token_id, dtype=torch.long)
        pad = torch.ones(len(batch), L, dtype=torch.bool)  # (B, L) True = padding
        for b, t in enumerate(batch):
            ids[b, : len(t)] = t.ids
            pad[b, : len(t)] = False
        pos = (torch.arange(L) + cfg.position_offset).expand(len(batch), L)
        # Radius L-1 covers the whole text: full attention, as the checkpoint was trained.
        window = max(L - 1, 1) if cfg.full_attention_when_short else None
        states = self.net(ids.to(dev), pos.to(dev), key_padding_mask=pad.to(dev), window=window).float()
        keep = (~pad).to(dev, states.dtype)[..., None]  # (B, L, 1)
        mean = (states * keep).sum(1) / keep.sum(1).clamp(min=1)  # (B, C)
        return F.normalize(mean, dim=-1).cpu()


def _tokens(enc) -> Tokens:
    return Tokens(
        ids=torch.tensor(enc.ids, dtype=torch.long),
        offsets=torch.tensor(enc.offsets, dtype=torch.long).reshape(-1, 2),
        special=torch.tensor(enc.special_tokens_mask, dtype=torch.bool),
    )


def _overlaps(tokens: Tokens, spans):
    """(pairs_span, pairs_token): every (span, token) with token overlapping the span, specials never."""
    starts, ends = tokens.offsets[:, 0], tokens.offsets[:, 1]
    body = torch.nonzero(~tokens.special & (ends > starts)).squeeze(1)  # (M,) tokens that cover text
    b_start, b_end = starts[body], ends[body]  # both non-decreasing along the text
    a = torch.tensor([s for s, _ in spans], dtype=torch.long)
    z = torch.tensor([e for _, e in spans], dtype=torch.long)
    lo = torch.searchsorted(b_end.contiguous(), a, right=True)  # first token ending after a
    hi = torch.searchsorted(b_start.contiguous(), z, right=False)  # first token starting at/after z
    count = (hi - lo).clamp(min=0) * (z > a)  # (S,) tokens per span; empty span -> 0
    span_of = torch.repeat_interleave(torch.arange(len(spans)), count)
    first = torch.repeat_interleave(lo, count)
    rank = torch.arange(int(count.sum())) - torch.repeat_interleave(torch.cumsum(count, 0) - count, count)
    return span_of, body[first + rank], count


def pool_spans(states: torch.Tensor, tokens: Tokens, spans) -> torch.Tensor:
    """(N, C) states -> (S, C) L2-normalised means over the tokens overlapping each char span."""
    span_of, tok, count = _overlaps(tokens, spans)
    dev = states.device
    sums = torch.zeros(len(spans), states.shape[1], dtype=states.dtype, device=dev)
    sums.index_add_(0, span_of.to(dev), states[tok.to(dev)])
    mean = sums / count.clamp(min=1).to(dev, states.dtype)[:, None]
    return F.normalize(mean, dim=-1)  # zero rows (empty spans) stay zero


def token_mask(tokens: Tokens, spans) -> torch.Tensor:
    """(N,) bool: tokens overlapping any of the char spans."""
    _, tok, _ = _overlaps(tokens, spans)
    mask = torch.zeros(len(tokens), dtype=torch.bool)
    mask[tok] = True
    return mask


def span_first_tokens(tokens: Tokens, spans) -> torch.Tensor:
    """(S,) index of the first token overlapping each span (the next token if none does)."""
    starts, ends = tokens.offsets[:, 0], tokens.offsets[:, 1]
    body = torch.nonzero(~tokens.special & (ends > starts)).squeeze(1)
    if body.numel() == 0:
        return torch.zeros(len(spans), dtype=torch.long)
    a = torch.tensor([s for s, _ in spans], dtype=torch.long)
    lo = torch.searchsorted(ends[body].contiguous(), a, right=True).clamp(max=body.numel() - 1)
    return body[lo]
