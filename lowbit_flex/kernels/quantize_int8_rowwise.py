"""Fused row-wise int8 quantization: one read of ``x``, one write of int8 values and float32 scales."""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import wrap_triton

from lowbit_flex.kernels.rounding import round_half_even

# Rows up to this length are quantized from registers in one pass; longer rows take a second (cached) read.
_MAX_SINGLE_PASS_K = 16384


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
    # div_rn: Triton's `/` on float32 may lower to an approximate divide; the reference uses IEEE division.
    scale = tl.math.div_rn(amax, tl.full((BLOCK_M,), 127.0, tl.float32))
    scale = tl.where(scale == 0.0, 1.0, scale)
    tl.store(scale_ptr + rows, scale, mask=row_ok)
    if SINGLE_PASS:
        y = tl.math.div_rn(x, scale[:, None])
        q = tl.minimum(tl.maximum(round_half_even(y), -127.0), 127.0)
        tl.store(q_rows + cols[None, :], q.to(tl.int8), mask=mask)
    else:
        for k0 in range(0, K, BLOCK_K):
            mask = row_ok[:, None] & (cols[None, :] + k0 < K)
            x = tl.load(x_rows + k0 + cols[None, :], mask=mask, other=0.0).to(tl.float32)
            y = tl.math.div_rn(x, scale[:, None])
            q = tl.minimum(tl.maximum(round_half_even(y), -127.0), 127.0)
            tl.store(q_rows + k0 + cols[None, :], q.to(tl.int8), mask=mask)


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
        single_pass = K <= _MAX_SINGLE_PASS_K
        block_k = triton.next_power_of_2(K) if single_pass else 4096
        # About 4096 elements per program keeps registers bounded while short rows still share a program.
        block_m = max(1, min(64, 4096 // block_k))
        num_warps = 4 if block_m * block_k <= 4096 else 8 if block_k <= 8192 else 16
        grid = (triton.cdiv(M, block_m),)
        wrap_triton(_quantize_int8_rowwise_kernel)[grid](
            x2, xq, scale, M, K, x2.stride(0),
            BLOCK_M=block_m, BLOCK_K=block_k, SINGLE_PASS=single_pass, num_warps=num_warps,
        )  # fmt: skip
    return xq.view(x.shape), scale.view(*x.shape[:-1], 1)
