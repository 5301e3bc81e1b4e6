"""Fused row-wise int8 quantization: one read of ``x``, one write of int8 values and float32 scales."""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from lowbit_flex.kernels.arch import rows_hint
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
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, SINGLE_PASS: tl.constexpr, CHUNK: tl.constexpr,
):  # fmt: skip
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < M
    cols = tl.arange(0, BLOCK_K)
    x_rows = x_ptr + rows[:, None].to(tl.int64) * stride_xm
    q_rows = xq_ptr + rows[:, None].to(tl.int64) * K
    if CHUNK > 0:
        # Program (row block, c): the rows' amax from the whole row (one load: BLOCK_K >= K), then only columns
        # [c * CHUNK, (c + 1) * CHUNK) quantized, their second read hitting L1 / L2.
        mask = row_ok[:, None] & (cols[None, :] < K)
        amax = tl.max(tl.abs(tl.load(x_rows + cols[None, :], mask=mask, other=0.0).to(tl.float32)), axis=1)
        scale = int8_row_scale(amax)
        chunk = tl.program_id(1)
        if chunk == 0:
            tl.store(scale_ptr + rows, scale, mask=row_ok)
        ccols = chunk * CHUNK + tl.arange(0, CHUNK)
        cmask = row_ok[:, None] & (ccols[None, :] < K)
        x = tl.load(x_rows + ccols[None, :], mask=cmask, other=0.0).to(tl.float32)
        tl.store(q_rows + ccols[None, :], quantize_int8_values(x, scale[:, None]).to(tl.int8), mask=cmask)
    elif SINGLE_PASS:
        mask = row_ok[:, None] & (cols[None, :] < K)
        x = tl.load(x_rows + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        scale = int8_row_scale(tl.max(tl.abs(x), axis=1))
        tl.store(scale_ptr + rows, scale, mask=row_ok)
        tl.store(q_rows + cols[None, :], quantize_int8_values(x, scale[:, None]).to(tl.int8), mask=mask)
    else:  # rows past BLOCK_K values: an amax pass, then a quantize pass (the second read from L2)
        amax = tl.zeros((BLOCK_M,), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            mask = row_ok[:, None] & (cols[None, :] + k0 < K)
            x = tl.load(x_rows + k0 + cols[None, :], mask=mask, other=0.0).to(tl.float32)
            amax = tl.maximum(amax, tl.max(tl.abs(x), axis=1))
        scale = int8_row_scale(amax)
        tl.store(scale_ptr + rows, scale, mask=row_ok)
        for k0 in range(0, K, BLOCK_K):
            mask = row_ok[:, None] & (cols[None, :] + k0 < K)
            x = tl.load(x_rows + k0 + cols[None, :], mask=mask, other=0.0).to(tl.float32)
            q = quantize_int8_values(x, scale[:, None])
            tl.store(q_rows + k0 + cols[None, :], q.to(tl.int8), mask=mask)


class RowConfig(NamedTuple):
    """How rows are split over programs: ``block_k`` values per load (the whole row where ``single_pass``),
    ``num_warps`` per program, ``block_m`` rows per program (several short rows share one), and ``chunk``: where
    nonzero, a row's columns are split over programs of ``chunk`` values each, every one reading the whole row for
    its amax (``block_k`` must cover the row) and quantizing only its columns."""

    block_k: int
    num_warps: int
    single_pass: bool = True
    block_m: int = 1
    chunk: int = 0


# Rows of 8192 < K <= 16384 values at prefill M: in 4096-value steps with 8 warps, read twice (the second time from
# L2), instead of the whole row in the registers of 16 warps. H100, session 62 (the config table of
# benchmarks/bench_quantize_int8_rowwise.py, docs/measurements/h100_run62_w4a8_decode_rows.md), against that one-pass
# program: 1.12x / 1.06x on K = 14336 at M = 4096 / 2048 (2.1 TB/s; the one-pass program holds a 28 KB row and fits
# once per SM, so its loads stop while it reduces), 1.56x / 1.43x on K = 11008 (Llama-2-7B's MLP, whose one-pass block
# of 16384 leaves a third of the lanes idle). At M = 1024 the steps lost on K = 14336 (0.95x) and won on 11008
# (1.26x, not taken: one measurement). K = 16384 takes the steps too (unmeasured: the same register bound). Decode M
# splits rows across programs instead (below).
_STEPPED_MIN_M = 2048
_STEPPED = RowConfig(4096, 8, single_pass=False)

# Decode M (at most _CHUNKED_MAX_M rows of 2048 to 16384 values): a row's columns over programs of _CHUNK values and
# 8 warps, each reading the whole row for its amax (the extra reads come from L2). One program per row left most SMs
# idle: at M = 16, K = 14336 it took 7.7 us under ncu, against 21 us for the W4A8 GEMV after it. H100 run 71
# (docs/measurements/h100_run71_w4a8_split_k_cluster.md), kernel alone at M = 2..32, K = 4096..14336: 1.6-3.1 us
# against 2.6-5.5 us; 512-value chunks were up to 13 % faster at M <= 8 on K = 11008 but slower at M = 16..32 on
# K = 14336, 2048-value chunks slower at M <= 16. Whole W4A8 layers at M = 2..16 (x quantized first): 1.04-1.19x.
_CHUNKED_MAX_M = 32
_CHUNKED_MIN_K = 2048
_CHUNK = 1024


def pick_config(M: int | torch.SymInt, K: int) -> RowConfig:
    """The launch config for ``M`` rows of ``K`` values: the whole row in registers up to ``_MAX_SINGLE_PASS_K``,
    with about 4096 elements per program (short rows share a program); at decode M (``<= _CHUNKED_MAX_M``) rows of
    ``_CHUNKED_MIN_K`` values or more split into ``_CHUNK``-value programs; longer rows, and rows over 8192 values at
    ``M >= _STEPPED_MIN_M``, in 4096-value steps, read twice (the second read from L2). A symbolic M (a dynamic
    batch) picks by its example value (no guard on M: every config takes any M)."""
    if K > _MAX_SINGLE_PASS_K:
        return RowConfig(4096, 4, single_pass=False)
    if K >= _CHUNKED_MIN_K and rows_hint(M)[0] <= _CHUNKED_MAX_M:
        return RowConfig(triton.next_power_of_2(K), 8, chunk=_CHUNK)
    if K > 8192 and rows_hint(M)[0] >= _STEPPED_MIN_M:
        return _STEPPED
    block_k = triton.next_power_of_2(K)
    block_m = max(1, min(64, 4096 // block_k))
    return RowConfig(block_k, 4 if block_m * block_k <= 4096 else 8 if block_k <= 8192 else 16, block_m=block_m)


@functools.lru_cache(maxsize=512)
def _launch_plan(M: int, K: int, stride_xm: int, config: RowConfig | None = None) -> PlanLaunch:
    cfg = config or pick_config(M, K)
    if (cfg.single_pass or cfg.chunk) and cfg.block_k < K:
        raise ValueError(f"config: a single-pass or chunked block_k must cover the row (K={K}), got {cfg}")
    meta = dict(
        BLOCK_M=cfg.block_m, BLOCK_K=cfg.block_k, SINGLE_PASS=cfg.single_pass, CHUNK=cfg.chunk, num_warps=cfg.num_warps
    )
    grid = (triton.cdiv(M, cfg.block_m), triton.cdiv(K, cfg.chunk) if cfg.chunk else 1)
    return PlanLaunch(_quantize_int8_rowwise_kernel, grid, meta)


def quantize_int8_rowwise_triton(x: torch.Tensor, config: RowConfig | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the fused kernel; arguments are already validated by the op. ``config`` overrides
    :func:`pick_config` (for a benchmark's sweep)."""
    K = x.shape[-1]
    x2 = x.reshape(-1, K)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    M = x2.shape[0]
    xq = torch.empty((M, K), dtype=torch.int8, device=x.device)
    scale = torch.empty((M, 1), dtype=torch.float32, device=x.device)
    if M > 0:
        cached_plan(_launch_plan, M, K, x2.stride(0), config)(x2, xq, scale, M, K, x2.stride(0))
    return xq.view(x.shape), scale.view(*x.shape[:-1], 1)
