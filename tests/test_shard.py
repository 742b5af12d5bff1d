"""Sequence sharding equals the single-process result (fp32, |diff| <= 1e-5 + 1e-5 * |ref|).

One spawn of 4 gloo processes runs every case on the sub-groups of the first 2, 3 and 4 ranks; the
parent compares what rank 0 returns with the single-process kernel/encoder. Cases: uneven shards, shards shorter than the
halo (and an empty one), global tokens on shard boundaries, all global tokens on one rank, padding
(with a padded global token), separate global projections, full attention (halo = whole sequence).
The collectives of one attention call are counted by wrapping torch.distributed itself."""
from __future__ import annotations

import functools

import pytest
import torch
import torch.distributed as dist

from longdoc.errors import LongdocError
from longdoc.kernels import local_global_attention
from longdoc.model.encoder import build, preset
from longdoc.shard import (ShardLayout, ShardSpec, encode_sequential, encode_shard, even_bounds, halo_pieces,
                           launch, shard_encoder, sharded_attention)
from longdoc.shard.attention import _slots, halo_sends

ATOL = RTOL = 1e-5
B, H, D = 2, 2, 4
WORLDS = (2, 3, 4)

# name -> (N, window, dilation, separate global projections, {R: bounds})
CASES = {
    "uneven": (41, 3, 1, False, {2: (0, 13, 41), 3: (0, 7, 29, 41), 4: (0, 10, 11, 30, 41)}),
    "shorter_than_halo": (19, 4, 2, False, {2: (0, 5, 19), 3: (0, 3, 9, 19), 4: (0, 2, 5, 5, 19)}),
    "globals_on_boundaries": (40, 2, 3, True, {}),
    "globals_on_one_rank": (33, 3, 1, False, {}),
    "full_attention": (16, 15, 1, True, {}),
}


def attention_case(name, R):
    """The full-sequence inputs of a case (deterministic) and its shard bounds for R ranks."""
    N, w, d, sep, bounds = CASES[name]
    bounds = bounds.get(R) or even_bounds(N, R)
    g = torch.Generator().manual_seed(len(name))
    q, k, v, go = (torch.randn(B, H, N, D, generator=g) for _ in range(4))
    G = [torch.randn(B, H, N, D, generator=g) for _ in range(3)] if sep else None
    gm = torch.zeros(B, N, dtype=torch.bool)
    pad = torch.zeros(B, N, dtype=torch.bool)
    if name == "shorter_than_halo":
        gm[0, [0, 3, 5, 9]] = True
        gm[1, 2] = True
        pad[1, 15:] = True
    elif name == "globals_on_boundaries":
        for b in bounds[1:-1]:
            gm[0, [b - 1, b]] = True
        gm[1, [0, 37]] = True  # 37 is also padding: a padded global token
        pad[1, 34:] = True
    elif name == "globals_on_one_rank":
        gm[0, [N - 1, N - 2, N - 4]] = True
        gm[1, N - 3] = True
        pad[0, :2] = True
    elif name == "full_attention":
        gm[:, [0, 8]] = True
    return dict(q=q, k=k, v=v, G=G, go=go, gm=gm, pad=pad, bounds=bounds, w=w, d=d)


def reference(c):
    """Single-process output and gradients of (out * go).sum() w.r.t. q, k, v (and qG, kG, vG)."""
    leaves = [t.clone().requires_grad_() for t in [c["q"], c["k"], c["v"]] + (c["G"] or [])]
    gidx = _slots(c["gm"], int(c["gm"].sum(1).max()))
    gqkv = None
    if c["G"]:
        qG = torch.gather(leaves[3], 2, gidx.clamp(min=0)[:, None, :, None].expand(B, H, -1, D))
        gqkv = (qG, leaves[4], leaves[5])
    out = local_global_attention(*leaves[:3], window=c["w"], dilation=c["d"], global_idx=gidx,
                                 key_padding_mask=c["pad"], global_qkv=gqkv)
    (out * c["go"]).sum().backward()
    return [out.detach()] + [t.grad for t in leaves]


class _Counter:
    """Wraps torch.distributed's communication calls; records (name, elements) per call."""

    NAMES = ("isend", "irecv", "send", "recv", "all_gather", "all_gather_into_tensor", "all_reduce",
             "broadcast", "reduce_scatter", "reduce_scatter_tensor", "all_to_all", "all_to_all_single",
             "gather", "scatter", "batch_isend_irecv")

    def __init__(self):
        self.calls = []
        self.saved = {n: getattr(dist, n) for n in self.NAMES if hasattr(dist, n)}

    def __enter__(self):
        for n, f in self.saved.items():
            setattr(dist, n, self._wrap(n, f))
        return self

    def _wrap(self, name, f):
        def call(*args, **kw):
            if name == "batch_isend_irecv":  # record each batched op as the isend/irecv it is
                self.calls += [(op.op.__name__, op.tensor.numel()) for op in args[0]]
                return f(*args, **kw)
            t = args[0]
            elems = t.numel() if isinstance(t, torch.Tensor) else sum(x.numel() for x in t if isinstance(x, torch.Tensor))
            if name == "all_gather":  # (outputs, input): count what this rank puts in
                elems = args[1].numel()
            self.calls.append((name, elems))
            return f(*args, **kw)
        return call

    def __exit__(self, *exc):
        for n, f in self.saved.items():
            setattr(dist, n, f)


def _tiny_model(sep):
    torch.manual_seed(0)
    cfg = preset("minilm", hidden_size=32, num_heads=4, intermediate_size=64, num_layers=2, window=(3, 5),
                 dilation=(1, 2), vocab_size=100, max_positions=64, separate_global_projections=sep)
    return build(cfg)


def encoder_case(N=45):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 100, (B, N), generator=g)
    pos = (torch.arange(N) % 64).expand(B, N)
    gm = torch.zeros(B, N, dtype=torch.bool)
    gm[0, [0, 14, 15, 22, 23, 30]] = True  # on the boundaries of 2, 3 and 4 even shards
    gm[1, 44] = True
    pad = torch.zeros(B, N, dtype=torch.bool)
    pad[1, 40:] = True
    gout = torch.randn(B, N, 32, generator=g)
    return ids, pos, gm, pad, gout


def _cases(R, group):
    """Every case on the first R ranks (a sub-group of the one 4-process spawn)."""
    r = dist.get_rank(group)
    res = {}
    for name in CASES:
        c = attention_case(name, R)
        lay = ShardLayout.build(c["bounds"], c["gm"], c["pad"])
        s, e = lay.shard(r)
        loc = [t[:, :, s:e].clone().requires_grad_() for t in [c["q"], c["k"], c["v"]] + (c["G"] or [])]
        spec = ShardSpec(lay, r, c["w"], c["d"], D ** -0.5, group)
        with _Counter() as fwd:
            out = sharded_attention(*loc[:3], spec, global_qkv=loc[3:] or None)
        with _Counter() as bwd:
            (out * c["go"][:, :, s:e]).sum().backward()
        mine = [out.detach()] + [t.grad for t in loc]
        every = [None] * R
        dist.all_gather_object(every, (mine, fwd.calls, bwd.calls), group=group)
        res[name] = ([torch.cat([m[i] for m, _, _ in every], 2) for i in range(len(mine))],
                     [f for _, f, _ in every], [b for _, _, b in every])

    ids, pos, gm, pad, gout = encoder_case()
    for sep in (False, True):
        net = _tiny_model(sep)
        sharded = shard_encoder(net, group)
        bounds = even_bounds(ids.shape[1], R)
        s, e = bounds[r], bounds[r + 1]
        out = sharded(ids[:, s:e], pos[:, s:e], global_mask=gm[:, s:e], key_padding_mask=pad[:, s:e])
        (out * gout[:, s:e]).sum().backward()
        grads = {}
        for n, p in net.named_parameters():
            dist.all_reduce(p.grad, group=group)  # each rank holds the gradient from its own tokens
            grads[n] = p.grad
        every = [None] * R
        dist.all_gather_object(every, out.detach(), group=group)
        res[f"encoder_sep{sep}"] = (torch.cat(every, 1), grads)
    # The inference path that encode_on_devices runs on every rank, gathered to rank 0.
    res["encode_shard"] = encode_shard(_tiny_model(True), ids, pos, global_mask=gm, key_padding_mask=pad,
                                       group=group)
    return res


def _worker():
    out = {}
    for R in WORLDS:
        group = dist.new_group(list(range(R)))  # every rank takes part in creating every group
        if dist.get_rank() < R:
            out[R] = _cases(R, group)
    return out


@functools.lru_cache(maxsize=None)
def _all_runs():
    return launch(_worker, max(WORLDS), backend="gloo")


def _run(R):
    return _all_runs()[R]


def _close(got, exp, what):
    assert got.shape == exp.shape, what
    err = (got - exp).abs().max().item() if got.numel() else 0.0
    assert torch.allclose(got, exp, atol=ATOL, rtol=RTOL), f"{what}: max |diff| {err:.2e}"


@pytest.mark.parametrize("R", WORLDS)
@pytest.mark.parametrize("name", list(CASES))
def test_attention_equals_single_process(R, name):
    got, _, _ = _run(R)[name]
    exp = reference(attention_case(name, R))
    labels = ["out", "dq", "dk", "dv", "dqG", "dkG", "dvG"]
    assert len(got) == len(exp)
    for g, x, label in zip(got, exp, labels):
        _close(g, x, f"{name} R={R} {label}")


@pytest.mark.parametrize("R", WORLDS)
@pytest.mark.parametrize("name", list(CASES))
def test_collectives_are_halo_and_tile_only(R, name):
    """Per rank: point-to-point only with the owners of its halo, exactly its halo's bytes; two tile-sized
    all-gathers forward and two all-reduces backward when there are global tokens; nothing else."""
    _, fwd, bwd = _run(R)[name]
    c = attention_case(name, R)
    lay = ShardLayout.build(c["bounds"], c["gm"], c["pad"])
    N, h = lay.length, c["w"] * c["d"]
    Gl, S = lay.slots_per_shard, lay.tile_pos.shape[1]
    for r in range(R):
        recv = halo_pieces(lay.bounds, r, h)
        sent = halo_sends(lay.bounds, r, h)
        halo_rows = sum(b - a for _, a, b in recv)
        s, e = lay.shard(r)
        assert halo_rows == (min(h, s) + min(h, N - e) if e > s else 0)
        kinds = lambda calls, k: [n for name, n in calls if name == k]  # noqa: E731
        assert kinds(fwd[r], "irecv") == [B * H * (b - a) * 2 * D for _, a, b in recv]
        assert kinds(fwd[r], "isend") == [B * H * (b - a) * 2 * D for _, a, b in sent]
        assert kinds(bwd[r], "isend") == kinds(fwd[r], "irecv")  # halo gradients go back to their owners
        assert kinds(bwd[r], "irecv") == kinds(fwd[r], "isend")
        gathers = kinds(fwd[r], "all_gather")
        reduces = kinds(bwd[r], "all_reduce")
        if Gl:
            assert gathers == [B * H * Gl * 3 * D, B * H * S * (D + 1)]
            assert reduces == [B * H * S * D, B * H * S * 3 * D]
        else:
            assert gathers == [] and reduces == []
        assert sum(gathers) < B * H * N * 2 * D  # never the whole sequence's K/V
        others = {name for name, _ in fwd[r] + bwd[r]} - {"isend", "irecv", "all_gather", "all_reduce"}
        assert not others


@pytest.mark.parametrize("R", WORLDS)
@pytest.mark.parametrize("sep", [False, True])
def test_sharded_encoder_forward_and_backward(R, sep):
    got, grads = _run(R)[f"encoder_sep{sep}"]
    ids, pos, gm, pad, gout = encoder_case()
    net = _tiny_model(sep)
    out = net(ids, pos, global_mask=gm, key_padding_mask=pad)
    (out * gout).sum().backward()
    _close(got, out.detach(), f"encoder R={R} out")
    for n, p in net.named_parameters():
        _close(grads[n], p.grad, f"encoder R={R} grad {n}")


@pytest.mark.parametrize("R", WORLDS)
def test_encode_shard_gathers_on_rank0(R):
    ids, pos, gm, pad, _ = encoder_case()
    with torch.inference_mode():
        exp = _tiny_model(True)(ids, pos, global_mask=gm, key_padding_mask=pad)
    _close(_run(R)["encode_shard"], exp, f"encode_shard R={R}")


def _fail_worker():
    if dist.get_rank() == 1:
        raise ValueError("boom on purpose")
    dist.barrier()  # rank 0 would wait here for the dead rank; launch must end it
    return "unreachable"


def test_failed_rank_ends_the_run():
    with pytest.raises(LongdocError, match=r"(?s)rank 1 of 2.*boom on purpose"):
        launch(_fail_worker, 2, backend="gloo")


# ---- one device, shards one after another ---------------------------------------------------------


@pytest.mark.parametrize("sep", [False, True])
@pytest.mark.parametrize("shard_len", [3, 7, 15, 45, 64])
def test_sequential_equals_unsharded(sep, shard_len):
    """Shard lengths below the halo (5*2 = 10 in layer 2), at a global token, equal to and above N."""
    ids, pos, gm, pad, _ = encoder_case()
    net = _tiny_model(sep)
    with torch.inference_mode():
        exp = net(ids, pos, global_mask=gm, key_padding_mask=pad)
    got = encode_sequential(net, ids, pos, global_mask=gm, key_padding_mask=pad, shard_len=shard_len)
    _close(got, exp, f"sequential shard_len={shard_len}")


def test_sequential_without_globals_or_padding_and_window_override():
    ids, pos, _, _, _ = encoder_case()
    net = _tiny_model(False)
    with torch.inference_mode():
        exp = net(ids, pos)
        exp_full = net(ids, pos, window=44)
    _close(encode_sequential(net, ids, pos, shard_len=6), exp, "sequential plain")
    _close(encode_sequential(net, ids, pos, shard_len=6, window=44), exp_full, "sequential window=44")


def test_halo_plan_reaches_past_short_neighbours():
    bounds = (0, 2, 3, 10, 20)
    assert halo_pieces(bounds, 3, 8) == [(1, 2, 3), (2, 3, 10)]  # 8 rows back: ranks 2 and 1
    assert halo_pieces(bounds, 0, 8) == [(1, 2, 3), (2, 3, 10)]
    assert halo_pieces(bounds, 2, 0) == []
    assert halo_sends(bounds, 1, 8) == [(0, 2, 3), (2, 2, 3), (3, 2, 3)]


# ---- the Encoder API ----------------------------------------------------------------------------


def test_on_devices_encoder_equals_plain(tiny_model_dir):
    """`on_devices` (what `longdoc ask --devices N` would use): 2 gloo ranks, and one device in shards."""
    from longdoc.model import load_encoder
    from longdoc.shard import on_devices

    enc = load_encoder(str(tiny_model_dir))
    text = "The distributor shall keep records. " * 40
    tokens = enc.tokenize(text)
    gm = torch.zeros(len(tokens), dtype=torch.bool)
    gm[[0, len(tokens) // 2]] = True
    exp = enc.encode(tokens, global_mask=gm)
    assert on_devices(enc) is enc
    _close(on_devices(enc, shard_tokens=50).encode(tokens, global_mask=gm), exp, "sequential Encoder")
    spans, glob = [(0, 36), (36, 400), (900, 1400)], [(0, 36), (700, 736)]
    got = on_devices(enc, 2, backend="gloo").embed_spans(text, spans, global_spans=glob)  # one spawn
    _close(got, enc.embed_spans(text, spans, global_spans=glob), "2 ranks embed_spans")


def test_sequential_keeps_a_half_precision_model_in_its_dtype():
    """A bf16 model (the GPU default): host activations and the global rows stay bf16, and the result
    is the bf16 model's own output within bf16 rounding."""
    ids, pos, gm, pad, _ = encoder_case()
    net = _tiny_model(False).to(torch.bfloat16)
    with torch.inference_mode():
        exp = net(ids, pos, global_mask=gm, key_padding_mask=pad).float()
    got = encode_sequential(net, ids, pos, global_mask=gm, key_padding_mask=pad, shard_len=7)
    assert got.dtype == torch.bfloat16 and torch.isfinite(got).all()
    assert ((got.float() - exp).abs().max() / exp.abs().max()).item() < 2e-2


def test_more_cpu_ranks_than_cores_is_refused_before_any_process_starts():
    import os

    from longdoc.errors import LongdocError
    from longdoc.shard.launch import MIN_CPU_RANKS, launch

    too_many = max(os.cpu_count() or 1, MIN_CPU_RANKS) + 1
    with pytest.raises(LongdocError, match="more CPU processes than"):
        launch(print, too_many, backend="gloo")  # print would run in each rank: none may start
