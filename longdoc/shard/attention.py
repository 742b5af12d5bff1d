"""Sequence-parallel sliding-window + global attention over contiguous shards (DESIGN.md "Sharding a
long sequence").

Rank ``i`` holds rows ``[s, e)`` of the sequence. Per layer it needs:

* the **halo**: the ``h = w * d`` rows of K/V on each side of its shard, sent point to point by
  whichever ranks own them. Usually that is the two neighbours; when shards are shorter than the halo
  the same exchange reaches every rank whose shard intersects ``[s - h, s)`` or ``[e, e + h)`` (the
  bounded-ring case: at most ``ceil(h / shortest shard)`` hops each way, each byte sent once);
* the **global tile**: K, V and the query of every global token, all-gathered (``G`` rows, tiny);
* for the global query rows, which attend to the whole sequence: each rank computes them over its own
  keys and the partial ``(out, lse)`` pairs are merged across ranks by log-sum-exp.

The local work is the single-device kernel (``longdoc.kernels.local_global_attention``) run over a
contiguous run of rows plus the tile appended after a gap of ``h`` padding rows (so no band reaches
it): the band semantics are the kernel's, not re-implemented here. The interior rows (``>= h`` from a
shard edge) are computed while the halo is in flight; the two edge runs after it lands.

Backward (``_ShardedAttention.backward``) recomputes the local work with autograd, like
FlashAttention's backward, then returns halo gradients to their owners point to point and sums the tile
gradients with one all-reduce. Every rank issues the same collectives in the same order.

Shapes: B batch, H heads, N sequence, n local rows, D head dim, S = R * Gl global slots.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.distributed import distributed_c10d as c10d  # P2POp accepts only these two functions

from longdoc.kernels import band_with_tile

try:  # the Triton kernels' global-rows pass (absent without Triton)
    from longdoc.kernels.triton_attention import global_rows_partial
except Exception:  # noqa: BLE001
    global_rows_partial = None

_TINY = 1e-30  # a clamp floor for softmax denominators that are exactly 0 (a row with no key)
_GLOBAL_CHUNK = 1 << 22  # score elements of the global rows held at once (fp32: 16 MiB)
_TAG_FWD, _TAG_BWD = 17, 18  # gloo matches point-to-point messages by tag; NCCL ignores tags


# ---------------------------------------------------------------------------------------------------
# Layout: where every shard sits and which rows the band must skip. Built once per forward, shared by
# all layers (their windows may differ; the halo is computed per layer from these bounds).


def even_bounds(n: int, parts: int) -> tuple[int, ...]:
    """Contiguous boundaries splitting n rows into `parts` shards whose lengths differ by at most 1."""
    q, r = divmod(n, parts)
    out = [0]
    for p in range(parts):
        out.append(out[-1] + q + (1 if p < r else 0))
    return tuple(out)


def _slots(mask: torch.Tensor, width: int) -> torch.Tensor:
    """(B, n) bool -> (B, width) int64 positions of the True entries in order, -1 in unused slots."""
    B = mask.shape[0]
    if width == 0:
        return torch.empty(B, 0, dtype=torch.long, device=mask.device)
    counts = mask.sum(1)  # (B,)
    order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)[:, :width]  # True positions first
    if order.shape[1] < width:  # a shard shorter than the slot count
        order = torch.cat([order, order.new_zeros(B, width - order.shape[1])], 1)
    slot = torch.arange(width, device=mask.device)[None, :]
    return torch.where(slot < counts[:, None], order, torch.full_like(order, -1))


@dataclass
class ShardLayout:
    """Shard bounds and the per-token flags every rank needs (O(N) bools, never O(N) K/V)."""

    bounds: tuple[int, ...]  # R + 1 boundaries: shard p is rows [bounds[p], bounds[p + 1])
    excluded: torch.Tensor  # (B, N) bool: padding or global -> never a band key
    key_valid: torch.Tensor  # (B, N) bool: not padding
    tile_pos: torch.Tensor  # (B, S) int64 positions of the global slots, -1 unused; shard p owns
    tile_valid: torch.Tensor  # (B, S) bool   slots [p * Gl, (p + 1) * Gl)
    slots_per_shard: int  # Gl

    @property
    def n_shards(self) -> int:
        return len(self.bounds) - 1

    @property
    def length(self) -> int:
        return self.bounds[-1]

    def shard(self, i: int) -> tuple[int, int]:
        return self.bounds[i], self.bounds[i + 1]

    def local_global_pos(self, i: int) -> torch.Tensor:
        """(B, Gl) positions of shard i's global slots relative to its start, -1 unused."""
        Gl, s = self.slots_per_shard, self.bounds[i]
        pos = self.tile_pos[:, i * Gl : (i + 1) * Gl]
        return torch.where(pos >= 0, pos - s, pos)

    @classmethod
    def build(cls, bounds, global_mask=None, key_padding_mask=None, *, batch=1, device=None):
        """From the full-sequence masks ((B, N) bool or None)."""
        bounds = tuple(int(b) for b in bounds)
        if bounds[0] != 0 or any(b > c for b, c in zip(bounds, bounds[1:])):
            raise ValueError(f"shard bounds must start at 0 and not decrease, got {bounds}")
        N = bounds[-1]
        B = batch
        for m in (global_mask, key_padding_mask):
            if m is not None:
                B = m.shape[0]
                if m.shape != (B, N):
                    raise ValueError(f"masks must be (B, {N}), got {tuple(m.shape)}")
        gm = torch.zeros(B, N, dtype=torch.bool, device=device) if global_mask is None else global_mask.to(device, torch.bool)
        pad = torch.zeros(B, N, dtype=torch.bool, device=device) if key_padding_mask is None else key_padding_mask.to(device, torch.bool)
        key_valid = ~pad
        shards = list(zip(bounds, bounds[1:]))
        Gl = max((int(gm[:, s:e].sum(1).max()) if e > s else 0) for s, e in shards)
        tile = []
        for s, e in shards:
            loc = _slots(gm[:, s:e], Gl)  # (B, Gl)
            tile.append(torch.where(loc >= 0, loc + s, loc))
        tile_pos = torch.cat(tile, 1) if tile else torch.empty(B, 0, dtype=torch.long, device=device)
        tile_valid = (tile_pos >= 0) & torch.gather(key_valid, 1, tile_pos.clamp(min=0))
        return cls(bounds, pad | gm, key_valid, tile_pos, tile_valid, Gl)

    @classmethod
    def from_local(cls, n_local: int, global_mask=None, key_padding_mask=None, *, batch=1, device=None,
                   group=None):
        """Every rank passes its own shard's length and (B, n) masks; two small all-gathers (the
        lengths, then one byte per token) give every rank the whole layout. Shards follow rank order."""
        R = dist.get_world_size(group)
        lengths = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(R)]
        dist.all_gather(lengths, torch.tensor([n_local], dtype=torch.long, device=device), group=group)
        lengths = [int(t) for t in lengths]
        B = batch
        for m in (global_mask, key_padding_mask):
            if m is not None:
                B = m.shape[0]
        flags = torch.zeros(B, max(lengths), dtype=torch.uint8, device=device)  # bit 0 global, bit 1 pad
        if global_mask is not None:
            flags[:, :n_local] |= global_mask.to(device, torch.uint8)
        if key_padding_mask is not None:
            flags[:, :n_local] |= key_padding_mask.to(device, torch.uint8) << 1
        parts = [torch.empty_like(flags) for _ in range(R)]
        dist.all_gather(parts, flags, group=group)
        full = torch.cat([p[:, :n] for p, n in zip(parts, lengths)], 1)  # (B, N)
        bounds = [0]
        for n in lengths:
            bounds.append(bounds[-1] + n)
        return cls.build(bounds, (full & 1).bool(), (full & 2).bool(), batch=B, device=device)


def halo_pieces(bounds, i: int, h: int) -> list[tuple[int, int, int]]:
    """The rows shard i needs from others for a band of reach h: [(owner, lo, hi)], left side then
    right side, each in position order. Empty shards neither need nor own anything."""
    s, e = bounds[i], bounds[i + 1]
    if h == 0 or s == e:
        return []
    lo, hi = max(0, s - h), min(bounds[-1], e + h)
    left, right = [], []
    for p in range(len(bounds) - 1):
        ps, pe = bounds[p], bounds[p + 1]
        if p == i or ps == pe:
            continue
        a, b = max(ps, lo), min(pe, s)
        if a < b:
            left.append((p, a, b))
        a, b = max(ps, e), min(pe, hi)
        if a < b:
            right.append((p, a, b))
    return left + right


def halo_sends(bounds, i: int, h: int) -> list[tuple[int, int, int]]:
    """What shard i sends: [(peer, lo, hi)] rows of its own shard that peer's halo covers."""
    return [(p, a, b) for p in range(len(bounds) - 1) if p != i
            for owner, a, b in halo_pieces(bounds, p, h) if owner == i]


# ---------------------------------------------------------------------------------------------------
# Local building blocks (shared by the distributed and the single-device sequential paths).


def band(q, k, v, excluded, tile_k, tile_v, tile_valid, halo, *, hl, hr, window, dilation, scale):
    """Band + tile output of a shard's n rows, (B, H, n, D).

    ``excluded`` (B, hl + n + hr) covers the shard and its halo; ``halo()`` returns the halo K|V
    ((B, H, hl, 2D), (B, H, hr, 2D)) and is called only after the interior rows are computed, so a
    caller can overlap the halo transfer with them."""
    B, H, n, D = q.shape
    h = window * dilation

    def run(qq, kk, vv, ex):
        """The kernel over one contiguous run of rows that also sees the global tile. Rows near the
        ends of a run are only right where the run really ends there: callers keep the rows whose
        band lies inside."""
        return band_with_tile(qq, kk, vv, tile_k, tile_v, tile_valid, window=window, dilation=dilation,
                              key_padding_mask=ex, scale=scale)

    local_ex = excluded[:, hl : hl + n]
    if n == 0:
        halo()
        return q.new_zeros(B, H, 0, D)
    if hl == 0 and hr == 0:  # no neighbour within reach (one shard, or window 0)
        halo()
        return run(q, k, v, local_ex)
    if n < 2 * h:  # too short to split: one run over shard + halo once it lands
        kv_l, kv_r = halo()
        kk = torch.cat([kv_l[..., :D], k, kv_r[..., :D]], 2)
        vv = torch.cat([kv_l[..., D:], v, kv_r[..., D:]], 2)
        qq = torch.cat([q.new_zeros(B, H, hl, D), q, q.new_zeros(B, H, hr, D)], 2)
        return run(qq, kk, vv, excluded)[:, :, hl : hl + n]
    # Interior: rows whose band lies inside the shard, before the halo is needed.
    a, b = (h if hl else 0), (n - h if hr else n)
    inner = run(q, k, v, local_ex)[:, :, a:b]
    kv_l, kv_r = halo()
    pieces = []
    if hl:  # rows [0, h) see keys [-hl, 2h)
        kk = torch.cat([kv_l[..., :D], k[:, :, : 2 * h]], 2)
        vv = torch.cat([kv_l[..., D:], v[:, :, : 2 * h]], 2)
        qq = torch.cat([q.new_zeros(B, H, hl, D), q[:, :, : 2 * h]], 2)
        pieces.append(run(qq, kk, vv, excluded[:, : hl + 2 * h])[:, :, hl : hl + h])
    pieces.append(inner)
    if hr:  # rows [n - h, n) see keys [n - 2h, n + hr)
        kk = torch.cat([k[:, :, n - 2 * h :], kv_r[..., :D]], 2)
        vv = torch.cat([v[:, :, n - 2 * h :], kv_r[..., D:]], 2)
        qq = torch.cat([q[:, :, n - 2 * h :], q.new_zeros(B, H, hr, D)], 2)
        pieces.append(run(qq, kk, vv, excluded[:, hl + n - 2 * h :])[:, :, h : 2 * h])
    return torch.cat(pieces, 2)


def merge_partials(o: torch.Tensor, lse: torch.Tensor):
    """Combine attention over disjoint key sets: o (P, ..., D), lse (P, ...) -> (..., D), (...).
    A row that saw no key anywhere gives 0 and -inf."""
    m = lse.amax(0)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    w = torch.exp(lse - m)  # (P, ...); 0 for partials that saw no key
    l = w.sum(0)
    out = (w[..., None] * o).sum(0) / l.clamp(min=_TINY)[..., None]
    return out, torch.where(l > 0, m + torch.log(l.clamp(min=_TINY)), torch.full_like(m, -math.inf))


def global_partial(qg, k, v, key_valid, scale):
    """Global query rows over one shard's keys: qg (B, H, S, D), k, v (B, H, n, D), key_valid (B, n)
    -> out (B, H, S, D) fp32, lse (B, H, S) fp32. Keys go in chunks, merged by log-sum-exp."""
    B, H, S, D = qg.shape
    n = k.shape[2]
    if qg.is_cuda and global_rows_partial is not None and D in (16, 32, 64, 128) and not torch.is_grad_enabled():
        # The kernels' global-rows pass: a long skinny fp32 matmul here was 27% of a sharded forward.
        return global_rows_partial(qg.to(k.dtype), k, v, key_padding_mask=~key_valid, scale=scale)
    qg = qg.float()
    chunk = max(1, _GLOBAL_CHUNK // max(1, B * H * S))
    outs, lses = [], []
    for c0 in range(0, max(n, 1), chunk):
        kc, vc = k[:, :, c0 : c0 + chunk].float(), v[:, :, c0 : c0 + chunk].float()
        s = torch.einsum("bhgd,bhnd->bhgn", qg, kc) * scale  # (B, H, S, c)
        s = s.masked_fill(~key_valid[:, None, None, c0 : c0 + chunk], -math.inf)
        m = s.amax(-1).detach() if s.shape[-1] else s.new_full(s.shape[:-1], -math.inf)
        m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
        p = torch.exp(s - m[..., None])  # 0 at masked keys
        l = p.sum(-1)
        outs.append(torch.einsum("bhgn,bhnd->bhgd", p, vc) / l.clamp(min=_TINY)[..., None])
        lses.append(torch.where(l > 0, m + torch.log(l.clamp(min=_TINY)), torch.full_like(m, -math.inf)))
    if len(outs) == 1:
        return outs[0], lses[0]
    return merge_partials(torch.stack(outs), torch.stack(lses))


def gather_rows(x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """x (B, H, n, F), pos (B, G) with -1 unused -> (B, H, G, F), zeros in unused slots."""
    B, H, _, F = x.shape
    idx = pos.clamp(min=0)[:, None, :, None].expand(B, H, pos.shape[1], F)
    rows = torch.gather(x, 2, idx) if x.shape[2] else x.new_zeros(B, H, pos.shape[1], F)
    return rows * (pos >= 0)[:, None, :, None].to(x.dtype)


def put_rows(x: torch.Tensor, pos: torch.Tensor, rows: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """x (B, H, n, D) with rows[b, :, g] written at pos[b, g] where keep[b, g]; out of place."""
    B, H, n, D = x.shape
    where = torch.where(keep, pos, torch.full_like(pos, n))  # dropped slots land in a scratch row
    idx = where[:, None, :, None].expand(B, H, pos.shape[1], D)
    out = torch.cat([x, x.new_zeros(B, H, 1, D)], 2).scatter(2, idx, rows.to(x.dtype))
    return out[:, :, :n]


# ---------------------------------------------------------------------------------------------------
# Communication


def _peer(group, p):
    return p if group is None else dist.get_global_rank(group, p)


def _exchange(recv_bufs, recv_from, send_bufs, send_to, group, tag):
    """Posts every receive and send of one exchange as one batch. Batched, NCCL runs them inside one
    group call, so two neighbours that each receive before they send cannot deadlock (posted one by one
    on a shared stream, each rank's receive would wait for a send queued behind the peer's receive)."""
    ops = [dist.P2POp(c10d.irecv, t, _peer(group, p), group, tag) for t, (p, _, _) in zip(recv_bufs, recv_from)]
    ops += [dist.P2POp(c10d.isend, t, _peer(group, p), group, tag) for t, (p, _, _) in zip(send_bufs, send_to)]
    return dist.batch_isend_irecv(ops) if ops else []


class _Halo:
    """One halo exchange of K|V (B, H, rows, 2D): receives and sends posted by `post`, `wait()` returns
    the left and right halos. `reverse()` sends gradients of the received rows back to their owners
    and returns the gradient for the local rows that were sent out."""

    def __init__(self, layout: ShardLayout, rank: int, h: int, group=None):
        self.layout, self.rank, self.h, self.group = layout, rank, h, group
        self.pieces = halo_pieces(layout.bounds, rank, h)  # what I receive
        self.sends = halo_sends(layout.bounds, rank, h)  # what I send
        s = layout.bounds[rank]
        self.hl = sum(b - a for _, a, b in self.pieces if a < s)
        self.hr = sum(b - a for _, a, b in self.pieces if a >= s)

    def post(self, k: torch.Tensor, v: torch.Tensor):
        """Sends K|V of the rows my neighbours need; only those rows are copied (h of n)."""
        B, H, _, D = k.shape
        s = self.layout.bounds[self.rank]
        self.bufs = [k.new_empty(B, H, b - a, 2 * D) for _, a, b in self.pieces]
        self.out = [torch.cat([k[:, :, a - s : b - s], v[:, :, a - s : b - s]], -1)  # kept alive until sent
                    for _, a, b in self.sends]
        self.works = _exchange(self.bufs, self.pieces, self.out, self.sends, self.group, _TAG_FWD)
        self.empty = k.new_empty(B, H, 0, 2 * D)
        return self

    def wait(self):
        for w in self.works:
            w.wait()
        s = self.layout.bounds[self.rank]
        left = [b for b, (_, a, _) in zip(self.bufs, self.pieces) if a < s]
        right = [b for b, (_, a, _) in zip(self.bufs, self.pieces) if a >= s]
        kv_l = torch.cat(left, 2) if left else self.empty
        kv_r = torch.cat(right, 2) if right else self.empty
        self.bufs = self.out = self.works = None
        return kv_l, kv_r

    def reverse(self, g_left, g_right, g_local):
        """Adds into g_local (B, H, n, F) the gradients that peers send back for my rows."""
        s = self.layout.bounds[self.rank]
        B, H, _, F = g_local.shape
        grads = torch.cat([g_left, g_right], 2)
        outs, off = [], 0
        for _, a, b in self.pieces:
            outs.append(grads[:, :, off : off + b - a].contiguous())
            off += b - a
        ins = [g_local.new_empty(B, H, b - a, F) for _, a, b in self.sends]
        for w in _exchange(ins, self.sends, outs, self.pieces, self.group, _TAG_BWD):
            w.wait()
        for t, (_, a, b) in zip(ins, self.sends):
            g_local[:, :, a - s : b - s] += t
        return g_local


def _all_gather_cat(x: torch.Tensor, group, dim: int) -> torch.Tensor:
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, x.contiguous(), group=group)
    return torch.cat(parts, dim)


@dataclass
class ShardSpec:
    """What one sharded attention call needs besides its tensors."""

    layout: ShardLayout
    rank: int
    window: int
    dilation: int
    scale: float
    group: object = None


def _forward_local(spec, q, k, v, qG, kG, vG, tile, halo):
    """The local work of one rank given the tile (B, H, S, 3D): band rows and the partial global rows."""
    lay, D = spec.layout, q.shape[-1]
    s, e = lay.shard(spec.rank)
    out = band(q, k, v, lay.excluded[:, s - halo_l_len(spec) : e + halo_r_len(spec)],
               tile[..., :D], tile[..., D : 2 * D], lay.tile_valid, halo,
               hl=halo_l_len(spec), hr=halo_r_len(spec), window=spec.window, dilation=spec.dilation,
               scale=spec.scale)
    if tile.shape[2] == 0:
        return out, None, None
    o_r, lse_r = global_partial(tile[..., 2 * D :], kG, vG, lay.key_valid[:, s:e], spec.scale)
    return out, o_r, lse_r


def halo_l_len(spec: ShardSpec) -> int:
    s = spec.layout.bounds[spec.rank]
    return 0 if spec.layout.bounds[spec.rank + 1] == s else min(s, spec.window * spec.dilation)


def halo_r_len(spec: ShardSpec) -> int:
    s, e = spec.layout.shard(spec.rank)
    return 0 if e == s else min(spec.layout.length - e, spec.window * spec.dilation)


class _ShardedAttention(torch.autograd.Function):
    """Inputs are this rank's rows (B, H, n, D): q, k, v for the band, and qG, kG, vG for the global
    rows (the same tensors as q, k, v unless the model has separate global projections)."""

    @staticmethod
    def forward(ctx, spec: ShardSpec, q, k, v, qG, kG, vG):
        lay, group = spec.layout, spec.group
        D = q.shape[-1]
        mine = lay.local_global_pos(spec.rank)  # (B, Gl)
        halo = _Halo(lay, spec.rank, spec.window * spec.dilation, group).post(k, v)
        # The tile all-gather is tiny; it runs while the halo is in flight.
        rows = torch.cat([gather_rows(t, mine) for t in (k, v, qG)], -1)  # (B, H, Gl, 3D)
        tile = _all_gather_cat(rows, group, 2) if lay.slots_per_shard else rows  # (B, H, S, 3D)
        got = {}

        def wait():
            got["l"], got["r"] = halo.wait()
            return got["l"], got["r"]

        out, o_r, lse_r = _forward_local(spec, q, k, v, qG, kG, vG, tile, wait)
        O = L = None
        if o_r is not None:
            packed = _all_gather_cat(torch.cat([o_r, lse_r[..., None]], -1)[None], group, 0)  # (R, B, H, S, D+1)
            O, L = merge_partials(packed[..., :D], packed[..., D])
            Gl = lay.slots_per_shard
            sl = slice(spec.rank * Gl, (spec.rank + 1) * Gl)
            out = put_rows(out, mine, O[:, :, sl], lay.tile_valid[:, sl])
        ctx.spec, ctx.halo = spec, halo
        ctx.save_for_backward(q, k, v, qG, kG, vG, got["l"], got["r"], tile, O, L)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        spec, halo = ctx.spec, ctx.halo
        q, k, v, qG, kG, vG, kv_l, kv_r, tile, O, L = ctx.saved_tensors
        lay, group, D = spec.layout, spec.group, q.shape[-1]
        mine = lay.local_global_pos(spec.rank)
        Gl = lay.slots_per_shard
        sl = slice(spec.rank * Gl, (spec.rank + 1) * Gl)
        grad_out = grad_out.contiguous()
        g_merged = None
        if O is not None:
            # The merged global rows' gradient lives on their owner; every rank needs it.
            keep = lay.tile_valid[:, sl]
            g_merged = torch.zeros_like(O)
            g_merged[:, :, sl] = gather_rows(grad_out, torch.where(keep, mine, -1)).to(O.dtype)
            dist.all_reduce(g_merged, group=group)
            grad_out = put_rows(grad_out, mine, torch.zeros_like(O[:, :, sl]), keep)  # those rows came from O

        leaves = [t.detach().requires_grad_() for t in (q, k, v, qG, kG, vG, kv_l, kv_r, tile)]
        lq, lk, lv, lqG, lkG, lvG, l_l, l_r, l_tile = leaves
        with torch.enable_grad():
            out, o_r, lse_r = _forward_local(spec, lq, lk, lv, lqG, lkG, lvG, l_tile, lambda: (l_l, l_r))
            outs, grads = [out], [grad_out]
            if o_r is not None:
                w = torch.exp(lse_r.detach() - torch.where(torch.isfinite(L), L, torch.zeros_like(L)))
                w = torch.where(torch.isfinite(L), w, torch.zeros_like(w))  # (B, H, S)
                outs += [o_r, lse_r]
                grads += [w[..., None] * g_merged, w * (g_merged * (o_r.detach() - O)).sum(-1)]
            live = [(o, gr) for o, gr in zip(outs, grads) if o.requires_grad]  # an empty shard has none
            g = (torch.autograd.grad([o for o, _ in live], leaves, [gr for _, gr in live], allow_unused=True)
                 if live else [None] * len(leaves))
        g = [torch.zeros_like(t) if gi is None else gi for gi, t in zip(g, leaves)]
        gq, gk, gv, gqG, gkG, gvG, g_l, g_r, g_tile = g

        # Halo gradients go back to the rows' owners; mine come back from the ranks I sent to.
        g_kv = halo.reverse(g_l, g_r, torch.cat([gk, gv], -1))
        gk, gv = g_kv[..., :D], g_kv[..., D:]
        if g_tile.shape[2]:
            dist.all_reduce(g_tile, group=group)  # every rank's use of every global row
        if g_tile.shape[2] and q.shape[2]:
            B, H = q.shape[:2]
            idx = mine.clamp(min=0)[:, None, :, None].expand(B, H, Gl, D)
            live = (mine >= 0)[:, None, :, None].to(g_tile.dtype)
            mt = g_tile[:, :, sl] * live
            gk = gk.scatter_add(2, idx, mt[..., :D])
            gv = gv.scatter_add(2, idx, mt[..., D : 2 * D])
            gqG = gqG.scatter_add(2, idx, mt[..., 2 * D :])
        return None, gq, gk, gv, gqG, gkG, gvG


def sharded_attention(q, k, v, spec: ShardSpec, global_qkv=None):
    """This rank's rows of ``local_global_attention`` over the whole sharded sequence.

    q, k, v: (B, H, n, D), the rows ``spec.layout.shard(spec.rank)``; ``global_qkv``: optional
    (qG, kG, vG), each (B, H, n, D), the separate global projections of the same rows (Longformer).
    Differentiable. Returns (B, H, n, D) equal to the single-process result's rows."""
    n = spec.layout.shard(spec.rank)
    if q.shape[2] != n[1] - n[0]:
        raise ValueError(f"rank {spec.rank} holds rows {n[0]}..{n[1]} but got {q.shape[2]} rows")
    qG, kG, vG = (q, k, v) if global_qkv is None else global_qkv
    return _ShardedAttention.apply(spec, q, k, v, qG, kG, vG)


__all__ = ["ShardLayout", "ShardSpec", "even_bounds", "halo_pieces", "halo_sends", "sharded_attention",
           "band", "global_partial", "merge_partials", "gather_rows", "put_rows"]
