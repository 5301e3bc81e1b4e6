"""Fused fp8 / int8-QKᵀ attention forward (the format of ``lowbit_flex/ops/fp8_attention.py``).

One program owns ``BLOCK_M`` query rows of one head and streams key/value blocks of ``BLOCK_N = 128`` (= the k
scale block, so each key tile has one scalar scale and the q tile one scalar scale: the descale is one multiply
per tile). Key blocks that the causal mask and the sequence end leave whole are processed without any masking;
only the diagonal / ragged tail blocks pay for the ``where``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

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
from lowbit_flex.quant.fp8 import K_BLOCK, Q_BLOCK, p_scale

_LOG2E = 1.4426950408889634


@triton.jit
def _attend_blocks(
    acc, row_sum, m_i, vs_unit, q, qk_scale, offs_m, k_base, v_base, ks_base, vs_base, lo, hi, Lk,
    stride_kn, stride_kd, stride_vn, stride_vd, stride_ksn, stride_vsn,
    D: tl.constexpr, BLOCK_N: tl.constexpr, K_SCALE_BLOCK: tl.constexpr, MASKED: tl.constexpr,
    CAUSAL: tl.constexpr, PV_16BIT: tl.constexpr, PV_FP16_ACC: tl.constexpr, V_BLOCK_SCALES: tl.constexpr,
    P_SCALE: tl.constexpr, EXACT: tl.constexpr, TMA: tl.constexpr, V_TOKEN_MAJOR: tl.constexpr,
):  # fmt: skip
    """``k_base`` / ``v_base``: pointers, or with ``TMA`` tensor descriptors (rows past ``Lk`` read as zeros)."""
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, D)
    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + offs_n
        if TMA:
            k = k_base.load([start_n, 0])
            if V_TOKEN_MAJOR:
                v = tl.trans(v_base.load([0, start_n]))
            else:
                v = v_base.load([start_n, 0])
        else:
            k_ptrs = k_base + cols[:, None] * stride_kn + offs_d[None, :] * stride_kd
            v_ptrs = v_base + cols[:, None] * stride_vn + offs_d[None, :] * stride_vd
            if MASKED:
                k = tl.load(k_ptrs, mask=cols[:, None] < Lk, other=0.0)
                v = tl.load(v_ptrs, mask=cols[:, None] < Lk, other=0.0)
            else:
                k = tl.load(k_ptrs)
                v = tl.load(v_ptrs)
        k_scale = tl.load(ks_base + (start_n // K_SCALE_BLOCK) * stride_ksn)
        # fp8 x fp8 -> fp32 or int8 x int8 -> int32 on the tensor cores; the block scales are two scalars.
        s = tl.dot(q, tl.trans(k)).to(tl.float32)
        # log2 domain: qk_scale carries sm_scale * log2(e). Floored at float32's smallest normal: tiny q and k
        # (|x| ~ 1e-20) make the product underflow to 0 (or a subnormal a flush could zero), and a masked score,
        # -inf, times 0 would be NaN; at that size every logit is ~0 either way.
        c = tl.maximum(qk_scale * k_scale, 1.1754943508222875e-38)
        if MASKED:
            ok = cols[None, :] < Lk
            if CAUSAL:
                ok = ok & (offs_m[:, None] >= cols[None, :])
            s = tl.where(ok, s, float("-inf"))
        # The scale enters through the row max (max(s) * c is max(s * c): rounding is monotonic and c > 0) and the
        # exponent's FMA, s * c - m, instead of a multiply per score. The first block processed always has a
        # visible key in every row (it starts at key 0), so m_new is finite from then on and no exp2(-inf - -inf)
        # NaN can appear.
        m_new = tl.maximum(m_i, tl.max(s, axis=1) * c)
        alpha = tl.math.exp2(m_i - m_new)
        p = tl.math.exp2(s * c - m_new[:, None])
        row_sum = row_sum * alpha + tl.sum(p, axis=1)
        p_mult = P_SCALE
        if V_BLOCK_SCALES:
            # acc is in units of the head's largest v block scale; a block enters through P (times vs_j / vs_max
            # <= 1, before P's e4m3 rounding): one scalar load and multiply per block.
            p_mult = tl.load(vs_base + (start_n // K_SCALE_BLOCK) * stride_vsn) * vs_unit
        if PV_16BIT and EXACT:
            # Triton 3.9's interpreter truncates float32 -> bfloat16 and reads bfloat16 dot operands as integers:
            # round P with integer RNE and multiply in float32, exact for 16-bit operands (8 + 8 or 11 + 11 bits).
            p16 = round_to_16bit_grid(p, v.dtype)
            acc = tl.dot(p16, v.to(tl.float32), acc * alpha[:, None], input_precision="ieee")
        elif PV_16BIT:
            # The accurate mode: v is the unquantized bf16/fp16 tensor and P (<= 1) is cast to its dtype.
            acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])
        elif PV_FP16_ACC:
            p8 = to_e4m3(p * p_mult, EXACT)
            acc = acc * alpha[:, None] + tl.dot(p8, v, out_dtype=tl.float16).to(tl.float32)
        else:
            acc = tl.dot(to_e4m3(p * p_mult, EXACT), v, acc * alpha[:, None])
        m_i = m_new
    return acc, row_sum, m_i


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
    TMA: tl.constexpr, V_TOKEN_MAJOR: tl.constexpr,
):  # fmt: skip
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    hk = h // GROUP
    m0 = pid_m * BLOCK_M
    offs_m = m0 + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, D)
    q_ptrs = Q + b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh
    q_ptrs += offs_m[:, None].to(tl.int64) * stride_qm + offs_d[None, :] * stride_qd
    q = tl.load(q_ptrs, mask=offs_m[:, None] < Lq, other=0.0)
    # BLOCK_M divides Q_SCALE_BLOCK, so the whole tile shares one q scale.
    q_scale = tl.load(QS + b * stride_qsb + h * stride_qsh + (m0 // Q_SCALE_BLOCK) * stride_qsm)
    # Inductor passes a Python float as fp64 where the GPU has fp64 (Triton's JIT: fp32): keep the logits fp32.
    qk_scale = q_scale * tl.cast(sm_scale_log2e, tl.float32)

    k_base = K + b.to(tl.int64) * stride_kb + hk.to(tl.int64) * stride_kh
    v_base = V + b.to(tl.int64) * stride_vb + hk.to(tl.int64) * stride_vh
    ks_base = KS + b * stride_ksb + hk * stride_ksh
    vs_base = VS + b * stride_vsb + hk * stride_vsh
    if TMA:
        # Hopper's TMA copies whole tiles into shared memory, zero-filling rows past Lk (the plan checks the layout:
        # unit stride last, 16-byte aligned rows and bases).
        k_base = tl.make_tensor_descriptor(k_base, [Lk, D], [stride_kn, 1], [BLOCK_N, D])
        if V_TOKEN_MAJOR:
            v_base = tl.make_tensor_descriptor(v_base, [D, Lk], [stride_vd, 1], [D, BLOCK_N])
        else:
            v_base = tl.make_tensor_descriptor(v_base, [Lk, D], [stride_vn, 1], [BLOCK_N, D])

    m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    row_sum = tl.zeros((BLOCK_M,), tl.float32)
    acc = tl.zeros((BLOCK_M, D), tl.float32)
    vs_max = tl.zeros_like(qk_scale)
    vs_unit = vs_max
    if V_BLOCK_SCALES:  # the largest v block scale of the head: acc's unit, so that every block's factor is <= 1
        for n0 in range(0, tl.cdiv(Lk, K_SCALE_BLOCK), 128):
            j = n0 + tl.arange(0, 128)
            vs_max = tl.maximum(
                vs_max, tl.max(tl.load(vs_base + j * stride_vsn, mask=j * K_SCALE_BLOCK < Lk, other=0.0))
            )
        vs_max = tl.where(vs_max == 0.0, 1.0, vs_max)  # every block all zero (scale 0): acc stays 0
        vs_unit = P_SCALE * tl.math.div_rn(tl.zeros_like(vs_max) + 1.0, vs_max)
    # Key blocks [0, full_end) need no mask: inside the sequence and (causal) at or left of every row's diagonal.
    full_end = (Lk // BLOCK_N) * BLOCK_N
    hi = Lk
    if CAUSAL:
        full_end = tl.minimum(full_end, ((m0 + 1) // BLOCK_N) * BLOCK_N)
        hi = tl.minimum(hi, m0 + BLOCK_M)
    acc, row_sum, m_i = _attend_blocks(
        acc, row_sum, m_i, vs_unit, q, qk_scale, offs_m, k_base, v_base, ks_base, vs_base, 0, full_end, Lk,
        stride_kn, stride_kd, stride_vn, stride_vd, stride_ksn, stride_vsn,
        D, BLOCK_N, K_SCALE_BLOCK, False, CAUSAL, PV_16BIT, PV_FP16_ACC, V_BLOCK_SCALES, P_SCALE, EXACT,
        TMA, V_TOKEN_MAJOR,
    )  # fmt: skip
    acc, row_sum, m_i = _attend_blocks(
        acc, row_sum, m_i, vs_unit, q, qk_scale, offs_m, k_base, v_base, ks_base, vs_base, full_end, hi, Lk,
        stride_kn, stride_kd, stride_vn, stride_vd, stride_ksn, stride_vsn,
        D, BLOCK_N, K_SCALE_BLOCK, True, CAUSAL, PV_16BIT, PV_FP16_ACC, V_BLOCK_SCALES, P_SCALE, EXACT,
        TMA, V_TOKEN_MAJOR,
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


@dataclass(frozen=True)
class AttentionConfig(LaunchConfig):
    """A launch config plus ``tma``: load K and V with TMA tensor descriptors (sm_90+, where the layout allows:
    unit last stride, 16-byte aligned rows and bases; else plain loads). Triton's automatic warp specialization
    (``tl.range(warp_specialize=True)``) is Blackwell-only in Triton 3.6, so it is not a knob here."""

    tma: bool = False


# Launch configurations. block_m must divide Q_BLOCK (128); block_n is the k scale block; block_k is unused (the
# head dim is one tile). 8 warps = two warpgroups of 64 rows each on Hopper. Each shape and warp count with TMA
# (used on sm_90 where the layout allows) and without. The launch config is a fixed rule (:func:`pick_config`),
# decided once per shape key, not an autotuner (which would time every config inside the first call of each key);
# ``benchmarks/bench_fp8_attention.py`` sweeps this table against the rule.
CONFIGS: tuple[AttentionConfig, ...] = tuple(
    AttentionConfig(m, K_BLOCK, 0, w, s, tma=tma)
    for tma in (True, False)
    for m, w, s in ((128, 8, 3), (128, 8, 2), (128, 8, 4), (128, 4, 3), (64, 4, 3))
)
_LONG, _SHORT = CONFIGS[0], CONFIGS[4]
_INTERPRETER_CONFIG = CONFIGS[-1]  # the smallest tiles: the interpreter's CPU runs scale with the tile size


def pick_config(Lq: int) -> AttentionConfig:
    """128-query tiles, two warpgroups, 3 stages, TMA loads (Triton 3.6 compiles this for sm_90 in 200 registers
    and no spills; the same config with pointer loads spills 240 bytes per thread); 64-query tiles when there are at
    most 64 queries, which would leave half of a 128-row tile empty."""
    if triton_interpreting():
        return _INTERPRETER_CONFIG
    return _SHORT if Lq <= 64 else _LONG


@functools.lru_cache(maxsize=512)
def _launch_plan(
    B: int, H: int, Lq: int, D: int, causal: bool, pv_16bit: bool, pv_fp16_accum: bool,
    v_block_scales: bool, bases_aligned: bool, v_size: int, config: AttentionConfig | None, *ints: int,
) -> PlanLaunch:  # fmt: skip
    """The launch for one shape key. ``ints`` (``Hkv``, ``Lk`` and every stride) are part of the key only: the
    kernel is specialized on its integer arguments, so a cached direct launch is right only for the values it was
    compiled with.
    ``bases_aligned``: whether k and v start at 16-byte aligned addresses (TMA)."""
    cfg = config or pick_config(Lq)
    k_strides, v_strides = ints[6:10], ints[10:14]  # after Hkv's group, Lk and q's 4 strides
    tma_layout = _tma_layout(k_strides, v_strides, v_size) if bases_aligned else 0
    tma = cfg.tma and tma_layout > 0
    meta = dict(
        D=D, BLOCK_M=cfg.block_m, BLOCK_N=K_BLOCK, Q_SCALE_BLOCK=Q_BLOCK, K_SCALE_BLOCK=K_BLOCK, CAUSAL=causal,
        PV_16BIT=pv_16bit, PV_FP16_ACC=pv_fp16_accum,
        V_BLOCK_SCALES=v_block_scales, P_SCALE=1.0 if pv_16bit else p_scale(pv_fp16_accum),
        EXACT=triton_interpreting(), TMA=tma, V_TOKEN_MAJOR=tma_layout == 2,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )  # fmt: skip
    return PlanLaunch(_fp8_attention_fwd, (triton.cdiv(Lq, cfg.block_m), B * H), meta, tensors=7)


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
) -> torch.Tensor:
    """Launch the fused kernel; arguments are already validated by the op. ``config`` overrides
    :func:`pick_config` (for a benchmark's sweep); ``config.block_m`` must divide 128.

    ``v_scale``: ``()``, ``(B, Hkv)`` or per 128-key block ``(B, Hkv, nblk)``; None with a 16-bit
    ``v``. Any strides (views into the padded buffers of :mod:`~lowbit_flex.kernels.quantize_qkv` included).

    Everything but the tensors and ``sm_scale`` is decided once per shape key (:func:`attention_plan`): eager calls
    launch the compiled kernel directly, and ``torch.compile`` traces the launch (``wrap_triton``). The head dim is
    a constexpr, specialized (``int()``) under dynamic-shape tracing."""
    out = torch.empty(q.shape, dtype=out_dtype, device=q.device)
    launch, scalars = attention_plan(q, k, v, q_scale, k_scale, v_scale, causal, sm_scale, pv_fp16_accum, config)
    vs = k_scale if v_scale is None else v_scale  # a placeholder pointer with a 16-bit v, never read (AOT: no None)
    launch(q, k, v, q_scale, k_scale, vs, out, *scalars)
    return out


def attention_plan(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_scale: torch.Tensor, k_scale: torch.Tensor,
    v_scale: torch.Tensor | None, causal: bool, sm_scale: float | None, pv_fp16_accum: bool,
    config: AttentionConfig | None = None,
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
        _launch_plan, B, H, Lq, D, causal, pv_16bit, pv_fp16_accum, v_block_scales, tma_base_aligned(k, v),
        v.element_size(), config, *ints,
    )  # fmt: skip
    if launch.meta["TMA"]:
        ensure_triton_allocator()  # device-side descriptors live in a per-launch global scratch buffer
    return launch, (sm * _LOG2E, H, ints[0], Lq, *ints[1:])
