"""Fused row-wise int8 quantization: one read of ``x``, one write of int8 values and float32 scales."""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from lowbit_flex.kernels.common import PlanLaunch, cached_plan
from lowbit_flex.kernels.rounding import round_half_even

# Rows up to this length are quantized from registers in one pass; longer rows take a second (cached) read.
_MAX_SINGLE_PASS_K = 16384


@triton.jit
def int8_row_scale(amax):
    """The int8 scale of rows whose largest ``|x|`` is ``amax`` (float32): ``amax / 127``, 1.0 for all-zero rows.
    Shared by every kernel that quantizes activations, so their int8 values are bit-identical."""
    # div_rn: Triton's `/` on float32 may lower to an approximate divide; the reference uses IEEE division.
    scale = tl.math.div_rn(amax, tl.full(amax.shape, 127.0, tl.float32))
    return tl.where(scale == 0.0, 1.0, scale)


@triton.jit
def int8_row_scale_of(x_rows, K, BLOCK_M: tl.constexpr, AMAX_BLOCK: tl.constexpr):
    """:func:`int8_row_scale` of the ``(BLOCK_M, K)`` rows at ``x_rows`` (pointers to each row's first element),
    read in ``AMAX_BLOCK`` steps: the fused GEMV kernels' first pass over their rows."""
    cols = tl.arange(0, AMAX_BLOCK)
    # An elementwise running max defers the cross-thread reduction to one tl.max (max is exact in any order).
    amax2 = tl.zeros((BLOCK_M, AMAX_BLOCK), dtype=tl.float32)
    for k0 in range(0, K, AMAX_BLOCK):
        x = tl.load(x_rows + k0 + cols[None, :], mask=(k0 + cols < K)[None, :], other=0.0)
        amax2 = tl.maximum(amax2, tl.abs(x.to(tl.float32)))
    return int8_row_scale(tl.max(amax2, axis=1))


@triton.jit
def quantize_int8_values(x, scale):
    """``clamp(round_half_even(x / scale), -127, 127)`` of float32 ``x`` as float32 integers (IEEE divide)."""
    return tl.minimum(tl.maximum(round_half_even(tl.math.div_rn(x, scale)), -127.0), 127.0)


@triton.jit
def _quantize_int8_rowwise_kernel(
    x_ptr, xq_ptr, scale_ptr, M, K, stride_xm,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, SINGLE_PASS: tl.constexpr,
):  # fmt: skip
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < M
    cols = tl.arange(0, BLOCK_K)
    x_rows = x_ptr + rows[:, None].to(tl.int64) * stride_xm
    q_rows = xq_ptr + rows[:, None].to(tl.int64) * K
    if SINGLE_PASS:
        mask = row_ok[:, None] & (cols[None, :] < K)
        x = tl.load(x_rows + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        amax = tl.max(tl.abs(x), axis=1)
    else:
        amax = tl.zeros((BLOCK_M,), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            mask = row_ok[:, None] & (cols[None, :] + k0 < K)
            x = tl.load(x_rows + k0 + cols[None, :], mask=mask, other=0.0).to(tl.float32)
            amax = tl.maximum(amax, tl.max(tl.abs(x), axis=1))
    scale = int8_row_scale(amax)
    tl.store(scale_ptr + rows, scale, mask=row_ok)
    if SINGLE_PASS:
        q = quantize_int8_values(x, scale[:, None])
        tl.store(q_rows + cols[None, :], q.to(tl.int8), mask=mask)
    else:
        for k0 in range(0, K, BLOCK_K):
            mask = row_ok[:, None] & (cols[None, :] + k0 < K)
            x = tl.load(x_rows + k0 + cols[None, :], mask=mask, other=0.0).to(tl.float32)
            q = quantize_int8_values(x, scale[:, None])
            tl.store(q_rows + k0 + cols[None, :], q.to(tl.int8), mask=mask)


@functools.lru_cache(maxsize=512)
def _launch_plan(M: int, K: int, stride_xm: int) -> PlanLaunch:
    single_pass = K <= _MAX_SINGLE_PASS_K
    block_k = triton.next_power_of_2(K) if single_pass else 4096
    # About 4096 elements per program keeps registers bounded while short rows still share a program.
    block_m = max(1, min(64, 4096 // block_k))
    num_warps = 4 if block_m * block_k <= 4096 else 8 if block_k <= 8192 else 16
    meta = dict(BLOCK_M=block_m, BLOCK_K=block_k, SINGLE_PASS=single_pass, num_warps=num_warps)
    return PlanLaunch(_quantize_int8_rowwise_kernel, (triton.cdiv(M, block_m),), meta)


def quantize_int8_rowwise_triton(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the fused kernel; arguments are already validated by the op."""
    K = x.shape[-1]
    x2 = x.reshape(-1, K)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    M = x2.shape[0]
    xq = torch.empty((M, K), dtype=torch.int8, device=x.device)
    scale = torch.empty((M, 1), dtype=torch.float32, device=x.device)
    if M > 0:
        cached_plan(_launch_plan, M, K, x2.stride(0))(x2, xq, scale, M, K, x2.stride(0))
    return xq.view(x.shape), scale.view(*x.shape[:-1], 1)
