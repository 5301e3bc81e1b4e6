"""Fused fp8 / int8-QKᵀ attention forward (the format of ``lowbit_flex/ops/fp8_attention.py``).

One program owns ``BLOCK_M`` query rows of one head and streams key/value blocks of ``BLOCK_N = 128`` (= the k
scale block, so each key tile has one scalar scale and the q tile one scalar scale: the descale is one multiply
per tile). Key blocks that the causal mask and the sequence end leave whole are processed without any masking;
only the diagonal / ragged tail blocks pay for the ``where``.
"""

from __future__ import annotations

import functools
import math

import torch
import triton
import triton.language as tl

from lowbit_flex.kernels.arch import triton_interpreting
from lowbit_flex.kernels.common import LaunchConfig, PlanLaunch, cached_plan
from lowbit_flex.kernels.rounding import round_to_16bit_grid, to_e4m3
from lowbit_flex.quant.fp8 import K_BLOCK, Q_BLOCK, p_scale

_LOG2E = 1.4426950408889634


@triton.jit
def _attend_blocks(
    acc, row_sum, m_i, q, qk_scale, offs_m, k_base, v_base, ks_base, lo, hi, Lk,
    stride_kn, stride_kd, stride_vn, stride_vd, stride_ksn,
    D: tl.constexpr, BLOCK_N: tl.constexpr, K_SCALE_BLOCK: tl.constexpr, MASKED: tl.constexpr,
    CAUSAL: tl.constexpr, QK_INT8: tl.constexpr, PV_16BIT: tl.constexpr, PV_FP16_ACC: tl.constexpr,
    P_SCALE: tl.constexpr, EXACT: tl.constexpr,
):  # fmt: skip
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, D)
    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + offs_n
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
        s = tl.dot(q, tl.trans(k))
        s = s.to(tl.float32) * (qk_scale * k_scale)  # log2 domain: qk_scale carries sm_scale * log2(e)
        if MASKED:
            ok = cols[None, :] < Lk
            if CAUSAL:
                ok = ok & (offs_m[:, None] >= cols[None, :])
            s = tl.where(ok, s, float("-inf"))
        # The first block processed always has a visible key in every row (it starts at key 0), so m_new is
        # finite from then on and no exp2(-inf - -inf) NaN can appear.
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        alpha = tl.math.exp2(m_i - m_new)
        p = tl.math.exp2(s - m_new[:, None])
        row_sum = row_sum * alpha + tl.sum(p, axis=1)
        if PV_16BIT and EXACT:
            # Triton 3.9's interpreter truncates float32 -> bfloat16 and reads bfloat16 dot operands as integers:
            # round P with integer RNE and multiply in float32, exact for 16-bit operands (8 + 8 or 11 + 11 bits).
            p16 = round_to_16bit_grid(p, v.dtype)
            acc = tl.dot(p16, v.to(tl.float32), acc * alpha[:, None], input_precision="ieee")
        elif PV_16BIT:
            # The accurate mode: v is the unquantized bf16/fp16 tensor and P (<= 1) is cast to its dtype.
            acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])
        elif PV_FP16_ACC:
            p8 = to_e4m3(p * P_SCALE, EXACT)
            acc = acc * alpha[:, None] + tl.dot(p8, v, out_dtype=tl.float16).to(tl.float32)
        else:
            acc = tl.dot(to_e4m3(p * P_SCALE, EXACT), v, acc * alpha[:, None])
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
    stride_vsb, stride_vsh,
    D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    Q_SCALE_BLOCK: tl.constexpr, K_SCALE_BLOCK: tl.constexpr, CAUSAL: tl.constexpr, QK_INT8: tl.constexpr,
    PV_16BIT: tl.constexpr, PV_FP16_ACC: tl.constexpr, P_SCALE: tl.constexpr, EXACT: tl.constexpr,
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
        acc, row_sum, m_i, q, qk_scale, offs_m, k_base, v_base, ks_base, 0, full_end, Lk,
        stride_kn, stride_kd, stride_vn, stride_vd, stride_ksn,
        D, BLOCK_N, K_SCALE_BLOCK, False, CAUSAL, QK_INT8, PV_16BIT, PV_FP16_ACC, P_SCALE, EXACT,
    )  # fmt: skip
    acc, row_sum, m_i = _attend_blocks(
        acc, row_sum, m_i, q, qk_scale, offs_m, k_base, v_base, ks_base, full_end, hi, Lk,
        stride_kn, stride_kd, stride_vn, stride_vd, stride_ksn,
        D, BLOCK_N, K_SCALE_BLOCK, True, CAUSAL, QK_INT8, PV_16BIT, PV_FP16_ACC, P_SCALE, EXACT,
    )  # fmt: skip
    if PV_16BIT:
        out = acc / row_sum[:, None]  # VS is a placeholder: a 16-bit v has no scale
    else:
        v_scale = tl.load(VS + b * stride_vsb + hk * stride_vsh)
        out = acc * (v_scale / (row_sum * P_SCALE))[:, None]
    o_ptrs = Out + b.to(tl.int64) * stride_ob + h.to(tl.int64) * stride_oh
    o_ptrs += offs_m[:, None].to(tl.int64) * stride_om + offs_d[None, :] * stride_od
    tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=offs_m[:, None] < Lq)


# Launch configurations. block_m must divide Q_BLOCK (128); block_n is the k scale block; block_k is unused (the
# head dim is one tile). 8 warps = two warpgroups of 64 rows each on Hopper. These four were the autotuner's
# candidates until the op became a triton_op: an autotuner times every config on the first call of each key (on
# the GPU, inside the first eager call or a compiled graph's first run) and binds its key on every call, so the
# launch config is now a fixed rule (:func:`pick_config`), decided once per shape key. The rule is unmeasured: the
# configs' timings were never recorded; ``benchmarks/bench_fp8_attention.py`` should sweep them (``config=``).
CONFIGS: tuple[LaunchConfig, ...] = (
    LaunchConfig(128, K_BLOCK, 0, 8, 2),
    LaunchConfig(128, K_BLOCK, 0, 8, 3),
    LaunchConfig(128, K_BLOCK, 0, 4, 3),
    LaunchConfig(64, K_BLOCK, 0, 4, 3),
)
_INTERPRETER_CONFIG = CONFIGS[-1]  # the smallest tiles: the interpreter's CPU runs scale with the tile size


def pick_config(Lq: int) -> LaunchConfig:
    """128-query tiles, two warpgroups (the layout of Triton's own fp8 flash-attention tutorial on Hopper); 64-query
    tiles when there are at most 64 queries, which would leave half of a 128-row tile empty. Unmeasured (see
    :data:`CONFIGS`)."""
    if triton_interpreting():
        return _INTERPRETER_CONFIG
    return CONFIGS[3] if Lq <= 64 else CONFIGS[1]


@functools.lru_cache(maxsize=512)
def _launch_plan(
    B: int, H: int, Lq: int, D: int, causal: bool, qk_int8: bool, pv_16bit: bool, pv_fp16_accum: bool,
    config: LaunchConfig | None, *ints: int,
) -> PlanLaunch:  # fmt: skip
    """The launch for one shape key. ``ints`` (``Hkv``, ``Lk`` and every stride) are part of the key only: the
    kernel is specialized on its integer arguments, so a cached direct launch is right only for the values it was
    compiled with."""
    cfg = config or pick_config(Lq)
    meta = dict(
        D=D, BLOCK_M=cfg.block_m, BLOCK_N=K_BLOCK, Q_SCALE_BLOCK=Q_BLOCK, K_SCALE_BLOCK=K_BLOCK, CAUSAL=causal,
        QK_INT8=qk_int8, PV_16BIT=pv_16bit, PV_FP16_ACC=pv_fp16_accum,
        P_SCALE=1.0 if pv_16bit else p_scale(pv_fp16_accum), EXACT=triton_interpreting(),
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )  # fmt: skip
    return PlanLaunch(_fp8_attention_fwd, (triton.cdiv(Lq, cfg.block_m), B * H), meta)


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
    config: LaunchConfig | None = None,
) -> torch.Tensor:
    """Launch the fused kernel; arguments are already validated by the op. ``config`` overrides
    :func:`pick_config` (for a benchmark's sweep); ``config.block_m`` must divide 128.

    Everything but the tensors and ``sm_scale`` is decided once per shape key (:func:`_launch_plan`): eager calls
    launch the compiled kernel directly, and ``torch.compile`` traces the launch (``wrap_triton``). The head dim is
    a constexpr, specialized (``int()``) under dynamic-shape tracing."""
    B, H, Lq = q.shape[:3]
    D = int(q.shape[3])
    Hkv, Lk = k.shape[1], k.shape[2]
    out = torch.empty((B, H, Lq, D), dtype=out_dtype, device=q.device)
    sm = 1.0 / math.sqrt(D) if sm_scale is None else sm_scale
    pv_16bit = v_scale is None  # a bf16/fp16 v (the op's checks pair the two)
    vs_strides = (v_scale.stride(0), v_scale.stride(1)) if not pv_16bit and v_scale.dim() else (0, 0)
    ints = (
        H // Hkv, Lk,
        *q.stride(), *k.stride(), *v.stride(), *out.stride(), *q_scale.stride(), *k_scale.stride(), *vs_strides,
    )  # fmt: skip
    qk_int8 = q.dtype == torch.int8
    launch = cached_plan(_launch_plan, B, H, Lq, D, causal, qk_int8, pv_16bit, pv_fp16_accum, config, *ints)
    vs = q_scale if pv_16bit else v_scale  # a placeholder pointer, never read: Triton's AOT path takes no None
    launch(q, k, v, q_scale, k_scale, vs, out, sm * _LOG2E, H, ints[0], Lq, *ints[1:])
    return out
