"""Fused fp8 / int8-QKᵀ attention forward (the format of ``lowbit_flex/ops/fp8_attention.py``).

One program owns ``BLOCK_M`` query rows of one head (with a causal mask, up to 1024 queries, two such tiles: see
:data:`CAUSAL_PAIRS_MAX_LQ`) and streams key/value blocks of ``BLOCK_N`` = 128 or 64 keys
(dividing the k scale block, so each key tile has one scalar scale and the q tile one scalar scale: the descale is
one multiply per tile). Key blocks that the causal mask and the sequence end leave whole are processed without any
masking; only the diagonal / ragged tail blocks pay for the ``where``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

from lowbit_flex.kernels.arch import triton_interpreting
from lowbit_flex.kernels.common import (
    LaunchConfig,
    PlanLaunch,
    cached_plan,
    ensure_triton_allocator,
    tma_base_aligned,
    tma_strides_ok,
)
from lowbit_flex.kernels.rounding import round_to_16bit_grid, to_e4m3
from lowbit_flex.quant.fp8 import K_BLOCK, LOGIT_SCALE_FLOOR, P_FACTOR_FLOOR, Q_BLOCK, p_scale

_LOG2E = 1.4426950408889634
_LOGIT_SCALE_FLOOR = tl.constexpr(LOGIT_SCALE_FLOOR)
_P_FACTOR_FLOOR = tl.constexpr(P_FACTOR_FLOOR)


@triton.jit
def _load_kv_block(
    base, start_n, cols, offs_d, Lk, stride_n, stride_d, MASKED: tl.constexpr, TMA: tl.constexpr,
    TRANSPOSED: tl.constexpr,
):  # fmt: skip
    """One ``(BLOCK_N, D)`` key or value tile: a TMA descriptor load (``TRANSPOSED``: a token-major ``(D, Lk)``
    descriptor) or pointer loads, rows past ``Lk`` zero where ``MASKED``."""
    if TMA:
        if TRANSPOSED:
            tile = tl.trans(base.load([0, start_n]))
        else:
            tile = base.load([start_n, 0])
    else:
        ptrs = base + cols[:, None] * stride_n + offs_d[None, :] * stride_d
        if MASKED:
            tile = tl.load(ptrs, mask=cols[:, None] < Lk, other=0.0)
        else:
            tile = tl.load(ptrs)
    return tile


@triton.jit
def _softmax_step(
    s, c, m_i, row_sum, p_mult, V_DTYPE: tl.constexpr, PV_16BIT: tl.constexpr, EXACT: tl.constexpr,
    V_MMA_KEY_ORDER: tl.constexpr,
):  # fmt: skip
    """One key block of the online softmax on raw scores ``s`` (``c``: their scale in log2 units). Returns the PV
    MMA's P operand, the factor ``alpha`` that rescales what was accumulated so far, the new row max and row sum.

    The scale enters through the row max (max(s) * c is max(s * c): rounding is monotonic and c > 0) and the
    exponent's FMA, s * c - m, instead of a multiply per score. The first block processed always has a visible key
    in every row (it starts at key 0), so m_new is finite from then on and no exp2(-inf - -inf) NaN can appear."""
    m_new = tl.maximum(m_i, tl.max(s, axis=1) * c)
    alpha = tl.math.exp2(m_i - m_new)
    if PV_16BIT:
        p = tl.math.exp2(s * c - m_new[:, None])
        row_sum = row_sum * alpha + tl.sum(p, axis=1)
        if EXACT:
            # Triton 3.9's interpreter truncates float32 -> bfloat16 and reads bfloat16 dot operands as integers:
            # round P with integer RNE and multiply in float32 (_pv_mma), exact for 16-bit operands.
            p_op = round_to_16bit_grid(p, V_DTYPE)
        else:
            p_op = p.to(V_DTYPE)  # the accurate mode: P (<= 1) in v's dtype
    else:
        # P * p_mult as exp2(s * c - m + log2(p_mult)): the multiply rides in the exponent's FMA (one instruction
        # less per score), and the row sum divides it out once per row. The floor changes no code (quant/fp8.py).
        pm = tl.maximum(p_mult, _P_FACTOR_FLOOR)
        if EXACT:  # the interpreter has no libdevice
            log2_pm = tl.math.log2(pm)
        else:  # MUFU's log2 (2^-22 absolute error): libdevice's exact one is ~20 instructions per block
            log2_pm = libdevice.fast_log2f(pm)
        # tl.fma: should a branch land between s * c and the subtraction, they would not fuse
        p = tl.math.exp2(tl.fma(s, c, -(m_new - log2_pm)[:, None]))
        row_sum = row_sum * alpha + tl.sum(p, axis=1) * (1.0 / pm)
        p_op = to_e4m3(p, EXACT)
        # The P·V MMA's A operand holds keys 4a..4a+3 of each 16 in thread a (mod 4); the QKᵀ accumulator holds
        # keys 2a, 2a+1, 8+2a, 9+2a. With v's keys stored in that order within each 16 (V_MMA_KEY_ORDER: what
        # lowbit_attention's pass writes), P needs no shuffle between the two, only a relabeling of registers.
        if V_MMA_KEY_ORDER:
            p_op = tl.reshape(tl.permute(tl.reshape(p_op, (p_op.shape[0], p_op.shape[1] // 16, 2, 4, 2)),
                                         (0, 1, 3, 2, 4)), p_op.shape)  # fmt: skip
    return p_op, alpha, m_new, row_sum


@triton.jit
def _pv_mma(acc, p_op, v, PV_16BIT: tl.constexpr, PV_FP16_ACC: tl.constexpr, EXACT: tl.constexpr):
    """``acc + P·V`` on the tensor cores (fp32 accumulation; ``PV_FP16_ACC``: the block's product in fp16)."""
    if PV_16BIT and EXACT:
        return tl.dot(p_op, v.to(tl.float32), acc, input_precision="ieee")
    if PV_FP16_ACC:
        return acc + tl.dot(p_op, v, out_dtype=tl.float16).to(tl.float32)
    return tl.dot(p_op, v, acc)


@triton.jit
def _block_p_mult(vs_base, vs_unit, start_n, stride_vsn, K_SCALE_BLOCK: tl.constexpr, P_SCALE: tl.constexpr,
                  V_BLOCK_SCALES: tl.constexpr):  # fmt: skip
    """What P is multiplied by before its e4m3 rounding: ``P_SCALE``, or with v block scales the block's scale in
    units of the head's largest (acc's unit: every factor <= P_SCALE); one scalar load per block."""
    if V_BLOCK_SCALES:
        return tl.load(vs_base + (start_n // K_SCALE_BLOCK) * stride_vsn) * vs_unit
    return P_SCALE + tl.zeros_like(vs_unit)


@triton.jit
def _attend_blocks(
    acc, row_sum, m_i, vs_unit, q, qk_scale, offs_m, k_base, v_base, ks_base, vs_base, lo, hi, Lk, Lv,
    stride_kn, stride_kd, stride_vn, stride_vd, stride_ksn, stride_vsn,
    D: tl.constexpr, BLOCK_N: tl.constexpr, K_SCALE_BLOCK: tl.constexpr, MASKED: tl.constexpr,
    CAUSAL: tl.constexpr, PV_16BIT: tl.constexpr, PV_FP16_ACC: tl.constexpr, V_BLOCK_SCALES: tl.constexpr,
    P_SCALE: tl.constexpr, EXACT: tl.constexpr, TMA: tl.constexpr, V_TOKEN_MAJOR: tl.constexpr,
    V_DTYPE: tl.constexpr, V_MMA_KEY_ORDER: tl.constexpr,
):  # fmt: skip
    """Key blocks ``[lo, hi)``, one after the other: QKᵀ, softmax, PV. ``k_base`` / ``v_base``: pointers, or with
    ``TMA`` tensor descriptors (rows past ``Lk`` read as zeros; v's past ``Lv``)."""
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, D)
    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + offs_n
        k = _load_kv_block(k_base, start_n, cols, offs_d, Lk, stride_kn, stride_kd, MASKED, TMA, False)
        v = _load_kv_block(v_base, start_n, cols, offs_d, Lv, stride_vn, stride_vd, MASKED, TMA, V_TOKEN_MAJOR)
        k_scale = tl.load(ks_base + (start_n // K_SCALE_BLOCK) * stride_ksn)
        # fp8 x fp8 -> fp32 or int8 x int8 -> int32 on the tensor cores; the block scales are two scalars.
        s = tl.dot(q, tl.trans(k)).to(tl.float32)
        # log2 domain: qk_scale carries sm_scale * log2(e); floored so that a masked score (-inf) never meets 0.
        c = tl.maximum(qk_scale * k_scale, _LOGIT_SCALE_FLOOR)
        if MASKED:
            ok = cols[None, :] < Lk
            if CAUSAL:
                ok = ok & (offs_m[:, None] >= cols[None, :])
            s = tl.where(ok, s, float("-inf"))
        p_mult = _block_p_mult(vs_base, vs_unit, start_n, stride_vsn, K_SCALE_BLOCK, P_SCALE, V_BLOCK_SCALES)
        p_op, alpha, m_i, row_sum = _softmax_step(s, c, m_i, row_sum, p_mult, V_DTYPE, PV_16BIT, EXACT, V_MMA_KEY_ORDER)
        acc = _pv_mma(acc * alpha[:, None], p_op, v, PV_16BIT, PV_FP16_ACC, EXACT)
    return acc, row_sum, m_i


@triton.jit
def _attend_tile(
    Q, QS, VS, Out, m0, b, h, hk, Lq, Lk, Lv, k_base, v_base, ks_base, vs_base, vs_max, vs_unit, sm_scale_log2e,
    stride_qb, stride_qh, stride_qm, stride_qd, stride_ob, stride_oh, stride_om, stride_od,
    stride_qsb, stride_qsh, stride_qsm, stride_kn, stride_kd, stride_vn, stride_vd, stride_ksn,
    stride_vsb, stride_vsh, stride_vsn,
    D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, Q_SCALE_BLOCK: tl.constexpr,
    K_SCALE_BLOCK: tl.constexpr, CAUSAL: tl.constexpr, PV_16BIT: tl.constexpr, PV_FP16_ACC: tl.constexpr,
    V_BLOCK_SCALES: tl.constexpr, P_SCALE: tl.constexpr, EXACT: tl.constexpr, TMA: tl.constexpr,
    V_TOKEN_MAJOR: tl.constexpr, V_DTYPE: tl.constexpr, V_MMA_KEY_ORDER: tl.constexpr,
):  # fmt: skip
    """Query rows ``[m0, m0 + BLOCK_M)`` of head ``(b, h)`` against its keys: the q tile, every key block it sees,
    the output rows."""
    offs_m = m0 + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, D)
    q_ptrs = Q + b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh
    q_ptrs += offs_m[:, None].to(tl.int64) * stride_qm + offs_d[None, :] * stride_qd
    q = tl.load(q_ptrs, mask=offs_m[:, None] < Lq, other=0.0)
    # BLOCK_M divides Q_SCALE_BLOCK, so the whole tile shares one q scale.
    q_scale = tl.load(QS + b * stride_qsb + h * stride_qsh + (m0 // Q_SCALE_BLOCK) * stride_qsm)
    # Inductor passes a Python float as fp64 where the GPU has fp64 (Triton's JIT: fp32): keep the logits fp32.
    qk_scale = q_scale * tl.cast(sm_scale_log2e, tl.float32)
    m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    row_sum = tl.zeros((BLOCK_M,), tl.float32)
    acc = tl.zeros((BLOCK_M, D), tl.float32)
    # Key blocks [0, full_end) need no mask: inside the sequence and (causal) at or left of every row's diagonal.
    full_end = (Lk // BLOCK_N) * BLOCK_N
    hi = Lk
    if CAUSAL:
        full_end = tl.minimum(full_end, ((m0 + 1) // BLOCK_N) * BLOCK_N)
        hi = tl.minimum(hi, m0 + BLOCK_M)
    acc, row_sum, m_i = _attend_blocks(
        acc, row_sum, m_i, vs_unit, q, qk_scale, offs_m, k_base, v_base, ks_base, vs_base, 0, full_end, Lk, Lv,
        stride_kn, stride_kd, stride_vn, stride_vd, stride_ksn, stride_vsn,
        D, BLOCK_N, K_SCALE_BLOCK, False, CAUSAL, PV_16BIT, PV_FP16_ACC, V_BLOCK_SCALES, P_SCALE, EXACT,
        TMA, V_TOKEN_MAJOR, V_DTYPE, V_MMA_KEY_ORDER,
    )  # fmt: skip
    acc, row_sum, m_i = _attend_blocks(
        acc, row_sum, m_i, vs_unit, q, qk_scale, offs_m, k_base, v_base, ks_base, vs_base, full_end, hi, Lk, Lv,
        stride_kn, stride_kd, stride_vn, stride_vd, stride_ksn, stride_vsn,
        D, BLOCK_N, K_SCALE_BLOCK, True, CAUSAL, PV_16BIT, PV_FP16_ACC, V_BLOCK_SCALES, P_SCALE, EXACT,
        TMA, V_TOKEN_MAJOR, V_DTYPE, V_MMA_KEY_ORDER,
    )  # fmt: skip
    if PV_16BIT:
        out = acc / row_sum[:, None]  # VS is a placeholder: a 16-bit v has no scale
    elif V_BLOCK_SCALES:
        out = acc * (vs_max / (row_sum * P_SCALE))[:, None]
    else:
        v_scale = tl.load(VS + b * stride_vsb + hk * stride_vsh)
        out = acc * (v_scale / (row_sum * P_SCALE))[:, None]
    o_ptrs = Out + b.to(tl.int64) * stride_ob + h.to(tl.int64) * stride_oh
    o_ptrs += offs_m[:, None].to(tl.int64) * stride_om + offs_d[None, :] * stride_od
    tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=offs_m[:, None] < Lq)


@triton.jit
def _fp8_attention_fwd(
    Q, K, V, QS, KS, VS, Out, sm_scale_log2e, H, GROUP, Lq, Lk,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_om, stride_od,
    stride_qsb, stride_qsh, stride_qsm,
    stride_ksb, stride_ksh, stride_ksn,
    stride_vsb, stride_vsh, stride_vsn,
    D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    Q_SCALE_BLOCK: tl.constexpr, K_SCALE_BLOCK: tl.constexpr, CAUSAL: tl.constexpr, PV_16BIT: tl.constexpr,
    PV_FP16_ACC: tl.constexpr, V_BLOCK_SCALES: tl.constexpr, P_SCALE: tl.constexpr, EXACT: tl.constexpr,
    TMA: tl.constexpr, V_TOKEN_MAJOR: tl.constexpr, V_MMA_KEY_ORDER: tl.constexpr, LONGEST_FIRST: tl.constexpr,
    CAUSAL_PAIRS: tl.constexpr,
):  # fmt: skip
    """Program ``(i, b * H + h)``: query tile ``i`` of head ``(b, h)`` (``LONGEST_FIRST``: numbered from the last
    down), or with ``CAUSAL_PAIRS`` tiles ``n - 1 - i`` and ``i`` of the head's ``n`` (one tile where they meet):
    see ``_launch_plan``."""
    pid_m = tl.program_id(0)
    if LONGEST_FIRST:
        pid_m = tl.num_programs(0) - 1 - pid_m
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    hk = h // GROUP
    k_base = K + b.to(tl.int64) * stride_kb + hk.to(tl.int64) * stride_kh
    v_base = V + b.to(tl.int64) * stride_vb + hk.to(tl.int64) * stride_vh
    ks_base = KS + b * stride_ksb + hk * stride_ksh
    vs_base = VS + b * stride_vsb + hk * stride_vsh
    Lv = Lk  # v's rows: in MMA key order up to Lk rounded up to 16, the pass having written that group's tail as 0
    if V_MMA_KEY_ORDER:
        Lv = tl.cdiv(Lk, 16) * 16
    if TMA:
        # Hopper's TMA copies whole tiles into shared memory, zero-filling rows past Lk (the plan checks the layout:
        # unit stride last, 16-byte aligned rows and bases).
        k_base = tl.make_tensor_descriptor(k_base, [Lk, D], [stride_kn, 1], [BLOCK_N, D])
        if V_TOKEN_MAJOR:
            v_base = tl.make_tensor_descriptor(v_base, [D, Lv], [stride_vd, 1], [D, BLOCK_N])
        else:
            v_base = tl.make_tensor_descriptor(v_base, [Lk, D], [stride_vn, 1], [BLOCK_N, D])

    vs_max = tl.zeros((), tl.float32)
    vs_unit = vs_max
    if V_BLOCK_SCALES:  # the largest v block scale of the head: acc's unit, so that every block's factor is <= 1
        for n0 in range(0, tl.cdiv(Lk, K_SCALE_BLOCK), 128):
            j = n0 + tl.arange(0, 128)
            vs_max = tl.maximum(
                vs_max, tl.max(tl.load(vs_base + j * stride_vsn, mask=j * K_SCALE_BLOCK < Lk, other=0.0))
            )
        vs_max = tl.where(vs_max == 0.0, 1.0, vs_max)  # every block all zero (scale 0): acc stays 0
        vs_unit = P_SCALE * tl.math.div_rn(tl.zeros_like(vs_max) + 1.0, vs_max)
    V_DTYPE: tl.constexpr = V.dtype.element_ty
    first = pid_m
    tiles = 1  # a constant single-trip loop folds away (Triton 3.6 TTGIR: 3 loops without pairs, 4 with)
    if CAUSAL_PAIRS:
        first = tl.cdiv(Lq, BLOCK_M) - 1 - pid_m  # the longer tile of the pair first
        tiles = tl.where(first == pid_m, 1, 2)
    for t in range(tiles):
        m0 = tl.where(t == 0, first, pid_m) * BLOCK_M
        _attend_tile(
            Q, QS, VS, Out, m0, b, h, hk, Lq, Lk, Lv, k_base, v_base, ks_base, vs_base, vs_max, vs_unit,
            sm_scale_log2e, stride_qb, stride_qh, stride_qm, stride_qd, stride_ob, stride_oh, stride_om, stride_od,
            stride_qsb, stride_qsh, stride_qsm, stride_kn, stride_kd, stride_vn, stride_vd, stride_ksn,
            stride_vsb, stride_vsh, stride_vsn,
            D, BLOCK_M, BLOCK_N, Q_SCALE_BLOCK, K_SCALE_BLOCK, CAUSAL, PV_16BIT, PV_FP16_ACC, V_BLOCK_SCALES,
            P_SCALE, EXACT, TMA, V_TOKEN_MAJOR, V_DTYPE, V_MMA_KEY_ORDER,
        )  # fmt: skip


@dataclass(frozen=True)
class AttentionConfig(LaunchConfig):
    """A launch config plus ``tma``: load K and V with TMA tensor descriptors (sm_90+, where the layout allows:
    unit last stride, 16-byte aligned rows and bases; else plain loads), ``gluon``: run the warp-specialized
    Gluon kernel of :mod:`~lowbit_flex.kernels.fp8_attention_sm90` instead (sm_90, TMA layouts; ``block_m = 128``,
    ``num_warps = 4``: the first of its two consumer warpgroups; ``num_stages`` is its ring of key/value slots),
    and ``maxnreg``: the registers per thread ptxas may use with an e4m3 V, so that more programs fit on an SM
    (eager launches only: ``torch.compile`` cannot pass the option, and traced calls compile without it).
    ``block_n`` (keys per step) is 128 or 64: it divides the k scale block, so each key tile still has one scale.
    Triton's automatic warp specialization (``tl.range(warp_specialize=True)``) is Blackwell-only in Triton 3.6, so
    it is not a knob here."""

    tma: bool = False
    gluon: bool = False
    maxnreg: int | None = None


# Launch configurations. block_m must divide Q_BLOCK (128); block_n divides the k scale block; block_k is unused
# (the head dim is one tile). 8 warps = two warpgroups of 64 rows each on Hopper. Each shape and warp count with TMA
# (used on sm_90 where the layout allows) and without. The launch config is a fixed rule (:func:`pick_config`),
# decided once per shape key, not an autotuner (which would time every config inside the first call of each key);
# ``benchmarks/bench_fp8_attention.py`` sweeps this table's TMA rows against the rule.
# where the Gluon kernel cannot run (traced calls, sm_89, layouts TMA cannot read): the 128-query Triton tile
GLUON_FALLBACK = AttentionConfig(128, K_BLOCK, 0, 8, 3, tma=True)
_SHORT = AttentionConfig(64, K_BLOCK, 0, 4, 3, tma=True)
_TRITON_CONFIGS = tuple(
    AttentionConfig(m, K_BLOCK, 0, w, s, tma=tma)
    for tma in (True, False)
    for m, w, s in ((128, 8, 3), (128, 8, 2), (128, 8, 4), (128, 4, 3), (64, 4, 3))
)
# The rule's 8-bit-PV tile (_SHORT) takes 170 registers and 105 KiB of shared memory with Triton 3.6 on sm_90: two
# programs per SM, one warp of each per scheduler, each warpgroup's QKᵀ -> softmax -> PV chain hidden only by the
# other program's. These fit more programs on an SM (Triton 3.6, sm_90, no spills; an SM has 64K registers and
# 228 KiB of shared memory, 1 KiB of it reserved per program): three with 2 stages in 168 registers (164 used,
# 74 KiB); three with 64-key steps (130 registers, 58 KiB); four with 64-key steps, 2 stages and 128 registers
# (41 KiB). H200 run 51 (kernel alone, against the rule): the capped 2-stage tile 1.03-1.07x with int8 QKᵀ at every
# length, 0.98-1.07x with fp8 QKᵀ; 64-key steps 0.99-1.10x at L = 1024, 2-11 % slower from 4096
# (docs/measurements/h200_run51_lowbit_attention.md). The first is the rule's int8-QKᵀ tile (_E4M3_PV_RULE).
OCCUPANCY_CONFIGS = (
    AttentionConfig(64, K_BLOCK, 0, 4, 2, tma=True, maxnreg=168),
    AttentionConfig(64, 64, 0, 4, 3, tma=True),
    AttentionConfig(64, 64, 0, 4, 2, tma=True, maxnreg=128),
)
# The Gluon kernel's configs, 2, 3 and 4 ring slots; the rule picks 4 for a 16-bit V (H200 run 44).
GLUON_CONFIGS = tuple(AttentionConfig(128, K_BLOCK, 0, 4, s, tma=True, gluon=True) for s in (2, 3, 4))
CONFIGS: tuple[AttentionConfig, ...] = _TRITON_CONFIGS + OCCUPANCY_CONFIGS + GLUON_CONFIGS
_WS_16BIT_PV = GLUON_CONFIGS[-1]
# the smallest tiles, pointer loads: the interpreter's CPU runs scale with the tile size
_INTERPRETER_CONFIG = AttentionConfig(64, K_BLOCK, 0, 4, 3)


# The rule's rows for an e4m3 V, by (int8 QKᵀ, causal), from H200 run 51 (kernel alone, every L in 1024..16384):
# - int8 QKᵀ: the 2-stage 64-query tile capped at 168 registers (three programs per SM), 1.03-1.07x the 3-stage
#   tile, causal or not;
# - fp8 QKᵀ without a mask: the 128-query tile of one warpgroup, 1.03-1.13x (with a mask it was 0.92-1.04x, and the
#   capped tile 0.98-1.07x: the 3-stage 64-query tile stays). ptxas serializes this tile's WGMMAs (C7511: a
#   warpgroup's 128 x 128 scores and output take 256 registers), and it still measured fastest.
# H100 run 55 under this rule (L = 1024 / 4096): the old tile ran 0.90x / 0.98x the fp8 row, 0.93-0.98x the int8 one.
# H100 run 70: the Gluon kernel with an e4m3 V (since session 70 without its P byte repacking) ran 0.69-0.97x these
# tiles at L = 1024..8192 and 0.99-1.09x at 16384 (docs/measurements/h100_run70_gluon_fp8_attention.md).
# These tiles also run where an explicit Gluon config cannot (traced calls, sm_89, layouts TMA cannot read).
_E4M3_PV_RULE: dict[tuple[bool, bool], AttentionConfig] = {
    (True, False): OCCUPANCY_CONFIGS[0],
    (True, True): OCCUPANCY_CONFIGS[0],
    (False, False): AttentionConfig(128, K_BLOCK, 0, 4, 3, tma=True),
    (False, True): _SHORT,
}


def pick_config(Lq: int, pv_16bit: bool, qk_int8: bool = False, causal: bool = False) -> AttentionConfig:
    """The launch config, a fixed rule:
    - a 16-bit V takes the warp-specialized Gluon kernel, 4 ring slots, on sm_90 (run 44: 1.09-1.16x the Triton
      128-query tile at L >= 4096, 0.98-1.02x at 1024; that tile runs where the Gluon kernel cannot: its fp16 P·V
      needs the larger tile's reuse of each V block, 64-query tiles were 0.62-0.88x);
    - an 8-bit V takes the Triton kernel with TMA loads, the tile by ``_E4M3_PV_RULE`` (run 40: the 64-query tile
      1.03-1.18x the 8-warp 128-query tile; run 44: 1.15-1.37x the Gluon kernel; H100 run 70: the Gluon kernel
      without its P byte repacking ran 0.69-0.97x these tiles up to L = 8192, 0.99-1.09x at 16384);
    - at most 64 queries take the 64-query tile whatever the format (a 128-row tile would be half empty).
    Triton 3.6 compiles the 128-query 8-warp TMA tile for sm_90 in 200 registers, no spills (with pointer loads it
    spills 240 bytes per thread)."""
    if triton_interpreting():
        return _INTERPRETER_CONFIG
    if pv_16bit:
        return _WS_16BIT_PV if Lq > 64 else _SHORT
    return _e4m3_pv_tile(Lq, qk_int8, causal)


def _e4m3_pv_tile(Lq: int, qk_int8: bool, causal: bool) -> AttentionConfig:
    """``_E4M3_PV_RULE``'s tile, or the 64-query tile where at most 64 queries would leave a 128-row tile half empty."""
    cfg = _E4M3_PV_RULE[qk_int8, causal]
    return cfg if Lq > 64 or cfg.block_m == 64 else _SHORT


def _triton_tile(cfg: AttentionConfig, Lq: int, pv_16bit: bool, qk_int8: bool, causal: bool) -> AttentionConfig:
    """The Triton kernel's config for ``cfg``: itself, or for a Gluon config the tile that runs where the Gluon
    kernel cannot (traced calls, sm_89, layouts TMA cannot read): the 8-warp 128-query tile for a 16-bit V, the
    rule's tile for an e4m3 V."""
    if not cfg.gluon:
        return cfg
    return GLUON_FALLBACK if pv_16bit else _e4m3_pv_tile(Lq, qk_int8, causal)


# Causal fp8-QKᵀ Triton tiles with an e4m3 V up to this many queries: each program takes a head's query tiles
# n - 1 - i and i (CAUSAL_PAIRS), so every program does the same work and there are half as many. H100 run 73
# (B = 4, H = 16, D = 128, end to end against main, two processes each): L = 1024 0.0777 / 0.0778 ms against
# 0.0850 / 0.0852 (9 % faster); L = 4096 0.525 against 0.522 / 0.530 (no change); L = 16384 6.10 against
# 5.90 / 5.77 (3-6 % slower); int8 QKᵀ (the capped tile, three programs per SM) within 1 % at 1024 and 4096. Above
# the threshold, and for int8 QKᵀ, the tiles run one per program, longest first.
CAUSAL_PAIRS_MAX_LQ = 1024


def _causal_pairs(Lq: int, causal: bool, pv_16bit: bool, qk_int8: bool, capped: bool) -> bool:
    """Whether a causal Triton launch pairs each head's query tiles (see :data:`CAUSAL_PAIRS_MAX_LQ`). Not for a
    tile with a register cap (``capped``): the paired loop takes more registers (Triton 3.6, sm_90: 183 -> 208 for
    the 64-query tile), and the capped tiles spill under their caps with it (``triton_aot --check-wgmma``)."""
    return causal and not pv_16bit and not qk_int8 and not capped and Lq <= CAUSAL_PAIRS_MAX_LQ


@functools.lru_cache(maxsize=512)
def _launch_plan(
    B: int, H: int, Lq: int, D: int, causal: bool, pv_16bit: bool, qk_int8: bool, pv_fp16_accum: bool,
    v_block_scales: bool, v_mma_key_order: bool, bases_aligned: bool, q_aligned: bool, v_size: int,
    config: AttentionConfig | None, *ints: int,
) -> PlanLaunch:  # fmt: skip
    """The launch for one shape key. ``ints`` (``Hkv``, ``Lk`` and every stride) are part of the key only: the
    kernel is specialized on its integer arguments, so a cached direct launch is right only for the values it was
    compiled with.
    ``bases_aligned``: whether k and v start at 16-byte aligned addresses (TMA); ``q_aligned``: q (the Gluon
    kernel reads it by TMA too)."""
    cfg = config or pick_config(Lq, pv_16bit, qk_int8, causal)
    if Q_BLOCK % cfg.block_m or cfg.block_n not in (64, K_BLOCK) or (cfg.gluon and cfg.block_n != K_BLOCK):
        raise ValueError(f"config: block_m must divide {Q_BLOCK} and block_n be 64 or {K_BLOCK} ({K_BLOCK} for the "
                         f"Gluon kernel), got {cfg}")  # fmt: skip
    q_strides, k_strides, v_strides = ints[2:6], ints[6:10], ints[10:14]  # after Hkv's group and Lk
    tma_layout = _tma_layout(k_strides, v_strides, v_size) if bases_aligned else 0
    tile = _triton_tile(cfg, Lq, pv_16bit, qk_int8, causal)
    tma = tile.tma and tma_layout > 0
    # LONGEST_FIRST: with a causal mask a query tile's work grows with its first row, and programs start in grid
    # order (axis 0 fastest). Numbering each head's tiles from the last row down starts the longest first, so the
    # grid's last programs to start are short ones and fill the SMs that finish early (FlashAttention-3's LPT order,
    # within each head: the programs running together still share a few heads' K/V in L2). H100 run 73, kernel
    # alone with a mask, L = 1024-16384: 0.5-1.6 % faster than row order in 8 of 9 rows, 0.2 % slower in one.
    shared = dict(
        D=D, Q_SCALE_BLOCK=Q_BLOCK, K_SCALE_BLOCK=K_BLOCK, CAUSAL=causal, PV_16BIT=pv_16bit,
        V_BLOCK_SCALES=v_block_scales, P_SCALE=1.0 if pv_16bit else p_scale(pv_fp16_accum),
        V_TOKEN_MAJOR=tma_layout == 2, LONGEST_FIRST=causal,
    )  # fmt: skip
    # paired tiles all do the same work: no order needed
    pairs = _causal_pairs(Lq, causal, pv_16bit, qk_int8, tile.maxnreg is not None)
    meta = shared | dict(
        BLOCK_M=tile.block_m, BLOCK_N=tile.block_n, PV_FP16_ACC=pv_fp16_accum, EXACT=triton_interpreting(), TMA=tma,
        num_warps=tile.num_warps, num_stages=tile.num_stages, V_MMA_KEY_ORDER=v_mma_key_order,
        LONGEST_FIRST=causal and not pairs, CAUSAL_PAIRS=pairs,
    )  # fmt: skip
    grid = (triton.cdiv(triton.cdiv(Lq, tile.block_m), 2 if pairs else 1), B * H)
    plan = PlanLaunch(_fp8_attention_fwd, grid, meta, tensors=7)
    # The cap, for direct launches with an e4m3 V (a 16-bit P and V take 32 more registers per thread, and Triton
    # 3.9 spills the 64 x 128 tile under 168). A traced call (wrap_triton) cannot pass it: it runs the same tile
    # with _SHORT's 3 stages (what fills shared memory without the cap), not the untimed uncapped 2-stage one.
    if tile.maxnreg is not None and not pv_16bit:
        traced = PlanLaunch(_fp8_attention_fwd, grid, meta | dict(num_stages=_SHORT.num_stages), tensors=7)
        plan = PlanLaunch(_fp8_attention_fwd, grid, meta | dict(maxnreg=tile.maxnreg), tensors=7, traced=traced)
    # The Gluon kernel reads k and v (and q) by TMA: v token-major in e4m3 or row-major in 16 bits (its two layouts).
    gluon_layout = q_aligned and tma_layout == (1 if pv_16bit else 2) and tma_strides_ok(q_strides, 3, 1)
    # WGMMA is sm_90 only (``tma_layout`` already means a GPU, not the interpreter, of sm_90 or later)
    if cfg.gluon and gluon_layout and not pv_fp16_accum and torch.cuda.get_device_capability() == (9, 0):
        from lowbit_flex.kernels.fp8_attention_sm90 import _fp8_attention_fwd_sm90_ws
        from lowbit_flex.kernels.gluon_sm90 import WS_CONSUMER_REGS

        gluon_meta = shared | dict(
            BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, STAGES=cfg.num_stages, V_MMA_KEY_ORDER=v_mma_key_order,
            CONSUMER_REGS=WS_CONSUMER_REGS[2], num_warps=cfg.num_warps,
        )  # fmt: skip
        grid = (triton.cdiv(Lq, cfg.block_m), B * H)
        plan = PlanLaunch(_fp8_attention_fwd_sm90_ws, grid, gluon_meta, tensors=7, traced=plan)
    return plan


def _tma_layout(k_strides: tuple, v_strides: tuple, v_size: int) -> int:
    """0 if TMA cannot read k and v (needs sm_90+, a unit last stride and 16-byte aligned row strides; the base
    addresses are checked per call), else 1 for a row-major ``(Lk, D)`` v and 2 for a token-major one (the
    transposed fp8 layout). ``k`` is fp8/int8: one byte per element."""
    # torch.cuda.get_device_capability, not arch.capability: lowbit_flex.triton_aot patches it for its CPU stand-ins.
    if triton_interpreting() or torch.cuda.get_device_capability() < (9, 0):
        return 0
    if not tma_strides_ok(k_strides, 3, 1):
        return 0
    if tma_strides_ok(v_strides, 3, v_size):
        return 1
    return 2 if tma_strides_ok(v_strides, 2, v_size) else 0


def fp8_attention_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_scale: torch.Tensor,
    k_scale: torch.Tensor,
    v_scale: torch.Tensor | None,
    causal: bool,
    sm_scale: float | None,
    out_dtype: torch.dtype,
    pv_fp16_accum: bool,
    *,
    config: AttentionConfig | None = None,
    v_mma_key_order: bool = False,
) -> torch.Tensor:
    """Launch the fused kernel; arguments are already validated by the op. ``config`` overrides
    :func:`pick_config` (for a benchmark's sweep); ``config.block_m`` must divide 128. ``v_mma_key_order``: an
    e4m3 ``v`` whose keys are stored in the P·V MMA's order within each 16 (and zero up to ``Lk`` rounded up to
    16), as :func:`~lowbit_flex.kernels.quantize_qkv.quantize_qkv_triton` writes them with ``v_mma_key_order``.

    ``v_scale``: ``()``, ``(B, Hkv)`` or per 128-key block ``(B, Hkv, nblk)``; None with a 16-bit
    ``v``. Any strides (views into the padded buffers of :mod:`~lowbit_flex.kernels.quantize_qkv` included).

    Everything but the tensors and ``sm_scale`` is decided once per shape key (:func:`attention_plan`): eager calls
    launch the compiled kernel directly, and ``torch.compile`` traces the launch (``wrap_triton``). The head dim is
    a constexpr, specialized (``int()``) under dynamic-shape tracing."""
    out = torch.empty(q.shape, dtype=out_dtype, device=q.device)
    launch, scalars = attention_plan(
        q, k, v, q_scale, k_scale, v_scale, causal, sm_scale, pv_fp16_accum, config, v_mma_key_order
    )
    vs = k_scale if v_scale is None else v_scale  # a placeholder pointer with a 16-bit v, never read (AOT: no None)
    launch(q, k, v, q_scale, k_scale, vs, out, *scalars)
    return out


def attention_plan(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_scale: torch.Tensor, k_scale: torch.Tensor,
    v_scale: torch.Tensor | None, causal: bool, sm_scale: float | None, pv_fp16_accum: bool,
    config: AttentionConfig | None = None, v_mma_key_order: bool = False,
) -> tuple[PlanLaunch, tuple]:  # fmt: skip
    """``(launch, scalars)`` for these tensors' metadata: the launch takes ``(q, k, v, q_scale, k_scale, v_scale,
    out, *scalars)``, ``out`` a contiguous ``(B, H, Lq, D)`` tensor, ``v_scale`` any float32 tensor (``k_scale``)
    when v is 16-bit. Depends on metadata (and k/v's 16-byte alignment) only, so an eager caller can keep it per
    shape key."""
    B, H, Lq = q.shape[:3]
    D = int(q.shape[3])
    Hkv, Lk = k.shape[1], k.shape[2]
    sm = 1.0 / math.sqrt(D) if sm_scale is None else sm_scale
    pv_16bit = v_scale is None  # a bf16/fp16 v (the op's checks pair the two)
    if pv_16bit and v_mma_key_order:
        raise ValueError("v_mma_key_order: only for an e4m3 v (a 16-bit v is read in its natural key order)")
    v_block_scales = not pv_16bit and v_scale.dim() == 3
    vs_strides = (0, 0, 0)
    if not pv_16bit and v_scale.dim():
        vs_strides = (v_scale.stride(0), v_scale.stride(1), v_scale.stride(2) if v_block_scales else 0)
    out_strides = (H * Lq * D, Lq * D, D, 1)  # torch.empty's (B, H, Lq, D)
    ints = (
        H // Hkv, Lk,
        *q.stride(), *k.stride(), *v.stride(), *out_strides, *q_scale.stride(), *k_scale.stride(), *vs_strides,
    )  # fmt: skip
    launch = cached_plan(
        _launch_plan, B, H, Lq, D, causal, pv_16bit, q.dtype == torch.int8, pv_fp16_accum, v_block_scales,
        v_mma_key_order,
        tma_base_aligned(k, v), tma_base_aligned(q), v.element_size(), config, *ints,
    )  # fmt: skip
    if (launch.traced or launch).meta["TMA"]:
        ensure_triton_allocator()  # device-side descriptors live in a per-launch global scratch buffer
    return launch, (sm * _LOG2E, H, ints[0], Lq, *ints[1:])
