"""The fused fp8 / int8-QKᵀ attention forward of :mod:`lowbit_flex.kernels.fp8_attention`, for Hopper (sm_90), in
Gluon and warp-specialized: the same format and arithmetic, with the warps' roles and the WGMMAs' asynchrony under
the kernel's control.

One program owns 128 query rows of one head: two consumer warpgroups of 64 rows each and one TMA producer warp
(``setmaxnreg``: 256 and 232 registers for the consumers, 24 for the producer). The producer loads both halves of
q, then key/value block ``j`` into slot ``j % STAGES`` of a shared-memory ring as soon as both consumers have
released the block ``STAGES`` before it: each slot has a "ready" mbarrier (TMA bytes) and an "empty" one (one
arrival per consumer). The consumers share every K/V tile (half the L2 reads of two 64-row programs) and run
independently, with no CTA-wide barrier. Within a consumer, FlashAttention-3's order: QKᵀ of block ``j`` and PV of
block ``j - 1`` issued together, a wait for the QKᵀ only, block ``j``'s softmax while the tensor cores do the PV.
Triton cannot express that overlap: it waits for each WGMMA that does not feed an accumulator right after issuing
it, and its automatic warp specialization is Blackwell-only in Triton 3.6.

Measured on the H200 (run 44, against the Triton kernel in the same call, outputs bit-identical): with a 16-bit V
(the accurate mode) 1.09-1.16x the Triton 128-query tile at L >= 4096 (0.98-1.02x at 1024), so
:func:`~lowbit_flex.kernels.fp8_attention.pick_config` runs it there; with an e4m3 V 0.73-0.87x the Triton
64-query tile. Part of that was its P: carried across the loop as e4m3 bytes and repacked every block (see
``_ws_attend``). Without the repacking (session 70, H100 run 70, bit-identical outputs) it runs 0.69-0.82x the
rule's Triton tiles at L = 1024, 0.84-0.94x at 4096, 0.91-0.97x at 8192 and 0.99-1.09x at 16384, so the Triton
tiles stay the rule for 8-bit P·V (two independent programs per SM already overlap one's softmax with the other's
MMAs, and the 8-bit PV's shorter MMA leaves less to hide). Earlier forms, measured and dropped: the same overlap
without warp specialization (run 40: 0.77-0.83x, a CTA barrier before each slot refill stalled both warpgroups);
warp-specialized without the overlap (run 44: 0.76-1.02x for fp8, 0.89-0.99x for 16-bit P·V); FlashAttention-3's
ping-pong, the two consumers taking turns to issue their WGMMAs through two mbarriers (H100 run 73: 0.98-1.01x with
fp8 QKᵀ or a 16-bit V, 0.87-0.95x with int8 QKᵀ).

Scope: sm_90, a row-major K with unit last stride, V token-major in e4m3 (in its keys' order or the P·V MMA's,
``V_MMA_KEY_ORDER``) or row-major in 16 bits, q read by TMA. Every traced call (``torch.compile``: Inductor cannot
call Gluon kernels through ``wrap_triton``) takes the Triton kernel.
"""

from __future__ import annotations

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (
    fence_async_shared,
    mbarrier,
    tma,
    warpgroup_mma,
    warpgroup_mma_wait,
)
from triton.language.extra import libdevice

from lowbit_flex.kernels.gluon_sm90 import WS_ROWS, load_q_then_kv_ring, smem_layout
from lowbit_flex.quant.fp8 import LOGIT_SCALE_FLOOR, P_FACTOR_FLOOR

_LOGIT_SCALE_FLOOR = gl.constexpr(LOGIT_SCALE_FLOOR)
_P_FACTOR_FLOOR = gl.constexpr(P_FACTOR_FLOOR)


@gluon.jit
def _v_operand(v_smem, slot, V_TOKEN_MAJOR: gl.constexpr):
    """Slot ``slot``'s value tile as the PV MMA's ``(keys, D)`` B operand (a view: an e4m3 tile is stored
    ``(D, keys)``, keys contiguous, which is the K-major operand fp8 WGMMAs require)."""
    tile = v_smem.index(slot)
    if V_TOKEN_MAJOR:
        tile = tile.permute((1, 0))
    return tile


@gluon.jit
def _softmax_block(
    s, start_n, full_end, offs_m, cols0, Lk, c, m_i, row_sum, p_mult,
    P_LAYOUT: gl.constexpr, P_DTYPE: gl.constexpr, CAUSAL: gl.constexpr, PV_16BIT: gl.constexpr,
    V_MMA_KEY_ORDER: gl.constexpr,
):  # fmt: skip
    """The online softmax of one key block (the arithmetic of ``fp8_attention._softmax_step``): masks past ``Lk``
    and (causal) above the diagonal only in blocks that reach past ``full_end``. Returns P in the PV MMA's register
    operand layout (16-bit, or float32 where the MMA takes e4m3: ``p_op.to(P_DTYPE)`` there), ``alpha`` (the rescale
    of what was accumulated), the new row max and row sum."""
    if start_n + s.shape[1] > full_end:
        cols = start_n + cols0
        ok = gl.expand_dims(cols, 0) < Lk
        if CAUSAL:
            ok = ok & (gl.expand_dims(offs_m, 1) >= gl.expand_dims(cols, 0))
        s = gl.where(ok, s, float("-inf"))
    m_new = gl.maximum(m_i, gl.max(s, axis=1) * c)
    alpha = gl.exp2(m_i - m_new)
    if PV_16BIT:
        p = gl.exp2(s * c - gl.expand_dims(m_new, 1))
        row_sum = row_sum * alpha + gl.sum(p, axis=1)
        p_op = gl.convert_layout(p.to(P_DTYPE), P_LAYOUT)
    else:  # P * p_mult in the exponent, floored (see fp8_attention._softmax_step)
        pm = gl.maximum(p_mult, _P_FACTOR_FLOOR)
        p = gl.exp2(gl.fma(s, c, -gl.expand_dims(m_new - libdevice.fast_log2f(pm), 1)))
        row_sum = row_sum * alpha + gl.sum(p, axis=1) * (1.0 / pm)
        if V_MMA_KEY_ORDER:  # P's registers as they are (see fp8_attention._softmax_step)
            m: gl.constexpr = p.shape[0]
            n: gl.constexpr = p.shape[1]
            p = gl.reshape(gl.permute(gl.reshape(p, [m, n // 16, 2, 4, 2]), [0, 1, 3, 2, 4]), [m, n])
        p_op = gl.convert_layout(p, P_LAYOUT)  # float32: rounded to e4m3 at the MMA (see _ws_attend)
    return p_op, alpha, m_new, row_sum


@gluon.jit
def _block_scales(
    ks_base, vs_base, qk_scale, vs_unit, start_n, stride_ksn, stride_vsn, K_SCALE_BLOCK: gl.constexpr,
    V_BLOCK_SCALES: gl.constexpr,
):  # fmt: skip
    """Key block ``start_n``'s logit scale (log2 units, floored at float32's smallest normal) and P's factor."""
    c = gl.maximum(qk_scale * gl.load(ks_base + (start_n // K_SCALE_BLOCK) * stride_ksn), _LOGIT_SCALE_FLOOR)
    p_mult = vs_unit
    if V_BLOCK_SCALES:
        p_mult = gl.load(vs_base + (start_n // K_SCALE_BLOCK) * stride_vsn) * vs_unit
    return c, p_mult


@gluon.constexpr_function
def _p_dtype(pv_16bit, v_dtype):
    """P's dtype in the P·V MMA: v's own 16-bit dtype, or e4m3."""
    return v_dtype if pv_16bit else gl.float8e4nv


@gluon.jit
def _ws_attend(
    wg, q_smem, k_smem, v_smem, q_bar, ready, empty, QS, KS, VS, Out, sm_scale_log2e, b, h, hk, m0, n_blocks,
    Lq, Lk, stride_ob, stride_oh, stride_om, stride_od, stride_qsb, stride_qsh, stride_qsm,
    stride_ksb, stride_ksh, stride_ksn, stride_vsb, stride_vsh, stride_vsn,
    D: gl.constexpr, BLOCK_N: gl.constexpr, Q_SCALE_BLOCK: gl.constexpr, K_SCALE_BLOCK: gl.constexpr,
    CAUSAL: gl.constexpr, PV_16BIT: gl.constexpr, V_BLOCK_SCALES: gl.constexpr, P_SCALE: gl.constexpr,
    V_TOKEN_MAJOR: gl.constexpr, V_MMA_KEY_ORDER: gl.constexpr, STAGES: gl.constexpr, QK_INT: gl.constexpr,
):  # fmt: skip
    """One consumer warpgroup: query rows ``m0 + 64 wg ...`` against every key block the producer delivers, then
    the output rows."""
    P_DTYPE: gl.constexpr = _p_dtype(PV_16BIT, v_smem.dtype)
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, BLOCK_N, 32])  # fmt: skip
    PV_K: gl.constexpr = 16 if PV_16BIT else 32
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, D, PV_K])
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2 if PV_16BIT else 4)
    rows_s: gl.constexpr = gl.SliceLayout(1, s_layout)
    cols_s: gl.constexpr = gl.SliceLayout(0, s_layout)
    rows_o: gl.constexpr = gl.SliceLayout(1, o_layout)
    cols_o: gl.constexpr = gl.SliceLayout(0, o_layout)

    r0 = m0 + wg * WS_ROWS
    full_end = (Lk // BLOCK_N) * BLOCK_N
    if CAUSAL:
        full_end = gl.minimum(full_end, ((r0 + 1) // BLOCK_N) * BLOCK_N)
    q_scale = gl.load(QS + b * stride_qsb + h * stride_qsh + (m0 // Q_SCALE_BLOCK) * stride_qsm)
    qk_scale = q_scale * sm_scale_log2e.to(gl.float32)
    ks_base = KS + b * stride_ksb + hk * stride_ksh
    vs_base = VS + b * stride_vsb + hk * stride_vsh
    vs_max = q_scale * 0.0
    vs_unit = vs_max + P_SCALE
    if V_BLOCK_SCALES:
        scan: gl.constexpr = gl.BlockedLayout([1], [32], [4], [0])
        for n0 in range(0, gl.cdiv(Lk, K_SCALE_BLOCK), 128):
            blk = n0 + gl.arange(0, 128, layout=scan)
            vs_j = gl.load(vs_base + blk * stride_vsn, mask=blk * K_SCALE_BLOCK < Lk, other=0.0)
            vs_max = gl.maximum(vs_max, gl.max(vs_j, axis=0))
        vs_max = gl.where(vs_max == 0.0, 1.0, vs_max)
        vs_unit = P_SCALE * gl.div_rn(vs_max * 0.0 + 1.0, vs_max)

    offs_m = r0 + gl.arange(0, WS_ROWS, layout=rows_s)
    cols0 = gl.arange(0, BLOCK_N, layout=cols_s)
    m_i = gl.full([WS_ROWS], float("-inf"), gl.float32, rows_s)
    row_sum = gl.zeros([WS_ROWS], gl.float32, rows_s)
    acc = gl.zeros([WS_ROWS, D], gl.float32, o_layout)
    S_ACC_DTYPE: gl.constexpr = gl.int32 if QK_INT else gl.float32
    s_zero = gl.zeros([WS_ROWS, BLOCK_N], S_ACC_DTYPE, s_layout)
    q_tile = q_smem.index(wg)
    mbarrier.wait(q_bar, 0)
    # FlashAttention-3's order within the warpgroup: QKᵀ of block j and PV of block j - 1 issued together, a
    # wait for the QKᵀ only, block j's softmax while the PV runs; slot j - 1 is released after its PV.
    # An e4m3 P crosses the loop's back edge in float32 and is rounded where the MMA takes it: carried as e4m3, it
    # was 64 separate bytes per thread, unpacked and repacked into the operand registers every block (Triton 3.6,
    # sm_90: 768 instead of 576 instructions per key block and warp, 212 of them byte permutes, logic and shifts).
    c, p_mult = _block_scales(ks_base, vs_base, qk_scale, vs_unit, 0, stride_ksn, stride_vsn, K_SCALE_BLOCK,
                              V_BLOCK_SCALES)  # fmt: skip
    mbarrier.wait(ready.index(0), 0)
    s_tok = warpgroup_mma(q_tile, k_smem.index(0).permute((1, 0)), s_zero, use_acc=False, is_async=True)
    s = warpgroup_mma_wait(0, deps=(s_tok,)).to(gl.float32)
    p_op, alpha, m_i, row_sum = _softmax_block(
        s, 0, full_end, offs_m, cols0, Lk, c, m_i, row_sum, p_mult, p_layout, P_DTYPE, CAUSAL, PV_16BIT,
        V_MMA_KEY_ORDER,
    )  # fmt: skip
    for j in range(1, n_blocks):
        slot = j % STAGES
        prev = (j - 1) % STAGES
        start_n = j * BLOCK_N
        c, p_mult = _block_scales(ks_base, vs_base, qk_scale, vs_unit, start_n, stride_ksn, stride_vsn,
                                  K_SCALE_BLOCK, V_BLOCK_SCALES)  # fmt: skip
        mbarrier.wait(ready.index(slot), (j // STAGES) & 1)
        s_tok = warpgroup_mma(q_tile, k_smem.index(slot).permute((1, 0)), s_zero, use_acc=False, is_async=True)
        o_tok = warpgroup_mma(p_op.to(P_DTYPE), _v_operand(v_smem, prev, V_TOKEN_MAJOR), acc, is_async=True)
        s = warpgroup_mma_wait(1, deps=(s_tok,)).to(gl.float32)
        p_op, alpha, m_i, row_sum = _softmax_block(
            s, start_n, full_end, offs_m, cols0, Lk, c, m_i, row_sum, p_mult, p_layout, P_DTYPE, CAUSAL,
            PV_16BIT, V_MMA_KEY_ORDER,
        )  # fmt: skip
        acc = warpgroup_mma_wait(0, deps=(o_tok,))
        mbarrier.arrive(empty.index(prev), count=1)
        acc = acc * gl.expand_dims(gl.convert_layout(alpha, rows_o), 1)
    last = (n_blocks - 1) % STAGES
    o_tok = warpgroup_mma(p_op.to(P_DTYPE), _v_operand(v_smem, last, V_TOKEN_MAJOR), acc, is_async=True)
    acc = warpgroup_mma_wait(0, deps=(o_tok,))
    mbarrier.arrive(empty.index(last), count=1)

    l_o = gl.convert_layout(row_sum, rows_o)
    if PV_16BIT:
        out = acc / gl.expand_dims(l_o, 1)
    elif V_BLOCK_SCALES:
        out = acc * gl.expand_dims(vs_max / (l_o * P_SCALE), 1)
    else:
        v_scale = gl.load(VS + b * stride_vsb + hk * stride_vsh)
        out = acc * gl.expand_dims(v_scale / (l_o * P_SCALE), 1)
    offs_mo = r0 + gl.arange(0, WS_ROWS, layout=rows_o)
    offs_d = gl.arange(0, D, layout=cols_o)
    o_ptrs = Out + b.to(gl.int64) * stride_ob + h.to(gl.int64) * stride_oh
    o_ptrs = o_ptrs + gl.expand_dims(offs_mo.to(gl.int64) * stride_om, 1) + gl.expand_dims(offs_d * stride_od, 0)
    gl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=gl.expand_dims(offs_mo < Lq, 1))


@gluon.jit
def _fp8_attention_fwd_sm90_ws(
    Q, K, V, QS, KS, VS, Out, sm_scale_log2e, H, GROUP, Lq, Lk,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_om, stride_od,
    stride_qsb, stride_qsh, stride_qsm,
    stride_ksb, stride_ksh, stride_ksn,
    stride_vsb, stride_vsh, stride_vsn,
    D: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
    Q_SCALE_BLOCK: gl.constexpr, K_SCALE_BLOCK: gl.constexpr, CAUSAL: gl.constexpr, PV_16BIT: gl.constexpr,
    V_BLOCK_SCALES: gl.constexpr, P_SCALE: gl.constexpr, V_TOKEN_MAJOR: gl.constexpr, STAGES: gl.constexpr,
    V_MMA_KEY_ORDER: gl.constexpr, CONSUMER_REGS: gl.constexpr, LONGEST_FIRST: gl.constexpr,
):  # fmt: skip
    """``BLOCK_M = 128`` query rows per program (see the module docstring): the launch's 4 warps are the first
    consumer warpgroup, :func:`gl.warp_specialize` adds the second and the producer warp."""
    QK_DTYPE: gl.constexpr = Q.dtype.element_ty
    V_DTYPE: gl.constexpr = V.dtype.element_ty
    QK_INT: gl.constexpr = gl.int8 == QK_DTYPE
    pid_m = gl.program_id(0)
    if LONGEST_FIRST:  # causal: each head's longest query tiles first (fp8_attention._launch_plan)
        pid_m = gl.num_programs(0) - 1 - pid_m
    bh = gl.program_id(1)
    b = bh // H
    h = bh % H
    hk = h // GROUP
    m0 = pid_m * BLOCK_M

    q_base = Q + b.to(gl.int64) * stride_qb + h.to(gl.int64) * stride_qh
    k_base = K + b.to(gl.int64) * stride_kb + hk.to(gl.int64) * stride_kh
    v_base = V + b.to(gl.int64) * stride_vb + hk.to(gl.int64) * stride_vh
    qk_layout: gl.constexpr = smem_layout(D, 8)
    q_desc = tma.make_tensor_descriptor(q_base, [Lq, D], [stride_qm, 1], [WS_ROWS, D], qk_layout)
    k_desc = tma.make_tensor_descriptor(k_base, [Lk, D], [stride_kn, 1], [BLOCK_N, D], qk_layout)
    if V_TOKEN_MAJOR:
        Lv = Lk
        if V_MMA_KEY_ORDER:
            Lv = gl.cdiv(Lk, 16) * 16
        v_layout: gl.constexpr = smem_layout(BLOCK_N, 8)
        v_desc = tma.make_tensor_descriptor(v_base, [D, Lv], [stride_vd, 1], [D, BLOCK_N], v_layout)
    else:
        v_layout: gl.constexpr = smem_layout(D * V_DTYPE.primitive_bitwidth // 8, V_DTYPE.primitive_bitwidth)
        v_desc = tma.make_tensor_descriptor(v_base, [Lk, D], [stride_vn, 1], [BLOCK_N, D], v_layout)

    q_smem = gl.allocate_shared_memory(QK_DTYPE, [2, WS_ROWS, D], qk_layout)
    k_smem = gl.allocate_shared_memory(QK_DTYPE, [STAGES, BLOCK_N, D], qk_layout)
    if V_TOKEN_MAJOR:
        v_smem = gl.allocate_shared_memory(V_DTYPE, [STAGES, D, BLOCK_N], v_layout)
    else:
        v_smem = gl.allocate_shared_memory(V_DTYPE, [STAGES, BLOCK_N, D], v_layout)
    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    q_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    for i in gl.static_range(STAGES):
        mbarrier.init(ready.index(i), count=1)
        mbarrier.init(empty.index(i), count=2)
    mbarrier.init(q_bar, count=1)
    fence_async_shared()

    hi = Lk
    if CAUSAL:
        hi = gl.minimum(hi, m0 + BLOCK_M)
    n_blocks = gl.cdiv(hi, BLOCK_N)  # both warpgroups visit the same blocks: BLOCK_M == BLOCK_N
    # The partitions' arguments written out in the call: a tuple assigned to a variable first would turn its
    # constexprs into tensors.
    # fmt: off
    gl.warp_specialize(
        [
            (_ws_attend, (
                0, q_smem, k_smem, v_smem, q_bar, ready, empty, QS, KS, VS, Out, sm_scale_log2e, b, h, hk, m0, n_blocks,
                Lq, Lk,
                stride_ob, stride_oh, stride_om, stride_od, stride_qsb, stride_qsh, stride_qsm, stride_ksb, stride_ksh,
                stride_ksn, stride_vsb, stride_vsh, stride_vsn, D, BLOCK_N, Q_SCALE_BLOCK, K_SCALE_BLOCK, CAUSAL,
                PV_16BIT, V_BLOCK_SCALES, P_SCALE, V_TOKEN_MAJOR, V_MMA_KEY_ORDER, STAGES, QK_INT,
            )),
            (_ws_attend, (
                1, q_smem, k_smem, v_smem, q_bar, ready, empty, QS, KS, VS, Out, sm_scale_log2e, b, h, hk, m0, n_blocks,
                Lq, Lk,
                stride_ob, stride_oh, stride_om, stride_od, stride_qsb, stride_qsh, stride_qsm, stride_ksb, stride_ksh,
                stride_ksn, stride_vsb, stride_vsh, stride_vsn, D, BLOCK_N, Q_SCALE_BLOCK, K_SCALE_BLOCK, CAUSAL,
                PV_16BIT, V_BLOCK_SCALES, P_SCALE, V_TOKEN_MAJOR, V_MMA_KEY_ORDER, STAGES, QK_INT,
            )),
            (load_q_then_kv_ring, (
                q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_bar, ready, empty, m0, n_blocks, BLOCK_N, STAGES,
                V_TOKEN_MAJOR, 2,
            )),
        ],
        [4, 1],
        [CONSUMER_REGS, 24],
    )
    # fmt: on
