"""Decode-sized W4A8 GEMV on tensor cores (``M <= 16``): int8 activations × packed int4 weights, optionally
quantizing the activations in the same kernel (plus a tiny split-K reduce when K is split). The CUDA-core form for
the fewest rows is :mod:`lowbit_flex.kernels.s8s4_gemv` (dp4a), which replaced this module's float FMA form.

At decode sizes the GEMM is a stream of the packed weight (N·K/2 bytes); everything else (x, scales) is a few KB
that stays in L1/L2. The kernel is built to read each weight byte once, in long contiguous runs, from enough
programs to keep every SM's memory pipeline busy:

- grid ``(N tiles, M tiles, K splits)``: program ``(n, m, s)`` reads rows ``n·BLOCK_N ..`` of the packed weight,
  ``BLOCK_K / 2`` contiguous bytes per row per step (16+ bytes per thread per load: the row stride ``K / 2`` is
  passed as its own argument so Triton sees it is a multiple of 16 and emits 128-bit loads), pipelined over
  ``num_stages``. When the N tiles alone give fewer than ``programs_per_sm`` programs per SM, K is split and each
  split writes float32 partials (all scales applied) that :func:`~lowbit_flex.kernels.common.reduce_split_k` sums
  in a fixed order with the bias: deterministic, no atomics;
- byte ``j`` of a row holds elements ``2j`` (low nibble) and ``2j + 1`` (high nibble); the two nibble planes meet
  x's even and odd columns (one contiguous x load per step, split in registers: x is 4-16x smaller than the weight
  tile), so nothing is interleaved back into K order (as in :mod:`lowbit_flex.kernels.s8s4_linear`);
- swap-AB ``int8 tl.dot`` ``(BLOCK_N, BLOCK_K/2) @ (BLOCK_K/2, 16) -> int32``: the
  unpacked weight plane is the A operand (WGMMA on sm_90 takes A from registers, where it was unpacked) and the
  <= 16 tokens fill the MMA's N side (8..256 wide) instead of padding its 64-row M side. The planes are unpacked
  as 16x the nibbles (two 32-bit masks per 4 bytes, :func:`_nibbles_x16`) and the epilogue multiplies by 1/16
  (exact). That unpack is what makes the kernel memory-bound: Triton's per-byte shift/sign-extend took ~14 SASS
  instructions per weight byte and capped the stream at ~1 TB/s on an H200. A nibble plane of a 32-wide K block
  is only 16 deep, below the int8 MMA's K = 32, so ``BLOCK_K = 32`` (K or the group size an odd multiple of 32)
  re-interleaves the planes (``tl.join``) into one 32-deep operand instead. Each K block's 16x dot is exact in
  int32 and is added to an int64 (per channel) or scaled float32 (group-wise) accumulator;
- per-channel scales: the dot is exact (int32) and scaled once in the epilogue; group-wise: ``BLOCK_K`` divides the
  group size, so each K block lies in one group and its exact dot is scaled by that group's weight scale as it is
  added (float32), which costs one multiply per K block more than per-channel;
- fused quantization (``x`` float): each program first reads its rows of x in full for the per-row amax (the
  scale needs the whole row; x is in L2 after the first program), then quantizes only the K slice it multiplies,
  in registers, with the same IEEE divide (``div_rn``) and round-half-even as ``lowbit::quantize_int8_rowwise``,
  so the int8 values are bit-identical to the two-kernel path.

Rows past M and columns past N are wrapped (``% M``, ``% N``) for loads, so the main loop needs no masks; only the
stores are masked. ``K`` is a multiple of ``BLOCK_K`` (the launcher picks a power of two dividing K and the group
size), so there is no K tail. The launch plan (config, block sizes, split) is computed once per shape key.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from lowbit_flex.kernels.arch import sm_count, triton_interpreting
from lowbit_flex.kernels.common import (
    LaunchConfig,
    PlanLaunch,
    largest_pow2_divisor,
    reduce_split_k,
    split_k_blocks,
)
from lowbit_flex.kernels.quantize_int8_rowwise import int8_row_scale_of, quantize_int8_values
from lowbit_flex.kernels.s8s4_linear import store_w4a8_tile

DECODE_MAX_M = 16


@triton.jit
def _load_x(ptrs, x_scale, FUSED_QUANT: tl.constexpr):
    """A ``(BLOCK_M, n)`` tile of x as int8 (the MMA operand), quantized here if x is float."""
    x = tl.load(ptrs)
    if FUSED_QUANT:
        x = quantize_int8_values(x.to(tl.float32), x_scale[:, None])  # an integer in [-127, 127]
    return x.to(tl.int8)


@triton.jit
def _nibbles_x16(packed, PTX: tl.constexpr):
    """The two nibble planes of ``packed`` (int8) times 16, as int8: ``low << 4`` and ``high << 4`` (the high nibble
    kept in place), so no shift back is needed to sign-extend: the MMA sums 16x the dot, exact in int32.

    With ``PTX`` (on a GPU) the 4 bytes of a 32-bit register are masked at once: Triton's int8 elementwise code
    works on one byte per 32-bit instruction plus PRMT byte shuffles (~14 SASS instructions per weight byte for
    the shift/sign-extend unpack, measured on sm_90), which made the kernel issue-bound at ~1 TB/s."""
    if PTX:
        low = tl.inline_asm_elementwise(
            "{ .reg .b32 t; shl.b32 t, $1, 4; and.b32 $0, t, 0xF0F0F0F0; }", "=r,r", [packed],
            dtype=tl.int8, is_pure=True, pack=4,
        )  # fmt: skip
        high = tl.inline_asm_elementwise(
            "and.b32 $0, $1, 0xF0F0F0F0;", "=r,r", [packed], dtype=tl.int8, is_pure=True, pack=4
        )
    else:  # the interpreter runs no PTX
        low = (packed << 4).to(tl.int8)
        high = ((packed >> 4) << 4).to(tl.int8)
    return low, high


@triton.jit
def _s8s4_decode_kernel(
    x_ptr, xs_ptr, w_ptr, ws_ptr, bias_ptr, out_ptr,
    M, N, K, stride_wn, stride_wsn, GROUP_K, BLOCKS_PER_SPLIT,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, AMAX_BLOCK: tl.constexpr,
    INTERLEAVE: tl.constexpr, FUSED_QUANT: tl.constexpr, GROUPWISE: tl.constexpr,
    SPLIT_PARTIALS: tl.constexpr, HAS_BIAS: tl.constexpr, PTX: tl.constexpr,
):  # fmt: skip
    pid_n = tl.program_id(0)
    pid_m = tl.program_id(1)
    pid_k = tl.program_id(2)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rm_load = rm % M  # wrapped rows / columns: unmasked loads; their results are never stored
    rn_load = rn % N
    x_rows = x_ptr + rm_load[:, None].to(tl.int64) * K

    if FUSED_QUANT:  # the row scale needs the whole row, whichever K slice this program multiplies
        x_scale = int8_row_scale_of(x_rows, K, BLOCK_M, AMAX_BLOCK)
    else:
        x_scale = tl.load(xs_ptr + rm_load)

    HALF_K: tl.constexpr = BLOCK_K // 2
    k_first = pid_k * BLOCKS_PER_SPLIT
    k_blocks = tl.minimum(BLOCKS_PER_SPLIT, K // BLOCK_K - k_first)
    cols = k_first * HALF_K + tl.arange(0, HALF_K)  # packed-byte columns of this split's first K block
    w_ptrs = w_ptr + rn_load[:, None].to(tl.int64) * stride_wn + cols[None, :]
    x_ptrs = x_rows + (k_first * BLOCK_K + tl.arange(0, BLOCK_K))[None, :]
    ws_row = ws_ptr + rn_load * stride_wsn

    # Swap-AB: (BLOCK_N, BLOCK_M). Each K block's exact int32 dot (of 16x the nibbles) starts from zero and is
    # added to a wider accumulator: float32 times the group's scale (group-wise), or int64 (per channel: exact for
    # any K, where an int32 accumulator of 16x dots would overflow past K = 2**17).
    if GROUPWISE:
        acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    else:
        acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.int64)

    for i in range(k_blocks):
        packed = tl.load(w_ptrs)  # (BLOCK_N, HALF_K) int8
        w_low, w_high = _nibbles_x16(packed, PTX)  # 16x the nibbles: the epilogue divides by 16
        if GROUPWISE:
            w_scale = tl.load(ws_row + ((k_first + i) * BLOCK_K) // GROUP_K)  # (BLOCK_N,): this block's group
        # One contiguous (BLOCK_M, BLOCK_K) load of x (vectorized; quantized once per element), de-interleaved in
        # registers: x is 4x smaller than the weight tile at M = 16, so it is the cheaper operand to shuffle.
        xk = _load_x(x_ptrs, x_scale, FUSED_QUANT)
        part = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.int32)
        if INTERLEAVE:
            w = tl.reshape(tl.join(w_low, w_high), (BLOCK_N, BLOCK_K))
            part = tl.dot(w, tl.trans(xk), part, out_dtype=tl.int32)
        else:
            x_even, x_odd = tl.split(tl.reshape(xk, (BLOCK_M, HALF_K, 2)))  # x[:, k0 + 2j], x[:, k0 + 2j + 1]
            part = tl.dot(w_low, tl.trans(x_even), part, out_dtype=tl.int32)
            part = tl.dot(w_high, tl.trans(x_odd), part, out_dtype=tl.int32)
        if GROUPWISE:
            acc += part.to(tl.float32) * w_scale[:, None]
        else:
            acc += part.to(tl.int64)
        x_ptrs += BLOCK_K
        w_ptrs += HALF_K

    # The MMA summed 16x the nibbles. Scaling by a power of two is exact (and commutes with the int32 -> float32
    # rounding), so the result is bit-identical to scaling the true dot.
    out = tl.trans(acc.to(tl.float32) * 0.0625)  # (BLOCK_M, BLOCK_N)
    store_w4a8_tile(out, x_scale, ws_row, bias_ptr, out_ptr, rm, rn, rn_load, M, N, pid_k,
                    GROUPWISE, SPLIT_PARTIALS, HAS_BIAS)  # fmt: skip


@dataclass(frozen=True)
class DecodeConfig(LaunchConfig):
    """``block_m``: rows per program (the MMA's N side, at least 16). ``block_k``: an upper bound in int8 values;
    the launcher uses the largest power of two ``<= block_k`` dividing K and the group size. ``split_k``: 0 splits K
    until about ``programs_per_sm`` programs per SM are in flight, 1 never splits, ``s > 1`` splits into ``s``
    (capped at one split per K block)."""

    split_k: int = 0
    programs_per_sm: int = 3


# Shared-memory budget (compiled for sm_80 and sm_90, no spills): up to 4 stages × (8-16 KB packed w + 4 KB int8 x,
# or 16 KB float32 x when fused) = 53 KB at most, within sm_80's 163 KB and sm_90's 227 KB of shared memory. The
# dp4a GEMV (kernels/s8s4_gemv.py) replaced the float FMA tiles this table held. Which config runs for which M is
# decided by the one W4A8 table, DISPATCH_TABLE in lowbit_flex/kernels/s8s4_dispatch.py.
DECODE_CONFIGS: dict[str, DecodeConfig] = {
    "dot_16x64x256": DecodeConfig(16, 64, 256, num_warps=4, num_stages=4),
    "dot_16x128x256": DecodeConfig(16, 128, 256, num_warps=8, num_stages=3),
}

# Elements of x per program per amax step (the fused path): 32 float32 registers per thread at 128 threads.
_AMAX_ELEMS = 4096


class _Plan(NamedTuple):
    splits: int
    per_split: int  # K blocks per split
    k_blocks: int  # K blocks in the whole row
    launch: PlanLaunch


@functools.lru_cache(maxsize=512)
def _plan(
    device: torch.device, M: int, N: int, K: int, groups: int, x_dtype: torch.dtype, out_dtype: torch.dtype,
    has_bias: bool, cfg: DecodeConfig,
) -> _Plan:  # fmt: skip
    """Everything about a launch that depends only on the shape key (cached: decode loops repeat a few shapes).
    ``out_dtype`` is part of the key because the launch is cached with its argument dtypes."""
    assert 1 <= M <= DECODE_MAX_M and K % 32 == 0 and K % groups == 0, (M, K, groups)
    group_k = K // groups
    block_k = largest_pow2_divisor(group_k, cfg.block_k)  # divides K too; >= 32 as group_k % 32 == 0
    assert cfg.block_m >= 16, "tl.dot needs 16 rows"
    block_m = cfg.block_m
    k_blocks = K // block_k
    tiles = triton.cdiv(N, cfg.block_n) * triton.cdiv(M, block_m)
    splits, per_split = split_k_blocks(k_blocks, tiles, cfg.split_k, cfg.programs_per_sm, sm_count(device))
    meta = dict(
        BLOCK_M=block_m, BLOCK_N=cfg.block_n, BLOCK_K=block_k,
        AMAX_BLOCK=min(triton.next_power_of_2(K), _AMAX_ELEMS // block_m),
        INTERLEAVE=block_k < 64, FUSED_QUANT=x_dtype != torch.int8,
        GROUPWISE=groups > 1, SPLIT_PARTIALS=splits > 1, HAS_BIAS=has_bias, PTX=not triton_interpreting(),
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )  # fmt: skip
    grid = (triton.cdiv(N, cfg.block_n), triton.cdiv(M, block_m), splits)
    return _Plan(splits, per_split, k_blocks, PlanLaunch(_s8s4_decode_kernel, grid, meta))


def s8s4_decode_triton(
    x: torch.Tensor,
    x_scale: torch.Tensor | None,
    w: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None,
    out_dtype: torch.dtype,
    config: DecodeConfig,
    *,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """``x`` ``(M, K)``, ``1 <= M <= DECODE_MAX_M``: int8 with ``x_scale`` float32 ``(M,)``, or float16 / bfloat16 /
    float32 with ``x_scale=None`` (quantized per row in the kernel, bit-exact with ``lowbit::quantize_int8_rowwise``).
    ``w`` int8 ``(N, K // 2)`` packed int4, ``w_scale`` float32 ``(N,)`` or ``(N, groups)``, ``bias`` float32 ``(N,)``
    or None, all contiguous and validated by the op -> ``(M, N)`` of ``out_dtype`` (written into ``out`` if given:
    contiguous ``(M, N)`` of ``out_dtype``)."""
    return launch_decode_plan(_plan, x, x_scale, w, w_scale, bias, out_dtype, config, out, w_word_bytes=1)


def launch_decode_plan(
    plan_of, x, x_scale, w, w_scale, bias, out_dtype, config, out, *, w_word_bytes: int
) -> torch.Tensor:  # fmt: skip
    """The launch both decode-sized W4A8 kernels share (their argument lists are the same): plan the shape with
    ``plan_of`` (a cached ``(device, M, N, K, groups, x dtype, out dtype, has bias, config) -> plan`` with
    ``splits``, ``per_split`` and ``launch``), run the kernel into ``out`` or float32 split-K partials, reduce them.
    ``w_word_bytes``: the kernel reads the packed weight in units of 1 (int8) or 4 (int32 words) bytes."""
    # int(): under torch.compile with dynamic shapes these are SymInts; the plan is per concrete shape (a guard).
    M, K, N = int(x.shape[0]), int(x.shape[1]), int(w.shape[0])
    groups = int(w_scale.shape[1]) if w_scale.dim() == 2 else 1
    plan = plan_of(x.device, M, N, K, groups, x.dtype, out_dtype, bias is not None, config)
    if out is None:
        out = torch.empty((M, N), dtype=out_dtype, device=x.device)
    dst = torch.empty((plan.splits, M, N), dtype=torch.float32, device=x.device) if plan.splits > 1 else out
    any_ptr = w_scale  # a valid pointer for operands a constexpr switch leaves unread
    w_arg = w if w_word_bytes == 1 else w.view(torch.int32)
    plan.launch(
        x, any_ptr if x_scale is None else x_scale, w_arg, w_scale, any_ptr if bias is None else bias, dst,
        M, N, K, K // (2 * w_word_bytes), groups, K // groups, plan.per_split,
    )  # fmt: skip
    if plan.splits > 1:
        reduce_split_k(dst, out, bias=bias)
    return out
