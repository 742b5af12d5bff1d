"""Band kernels for Hopper GPUs (sm_90), warp-specialised, in Gluon: the forward, and the backward's
dK/dV pass (``band_dkdv``, below the forward).

Why a second forward kernel: the Triton band kernel gives every 128-row query block its own copy of
the band's K/V tiles and walks 640 keys per row for the 513 a row sees at w = 256 (80% useful). Here
one program owns ``NUM_C`` x 64 rows: a one-warp loader streams the band's K/V blocks with the bulk
tensor copy engine (TMA) into a ring of ``STAGES`` shared-memory slots, and ``NUM_C`` consumer
warpgroups (64 rows each, the height of one wgmma) read the same slots, each walking only the blocks
its own rows reach (576 keys at w = 256: 89% useful). Each consumer issues the next block's Q K^T on
the tensor cores before the current block's softmax, so the two overlap (FlashAttention-3's
intra-warpgroup pipelining); the loader and the other consumers overlap the rest. A slot is refilled
once every consumer has released it (an mbarrier that counts ``NUM_C`` arrivals).

Measured on an H100 (docs/kernels.md, session 7): the forward band pass at d = 64 is 1.01-1.05x the
Triton kernel's at 64k tokens and 1.11x at 1M; at d = 128, 1.21x at 256k. At d = 32 it is slower
(0.76x), so d = 32 stays on Triton.

The P V product is retired within each step. Keeping it in flight into the next step, as
FlashAttention-3 does, made ptxas serialise every wgmma (its warning C7514: the loop's register moves
read an in-flight accumulator), which cost 15%.

Same contract as ``triton_attention._fwd_band_kernel`` for the calls it serves (``supported``): the
compact global tile first (global keys already inside a row's band are masked there, as in the Triton
kernel), then the band; output and natural-log LSE stored. Global query rows, dilation, key padding,
fp32, head dims other than 64 and 128, and short inputs whose global rows ride along the band kernel
stay with the Triton kernels.
"""
from __future__ import annotations

import inspect

import torch
import triton

try:  # Gluon's Hopper modules need a CUDA build of Triton >= 3.6 (warp_specialize's list form)
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.language.nvidia.hopper import (fence_async_shared, mbarrier, tma,
                                                                   warpgroup_mma, warpgroup_mma_wait)
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor
    HAVE_GLUON = "functions_and_args" in inspect.signature(gl.warp_specialize).parameters
except ImportError:  # pragma: no cover - depends on the installed Triton
    HAVE_GLUON = False

# (BLOCK_N, STAGES, NUM_C, maxnreg, consumer registers) per head dim, from sweeps on the H100
# (docs/kernels.md, "The Hopper kernel"): a program holds NUM_C consumer warpgroups and one loader warp, one program
# per SM. maxnreg is the kernel's register cap at launch (65,536 registers over (NUM_C + 1) * 128
# threads); the loader gives back all but 24 and the consumers take CONS_REGS. More consumers were
# faster at every head dim until their registers ran out: five at d = 64 spilled, and ptxas then
# serialised the wgmmas (warning C7512).
TILES = {64: (64, 4, 4, 96, 112), 128: (64, 4, 3, 128, 160)}
_MAX_G_PAD = 64  # a wider global tile (64 x G_PAD fp32 scores per consumer) does not fit the registers
_SMEM_LIMIT = 227 * 1024
SUB_M = 64  # rows per consumer: one wgmma's height

if HAVE_GLUON:
    _SUB_M = gl.constexpr(SUB_M)

    @gluon.jit
    def _reach(c: gl.constexpr, window, BLOCK: gl.constexpr, NUM_C: gl.constexpr):
        """(n_blk, t_lo, t_hi): a program's NUM_C * 64 rows (or keys) meet blocks t = 0 .. n_blk - 1 of
        BLOCK keys (or rows) starting w before its first one; consumer c's 64 reach [t_lo, t_hi)."""
        n_blk = (NUM_C * _SUB_M + 2 * window + BLOCK - 1) // BLOCK
        t_lo = (c * _SUB_M) // BLOCK
        t_hi = gl.minimum((c * _SUB_M + _SUB_M - 1 + 2 * window) // BLOCK + 1, n_blk)
        return n_blk, t_lo, t_hi

    @gluon.jit
    def _softmax_step(s, m_i, l_i, masked, kb, q_idx, N, window, qk_scale, BLOCK_N: gl.constexpr,
                      col_s: gl.constexpr):
        """Online softmax over score block s (keys kb + [0, BLOCK_N)); masks only when told to."""
        if masked:
            k_idx = kb + gl.arange(0, BLOCK_N, layout=col_s)
            rel = k_idx[None, :] - q_idx[:, None]
            ok = (rel <= window) & (rel >= -window) & (k_idx[None, :] >= 0) & (k_idx[None, :] < N)
            s = gl.where(ok, s, float("-inf"))
        # m_i starts finite (-1e30), so a block with every key masked leaves it finite: no NaN
        m_new = gl.maximum(m_i, gl.max(s, 1) * qk_scale)
        p = gl.exp2(s * qk_scale - m_new[:, None])
        alpha = gl.exp2(m_i - m_new)
        l_i = l_i * alpha + gl.sum(p, 1)
        return p, alpha, m_new, l_i

    @gluon.jit
    def _step(s, acc, m_i, l_i, t, key0, r0, q_idx, N, window, qk_scale, BLOCK_N: gl.constexpr,
              col_s: gl.constexpr, row_o: gl.constexpr):
        """Softmax of score block t and the rescaled accumulator. A block inside every row's band
        (rows r0 .. r0 + 63) and inside [0, N) is not masked."""
        kb = key0 + t * BLOCK_N
        masked = (kb < r0 + _SUB_M - 1 - window) | (kb + BLOCK_N - 1 > r0 + window) | (kb < 0) | (kb + BLOCK_N > N)
        p, alpha, m_i, l_i = _softmax_step(s, m_i, l_i, masked, kb, q_idx, N, window, qk_scale, BLOCK_N, col_s)
        return p, acc * gl.convert_layout(alpha, row_o)[:, None], m_i, l_i

    @gluon.jit
    def _pv(p, acc, v_smem, v_bar, t, HEAD_DIM: gl.constexpr, BLOCK_N: gl.constexpr, STAGES: gl.constexpr,
            p_layout: gl.constexpr):
        """Issue acc += P V(t), asynchronously, once block t's V has landed."""
        slot = t % STAGES
        mbarrier.wait(v_bar.index(slot), (t // STAGES) & 1)
        return warpgroup_mma(gl.convert_layout(p.to(v_smem.dtype), p_layout),
                             v_smem.index(slot).reshape([BLOCK_N, HEAD_DIM]), acc, is_async=True)

    @gluon.jit
    def _release_unused(t, k_bar, v_bar, empty_bar, STAGES: gl.constexpr):
        """Release block t, which this consumer's rows do not reach. It waits for the block to land
        first: an arrival before that could count toward the slot's previous fill."""
        slot = t % STAGES
        phase = (t // STAGES) & 1
        mbarrier.wait(k_bar.index(slot), phase)
        mbarrier.wait(v_bar.index(slot), phase)
        mbarrier.arrive(empty_bar.index(slot), count=1)

    @gluon.jit
    def _consumer(c: gl.constexpr, cargs, HEAD_DIM: gl.constexpr, BLOCK_N: gl.constexpr, G_PAD: gl.constexpr,
                  STAGES: gl.constexpr, NUM_C: gl.constexpr):
        """Consumer warpgroup c: rows m0 + 64c + [0, 64) against the global tile, then their band."""
        bufs, bars, ptrs, scalars = cargs
        q_smem, k_smem, v_smem, kg_smem, vg_smem = bufs
        q_bar, k_bar, v_bar, empty_bar = bars
        o_desc, GPOS, Lse = ptrs
        b, h, m0, N, window, qk_scale, stride_pb, stride_lb, stride_lh = scalars
        dtype: gl.constexpr = o_desc.dtype
        # wgmma accumulators: S = Q K^T and O; P enters P V from registers. Both spread rows alike, so
        # row vectors move between them for free.
        s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                           instr_shape=[16, BLOCK_N, 16])
        o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                           instr_shape=[16, HEAD_DIM, 16])
        p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
        row_s: gl.constexpr = gl.SliceLayout(1, s_layout)
        col_s: gl.constexpr = gl.SliceLayout(0, s_layout)
        row_o: gl.constexpr = gl.SliceLayout(1, o_layout)

        # block t holds keys key0 + t * BLOCK_N + [0, BLOCK_N); rows r0 .. r0 + 63 reach blocks
        # [t_lo, t_hi) (keys r0 - w .. r0 + 63 + w)
        r0 = m0 + c * _SUB_M
        key0 = m0 - window
        n_blk, t_lo, t_hi = _reach(c, window, BLOCK_N, NUM_C)

        q_idx = r0 + gl.arange(0, _SUB_M, layout=row_s)
        m_i = gl.full([_SUB_M], -1.0e30, gl.float32, layout=row_s)
        l_i = gl.zeros([_SUB_M], gl.float32, layout=row_s)
        acc = gl.zeros([_SUB_M, HEAD_DIM], gl.float32, layout=o_layout)
        s_zero = gl.zeros([_SUB_M, BLOCK_N], gl.float32, layout=s_layout)
        mbarrier.wait(q_bar.index(c), 0)
        q = q_smem.index(c).reshape([_SUB_M, HEAD_DIM])

        if G_PAD > 0:  # the compact global tile, once; a global key inside the row's band is the band's
            g_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                               instr_shape=[16, G_PAD, 16])
            sg = warpgroup_mma(q, kg_smem.permute((1, 0)), gl.zeros([_SUB_M, G_PAD], gl.float32, layout=g_layout),
                               use_acc=False)
            g_pos = gl.load(GPOS + b.to(gl.int64) * stride_pb + gl.arange(0, G_PAD, layout=gl.SliceLayout(0, g_layout)))
            rel = g_pos[None, :] - (r0 + gl.arange(0, _SUB_M, layout=gl.SliceLayout(1, g_layout)))[:, None]
            sg = gl.where((g_pos[None, :] >= 0) & ((rel > window) | (rel < -window)), sg, float("-inf"))
            m_g = gl.maximum(gl.max(sg, 1) * qk_scale, -1.0e30)
            pg = gl.exp2(sg * qk_scale - m_g[:, None])
            l_i = gl.convert_layout(gl.sum(pg, 1), row_s)
            m_i = gl.convert_layout(m_g, row_s)
            acc = warpgroup_mma(gl.convert_layout(pg.to(dtype), p_layout), vg_smem, acc)

        for t in range(0, t_lo):
            _release_unused(t, k_bar, v_bar, empty_bar, STAGES)
        mbarrier.wait(k_bar.index(t_lo % STAGES), (t_lo // STAGES) & 1)
        s = warpgroup_mma(q, k_smem.index(t_lo % STAGES).reshape([BLOCK_N, HEAD_DIM]).permute((1, 0)), s_zero,
                          use_acc=False)
        # per step: issue S(t + 1), softmax(t) while it runs, then P V(t); both retired before the next
        # step, so no accumulator is in flight across the loop edge (see the module docstring)
        for t in range(t_lo, t_hi - 1):
            nslot = (t + 1) % STAGES
            mbarrier.wait(k_bar.index(nslot), ((t + 1) // STAGES) & 1)
            s_next = warpgroup_mma(q, k_smem.index(nslot).reshape([BLOCK_N, HEAD_DIM]).permute((1, 0)), s_zero,
                                   use_acc=False, is_async=True)
            p, acc, m_i, l_i = _step(s, acc, m_i, l_i, t, key0, r0, q_idx, N, window, qk_scale, BLOCK_N, col_s, row_o)
            acc = _pv(p, acc, v_smem, v_bar, t, HEAD_DIM, BLOCK_N, STAGES, p_layout)
            acc, s = warpgroup_mma_wait(0, deps=(acc, s_next))
            mbarrier.arrive(empty_bar.index(t % STAGES), count=1)
        t = t_hi - 1
        p, acc, m_i, l_i = _step(s, acc, m_i, l_i, t, key0, r0, q_idx, N, window, qk_scale, BLOCK_N, col_s, row_o)
        acc = warpgroup_mma_wait(0, deps=(_pv(p, acc, v_smem, v_bar, t, HEAD_DIM, BLOCK_N, STAGES, p_layout), ))
        mbarrier.arrive(empty_bar.index(t % STAGES), count=1)
        for t in range(t_hi, n_blk):
            _release_unused(t, k_bar, v_bar, empty_bar, STAGES)

        empty = l_i == 0.0  # no visible key: output 0, LSE -inf
        l_safe = gl.where(empty, 1.0, l_i)
        out = acc / gl.convert_layout(l_safe, row_o)[:, None]
        lse = gl.where(empty, float("-inf"), (m_i + gl.log2(l_safe)) * 0.6931471805599453)
        gl.store(Lse + b.to(gl.int64) * stride_lb + h.to(gl.int64) * stride_lh + q_idx, lse, mask=q_idx < N)
        q_smem.index(c).reshape([_SUB_M, HEAD_DIM]).store(out.to(dtype))  # Q is read no more: reuse its tile
        fence_async_shared()
        tma.async_copy_shared_to_global(o_desc, [b, h, r0, 0], q_smem.index(c))  # rows >= N are dropped
        tma.store_wait(0)

    @gluon.jit
    def _loader(largs, HEAD_DIM: gl.constexpr, BLOCK_N: gl.constexpr, STAGES: gl.constexpr, NUM_C: gl.constexpr):
        """The one loader warp: every consumer's Q tile, then the band's K/V blocks into the ring, each
        slot once all consumers have released its previous block. Rows outside [0, N) read as zeros."""
        bufs, bars, descs, scalars = largs
        q_smem, k_smem, v_smem = bufs
        q_bar, k_bar, v_bar, empty_bar = bars
        q_desc, k_desc, v_desc = descs
        b, h, m0, window = scalars
        for c in gl.static_range(NUM_C):
            mbarrier.expect(q_bar.index(c), q_desc.block_type.nbytes)
            tma.async_copy_global_to_shared(q_desc, [b, h, m0 + c * _SUB_M, 0], q_bar.index(c), q_smem.index(c))
        key0 = m0 - window
        n_blk = _reach(0, window, BLOCK_N, NUM_C)[0]
        for t in range(n_blk):
            slot = t % STAGES
            mbarrier.wait(empty_bar.index(slot), ((t // STAGES) & 1) ^ 1)  # the first pass finds them free
            mbarrier.expect(k_bar.index(slot), k_desc.block_type.nbytes)
            tma.async_copy_global_to_shared(k_desc, [b, h, key0 + t * BLOCK_N, 0], k_bar.index(slot),
                                            k_smem.index(slot))
            mbarrier.expect(v_bar.index(slot), v_desc.block_type.nbytes)
            tma.async_copy_global_to_shared(v_desc, [b, h, key0 + t * BLOCK_N, 0], v_bar.index(slot),
                                            v_smem.index(slot))

    @gluon.jit(do_not_specialize=["N", "window"])
    def _ws_band_fwd_kernel(q_desc, k_desc, v_desc, o_desc, KG, VG, GPOS, Lse,
                            stride_gb, stride_gh, stride_gm, stride_pb, stride_lb, stride_lh,
                            H, N, window, qk_scale,
                            HEAD_DIM: gl.constexpr, BLOCK_N: gl.constexpr, G_PAD: gl.constexpr,
                            G_LAYOUT: gl.constexpr, STAGES: gl.constexpr, NUM_C: gl.constexpr,
                            CONS_REGS: gl.constexpr, num_warps: gl.constexpr):
        """One program: NUM_C * 64 query rows of one (batch, head). Descriptors are 4-D (B, H, N, D)."""
        pid_m = gl.program_id(0)
        bh = gl.program_id(1)
        b = bh // H
        h = bh % H
        m0 = pid_m * (NUM_C * _SUB_M)
        dtype: gl.constexpr = q_desc.dtype

        q_smem = gl.allocate_shared_memory(dtype, [NUM_C] + q_desc.block_type.shape, q_desc.layout)
        k_smem = gl.allocate_shared_memory(dtype, [STAGES] + k_desc.block_type.shape, k_desc.layout)
        v_smem = gl.allocate_shared_memory(dtype, [STAGES] + v_desc.block_type.shape, v_desc.layout)
        q_bar = gl.allocate_shared_memory(gl.int64, [NUM_C, 1], mbarrier.MBarrierLayout())
        k_bar = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        v_bar = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        empty_bar = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        for i in gl.static_range(NUM_C):
            mbarrier.init(q_bar.index(i), count=1)
        for i in gl.static_range(STAGES):
            mbarrier.init(k_bar.index(i), count=1)
            mbarrier.init(v_bar.index(i), count=1)
            mbarrier.init(empty_bar.index(i), count=NUM_C)

        # the global tile, read once here by the default warps, before the partitions fork
        GP: gl.constexpr = 16 if G_PAD == 0 else G_PAD
        if G_PAD > 0:
            ld: gl.constexpr = gl.BlockedLayout([1, 8], [4, 8], [num_warps, 1], [1, 0])
            tile = (gl.arange(0, GP, layout=gl.SliceLayout(1, ld))[:, None] * stride_gm
                    + gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, ld))[None, :])
            g_off = b.to(gl.int64) * stride_gb + h.to(gl.int64) * stride_gh
            kg_smem = gl.allocate_shared_memory(dtype, [GP, HEAD_DIM], G_LAYOUT, gl.load(KG + g_off + tile))
            vg_smem = gl.allocate_shared_memory(dtype, [GP, HEAD_DIM], G_LAYOUT, gl.load(VG + g_off + tile))
        else:  # unused; the partitions take the same arguments either way
            kg_smem = gl.allocate_shared_memory(dtype, [GP, HEAD_DIM], G_LAYOUT)
            vg_smem = gl.allocate_shared_memory(dtype, [GP, HEAD_DIM], G_LAYOUT)
        fence_async_shared()

        bars = (q_bar, k_bar, v_bar, empty_bar)
        cargs = ((q_smem, k_smem, v_smem, kg_smem, vg_smem), bars, (o_desc, GPOS, Lse),
                 (b, h, m0, N, window, qk_scale, stride_pb, stride_lb, stride_lh))
        largs = ((q_smem, k_smem, v_smem), bars, (q_desc, k_desc, v_desc), (b, h, m0, window))
        # consumer 0 runs in the kernel's own 4 warps (the default partition); the rest are workers
        if NUM_C == 2:
            gl.warp_specialize([(_consumer, (0, cargs, HEAD_DIM, BLOCK_N, G_PAD, STAGES, NUM_C)),
                                (_consumer, (1, cargs, HEAD_DIM, BLOCK_N, G_PAD, STAGES, NUM_C)),
                                (_loader, (largs, HEAD_DIM, BLOCK_N, STAGES, NUM_C))],
                               [4, 1], [CONS_REGS, 24])
        elif NUM_C == 3:
            gl.warp_specialize([(_consumer, (0, cargs, HEAD_DIM, BLOCK_N, G_PAD, STAGES, NUM_C)),
                                (_consumer, (1, cargs, HEAD_DIM, BLOCK_N, G_PAD, STAGES, NUM_C)),
                                (_consumer, (2, cargs, HEAD_DIM, BLOCK_N, G_PAD, STAGES, NUM_C)),
                                (_loader, (largs, HEAD_DIM, BLOCK_N, STAGES, NUM_C))],
                               [4, 4, 1], [CONS_REGS, CONS_REGS, 24])
        else:
            gl.warp_specialize([(_consumer, (0, cargs, HEAD_DIM, BLOCK_N, G_PAD, STAGES, NUM_C)),
                                (_consumer, (1, cargs, HEAD_DIM, BLOCK_N, G_PAD, STAGES, NUM_C)),
                                (_consumer, (2, cargs, HEAD_DIM, BLOCK_N, G_PAD, STAGES, NUM_C)),
                                (_consumer, (3, cargs, HEAD_DIM, BLOCK_N, G_PAD, STAGES, NUM_C)),
                                (_loader, (largs, HEAD_DIM, BLOCK_N, STAGES, NUM_C))],
                               [4, 4, 4, 1], [CONS_REGS, CONS_REGS, CONS_REGS, 24])

    # ------------------------------------------------------------------------------------------
    # Backward: dK and dV of the band (and of the global rows, which see every key). The same
    # layout as the forward with the roles of rows and keys swapped: a program owns NUM_C x 64 keys,
    # the loader streams the band's query blocks (Q and dO) through the ring, and each consumer walks
    # only the blocks its own keys reach. The dQ pass stays on the Triton kernel, which runs first
    # and leaves every row's log2 LSE and delta. Measured on an H100 (docs/kernels.md, session 8):
    # the backward 1.14x at d = 128, 1.03-1.04x at d = 64 with global tokens, level without them.
    # ------------------------------------------------------------------------------------------
    @gluon.jit
    def _dkdv_step(k_c, v_c, q_t, do_t, dk, dv, lse2, delta, masked, k_idx, q_idx, window, qk_scale,
                   BLOCK_M: gl.constexpr, s_layout: gl.constexpr, a_layout: gl.constexpr):
        """One block of query rows against the consumer's 64 keys: S^T = K Q^T and dP^T = V dO^T on
        the tensor cores together, then P^T and dS^T, then dV += P^T dO and dK += dS^T Q. ``lse2`` is
        the rows' log2 LSE (+inf: the row takes no part), ``delta`` rowsum(dO * O)."""
        zero = gl.zeros([_SUB_M, BLOCK_M], gl.float32, layout=s_layout)
        s = warpgroup_mma(k_c, q_t.permute((1, 0)), zero, use_acc=False, is_async=True)
        dp = warpgroup_mma(v_c, do_t.permute((1, 0)), zero, use_acc=False, is_async=True)
        s, dp = warpgroup_mma_wait(0, deps=(s, dp))
        p = gl.exp2(s * qk_scale - lse2[None, :])
        if masked:
            rel = q_idx[None, :] - k_idx[:, None]
            p = gl.where((rel <= window) & (rel >= -window), p, 0.0)
        ds = p * (dp - delta[None, :])
        dtype: gl.constexpr = q_t.dtype
        dv = warpgroup_mma(gl.convert_layout(p.to(dtype), a_layout), do_t, dv, is_async=True)
        dk = warpgroup_mma(gl.convert_layout(ds.to(dtype), a_layout), q_t, dk, is_async=True)
        return warpgroup_mma_wait(0, deps=(dv, dk))

    @gluon.jit
    def _dkdv_consumer(c: gl.constexpr, cargs, HEAD_DIM: gl.constexpr, BLOCK_M: gl.constexpr, G_PAD: gl.constexpr,
                       STAGES: gl.constexpr, NUM_C: gl.constexpr, PART_DQ: gl.constexpr):
        """Consumer warpgroup c: dK, dV of keys n0 + 64c + [0, 64) from the query blocks of their band,
        then from the global rows."""
        bufs, bars, ptrs, scalars = cargs
        k_smem, v_smem, q_smem, do_smem, qg_smem, dog_smem, dsg_smem = bufs
        kv_bar, qd_bar, empty_bar = bars
        dk_desc, dv_desc, LSE2, Delta, LSEG2, DeltaG, PDQ = ptrs
        b, h, H, n0, N, window, qk_scale, sm_scale = scalars
        dtype: gl.constexpr = dk_desc.dtype
        s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                           instr_shape=[16, BLOCK_M, 16])
        o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                           instr_shape=[16, HEAD_DIM, 16])
        a_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
        row_s: gl.constexpr = gl.SliceLayout(1, s_layout)
        col_s: gl.constexpr = gl.SliceLayout(0, s_layout)

        # query block t holds rows row0 + t * BLOCK_M + [0, BLOCK_M); keys kr0 .. kr0 + 63 reach
        # blocks [t_lo, t_hi) (rows kr0 - w .. kr0 + 63 + w)
        kr0 = n0 + c * _SUB_M
        row0 = n0 - window
        n_blk, t_lo, t_hi = _reach(c, window, BLOCK_M, NUM_C)
        k_idx = kr0 + gl.arange(0, _SUB_M, layout=row_s)
        bh = b.to(gl.int64) * H + h.to(gl.int64)
        dk = gl.zeros([_SUB_M, HEAD_DIM], gl.float32, layout=o_layout)
        dv = gl.zeros([_SUB_M, HEAD_DIM], gl.float32, layout=o_layout)
        mbarrier.wait(kv_bar.index(c), 0)
        k_c = k_smem.index(c).reshape([_SUB_M, HEAD_DIM])
        v_c = v_smem.index(c).reshape([_SUB_M, HEAD_DIM])

        for t in range(0, t_lo):
            _release_unused(t, qd_bar, qd_bar, empty_bar, STAGES)
        for t in range(t_lo, t_hi):
            slot = t % STAGES
            rb = row0 + t * BLOCK_M
            q_idx = rb + gl.arange(0, BLOCK_M, layout=col_s)
            q_in = (q_idx >= 0) & (q_idx < N)  # rows outside the sequence: LSE +inf, so P = 0
            lse2 = gl.load(LSE2 + bh * N + q_idx, mask=q_in, other=float("inf"))
            delta = gl.load(Delta + bh * N + q_idx, mask=q_in, other=0.0)
            masked = (rb + BLOCK_M - 1 - kr0 > window) | (kr0 + _SUB_M - 1 - rb > window)
            mbarrier.wait(qd_bar.index(slot), (t // STAGES) & 1)
            dv, dk = _dkdv_step(k_c, v_c, q_smem.index(slot).reshape([BLOCK_M, HEAD_DIM]),
                                do_smem.index(slot).reshape([BLOCK_M, HEAD_DIM]), dk, dv, lse2, delta, masked,
                                k_idx, q_idx, window, qk_scale, BLOCK_M, s_layout, a_layout)
            mbarrier.arrive(empty_bar.index(slot), count=1)
        for t in range(t_hi, n_blk):
            _release_unused(t, qd_bar, qd_bar, empty_bar, STAGES)

        if G_PAD > 0:  # the global rows see every key (their band LSE2 is +inf, so the loop skipped them)
            g_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                               instr_shape=[16, G_PAD, 16])
            col_g: gl.constexpr = gl.SliceLayout(0, g_layout)
            offs_g = gl.arange(0, G_PAD, layout=col_g)
            lse_g = gl.load(LSEG2 + bh * G_PAD + offs_g)
            delta_g = gl.load(DeltaG + bh * G_PAD + offs_g)
            zg = gl.zeros([_SUB_M, G_PAD], gl.float32, layout=g_layout)
            s = warpgroup_mma(k_c, qg_smem.permute((1, 0)), zg, use_acc=False, is_async=True)
            dp = warpgroup_mma(v_c, dog_smem.permute((1, 0)), zg, use_acc=False, is_async=True)
            s, dp = warpgroup_mma_wait(0, deps=(s, dp))
            p = gl.exp2(s * qk_scale - lse_g[None, :])
            ds = (p * (dp - delta_g[None, :])).to(dtype)
            dv = warpgroup_mma(gl.convert_layout(p.to(dtype), a_layout), dog_smem, dv)
            dk = warpgroup_mma(gl.convert_layout(ds, a_layout), qg_smem, dk)
            if PART_DQ:  # dQ_g partial from these keys: (D, G_PAD) = K^T dS^T, dS^T staged in shared memory
                dsg = dsg_smem.index(c)
                dsg.store(ds)
                fence_async_shared()
                dqg = warpgroup_mma(k_c.permute((1, 0)), dsg,
                                    gl.zeros([HEAD_DIM, G_PAD], gl.float32, layout=g_layout), use_acc=False)
                offs_d = gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(1, g_layout))
                chunk = bh * gl.cdiv(N, _SUB_M) + kr0 // _SUB_M
                gl.store(PDQ + chunk * (G_PAD * HEAD_DIM) + offs_g[None, :] * HEAD_DIM + offs_d[:, None], dqg,
                         mask=(offs_g[None, :] >= 0) & (kr0 < N))  # a consumer past the end has no chunk

        # K, V are read no more: their tiles take dK (scaled) and dV out (rows >= N are dropped)
        k_c.store((dk * sm_scale).to(dtype))
        v_c.store(dv.to(dtype))
        fence_async_shared()
        tma.async_copy_shared_to_global(dk_desc, [b, h, kr0, 0], k_smem.index(c))
        tma.async_copy_shared_to_global(dv_desc, [b, h, kr0, 0], v_smem.index(c))
        tma.store_wait(0)

    @gluon.jit
    def _dkdv_loader(largs, HEAD_DIM: gl.constexpr, BLOCK_M: gl.constexpr, STAGES: gl.constexpr,
                     NUM_C: gl.constexpr):
        """The loader warp: each consumer's K, V tile, then the band's Q and dO blocks into the ring."""
        bufs, bars, descs, scalars = largs
        k_smem, v_smem, q_smem, do_smem = bufs
        kv_bar, qd_bar, empty_bar = bars
        k_desc, v_desc, q_desc, do_desc = descs
        b, h, n0, window = scalars
        for c in gl.static_range(NUM_C):
            mbarrier.expect(kv_bar.index(c), 2 * k_desc.block_type.nbytes)
            tma.async_copy_global_to_shared(k_desc, [b, h, n0 + c * _SUB_M, 0], kv_bar.index(c), k_smem.index(c))
            tma.async_copy_global_to_shared(v_desc, [b, h, n0 + c * _SUB_M, 0], kv_bar.index(c), v_smem.index(c))
        row0 = n0 - window
        n_blk = _reach(0, window, BLOCK_M, NUM_C)[0]
        for t in range(n_blk):
            slot = t % STAGES
            mbarrier.wait(empty_bar.index(slot), ((t // STAGES) & 1) ^ 1)
            mbarrier.expect(qd_bar.index(slot), 2 * q_desc.block_type.nbytes)
            tma.async_copy_global_to_shared(q_desc, [b, h, row0 + t * BLOCK_M, 0], qd_bar.index(slot),
                                            q_smem.index(slot))
            tma.async_copy_global_to_shared(do_desc, [b, h, row0 + t * BLOCK_M, 0], qd_bar.index(slot),
                                            do_smem.index(slot))

    @gluon.jit(do_not_specialize=["N", "window"])
    def _ws_band_dkdv_kernel(k_desc, v_desc, q_desc, do_desc, dk_desc, dv_desc, LSE2, Delta,
                             QG, DOG, LSEG2, DeltaG, PDQ, H, N, window, qk_scale, sm_scale,
                             HEAD_DIM: gl.constexpr, BLOCK_M: gl.constexpr, G_PAD: gl.constexpr,
                             G_LAYOUT: gl.constexpr, DS_LAYOUT: gl.constexpr, STAGES: gl.constexpr,
                             NUM_C: gl.constexpr, CONS_REGS: gl.constexpr, PART_DQ: gl.constexpr,
                             num_warps: gl.constexpr):
        """One program: NUM_C * 64 keys of one (batch, head). ``LSE2``/``Delta`` (B, H, N) fp32 come from
        the dQ kernel; the global rows' compact tiles ``QG``, ``DOG`` (B, H, G_PAD, D) contiguous and
        ``LSEG2``, ``DeltaG`` (B, H, G_PAD) from the prep kernel, as for ``_bwd_dkdv_band_kernel``;
        ``PDQ``: one (G_PAD, D) partial of the global rows' dQ per 64 keys."""
        pid_n = gl.program_id(0)
        bh = gl.program_id(1)
        b = bh // H
        h = bh % H
        n0 = pid_n * (NUM_C * _SUB_M)
        dtype: gl.constexpr = q_desc.dtype

        k_smem = gl.allocate_shared_memory(dtype, [NUM_C] + k_desc.block_type.shape, k_desc.layout)
        v_smem = gl.allocate_shared_memory(dtype, [NUM_C] + v_desc.block_type.shape, v_desc.layout)
        q_smem = gl.allocate_shared_memory(dtype, [STAGES] + q_desc.block_type.shape, q_desc.layout)
        do_smem = gl.allocate_shared_memory(dtype, [STAGES] + do_desc.block_type.shape, do_desc.layout)
        kv_bar = gl.allocate_shared_memory(gl.int64, [NUM_C, 1], mbarrier.MBarrierLayout())
        qd_bar = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        empty_bar = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        for i in gl.static_range(NUM_C):
            mbarrier.init(kv_bar.index(i), count=1)
        for i in gl.static_range(STAGES):
            mbarrier.init(qd_bar.index(i), count=1)
            mbarrier.init(empty_bar.index(i), count=NUM_C)

        GP: gl.constexpr = 16 if G_PAD == 0 else G_PAD
        if G_PAD > 0:  # the global rows' compact tiles, read once by the default warps before the fork
            ld: gl.constexpr = gl.BlockedLayout([1, 8], [4, 8], [num_warps, 1], [1, 0])
            tile = (gl.arange(0, GP, layout=gl.SliceLayout(1, ld))[:, None] * HEAD_DIM
                    + gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, ld))[None, :])
            g_off = bh.to(gl.int64) * (GP * HEAD_DIM)
            qg_smem = gl.allocate_shared_memory(dtype, [GP, HEAD_DIM], G_LAYOUT, gl.load(QG + g_off + tile))
            dog_smem = gl.allocate_shared_memory(dtype, [GP, HEAD_DIM], G_LAYOUT, gl.load(DOG + g_off + tile))
        else:  # unused; the partitions take the same arguments either way
            qg_smem = gl.allocate_shared_memory(dtype, [GP, HEAD_DIM], G_LAYOUT)
            dog_smem = gl.allocate_shared_memory(dtype, [GP, HEAD_DIM], G_LAYOUT)
        dsg_smem = gl.allocate_shared_memory(dtype, [NUM_C, _SUB_M, GP], DS_LAYOUT)
        fence_async_shared()

        bars = (kv_bar, qd_bar, empty_bar)
        cargs = ((k_smem, v_smem, q_smem, do_smem, qg_smem, dog_smem, dsg_smem), bars,
                 (dk_desc, dv_desc, LSE2, Delta, LSEG2, DeltaG, PDQ),
                 (b, h, H, n0, N, window, qk_scale, sm_scale))
        largs = ((k_smem, v_smem, q_smem, do_smem), bars, (k_desc, v_desc, q_desc, do_desc), (b, h, n0, window))
        if NUM_C == 2:
            gl.warp_specialize([(_dkdv_consumer, (0, cargs, HEAD_DIM, BLOCK_M, G_PAD, STAGES, NUM_C, PART_DQ)),
                                (_dkdv_consumer, (1, cargs, HEAD_DIM, BLOCK_M, G_PAD, STAGES, NUM_C, PART_DQ)),
                                (_dkdv_loader, (largs, HEAD_DIM, BLOCK_M, STAGES, NUM_C))],
                               [4, 1], [CONS_REGS, 24])
        else:
            gl.warp_specialize([(_dkdv_consumer, (0, cargs, HEAD_DIM, BLOCK_M, G_PAD, STAGES, NUM_C, PART_DQ)),
                                (_dkdv_consumer, (1, cargs, HEAD_DIM, BLOCK_M, G_PAD, STAGES, NUM_C, PART_DQ)),
                                (_dkdv_consumer, (2, cargs, HEAD_DIM, BLOCK_M, G_PAD, STAGES, NUM_C, PART_DQ)),
                                (_dkdv_loader, (largs, HEAD_DIM, BLOCK_M, STAGES, NUM_C))],
                               [4, 4, 1], [CONS_REGS, CONS_REGS, 24])


_TILES_OVERRIDE = None  # (BLOCK_N, STAGES, NUM_C, maxnreg, consumer regs): kernels/bench_tiles.py
ENABLED = True  # False: the Triton kernel serves every call (tests/test_kernels_hopper.py compares the two)


def _tiles(head_dim: int) -> tuple:
    tiles = _TILES_OVERRIDE or TILES[head_dim]
    if tiles[1] < 2:  # a consumer holds block t while it waits for block t + 1: one slot would deadlock
        raise ValueError(f"the Hopper kernel needs at least 2 stages, got {tiles}")
    return tiles


def _smem_bytes(head_dim: int, g_pad: int, elem: int = 2) -> int:
    bn, stages, num_c, _, _ = _tiles(head_dim)
    return elem * head_dim * (num_c * SUB_M + 2 * stages * bn + 2 * max(g_pad, 16)) + 1024


def _tma_ok(t: torch.Tensor) -> bool:
    """TMA reads a tensor whose last dim is contiguous and whose other strides and base are 16-byte
    aligned."""
    return (t.stride(-1) == 1 and t.data_ptr() % 16 == 0
            and all((s * t.element_size()) % 16 == 0 for s in t.stride()[:-1]))


def supported(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, dilation: int, has_kpm: bool,
              g_pad: int) -> bool:
    """Whether this kernel serves a forward band pass: an sm_90 GPU, Gluon's Hopper support, bf16 /
    fp16, head dim 64 or 128, dilation 1, no key padding, a global tile of at most 64 keys that fits
    the shared memory, TMA-legal strides and rows within int32 coordinates."""
    return (ENABLED and _hopper_call(q, dilation, has_kpm, g_pad, TILES, (q, k, v, out))
            and _smem_bytes(q.shape[-1], g_pad) <= _SMEM_LIMIT)


def _hopper_call(q, dilation: int, has_kpm: bool, g_pad: int, tiles: dict, tensors) -> bool:
    """What both Hopper kernels need of a call: an sm_90 GPU, Gluon's Hopper support, bf16 / fp16, a
    head dim in ``tiles``, dilation 1, no key padding, at most 64 global keys, TMA-legal strides and
    rows within int32 coordinates."""
    if not (HAVE_GLUON and q.is_cuda) or dilation != 1 or has_kpm:
        return False
    if q.dtype not in (torch.bfloat16, torch.float16) or q.shape[-1] not in tiles or g_pad > _MAX_G_PAD:
        return False
    if torch.cuda.get_device_capability(q.device) != (9, 0) or q.shape[2] >= 2 ** 31 - 2 ** 20:
        return False
    return all(_tma_ok(t) for t in tensors)


_LAYOUTS: dict = {}


def _layout(rows: int, head_dim: int, dtype: torch.dtype, rank: int):
    key = (rows, head_dim, dtype, rank)
    if key not in _LAYOUTS:  # the layout objects cost host time on every call otherwise
        dt = gl.bfloat16 if dtype == torch.bfloat16 else gl.float16
        _LAYOUTS[key] = gl.NVMMASharedLayout.get_default_for([1] * (rank - 2) + [rows, head_dim], dt)
    return _LAYOUTS[key]


def _desc(t: torch.Tensor, rows: int):
    block = [1, 1, rows, t.shape[-1]]
    return TensorDescriptor(t, list(t.shape), list(t.stride()), block, _layout(rows, t.shape[-1], t.dtype, 4))


def band_forward(q, k, v, out, lse, window: int, qk_scale: float, g_pad: int = 0, gpos=None, kg=None, vg=None):
    """out (B, H, N, D) and natural-log lse (B, H, N) of the band plus the compact global tile (kg, vg
    (B, H, G_PAD, D) at positions gpos (B, G_PAD), -1 = unused), for q, k, v (B, H, N, D) that
    ``supported`` accepts; ``qk_scale`` is the softmax scale times log2(e)."""
    B, H, N, D = q.shape
    bn, stages, num_c, maxnreg, cregs = _tiles(D)
    dummy = lse
    grid = (triton.cdiv(N, num_c * SUB_M), B * H)
    _ws_band_fwd_kernel[grid](
        _desc(q, SUB_M), _desc(k, bn), _desc(v, bn), _desc(out, SUB_M),
        kg if g_pad else q, vg if g_pad else q, gpos if g_pad else dummy, lse,
        kg.stride(0) if g_pad else 0, kg.stride(1) if g_pad else 0, kg.stride(2) if g_pad else 0,
        gpos.stride(0) if g_pad else 0, lse.stride(0), lse.stride(1),
        H, N, window, qk_scale,
        HEAD_DIM=D, BLOCK_N=bn, G_PAD=g_pad, G_LAYOUT=_layout(max(g_pad, 16), D, q.dtype, 2), STAGES=stages,
        NUM_C=num_c, CONS_REGS=cregs, num_warps=4, maxnreg=maxnreg)


# The backward's dK/dV band kernel: (BLOCK_M, STAGES, NUM_C, maxnreg, consumer registers) per head dim.
# Each consumer holds two 64 x D fp32 accumulators and two 64 x BLOCK_M score tiles at once, so two
# consumers per program.
TILES_BWD = {64: (64, 4, 2, 168, 240), 128: (32, 3, 2, 168, 240)}
_TILES_BWD_OVERRIDE = None
ENABLED_BWD = True


def _tiles_bwd(head_dim: int) -> tuple:
    tiles = _TILES_BWD_OVERRIDE or TILES_BWD[head_dim]
    if tiles[1] < 2:
        raise ValueError(f"the Hopper kernel needs at least 2 stages, got {tiles}")
    return tiles


def supported_bwd(q, k, v, do, dk, dv, dilation: int, has_kpm: bool, g_pad: int) -> bool:
    """Whether ``band_dkdv`` serves the backward's dK/dV band pass: as ``supported`` for the forward,
    with ``g_pad`` the global rows' tile when they share k, v (0 otherwise)."""
    if not (ENABLED_BWD and _hopper_call(q, dilation, has_kpm, g_pad, TILES_BWD, (q, k, v, do, dk, dv))):
        return False
    bm, stages, num_c, _, _ = _tiles_bwd(q.shape[-1])
    gp = max(g_pad, 16)
    smem = 2 * q.shape[-1] * (2 * num_c * SUB_M + 2 * stages * bm + 2 * gp) + 2 * num_c * SUB_M * gp + 1024
    return smem <= _SMEM_LIMIT


def band_dkdv(q, k, v, do, dk, dv, lse2, delta, window: int, qk_scale: float, sm_scale: float, g_pad: int = 0,
              qg=None, dog=None, lse_g2=None, delta_g=None, pdq=None):
    """dK (times ``sm_scale``) and dV (B, H, N, D) of the band, for the calls ``supported_bwd`` accepts.
    ``lse2``, ``delta`` (B, H, N) fp32 contiguous: each row's log2 LSE (+inf: takes no part) and
    rowsum(dO * O). With ``g_pad``: the global rows' compact tiles (``qg``, ``dog`` (B, H, g_pad, D),
    ``lse_g2``, ``delta_g`` (B, H, g_pad)) add their dK/dV, and with ``pdq`` ((B, H, cdiv(N, 64), g_pad,
    D) fp32) also leave one partial of their dQ per 64 keys."""
    B, H, N, D = q.shape
    bm, stages, num_c, maxnreg, cregs = _tiles_bwd(D)
    grid = (triton.cdiv(N, num_c * SUB_M), B * H)
    gp = max(g_pad, 16)
    _ws_band_dkdv_kernel[grid](
        _desc(k, SUB_M), _desc(v, SUB_M), _desc(q, bm), _desc(do, bm), _desc(dk, SUB_M), _desc(dv, SUB_M),
        lse2, delta, qg if g_pad else q, dog if g_pad else q, lse_g2 if g_pad else lse2,
        delta_g if g_pad else delta, pdq if pdq is not None else lse2,
        H, N, window, qk_scale, sm_scale,
        HEAD_DIM=D, BLOCK_M=bm, G_PAD=g_pad, G_LAYOUT=_layout(gp, D, q.dtype, 2),
        DS_LAYOUT=_layout(SUB_M, gp, q.dtype, 2), STAGES=stages, NUM_C=num_c, CONS_REGS=cregs,
        PART_DQ=pdq is not None, num_warps=4, maxnreg=maxnreg)

