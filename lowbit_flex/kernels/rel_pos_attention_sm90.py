"""The rel-pos attention forward of :mod:`lowbit_flex.kernels.rel_pos_attention` (``ROWS`` bias), for Hopper
(sm_90), in Gluon and warp-specialized: the same bias formation and arithmetic, with the warps' roles and the
WGMMAs' asynchrony under the kernel's control.

Why: the Triton kernel's D = 64 global attention runs at 1.26-1.30x SDPA without bias, and at 1.14-1.18x even
without its bias (H200 run 43). There its speed is set by latency hiding across CTAs: two key rows per iteration cut
13 % of its instructions and lost. Triton 3.6 waits for each WGMMA that does not feed an accumulator right after
issuing it, so a program's softmax never runs under its own MMAs. Here, as in
:mod:`~lowbit_flex.kernels.fp8_attention_sm90` (whose accurate mode, bf16 P·V, gained 1.09-1.16x from this
structure in run 44):

- one program owns 128 or 192 query rows of one (batch, head), or (``HEAD_CHUNKS > 0``) two or three consecutive
  64-row chunks of every head's rows laid end to end, which may span two heads: two or three consumer warpgroups of
  64 rows and one TMA producer warp (:func:`~lowbit_flex.kernels.gluon_sm90.load_q_then_kv_ring_two_heads`) filling
  a ring of ``STAGES`` key/value slots (each with both heads' blocks where the program holds two);
- within a consumer, FlashAttention-3's order: QKᵀ of block ``j`` and PV of block ``j - 1`` issued together, a wait
  for the QKᵀ only, block ``j``'s logits, bias and softmax while the tensor cores do the PV.

The bias is the Triton kernel's ``ROWS`` formation. A key block is ``R = BLOCK_N // K_W`` whole rows of the key grid
(``R * K_W`` keys from ``j * R * K_W``; TMA fills the ``BLOCK_N - R * K_W`` padding slots with the next row's keys,
or zeros past ``L``). The ``rel_w`` tile (fp32, log2 units, ``-inf`` in the padding slots) is loaded once per
warpgroup. With one row per block, each query row's ``rel_h`` value joins the row max and the exponent's offset:
read from a copy of the warpgroup's ``rel_h`` rows in shared memory (``RH_STAGE_ROWS > 1``, made before the first
block), or from memory a block ahead; with ``R = 2..4`` each slot's ``rel_h`` column is selected per logit.
``BIAS = 0`` is plain attention over blocks of ``BLOCK_N`` consecutive keys: the kernel's floor, for the benchmark.

Scope (:func:`~lowbit_flex.kernels.rel_pos_attention.gluon_layout_ok` and the plan decide): sm_90, fp16/bf16, head
dims 64 and 128 (one power-of-two tile: a Gluon tensor cannot be 80 wide), ``R <= 4``, q/k/v read by TMA (unit last
stride, 16-byte aligned rows and bases). Every traced call (``torch.compile``: Inductor cannot call Gluon kernels
through ``wrap_triton``) takes the Triton kernel.

Measured (H200 run 47, against the Triton kernel in the same call): three consumers with 64-slot blocks and 3 ring
slots are 0.3-2 % faster on SAM's D = 64 global attention at batch 8 and 4.6-5.2 % at batch 1, which is the table's
row (``SM90_GLUON_CONFIGS``): the op reaches 1.24-1.26x SDPA without bias there, against the Triton kernel's
1.26-1.30x. Its own floor without bias is 1.10-1.12x SDPA (the Triton kernel's 1.14-1.18x). Slower, and not in the
table: two consumers with 64-slot blocks (0.83-0.86x: per-block barrier overhead over two 64 x 64 MMAs), 2 ring slots
(0.53-0.64x: FA3's order holds two slots at once, so the producer cannot run ahead), the 48 x 40 grid (0.62-0.96x),
and FlashAttention-3's scheduler barrier between the consumers (mbarrier turns: 0.91-0.92x the same tile here,
0.98-1.01x in the fp8 kernel; dropped). H100 run 57: staging ``rel_h`` in shared memory made the D = 64 global row
2.8-3.7 % faster than reading a 2-byte column per query row and block from memory (the op: 1.16-1.22x SDPA without
bias, from 1.20-1.25x in run 56). H100 run 61: programs across heads (``HEAD_CHUNKS``; ``RelPosConfig.cross_heads``)
made vit_l 2.5-2.9 % faster (2731 programs, 21 waves of 132 SMs, instead of 2816 in 22), the op 1.15x SDPA without
bias there (was 1.22x).
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

from lowbit_flex.kernels.gluon_sm90 import (
    WS_ROWS,
    chunk_rows,
    load_q_then_kv_ring_two_heads,
    smem_layout,
    smem_view,
)

_LOG2E = gl.constexpr(1.4426950408889634)


@gluon.jit
def _rel_h_column(rh_rows, m_ok, key_row, KEY_ROWS: gl.constexpr):
    """``rel_h[i, key_row]`` of each query row ``i``, in log2 units (0 past ``KEY_ROWS`` or ``L``)."""
    return gl.load(rh_rows + key_row, mask=m_ok & (key_row < KEY_ROWS), other=0.0).to(gl.float32) * _LOG2E


@gluon.jit
def _stage_rel_h(rh_stages, wg, rh_base, srh_l, row0, L, KEY_ROWS: gl.constexpr, RH_COLS: gl.constexpr):
    """Copy consumer ``wg``'s ``rel_h`` rows (``WS_ROWS`` query rows from ``row0``, every key row; 0 past ``L`` and
    ``KEY_ROWS``) into its ``RH_COLS`` rows of ``rh_stages`` (key row ``c`` of consumer ``wg``: row
    ``wg * RH_COLS + c``): one coalesced read of 16-byte runs up front instead of a 2-byte read per query row and
    key block, whose sector's first touch is a trip to memory every 16 blocks."""
    layout: gl.constexpr = gl.BlockedLayout([1, 8], [16, 2], [4, 1], [1, 0])
    rows = row0 + gl.arange(0, WS_ROWS, layout=gl.SliceLayout(1, layout))
    cols = gl.arange(0, RH_COLS, layout=gl.SliceLayout(0, layout))
    ok = gl.expand_dims(rows < L, 1) & gl.expand_dims(cols < KEY_ROWS, 0)
    tile = gl.load(rh_base + gl.expand_dims(rows * srh_l, 1) + gl.expand_dims(cols, 0), mask=ok, other=0.0)
    CONSUMERS: gl.constexpr = rh_stages.shape[0] // RH_COLS
    stack_layout: gl.constexpr = gl.SwizzledSharedLayout(vec=1, per_phase=1, max_phase=1, order=[1, 0])
    mine = smem_view(rh_stages, [CONSUMERS, RH_COLS, WS_ROWS], stack_layout).index(wg)
    mine.permute((1, 0)).store(tile)


@gluon.jit
def _softmax_block(
    s, j, rel_w_tile, rh_rows, rh_stages, wg, m_ok, slot_row, rh_row, qk_scale, m_i, l_i,
    P_LAYOUT: gl.constexpr, P_DTYPE: gl.constexpr, BIAS: gl.constexpr, KEY_ROWS: gl.constexpr, R: gl.constexpr,
    RH_COLS: gl.constexpr,
):  # fmt: skip
    """Key block ``j``'s logits ``s * qk_scale + bias`` (log2 units) and its online-softmax step. ``rh_row``: with
    one key row per block, block ``j``'s ``rel_h`` column (a per-row term kept out of the tile); the next block's is
    returned in its place. Returns P as the PV MMA's register operand, ``alpha`` (the rescale of what was
    accumulated), the new row max and row sum, and the next ``rh_row``."""
    row_bias = rh_row * 0.0
    next_rh = rh_row
    if BIAS == 0:
        t = s * qk_scale
    elif R == 1:
        t = gl.fma(s, qk_scale, rel_w_tile)
        row_bias = rh_row
        if RH_COLS > 1:  # past the last block: a row that is there (the value goes unused)
            next_rh = rh_stages.index(wg * RH_COLS + gl.minimum(j + 1, KEY_ROWS - 1)).load(rh_row.type.layout)
            next_rh = next_rh.to(gl.float32) * _LOG2E
        else:
            next_rh = _rel_h_column(rh_rows, m_ok, j + 1, KEY_ROWS)  # its latency hides behind this block's work
    else:  # the rel_h column of each slot's key row: R - 1 selects per logit
        rel_h_tile = gl.expand_dims(_rel_h_column(rh_rows, m_ok, j * R, KEY_ROWS), 1)
        for r in gl.static_range(1, R):
            col = gl.expand_dims(_rel_h_column(rh_rows, m_ok, j * R + r, KEY_ROWS), 1)
            rel_h_tile = gl.where(gl.expand_dims(slot_row == r, 0), col, rel_h_tile)
        # rel_w joins the MMA's result first (the Triton kernel's order: the sum stays in the MMA layout)
        t = gl.fma(s, qk_scale, rel_w_tile) + rel_h_tile
    # The last block's rows past the grid (keys past L; TMA read them as zeros). Two ifs: the first is a constexpr,
    # compiled away where every block is whole.
    if KEY_ROWS % R != 0:  # noqa: SIM102
        if (j + 1) * R > KEY_ROWS:
            t = gl.where(gl.expand_dims(j * R + slot_row < KEY_ROWS, 0), t, float("-inf"))
    # Every block holds at least one valid key, so m_new is finite.
    m_new = gl.maximum(m_i, gl.max(t, axis=1) + row_bias)
    alpha = gl.exp2(m_i - m_new)
    p = gl.exp2(t + gl.expand_dims(row_bias - m_new, 1))
    l_i = l_i * alpha + gl.sum(p, axis=1)
    return gl.convert_layout(p.to(P_DTYPE), P_LAYOUT), alpha, m_new, l_i, next_rh


@gluon.jit
def _attend(
    wg, shared, D: gl.constexpr, BLOCK_N: gl.constexpr, STAGES: gl.constexpr, BIAS: gl.constexpr,
    KEY_ROW_W: gl.constexpr, KEY_ROWS: gl.constexpr, OUT_LHD: gl.constexpr, RH_COLS: gl.constexpr,
    HEAD_CHUNKS: gl.constexpr,
):  # fmt: skip
    """One consumer warpgroup: query rows ``m0 + 64 wg ...`` of head ``(b, h)`` against every key block the
    producer delivers, then the output rows; with ``HEAD_CHUNKS > 0``, query chunk ``m0 + wg`` of the sequence of
    :func:`~lowbit_flex.kernels.gluon_sm90.chunk_rows` instead, whose head's key/value blocks are in the ring's
    second half where it is not the program's first head. ``shared``: what every consumer gets (a tuple without
    constexprs, see the kernel)."""
    q_smem, k_smem, v_smem, q_bar, ready, empty, rh_ptr, rw_ptr, o_ptr, b, h, m0, qk_scale, H, L = shared[:15]
    srh_b, srh_h, srh_l, srw_b, srw_h, srw_l, rh_stages, heads = shared[15:]
    P_DTYPE: gl.constexpr = v_smem.dtype
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, BLOCK_N, 16])  # fmt: skip
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, D, 16])
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    rows_s: gl.constexpr = gl.SliceLayout(1, s_layout)
    cols_s: gl.constexpr = gl.SliceLayout(0, s_layout)
    rows_o: gl.constexpr = gl.SliceLayout(1, o_layout)
    cols_o: gl.constexpr = gl.SliceLayout(0, o_layout)
    R: gl.constexpr = BLOCK_N // KEY_ROW_W  # key-grid rows per block
    N_BLOCKS: gl.constexpr = (KEY_ROWS + R - 1) // R

    r0 = m0 + wg * WS_ROWS
    kv = 0  # the ring half of this consumer's head
    if HEAD_CHUNKS > 0:
        head, r0 = chunk_rows(m0 + wg, heads, HEAD_CHUNKS)
        kv = (head != m0 // HEAD_CHUNKS).to(gl.int32) * STAGES
        b = (head // H).to(gl.int64)
        h = (head % H).to(gl.int64)
    offs_m = r0 + gl.arange(0, WS_ROWS, layout=rows_s)
    m_ok = offs_m < L
    rh_base = rh_ptr + b * srh_b + h * srh_h
    rh_rows = rh_base + offs_m * srh_l
    rw_rows = rw_ptr + b * srw_b + h * srw_h + offs_m * srw_l
    cols = gl.arange(0, BLOCK_N, layout=cols_s)
    slot_row = cols // KEY_ROW_W
    rel_w_tile = gl.zeros([WS_ROWS, BLOCK_N], gl.float32, s_layout)
    rh_row = gl.zeros([WS_ROWS], gl.float32, rows_s)
    if BIAS == 1:
        slot_ok = slot_row < R
        rw_ptrs = gl.expand_dims(rw_rows, 1) + gl.expand_dims(cols - slot_row * KEY_ROW_W, 0)
        rel_w = gl.load(rw_ptrs, mask=gl.expand_dims(m_ok, 1) & gl.expand_dims(slot_ok, 0), other=0.0)
        rel_w_tile = rel_w.to(gl.float32) * _LOG2E
        if R * KEY_ROW_W != BLOCK_N:  # padding slots: -inf logits, so they need no mask of their own
            rel_w_tile = gl.where(gl.expand_dims(slot_ok, 0), rel_w_tile, float("-inf"))
        if R == 1:
            if RH_COLS > 1:
                _stage_rel_h(rh_stages, wg, rh_base, srh_l, r0, L, KEY_ROWS, RH_COLS)
            rh_row = _rel_h_column(rh_rows, m_ok, 0, KEY_ROWS)

    m_i = gl.full([WS_ROWS], float("-inf"), gl.float32, rows_s)
    l_i = gl.zeros([WS_ROWS], gl.float32, rows_s)
    acc = gl.zeros([WS_ROWS, D], gl.float32, o_layout)
    s_zero = gl.zeros([WS_ROWS, BLOCK_N], gl.float32, s_layout)
    q_tile = q_smem.index(wg)
    mbarrier.wait(q_bar, 0)
    mbarrier.wait(ready.index(0), 0)
    s_tok = warpgroup_mma(q_tile, k_smem.index(kv).permute((1, 0)), s_zero, use_acc=False, is_async=True)
    s = warpgroup_mma_wait(0, deps=(s_tok,))
    p_op, alpha, m_i, l_i, rh_row = _softmax_block(
        s, 0, rel_w_tile, rh_rows, rh_stages, wg, m_ok, slot_row, rh_row, qk_scale, m_i, l_i, p_layout, P_DTYPE, BIAS,
        KEY_ROWS, R, RH_COLS,
    )  # fmt: skip
    # FlashAttention-3's order within the warpgroup: QKᵀ of block j and PV of block j - 1 issued together, a wait
    # for the QKᵀ only, block j's softmax while the PV runs; slot j - 1 is released after its PV.
    for j in range(1, N_BLOCKS):
        slot = j % STAGES
        prev = (j - 1) % STAGES
        mbarrier.wait(ready.index(slot), (j // STAGES) & 1)
        s_tok = warpgroup_mma(q_tile, k_smem.index(slot + kv).permute((1, 0)), s_zero, use_acc=False, is_async=True)
        o_tok = warpgroup_mma(p_op, v_smem.index(prev + kv), acc, is_async=True)
        s = warpgroup_mma_wait(1, deps=(s_tok,))
        p_op, alpha, m_i, l_i, rh_row = _softmax_block(
            s, j, rel_w_tile, rh_rows, rh_stages, wg, m_ok, slot_row, rh_row, qk_scale, m_i, l_i, p_layout, P_DTYPE,
            BIAS, KEY_ROWS, R, RH_COLS,
        )  # fmt: skip
        acc = warpgroup_mma_wait(0, deps=(o_tok,))
        mbarrier.arrive(empty.index(prev), count=1)
        acc = acc * gl.expand_dims(gl.convert_layout(alpha, rows_o), 1)
    last = (N_BLOCKS - 1) % STAGES
    o_tok = warpgroup_mma(p_op, v_smem.index(last + kv), acc, is_async=True)
    acc = warpgroup_mma_wait(0, deps=(o_tok,))
    mbarrier.arrive(empty.index(last), count=1)

    out = acc / gl.expand_dims(gl.convert_layout(l_i, rows_o), 1)
    offs_mo = r0 + gl.arange(0, WS_ROWS, layout=rows_o)
    offs_d = gl.arange(0, D, layout=cols_o)
    if OUT_LHD:  # (B, L, H, D) memory (attention_out_strides)
        o_rows = o_ptr + (b * L * H + h) * D + offs_mo.to(gl.int64) * (H * D)
    else:
        o_rows = o_ptr + (b * H + h) * L * D + offs_mo.to(gl.int64) * D
    o_ptrs = gl.expand_dims(o_rows, 1) + gl.expand_dims(offs_d, 0)
    gl.store(o_ptrs, out.to(o_ptr.dtype.element_ty), mask=gl.expand_dims(offs_mo < L, 1))


@gluon.jit
def _rel_pos_attention_fwd_sm90_ws(
    q_ptr, k_ptr, v_ptr, rh_ptr, rw_ptr, o_ptr,
    sq_b, sq_h, sq_l, sq_d, sk_b, sk_h, sk_l, sk_d, sv_b, sv_h, sv_l, sv_d,
    srh_b, srh_h, srh_l, srw_b, srw_h, srw_l,
    H, L, num_m_blocks, sm_scale,
    D: gl.constexpr, BLOCK_N: gl.constexpr, STAGES: gl.constexpr, BIAS: gl.constexpr, KEY_ROW_W: gl.constexpr,
    KEY_ROWS: gl.constexpr, OUT_LHD: gl.constexpr, CONSUMERS: gl.constexpr, CONSUMER_REGS: gl.constexpr,
    RH_STAGE_ROWS: gl.constexpr, HEAD_CHUNKS: gl.constexpr,
):  # fmt: skip
    """The Triton kernel's arguments (the head-dim strides are 1; ``num_m_blocks``, the Triton plan's, is unused).
    ``KEY_ROW_W`` / ``KEY_ROWS``: the key grid's row width and row count (``k_w``, ``k_h``; 1 and ``L`` without
    bias). ``CONSUMERS``: 2 or 3 consumer warpgroups (128 or 192 query rows per program). The launch's 4 warps are
    the first consumer warpgroup; :func:`gl.warp_specialize` adds the others and the producer warp.
    ``HEAD_CHUNKS``: 0, each program holds ``CONSUMERS * 64`` rows of one head; else ``ceil(L / 64)`` (>=
    ``CONSUMERS``), and programs take ``CONSUMERS`` consecutive 64-row chunks of every head's rows laid end to end,
    so no program runs a head's last partial block alone (the grid: ``ceil(B * H * HEAD_CHUNKS / CONSUMERS)``)."""
    DTYPE: gl.constexpr = q_ptr.dtype.element_ty
    R: gl.constexpr = BLOCK_N // KEY_ROW_W
    # Query blocks of one (batch, head) are consecutive programs, so they share K/V in L2. (num_m_blocks is the
    # Triton plan's count, of its own query blocks: the key grid fixes L, so this kernel's count is a constexpr.)
    ROWS_PER_PROGRAM: gl.constexpr = CONSUMERS * WS_ROWS
    M_BLOCKS: gl.constexpr = (KEY_ROWS * KEY_ROW_W + ROWS_PER_PROGRAM - 1) // ROWS_PER_PROGRAM
    pid = gl.program_id(0)
    if HEAD_CHUNKS > 0:
        # m0: the program's first chunk. The grid fixes B * H: CONSUMERS * programs is within CONSUMERS - 1 <
        # HEAD_CHUNKS of B * H * HEAD_CHUNKS, so it holds no other multiple of HEAD_CHUNKS.
        m0 = pid * CONSUMERS
        heads = (CONSUMERS * gl.num_programs(0)) // HEAD_CHUNKS
        pid_bh = m0 // HEAD_CHUNKS
        pid_bh_b, _ = chunk_rows(m0 + CONSUMERS - 1, heads, HEAD_CHUNKS)
    else:
        pid_m = pid % M_BLOCKS
        pid_bh = pid // M_BLOCKS
        m0 = pid_m * ROWS_PER_PROGRAM
        heads = 0
    b = (pid_bh // H).to(gl.int64)
    h = (pid_bh % H).to(gl.int64)
    qk_scale = sm_scale.to(gl.float32) * _LOG2E

    layout: gl.constexpr = smem_layout(D * DTYPE.primitive_bitwidth // 8, DTYPE.primitive_bitwidth)
    # Rows past L read as zeros; a block's padding slots read the next key row (-inf logits, p = 0).
    q_desc = tma.make_tensor_descriptor(q_ptr + b * sq_b + h * sq_h, [L, D], [sq_l, 1], [WS_ROWS, D], layout)
    k_desc = tma.make_tensor_descriptor(k_ptr + b * sk_b + h * sk_h, [L, D], [sk_l, 1], [BLOCK_N, D], layout)
    v_desc = tma.make_tensor_descriptor(v_ptr + b * sv_b + h * sv_h, [L, D], [sv_l, 1], [BLOCK_N, D], layout)
    RING_SLOTS: gl.constexpr = 2 * STAGES if HEAD_CHUNKS > 0 else STAGES  # the second head's half
    q_smem = gl.allocate_shared_memory(DTYPE, [CONSUMERS, WS_ROWS, D], layout)
    k_smem = gl.allocate_shared_memory(DTYPE, [RING_SLOTS, BLOCK_N, D], layout)
    v_smem = gl.allocate_shared_memory(DTYPE, [RING_SLOTS, BLOCK_N, D], layout)
    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    q_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    # Each consumer's rel_h, RH_STAGE_ROWS rows of WS_ROWS query rows each, one per key row (a power of two >=
    # KEY_ROWS; 1: not staged). A stack of rows: a block's row is one dynamic index.
    rows_layout: gl.constexpr = gl.SwizzledSharedLayout(vec=1, per_phase=1, max_phase=1, order=[0])
    rh_stages = gl.allocate_shared_memory(rh_ptr.dtype.element_ty, [CONSUMERS * RH_STAGE_ROWS, WS_ROWS], rows_layout)
    for i in gl.static_range(STAGES):
        mbarrier.init(ready.index(i), count=1)
        mbarrier.init(empty.index(i), count=CONSUMERS)
    mbarrier.init(q_bar, count=1)
    fence_async_shared()

    KEYS_PER_BLOCK: gl.constexpr = R * KEY_ROW_W
    n_blocks = (KEY_ROWS + R - 1) // R
    # What every consumer gets, as one tuple: no constexprs in it (a tuple assigned to a variable would turn them
    # into tensors), so they are written out in each partition's arguments.
    shared = (q_smem, k_smem, v_smem, q_bar, ready, empty, rh_ptr, rw_ptr, o_ptr, b, h, m0, qk_scale, H, L,
              srh_b, srh_h, srh_l, srw_b, srw_h, srw_l, rh_stages, heads)  # fmt: skip
    if HEAD_CHUNKS > 0:  # the head of the program's last chunk
        b2 = (pid_bh_b // H).to(gl.int64)
        h2 = (pid_bh_b % H).to(gl.int64)
        q_desc_b = tma.make_tensor_descriptor(q_ptr + b2 * sq_b + h2 * sq_h, [L, D], [sq_l, 1], [WS_ROWS, D], layout)
        k_desc_b = tma.make_tensor_descriptor(k_ptr + b2 * sk_b + h2 * sk_h, [L, D], [sk_l, 1], [BLOCK_N, D], layout)
        v_desc_b = tma.make_tensor_descriptor(v_ptr + b2 * sv_b + h2 * sv_h, [L, D], [sv_l, 1], [BLOCK_N, D], layout)
    else:
        q_desc_b, k_desc_b, v_desc_b = q_desc, k_desc, v_desc
    # fmt: off
    if CONSUMERS == 3:
        gl.warp_specialize(
            [
                (_attend, (0, shared, D, BLOCK_N, STAGES, BIAS, KEY_ROW_W, KEY_ROWS, OUT_LHD, RH_STAGE_ROWS,
                           HEAD_CHUNKS)),
                (_attend, (1, shared, D, BLOCK_N, STAGES, BIAS, KEY_ROW_W, KEY_ROWS, OUT_LHD, RH_STAGE_ROWS,
                           HEAD_CHUNKS)),
                (_attend, (2, shared, D, BLOCK_N, STAGES, BIAS, KEY_ROW_W, KEY_ROWS, OUT_LHD, RH_STAGE_ROWS,
                           HEAD_CHUNKS)),
                (load_q_then_kv_ring_two_heads, (q_desc, k_desc, v_desc, q_desc_b, k_desc_b, v_desc_b, q_smem,
                                                 k_smem, v_smem, q_bar, ready, empty, m0, heads, n_blocks,
                                                 HEAD_CHUNKS, KEYS_PER_BLOCK, STAGES, False, CONSUMERS)),
            ],
            [4, 4, 1],
            [CONSUMER_REGS, CONSUMER_REGS, 24],
        )
    else:
        gl.warp_specialize(
            [
                (_attend, (0, shared, D, BLOCK_N, STAGES, BIAS, KEY_ROW_W, KEY_ROWS, OUT_LHD, RH_STAGE_ROWS,
                           HEAD_CHUNKS)),
                (_attend, (1, shared, D, BLOCK_N, STAGES, BIAS, KEY_ROW_W, KEY_ROWS, OUT_LHD, RH_STAGE_ROWS,
                           HEAD_CHUNKS)),
                (load_q_then_kv_ring_two_heads, (q_desc, k_desc, v_desc, q_desc_b, k_desc_b, v_desc_b, q_smem,
                                                 k_smem, v_smem, q_bar, ready, empty, m0, heads, n_blocks,
                                                 HEAD_CHUNKS, KEYS_PER_BLOCK, STAGES, False, CONSUMERS)),
            ],
            [4, 1],
            [CONSUMER_REGS, 24],
        )
    # fmt: on
