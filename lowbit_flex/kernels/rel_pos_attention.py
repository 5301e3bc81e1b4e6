"""Flash attention with SAM's decomposed relative-position bias added to the logits in registers.

One program owns ``BLOCK_M`` queries of one (batch, head) and streams the keys in blocks with an online softmax
(fp32 statistics and accumulator; logits ``t = s * scale * log2(e) + bias * log2(e)`` in log2 units, one FMA with
the bias tile pre-multiplied, and the exponent ``exp2(t - m)`` one subtraction, with the row max ``m`` in log2
units too). The bias ``rel_h[i, j // k_w] + rel_w[i, j % k_w]`` never exists as an ``L x L`` tensor. Two ways to add it
(:class:`Bias`), chosen per shape by :func:`pick_config` (``ROWS`` wherever a key row fits a block):

* ``ROWS``: a key block is ``R = BLOCK_N // k_w`` whole rows of the key grid, packed (slot ``c`` holds row
  ``c // k_w``, column ``c % k_w``; the last ``BLOCK_N - R * k_w`` slots are padding). Every block starts at a row
  boundary, so slot ``c`` always holds key-grid column ``c % k_w``: the ``rel_w`` tile is loaded once per program
  (fp32, log2 units, ``-inf`` in the padding slots, so the logits need no mask of their own) and reused for every
  block. SAM's 64 x 64 global attention is ``R = 1`` with no padding: no masks, no extra tensor-core work. With one
  row per block the ``rel_h`` term is one value per query row (loaded a block ahead), so it joins the row max and
  the exponent's per-row offset instead of every logit: the bias costs one FMA per logit in place of the scale's
  multiply. With ``R > 1`` the ``rel_h`` column of each slot's row is selected (``R <= 4``) or gathered from the
  rows (more rows: grids narrower than a quarter block) and added per logit. Where the rows fill whole 8-slot
  column groups of the MMA layout (``k_w`` a multiple of 8, e.g. a 48 x 40 grid: three rows per 128 slots), each
  register's key row is known at compile time: each key row's ``rel_h`` joins the max over its own slots and the
  exponent's offset instead, one FMA per logit less (ptxas, Triton 3.6: 692 -> 645 instructions per block; H100
  run 56: 1.04-1.05x).
* ``ONEHOT`` (any grid; the default only for key rows wider than 128 slots): the bias tile is one small matmul on
  the tensor cores, ``[rel_h | rel_w] @ [onehot(j // k_w); onehot(j % k_w)]``: the two tables side by side along
  the reduction dim (``k_h + k_w`` columns padded to a power of two), the one-hot matrix built from the key indices
  in registers. Exact (two non-zero terms per column, fp32 accumulation) and produced in the accumulator layout of
  ``q @ k^T``. Where ``k_h`` is large and a key block spans few grid rows, only a 16-row window of ``rel_h``
  starting at the block's first row takes part (``H_WINDOW``), loaded per block. It measured slower than ``ROWS``
  on every SAM shape and on a 48 x 40 grid (Hopper's MMA reads the one-hot operand from shared memory, so it is
  stored there every block).

Head dims that are not powers of two are split into two power-of-two tiles (``BLOCK_D + BLOCK_D1``: 80 = 64 + 16,
two MMAs per product) instead of padded to the next power of two (80 -> 128: 60 % more MMA work and registers).
Query and key positions past ``L`` (196 is no multiple of any block) are masked.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import math
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from lowbit_flex.kernels.arch import SM90_MAX_SHARED_BYTES, triton_interpreting
from lowbit_flex.kernels.common import (
    LaunchConfig,
    PlanLaunch,
    cached_plan,
    dot_acc,
    ensure_triton_allocator,
    tma_base_aligned,
    tma_strides_ok,
)
from lowbit_flex.score_mods._rel_pos_layout import attention_out_strides

# Kernels may read only constexpr globals (a plain float fails to compile on the GPU; the interpreter allows it).
_LOG2E = tl.constexpr(1.4426950408889634)


class Bias(enum.IntEnum):
    """How the kernel forms the bias tile (a constexpr of the kernel)."""

    NONE = 0  # no bias: plain flash attention, the benchmark's floor for this kernel (not reachable from the op)
    ROWS = 1
    ONEHOT = 2


@dataclass(frozen=True)
class RelPosConfig(LaunchConfig):
    """A launch config plus the bias formation and whether to split a non-power-of-two head dim. For ``ROWS``,
    ``block_n`` is raised to ``next_pow2(k_w)`` where smaller (a block holds at least one whole key row);
    ``block_k`` is unused (0)."""

    bias: Bias = Bias.ROWS
    split_d: bool = True
    # K and V through TMA tensor descriptors where sm_90, the layout (tma_layout_ok) and a one-tile head dim allow;
    # in eager calls only: traced calls (a compiled graph, an AOTInductor package) take the same config with pointer
    # loads, which needs no device-side descriptor scratch. The table's choice for packed key rows on long grids
    # (pick_config); on the H200 it was 1-3 % faster on D = 64 global attention and 17-40 % slower on windows.
    tma: bool = False
    # The warp-specialized Gluon kernel of rel_pos_attention_sm90 where it can run (gluon_layout_ok, the plan):
    # block_m = 128 or 192 query rows per program (two or three consumer warpgroups; num_warps = 4, the first one),
    # num_stages ring slots. Elsewhere, and in traced calls, the table's Triton config runs. SM90_GLUON_CONFIGS
    # holds the rows where it measured faster.
    gluon: bool = False
    # ROWS with 2-4 key rows per block whose width is a multiple of MMA_COLUMN_GROUP: take the row max per key row
    # and keep rel_h out of the logit tile (False: add each slot's rel_h to its logit, the benchmark's A/B).
    key_row_max: bool = True
    # Gluon ROWS with one key row per block: each consumer copies its query rows' rel_h (every key row) into shared
    # memory up front, and reads each block's column from there (False: a 2-byte global read per query row and
    # block, one block ahead). Up to GLUON_MAX_STAGED_KEY_ROWS key rows; past that, and with 2-4 rows per block
    # (a column per slot's row), the global reads.
    rel_h_staged: bool = False
    # Gluon: programs take consecutive 64-row query chunks of every (batch, head)'s rows laid end to end, so that a
    # program may hold the end of one head and the start of the next (with both heads' key/value blocks in its
    # ring) and none runs a head's last partial block with idle consumers: B * H * ceil(L / 64) / consumers
    # programs instead of B * H * ceil(L / block_m). On SAM's 64 x 64 grid with 192-row programs, vit_l's 16 heads
    # at batch 8 take 2731 programs (20.7 waves of 132) instead of 2816 (21.3, so 22). Where a head has fewer
    # chunks than the program has consumers (L <= 128 with three), each program keeps to one head.
    cross_heads: bool = False


def _cfg(m: int, n: int, warps: int, stages: int) -> RelPosConfig:
    return RelPosConfig(m, n, 0, warps, stages)


def gluon_config(
    block_n: int,
    stages: int,
    bias: Bias = Bias.ROWS,
    block_m: int = 128,
    rel_h_staged: bool = False,
    cross_heads: bool = False,
) -> RelPosConfig:
    """A config of the Gluon kernel: ``block_m`` query rows per program (128 or 192: two or three consumer
    warpgroups), ``block_n``-slot key blocks (``ROWS``: raised to a whole key row as in the table), a ring of
    ``stages >= 2`` key/value slots, ``rel_h`` read from a shared-memory copy or not, programs within one head or
    across heads (:attr:`RelPosConfig.cross_heads`)."""
    return RelPosConfig(
        block_m, block_n, 0, 4, stages, bias, gluon=True, rel_h_staged=rel_h_staged, cross_heads=cross_heads
    )


# Head dims the Gluon kernel takes: one power-of-two tile (no split), WGMMA-sized.
GLUON_HEAD_DIMS = (64, 128)
# Largest head dim x key-block tile per consumer-warpgroup count that ptxas fits in a consumer's registers without
# spilling (Triton 3.6 and 3.9, sm_90): with two (232-256 registers), 64 x 128 or 128 x 64 (128 x 128 spilled 60
# bytes); with three (160-168), 64 x 64 (64 x 128 spilled 712-772 bytes, 128 x 64 8 bytes).
GLUON_MAX_TILE = {2: 128 * 64, 3: 64 * 64}
# Most key rows whose rel_h columns the Gluon kernel stages in shared memory: 3 consumers x 128 x 64 rows x 2 bytes
# = 48 KiB next to 72 KiB of q and the key/value ring.
GLUON_MAX_STAGED_KEY_ROWS = 128


# Fixed launch configurations for sm_90 (H100/H200), keyed by (padded head dim, L <= 256): no autotuning, so the
# first call compiles once and runs. From the sweep of benchmarks/bench_rel_pos_attention.py on an H200 (2026-12-01,
# bf16, ms; docs/measurements/h200_run16_rel_pos_windows.md):
# - global attention (64 x 64 grid) and long grids: 64-query blocks, 4 warps, 3 stages (vit_b 1.31 against 1.36-2.31
#   for six other tiles; vit_h 2.14; 48 x 40: 0.188, 128-query blocks 0.192);
# - SAM's 196-token windows: 32-slot blocks (two key rows), 64 queries and 4 warps at D = 64 (vit_b 0.175;
#   the previous 128 x 64 one-hot config 0.262), 128 queries and 8 warps at D = 80 (vit_h 0.298 against 0.307).
# D = 256 is untimed (no SAM model uses it): the smallest tiles, to stay within registers.
SM90_CONFIGS: dict[tuple[int, bool], RelPosConfig] = {
    (64, False): _cfg(64, 64, 4, 3),
    (128, False): _cfg(64, 64, 4, 3),
    (256, False): _cfg(64, 64, 8, 1),
    (64, True): _cfg(64, 32, 4, 3),
    (128, True): _cfg(128, 32, 8, 3),
    (256, True): _cfg(64, 32, 4, 1),
}
# Widest key row that ROWS takes (a block holds at least one whole row, and 256-slot blocks spill) and the widest
# block the table widens to (below).
MAX_ROWS_BLOCK_N = 128
# Columns of the MMA accumulator layout that one quad of lanes holds (2 adjacent per lane; mma.sync and WGMMA):
# a key row that starts and ends on such a group lies in whole registers.
MMA_COLUMN_GROUP = 8
# Most rows per block whose rel_h columns are selected per logit (R - 1 selects each); more rows gather instead.
# A constexpr: the kernel reads it too.
MAX_SELECTED_ROWS = tl.constexpr(4)


def rows_block_n(k_h: int, k_w: int, block_n: int) -> int:
    """The key-block width for ``ROWS`` from the table's ``block_n``: at least one whole row
    (``next_pow2(k_w)``), doubled where that covers the grid with fewer key slots (padding slots cost the same
    tensor-core and softmax work as keys) and the doubled block still selects its rows. A 48 x 40 grid: 64-slot
    blocks hold one row (48 x 64 = 3072 slots for 1920 keys), 128-slot blocks three (16 x 128 = 2048)."""
    n = max(block_n, triton.next_power_of_2(k_w))

    def slots(width: int) -> int:
        rows = width // k_w
        return -(-k_h // rows) * width

    wide = 2 * n
    if wide <= MAX_ROWS_BLOCK_N and wide // k_w <= MAX_SELECTED_ROWS.value and slots(wide) < slots(n):
        return wide
    return n


# Eager calls on sm_90 where the warp-specialized Gluon kernel measured faster than the Triton row above (H200 run
# 47, both in one call): SAM's global attention at D = 64 (64-wide key rows, one per 64-slot block) with 192 query
# rows in three consumer warpgroups and 3 ring slots: vit_b 1.016-1.021x, vit_l 1.003-1.004x, vit_b at batch 1
# 1.046-1.052x the Triton row (which drifted 1.7 % between two timings of that call). It lost on everything else
# measured: the 48 x 40 grid (0.73-0.96x), 128-query programs with 64-slot blocks (0.83-0.86x), 2 ring slots
# (0.53-0.64x: FlashAttention-3's order holds two slots at once). Keyed by (head dim, key-row width), for L > 256:
# only the 64 x 64 grid was timed; other row counts of 64-wide rows run the same whole, unpadded blocks. With rel_h
# staged in shared memory (H100 run 57, median of 5 round-robin timings): 1.028-1.037x the same tile reading it from
# memory on vit_b, vit_l and vit_b at batch 1 (3 and 4 ring slots tie either way). With programs across heads (H100
# run 61, three machines, medians of 5-7): vit_l 1.025-1.029x (22 -> 21 waves), vit_b 0.989-1.013x, batch 1
# 0.998-1.015x; 4 ring slots the same as 3.
# Traced calls and devices or layouts it cannot take run the Triton row (_gluon_plan).
SM90_GLUON_CONFIGS: dict[tuple[int, int], RelPosConfig] = {
    (64, 64): gluon_config(64, 3, block_m=192, rel_h_staged=True, cross_heads=True)
}


def pick_gluon_config(head_dim: int, seq_len: int, k_w: int) -> RelPosConfig | None:
    """The Gluon kernel's row of :data:`SM90_GLUON_CONFIGS` for this shape, or None (the Triton table's row)."""
    if bool(seq_len <= 256):
        return None
    return SM90_GLUON_CONFIGS.get((head_dim, k_w))


def pick_config(head_dim: int, seq_len: int, k_w: int) -> RelPosConfig:
    """The table's tiles, with the bias formation: ``ROWS`` wherever a key row fits a block (its block width from
    :func:`rows_block_n`). At 40 of 64 slots (a 48 x 40 grid, one padded row per block) ROWS ran 1.68x faster
    than the one-hot MMA; on every SAM shape it was the fastest. Rows wider than 128 slots take ``ONEHOT`` instead.
    Long grids whose blocks pack several key rows read K and V through TMA in eager calls (48 x 40: 1.08x the
    pointer loads on the H100 in run 56, 1.04x on the H200 in run 43; windows ran 0.8-0.9x with it).
    (``bool()``: a guard on a SymInt ``L`` under tracing.)"""
    block_d = max(64, triton.next_power_of_2(head_dim))
    short = bool(seq_len <= 256)
    cfg = SM90_CONFIGS[(block_d, short)]
    if k_w > MAX_ROWS_BLOCK_N:
        return dataclasses.replace(cfg, bias=Bias.ONEHOT)
    block_n = rows_block_n(seq_len // k_w, k_w, cfg.block_n)
    return dataclasses.replace(cfg, block_n=block_n, tma=not short and block_n // k_w >= 2)


def head_dim_tiles(head_dim: int, split: bool) -> tuple[int, int]:
    """``(BLOCK_D, BLOCK_D1)``: the head dim as one power-of-two tile (``BLOCK_D1 = 0``), or split into two where
    that is less padding (80 -> 64 + 16, 96 -> 64 + 32; 112 -> 128: a 64-wide second tile saves nothing).
    Tiles are at least 16 wide (the MMA's reduction step)."""
    padded = max(16, triton.next_power_of_2(head_dim))
    if not split or padded == head_dim or padded <= 16:
        return padded, 0
    first = padded // 2
    second = max(16, triton.next_power_of_2(head_dim - first))
    return (first, second) if first + second < padded else (padded, 0)


@triton.jit
def _load_tile(ptrs, row_ok, col_ok, MASK_ROWS: tl.constexpr, MASK_COLS: tl.constexpr):
    """Masked 2-D load; a constexpr-false side drops its mask, so full tiles load unmasked (vectorised)."""
    if MASK_ROWS and MASK_COLS:
        x = tl.load(ptrs, mask=row_ok[:, None] & col_ok[None, :], other=0.0)
    elif MASK_ROWS:
        x = tl.load(ptrs, mask=row_ok[:, None], other=0.0)
    elif MASK_COLS:
        x = tl.load(ptrs, mask=col_ok[None, :], other=0.0)
    else:
        x = tl.load(ptrs)
    return x


@triton.jit
def _load_col(ptrs, row_ok, col_ok, MASK: tl.constexpr):
    """One value per query row (a rel_h column); unmasked where nothing can be out of range."""
    if MASK:
        x = tl.load(ptrs, mask=row_ok & col_ok, other=0.0)
    else:
        x = tl.load(ptrs)
    return x


@triton.jit
def _max_propagating_nan(a, b):
    """``max`` as a reduction's combine: the NaN-propagating form, which the compiler simplifies with a constant
    ``-inf`` operand (``max(x, -inf) = x`` for every x, NaN included; not so for the NaN-ignoring form)."""
    return tl.maximum(a, b, propagate_nan=tl.PropagateNan.ALL)


# The interpreter runs a custom combine in Python once per pair of elements (minutes per test on SAM's grids), and
# Triton's own max through numpy. That one ignores NaN, with the same outputs here: each key row's max feeds a
# NaN-ignoring maximum with the rel_h offset anyway, and a NaN logit makes its query row NaN through its p. A
# constexpr flag, not an alias of the combine: Inductor copies a kernel's JIT helpers into its own module under
# their own names, so an alias is undefined there (a compiled graph then fails to build).
_KEY_ROW_MAX_NUMPY = tl.constexpr(triton_interpreting())


@triton.jit
def _rel_pos_attention_kernel(
    q_ptr, k_ptr, v_ptr, rh_ptr, rw_ptr, o_ptr,
    sq_b, sq_h, sq_l, sq_d, sk_b, sk_h, sk_l, sk_d, sv_b, sv_h, sv_l, sv_d,
    srh_b, srh_h, srh_l, srw_b, srw_h, srw_l,
    H, L, num_m_blocks, sm_scale,
    D: tl.constexpr, K_H: tl.constexpr, K_W: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_D1: tl.constexpr,
    BIAS: tl.constexpr, KC: tl.constexpr, H_WINDOW: tl.constexpr,
    MASK_N: tl.constexpr, MASK_M: tl.constexpr, PAD_D: tl.constexpr, PAD_D1: tl.constexpr,
    OUT_LHD: tl.constexpr, TMA: tl.constexpr, DOT_PRECISION: tl.constexpr, UPCAST: tl.constexpr,
    LOGIT_MASK: tl.constexpr, ROW_MAX_PER_KEY_ROW: tl.constexpr,
):  # fmt: skip
    # Inductor passes a Python float as fp64 where the GPU has fp64 (Triton's JIT: fp32); fp64 would spread to the
    # logits and break the fp32 accumulator's dot.
    sm_scale = tl.cast(sm_scale, tl.float32)
    # Logits, bias terms and the row max in log2 units: the exponent is one subtraction per logit.
    qk_scale = sm_scale * _LOG2E
    # Query blocks of one (batch, head) are consecutive programs, so they share K/V in L2.
    pid = tl.program_id(0)
    pid_m = pid % num_m_blocks
    pid_bh = pid // num_m_blocks
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    q_base = q_ptr + b * sq_b + h * sq_h
    k_base = k_ptr + b * sk_b + h * sk_h
    v_base = v_ptr + b * sv_b + h * sv_h
    if TMA:
        # Hopper's TMA copies whole (BLOCK_N, head-dim tile) tiles into shared memory, zero-filling rows past L and
        # columns past D: no per-element addresses or masks (registers barely changed: ptxas, Triton 3.9).
        k_desc = tl.make_tensor_descriptor(k_base, [L, D], [sk_l, 1], [BLOCK_N, BLOCK_D])
        v_desc = tl.make_tensor_descriptor(v_base, [L, D], [sv_l, 1], [BLOCK_N, BLOCK_D])
        if BLOCK_D1 > 0:
            k1_desc = tl.make_tensor_descriptor(k_base, [L, D], [sk_l, 1], [BLOCK_N, BLOCK_D1])
            v1_desc = tl.make_tensor_descriptor(v_base, [L, D], [sv_l, 1], [BLOCK_N, BLOCK_D1])
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    m_ok = offs_m < L
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < D
    q = _load_tile(q_base + offs_m[:, None] * sq_l + offs_d[None, :] * sq_d, m_ok, d_ok, MASK_M, PAD_D)
    if BLOCK_D1 > 0:  # the head dim's second tile (80 = 64 + 16)
        offs_d1 = BLOCK_D + tl.arange(0, BLOCK_D1)
        d1_ok = offs_d1 < D
        q1 = _load_tile(q_base + offs_m[:, None] * sq_l + offs_d1[None, :] * sq_d, m_ok, d1_ok, MASK_M, PAD_D1)
    rh_rows = rh_ptr + b * srh_b + h * srh_h + offs_m * srh_l
    rw_rows = rw_ptr + b * srw_b + h * srw_h + offs_m * srw_l
    offs_c = tl.arange(0, BLOCK_N)
    if BIAS == 1:  # ROWS: R packed key rows per block
        R: tl.constexpr = BLOCK_N // K_W
        slot_row = offs_c // K_W
        slot_col = offs_c - slot_row * K_W
        slot_ok = slot_row < R
        # In fp32 and log2 units, with -inf in the padding slots: each block's logits are then one FMA
        # s * qk_scale + rel_w (plus the rel_h terms) and need no mask of their own. H200, run 39, against a bf16
        # tile widened every block and a select per logit: SAM's D = 64 windows 5 % faster, a 48 x 40 grid 5.5 %,
        # D = 80 windows and global attention unchanged (the same registers: ptxas 141 vs 143 at D = 64).
        rel_w_tile = _load_tile(rw_rows[:, None] + slot_col[None, :], m_ok, slot_ok, MASK_M, R * K_W != BLOCK_N)
        rel_w_tile = rel_w_tile.to(tl.float32) * _LOG2E
        if R * K_W != BLOCK_N:
            rel_w_tile = tl.where(slot_ok[None, :], rel_w_tile, float("-inf"))
        num_blocks = tl.cdiv(K_H, R)
        if R == 1:  # the first block's rel_h column; each block loads the next one's (see the loop)
            rh_next = _load_col(rh_rows, m_ok, True, MASK_M)
    else:
        num_blocks = tl.cdiv(L, BLOCK_N)
    if BIAS == 2:  # ONEHOT: reduction column t is rel_h row (window) t for t < KH_USED, else rel_w column t - KH_USED
        KH_USED: tl.constexpr = 16 if H_WINDOW else K_H
        offs_t = tl.arange(0, KC)
        is_h = offs_t < KH_USED
        is_w = (offs_t >= KH_USED) & (offs_t < KH_USED + K_W)
        w_cols = tl.where(is_w, offs_t - KH_USED, 0)
        if H_WINDOW:  # the rel_w part is fixed, the rel_h window is loaded per block
            rel_w_part = tl.load(rw_rows[:, None] + w_cols[None, :], mask=m_ok[:, None] & is_w[None, :], other=0.0)
        else:
            rel_cat = tl.load(
                tl.where(is_h[None, :], rh_rows[:, None] + offs_t[None, :], rw_rows[:, None] + w_cols[None, :]),
                mask=m_ok[:, None] & (is_h | is_w)[None, :],
                other=0.0,
            )

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)  # running row max of the logits (log2 units)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    if BLOCK_D1 > 0:
        acc1 = tl.zeros([BLOCK_M, BLOCK_D1], tl.float32)
    for blk in range(0, num_blocks):
        if BIAS == 1:
            offs_n = blk * (R * K_W) + offs_c
            n_ok = slot_ok & (offs_n < L)
        else:
            offs_n = blk * BLOCK_N + offs_c
            n_ok = offs_n < L
        if TMA:  # keys in padding slots hold the next row's (masked below) or zeros past L
            first_key = blk * (R * K_W) if BIAS == 1 else blk * BLOCK_N
            s = dot_acc(q, tl.trans(k_desc.load([first_key, 0])), None, UPCAST, DOT_PRECISION)
            if BLOCK_D1 > 0:
                s = dot_acc(q1, tl.trans(k1_desc.load([first_key, BLOCK_D])), s, UPCAST, DOT_PRECISION)
        else:
            k = _load_tile(k_base + offs_d[:, None] * sk_d + offs_n[None, :] * sk_l, d_ok, n_ok, PAD_D, MASK_N)
            s = dot_acc(q, k, None, UPCAST, DOT_PRECISION)
            if BLOCK_D1 > 0:
                k1 = _load_tile(k_base + offs_d1[:, None] * sk_d + offs_n[None, :] * sk_l, d1_ok, n_ok, PAD_D1, MASK_N)
                s = dot_acc(q1, k1, s, UPCAST, DOT_PRECISION)
        # The logits t (log2 units) and the block's row max: a per-row term kept out of the tile (row_bias: rel_h
        # with one key row per block) joins the max and the exponent's per-row offset; with key rows on the MMA
        # layout's 8-slot column groups (ROW_MAX_PER_KEY_ROW), each key row's rel_h joins its own slots' max and the
        # exponent's offset tile (off) instead of every logit.
        row_bias = tl.zeros([BLOCK_M], tl.float32)
        if BIAS == 0:
            t = s * qk_scale
        elif BIAS == 1:
            if R == 1:  # rel_h is one value per query row: it joins the row max and the exponent's offset
                row_bias = rh_next.to(tl.float32) * _LOG2E
                # Loaded a block ahead, so its latency hides behind this block's work (H200, run 39: global
                # attention at D = 64 2.4-2.6 % faster than loading each block's column where it is used).
                rh_next = _load_col(rh_rows + blk + 1, m_ok, blk + 1 < K_H, True)
                t = tl.fma(s, qk_scale, rel_w_tile)
            elif ROW_MAX_PER_KEY_ROW:  # rel_h stays out of the tile (below)
                t = tl.fma(s, qk_scale, rel_w_tile)
            elif R <= MAX_SELECTED_ROWS:  # the rel_h column of each slot's key row, R - 1 selects per logit
                col = _load_col(rh_rows + blk * R, m_ok, True, MASK_M).to(tl.float32) * _LOG2E
                rel_h_tile = col[:, None]
                for r in tl.static_range(1, R):  # the first row of a block is valid, the others where k_h allows
                    col = _load_col(rh_rows + blk * R + r, m_ok, blk * R + r < K_H, MASK_M or K_H % R != 0)
                    rel_h_tile = tl.where((slot_row == r)[None, :], (col.to(tl.float32) * _LOG2E)[:, None], rel_h_tile)
                # The rel_w tile joins the MMA's result first: Triton 3.9 otherwise keeps rel_w + rel_h in the
                # load's layout and converts the whole tile through shared memory every block (ptxas: 48 x 40 grid
                # 1300 -> 715 instructions per block, its 488-byte spill gone; Triton 3.6 needs neither way).
                t = tl.fma(s, qk_scale, rel_w_tile) + rel_h_tile
            else:  # narrow grids: gather each slot's rel_h (the program's rel_h rows stay in L1)
                key_row = tl.minimum(blk * R + slot_row, K_H - 1)  # padding slots read a valid row (tile: -inf)
                rel_h_tile = _load_tile(rh_rows[:, None] + key_row[None, :], m_ok, n_ok, MASK_M, False)
                t = tl.fma(s, qk_scale, tl.fma(rel_h_tile.to(tl.float32), _LOG2E, rel_w_tile))
        else:
            key_row = offs_n // K_W
            key_col = offs_n - key_row * K_W
            if H_WINDOW:
                first_row = (blk * BLOCK_N) // K_W
                rel_h_part = tl.load(
                    rh_rows[:, None] + first_row + offs_t[None, :],
                    mask=m_ok[:, None] & (is_h & (first_row + offs_t < K_H))[None, :],
                    other=0.0,
                )
                rel_cat = rel_h_part + rel_w_part  # disjoint columns: the sum is a merge
                key_row = key_row - first_row
            hit = tl.where(
                is_h[:, None], offs_t[:, None] == key_row[None, :], (offs_t - KH_USED)[:, None] == key_col[None, :]
            )
            # Through fp32: the interpreter casts a boolean to bf16 as raw bits.
            onehot = tl.where(hit, 1.0, 0.0).to(rel_cat.dtype)
            t = tl.fma(dot_acc(rel_cat, onehot, None, UPCAST, DOT_PRECISION), _LOG2E, s * qk_scale)
        if LOGIT_MASK:
            t = tl.where(n_ok[None, :], t, float("-inf"))
        # Every block holds at least one valid key (blocks start below L), so m_new is finite.
        if ROW_MAX_PER_KEY_ROW:
            # Key row r's slots are whole registers of the MMA layout, so each selection by slot_row == r folds
            # to a constant per register: the per-row maxima read only row r's logits (the NaN-propagating max
            # drops the -inf of the other slots at compile time), and the offset tile is register copies.
            blk_max = tl.full([BLOCK_M], float("-inf"), tl.float32)
            rel_h_tile = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
            for r in tl.static_range(R):
                col = _load_col(rh_rows + blk * R + r, m_ok, blk * R + r < K_H, MASK_M or K_H % R != 0)
                col = col.to(tl.float32) * _LOG2E
                in_row = (slot_row == r)[None, :]
                in_row_t = tl.where(in_row, t, float("-inf"))
                if _KEY_ROW_MAX_NUMPY:
                    row_max = tl.max(in_row_t, 1)
                else:
                    row_max = tl.reduce(in_row_t, 1, _max_propagating_nan)
                blk_max = tl.maximum(blk_max, row_max + col)
                rel_h_tile = tl.where(in_row, col[:, None], rel_h_tile)
            m_new = tl.maximum(m_i, blk_max)
            # One subtraction per (query row, key row): the tile's registers hold R distinct values per query row.
            off = rel_h_tile - m_new[:, None]
            p = tl.math.exp2(t + off)
        else:
            m_new = tl.maximum(m_i, tl.max(t, axis=1) + row_bias)
            p = tl.math.exp2(t + (row_bias - m_new)[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        # Masked slots have p = 0; with TMA their v rows are another key's (finite unless v is not) or zeros.
        if TMA:
            v = v_desc.load([first_key, 0])
        else:
            v = _load_tile(v_base + offs_n[:, None] * sv_l + offs_d[None, :] * sv_d, n_ok, d_ok, MASK_N, PAD_D)
        acc = dot_acc(p.to(v.dtype), v, acc * alpha[:, None], UPCAST, DOT_PRECISION)
        if BLOCK_D1 > 0:
            if TMA:
                v1 = v1_desc.load([first_key, BLOCK_D])
            else:
                v1 = _load_tile(v_base + offs_n[:, None] * sv_l + offs_d1[None, :] * sv_d, n_ok, d1_ok, MASK_N, PAD_D1)
            acc1 = dot_acc(p.to(v1.dtype), v1, acc1 * alpha[:, None], UPCAST, DOT_PRECISION)
        m_i = m_new
    if OUT_LHD:  # (B, L, H, D) memory (attention_out_strides)
        o_rows = o_ptr + (b * L * H + h) * D + offs_m[:, None] * (H * D)
    else:
        o_rows = o_ptr + pid_bh.to(tl.int64) * L * D + offs_m[:, None] * D
    out = (acc / l_i[:, None]).to(o_ptr.dtype.element_ty)
    tl.store(o_rows + offs_d[None, :], out, mask=m_ok[:, None] & d_ok[None, :])
    if BLOCK_D1 > 0:
        out1 = (acc1 / l_i[:, None]).to(o_ptr.dtype.element_ty)
        tl.store(o_rows + offs_d1[None, :], out1, mask=m_ok[:, None] & d1_ok[None, :])


@functools.lru_cache(maxsize=512)
def _launch_plan(
    B: int,
    H: int,
    L: int,
    D: int,
    k_h: int,
    k_w: int,
    dtype: torch.dtype,
    config: RelPosConfig | None,
    out_lhd: bool,
    bases_aligned: bool,
    *strides: int,
) -> PlanLaunch:
    """The launch for one shape key: grid, tiles and constexprs. ``out_lhd``: the output is ``(B, L, H, D)`` in
    memory; ``bases_aligned``: q, k and v start at 16-byte aligned addresses (TMA). ``strides`` (q, k, v, then the
    first three of rel_h and rel_w) are part of the key only: the kernel is specialized on its integer arguments, so
    a cached direct launch is right only for the strides it was compiled with."""
    cfg = config or pick_gluon_config(D, L, k_w) or pick_config(D, L, k_w)
    if cfg.gluon:
        return _gluon_plan(cfg, B, H, L, D, k_h, k_w, dtype, out_lhd, bases_aligned, strides)
    block_n, kc, h_window = cfg.block_n, 16, False
    if cfg.bias is Bias.ROWS:
        block_n = max(block_n, triton.next_power_of_2(k_w))  # at least one whole key row per block
        rows = block_n // k_w
        mask_n = rows * k_w != block_n or k_h % rows != 0
        # The logits need the mask for keys past L; the padding slots' -inf can come from the rel_w tile instead.
        logit_mask = k_h % rows != 0
        key_blocks = triton.cdiv(k_h, rows)
    else:
        mask_n = logit_mask = L % block_n != 0
        key_blocks = triton.cdiv(L, block_n)
    # Measured on the H200 (Triton 3.6): where the key loop is not software-pipelined (one key block, or one stage)
    # the split head dim's second accumulator came out wrong (relative error 0.4-0.5: a 1 x 37 grid at D = 80 with
    # 3 stages; 14 x 14 and 5 x 40 grids at D = 80 with 1 stage, runs 27c and 36; right under the interpreter and
    # in every pipelined loop), so such a launch pads the head dim instead.
    block_d, block_d1 = head_dim_tiles(D, cfg.split_d and key_blocks >= 2 and cfg.num_stages >= 2)
    if cfg.bias is Bias.ONEHOT:
        # A 16-row rel_h window suffices where a block of consecutive keys spans at most 16 key rows.
        h_window = k_h > 16 and (block_n + k_w - 2) // k_w + 1 <= 16
        kc = max(16, triton.next_power_of_2((16 if h_window else k_h) + k_w))
    # Key rows that start on the MMA accumulator's 8-slot column groups (a thread holds 2 adjacent slots of each
    # group, 4 lanes span it, on sm_80 and sm_90): each key row's rel_h joins its own slots' row max.
    row_max_per_key_row = (
        cfg.bias is Bias.ROWS and cfg.key_row_max and 2 <= block_n // k_w <= MAX_SELECTED_ROWS.value
        and k_w % MMA_COLUMN_GROUP == 0
    )  # fmt: skip
    block_m = cfg.block_m
    # A split head dim keeps pointer loads: the wrong results first blamed on TMA there (run 27c) were the 1-stage
    # split above (run 36: the same error with pointer loads), and TMA with a split head dim has not run since.
    tma = cfg.tma and block_d1 == 0 and bases_aligned and tma_layout_ok(dtype, strides[4:8], strides[8:12])
    meta = dict(
        D=D, K_H=k_h, K_W=k_w,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=block_d, BLOCK_D1=block_d1,
        BIAS=int(cfg.bias), KC=kc, H_WINDOW=h_window,
        MASK_N=mask_n, MASK_M=L % block_m != 0, PAD_D=block_d1 == 0 and block_d != D,
        PAD_D1=block_d1 > 0 and block_d + block_d1 != D, OUT_LHD=out_lhd, TMA=tma,
        DOT_PRECISION="ieee" if dtype == torch.float32 else "tf32", UPCAST=triton_interpreting(),
        LOGIT_MASK=logit_mask, ROW_MAX_PER_KEY_ROW=row_max_per_key_row,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )  # fmt: skip
    # Traced calls launch through wrap_triton, which would need Triton's device-side descriptor scratch in the
    # compiled graph: they take the pointer loads (PlanLaunch.traced).
    traced = None
    if tma:
        untma = dataclasses.replace(cfg, tma=False)
        traced = cached_plan(_launch_plan, B, H, L, D, k_h, k_w, dtype, untma, out_lhd, bases_aligned, *strides)
    return PlanLaunch(_rel_pos_attention_kernel, (triton.cdiv(L, block_m) * B * H,), meta, tensors=6, traced=traced)


def _gluon_plan(
    cfg: RelPosConfig, B: int, H: int, L: int, D: int, k_h: int, k_w: int, dtype: torch.dtype, out_lhd: bool,
    bases_aligned: bool, strides: tuple,
) -> PlanLaunch:  # fmt: skip
    """The Gluon kernel's launch, with the table's Triton plan for traced calls (the same arguments: the Gluon
    kernel counts its own query blocks); the Triton plan alone where the Gluon kernel cannot run (device, layout,
    head dim, more rows per block than it selects, or a tile past its consumers' registers)."""
    # The Triton table's config, explicitly (with None the plan would pick this Gluon row again), without bias where
    # this config has none.
    table = pick_config(D, L, k_w)
    if cfg.bias is Bias.NONE:
        table = dataclasses.replace(table, bias=Bias.NONE)
    traced = cached_plan(_launch_plan, B, H, L, D, k_h, k_w, dtype, table, out_lhd, bases_aligned, *strides)
    if cfg.bias is Bias.ROWS:
        block_n = gluon_rows_block_n(k_w, cfg.block_n)
        key_row_w, key_rows, fits = k_w, k_h, block_n > 0
    else:  # plain attention: blocks of block_n consecutive keys
        block_n, key_row_w, key_rows, fits = cfg.block_n, 1, L, cfg.bias is Bias.NONE
    from lowbit_flex.kernels.gluon_sm90 import WS_CONSUMER_REGS, WS_ROWS

    consumers, partial = divmod(cfg.block_m, WS_ROWS.value)  # query rows per consumer warpgroup
    if partial or consumers not in WS_CONSUMER_REGS:
        rows = [c * WS_ROWS.value for c in WS_CONSUMER_REGS]
        raise ValueError(f"config: the Gluon kernel takes block_m in {rows}, got {cfg.block_m}")
    if cfg.num_stages < 2:  # one slot would hold block j - 1 for its PV while block j's QKᵀ waits for it
        raise ValueError(f"config: the Gluon kernel needs num_stages >= 2 ring slots, got {cfg.num_stages}")
    fits = fits and D in GLUON_HEAD_DIMS and D * block_n <= GLUON_MAX_TILE[consumers]
    if not (fits and bases_aligned and gluon_layout_ok(dtype, strides[:12])):
        return traced
    from lowbit_flex.kernels.rel_pos_attention_sm90 import _rel_pos_attention_fwd_sm90_ws

    staged = cfg.rel_h_staged and cfg.bias is Bias.ROWS and block_n // k_w == 1 and k_h <= GLUON_MAX_STAGED_KEY_ROWS
    # A program spans at most two heads where each has at least as many 64-row chunks as it has consumers; its ring
    # then holds two heads' key/value blocks per slot, where that fits in shared memory.
    chunks = triton.cdiv(L, WS_ROWS.value) if cfg.cross_heads else 0
    rh_rows = triton.next_power_of_2(k_h) if staged else 1
    if (
        chunks < consumers
        or _gluon_shared_bytes(consumers, WS_ROWS.value, D, block_n, cfg.num_stages, 2, rh_rows) > SM90_MAX_SHARED_BYTES
    ):
        chunks = 0
    meta = dict(
        D=D, BLOCK_N=block_n, STAGES=cfg.num_stages, BIAS=int(cfg.bias), KEY_ROW_W=key_row_w, KEY_ROWS=key_rows,
        OUT_LHD=out_lhd, CONSUMERS=consumers, CONSUMER_REGS=WS_CONSUMER_REGS[consumers],
        RH_STAGE_ROWS=rh_rows, HEAD_CHUNKS=chunks, num_warps=4,
    )  # fmt: skip
    grid = (triton.cdiv(B * H * chunks, consumers) if chunks else triton.cdiv(L, cfg.block_m) * B * H,)
    return PlanLaunch(_rel_pos_attention_fwd_sm90_ws, grid, meta, tensors=6, traced=traced)


def _gluon_shared_bytes(
    consumers: int, rows: int, d: int, block_n: int, stages: int, ring_heads: int, rh_rows: int
) -> int:
    """The Gluon kernel's shared memory (16-bit values): each consumer's ``rows`` q rows, ``ring_heads`` heads'
    key/value ring, the staged ``rel_h`` rows, and its barriers."""
    return 2 * (consumers * rows * d + ring_heads * stages * 2 * block_n * d + consumers * rh_rows * rows) + 8 * (
        2 * stages + 1
    )


def tma_layout_ok(dtype: torch.dtype, k_strides: tuple, v_strides: tuple) -> bool:
    """Whether TMA can read k and v of this layout: sm_90+, 16-bit values, a unit head-dim stride and 16-byte
    aligned (batch, head, token) strides (the base addresses are checked per call)."""
    # torch.cuda.get_device_capability, not arch.capability: lowbit_flex.triton_aot patches it for its CPU stand-ins.
    if triton_interpreting() or dtype not in (torch.float16, torch.bfloat16):
        return False
    if torch.cuda.get_device_capability() < (9, 0):
        return False
    return tma_strides_ok(k_strides, 3, 2) and tma_strides_ok(v_strides, 3, 2)


def gluon_rows_block_n(k_w: int, block_n: int) -> int:
    """The Gluon kernel's key-block width for ``ROWS`` (raised to a whole key row, as in the Triton plan), or 0
    where it would hold more rows than the kernel selects per logit (it has no gather path) or rows wider than
    ``MAX_ROWS_BLOCK_N``."""
    n = max(block_n, triton.next_power_of_2(k_w))
    return n if k_w <= MAX_ROWS_BLOCK_N and n // k_w <= MAX_SELECTED_ROWS.value else 0


def gluon_layout_ok(dtype: torch.dtype, qkv_strides: tuple) -> bool:
    """Whether the Gluon kernel can run on this device and layout: sm_90 (WGMMA), 16-bit values, and TMA reads of
    q, k and v (:func:`tma_layout_ok`'s strides for each; the base addresses are checked per call)."""
    if not tma_layout_ok(dtype, qkv_strides[4:8], qkv_strides[8:12]):
        return False
    return torch.cuda.get_device_capability() == (9, 0) and tma_strides_ok(qkv_strides[:4], 3, 2)


def needs_scratch(launch: PlanLaunch) -> bool:
    """Whether the plan's kernel builds TMA descriptors on the device, in Triton's global scratch (an allocator)."""
    return launch.traced is not None or launch.meta["TMA"]


def rel_pos_plan(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rel_h: torch.Tensor,
    rel_w: torch.Tensor,
    scale: float | None = None,
    config: RelPosConfig | None = None,
) -> tuple[PlanLaunch, tuple]:
    """The launch for these tensors' shapes and strides, and its arguments after the six tensors
    ``(q, k, v, rel_h, rel_w, out)``: strides, sizes and the softmax scale. ``rel_h``/``rel_w`` have a unit last
    stride. Depends on metadata only, so an eager caller can keep it per shape key."""
    B, H, L = q.shape[:3]
    D, k_h, k_w = int(q.shape[3]), int(rel_h.shape[-1]), int(rel_w.shape[-1])
    strides = (*q.stride(), *k.stride(), *v.stride(), *rel_h.stride()[:3], *rel_w.stride()[:3])
    out_lhd = attention_out_strides(q)[2] != D  # (B, L, H, D) memory unless heads hold consecutive rows
    aligned = tma_base_aligned(q, k, v)
    launch = cached_plan(_launch_plan, B, H, L, D, k_h, k_w, q.dtype, config, out_lhd, aligned, *strides)
    if needs_scratch(launch):
        ensure_triton_allocator()  # device-side descriptors live in a per-launch global scratch buffer
    # float(): an int scale would make Triton type (or, for 1, specialize) the argument differently per call.
    s = 1.0 / math.sqrt(D) if scale is None else float(scale)
    # The Triton plan's query blocks (a Gluon plan's traced one; the Gluon kernel counts its own).
    num_m_blocks = -(-L // (launch.traced or launch).meta["BLOCK_M"])  # not triton.cdiv: slow to call
    return launch, (*strides, H, L, num_m_blocks, s)


def rel_pos_attention_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rel_h: torch.Tensor,
    rel_w: torch.Tensor,
    scale: float | None = None,
    *,
    config: RelPosConfig | None = None,
) -> torch.Tensor:
    """Launch the fused kernel. Arguments are validated by the op: q/k/v ``(B, H, L, D)`` of one dtype, rel_h/rel_w
    ``(B, H, L, k_h)``/``(B, H, L, k_w)`` in that dtype with ``L == k_h * k_w``. ``config`` overrides the table
    (the benchmark's sweep and the tests use it).

    Everything but the tensors is decided once per shape key (:func:`_launch_plan`): eager calls then launch the
    compiled kernel directly, and ``torch.compile`` traces the launch (``wrap_triton``). Head dim and key grid are
    constexprs, so under dynamic-shape tracing they are specialized (``int()``: a guard, not a SymInt)."""
    # The kernel reads rel rows with unit stride (SAM's einsum output already is).
    rel_h = rel_h if rel_h.stride(-1) == 1 else rel_h.contiguous()
    rel_w = rel_w if rel_w.stride(-1) == 1 else rel_w.contiguous()
    out = torch.empty_strided(q.shape, attention_out_strides(q), dtype=q.dtype, device=q.device)
    if out.numel() == 0:
        return out
    launch, scalars = rel_pos_plan(q, k, v, rel_h, rel_w, scale, config)
    launch(q, k, v, rel_h, rel_w, out, *scalars)
    return out
