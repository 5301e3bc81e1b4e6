"""SAM's ``rel_h``/``rel_w`` (the decomposed relative-position terms) from the query and the raw tables, one launch.

``rel_h[n, i, kh] = q[n, i] . T_h[y(i) - kh + q_h - 1]`` and ``rel_w[n, i, kw] = q[n, i] . T_w[x(i) - kw + q_w - 1]``
for query ``i`` at grid row ``y(i) = i // q_w``, column ``x(i) = i % q_w``: self-attention with SAM's native tables
(``2 * size - 1`` rows, so its ``get_rel_pos`` is this index arithmetic, with no resampling).

SAM computes them with two gathers of the tables and two batched matmuls, and its views of the query cost copies
around each: under ``torch.compile`` about five to seven launches per attention block, which is most of a ViT-B
encoder's host time at batch 1 (docs/measurements). Here one program takes ``BLOCK_M`` consecutive query rows of one
(batch, head), read through the query's strides (SAM's view of its ``qkv`` projection, no copy), and for each table:

* multiplies them by a window of ``BLOCK_T`` consecutive table rows on the tensor cores, ``P = Q @ T[t0 : t0 +
  BLOCK_T]^T``: row ``i`` needs table rows ``y(i) .. y(i) + q_h - 1`` (or ``x(i) ..``), so the block's rows need one
  contiguous range, walked in windows;
* stores each ``P[i, t]`` at column ``kh = y(i) - t + q_h - 1`` of row ``i`` where that is in ``[0, q_h)``: for a
  fixed row, ``t -> kh`` is one-to-one, so every output element is written exactly once, by the window holding its
  table row (a scatter store instead of a gather of ``P`` in registers).

fp32 accumulation, one rounding to the output dtype (SAM's bmm rounds the same way).
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from lowbit_flex.kernels.arch import triton_interpreting
from lowbit_flex.kernels.common import PlanLaunch, cached_plan

# Query rows per program: SAM's 64-wide global grid is one grid row per program (one rel_h window of 64 table
# rows, two rel_w windows); a 14 x 14 window is four programs.
BLOCK_M = 64
# Table rows per window: the P tile is BLOCK_M x MAX_BLOCK_T fp32 (32 registers per thread with 4 warps).
MAX_BLOCK_T = 64


@triton.jit
def _rel_terms(
    q, out_rows, row_ok, grid_pos, t_ptr, stride_t, stride_tc, t_lo, t_hi,
    SIZE: tl.constexpr, D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_T: tl.constexpr, DOT_PRECISION: tl.constexpr,
):  # fmt: skip
    """One table's terms for the block's rows: ``out_rows[i] + k`` gets ``q[i] . T[grid_pos(i) - k + SIZE - 1]`` for
    ``k < SIZE``, from the table rows ``t_lo .. t_hi`` (inclusive), ``BLOCK_T`` at a time."""
    offs_t = tl.arange(0, BLOCK_T)
    offs_d = tl.arange(0, BLOCK_D)
    for t0 in range(t_lo, t_hi + 1, BLOCK_T):
        t = t0 + offs_t
        t_ok = t <= t_hi
        tab = tl.load(
            t_ptr + t[:, None] * stride_t + offs_d[None, :] * stride_tc,
            mask=t_ok[:, None] & (offs_d < D)[None, :],
            other=0.0,
        ).to(q.dtype)
        p = tl.dot(q, tl.trans(tab), input_precision=DOT_PRECISION)
        k = grid_pos[:, None] - t[None, :] + (SIZE - 1)
        ok = row_ok[:, None] & t_ok[None, :] & (k >= 0) & (k < SIZE)
        tl.store(out_rows[:, None] + k, p.to(out_rows.dtype.element_ty), mask=ok)


@triton.jit
def _sam_rel_pos_kernel(
    q_ptr, th_ptr, tw_ptr, rh_ptr, rw_ptr,
    stride_qb, stride_qh, stride_ql, stride_qd, stride_th, stride_thc, stride_tw, stride_twc,
    H, num_m_blocks,
    Q_H: tl.constexpr, Q_W: tl.constexpr, D: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_TH: tl.constexpr, BLOCK_TW: tl.constexpr,
    DOT_PRECISION: tl.constexpr, UPCAST: tl.constexpr,
):  # fmt: skip
    L: tl.constexpr = Q_H * Q_W
    pid = tl.program_id(0)
    n = pid // num_m_blocks
    m0 = (pid % num_m_blocks) * BLOCK_M
    rows = m0 + tl.arange(0, BLOCK_M)
    row_ok = rows < L
    offs_d = tl.arange(0, BLOCK_D)
    q_base = q_ptr + (n // H).to(tl.int64) * stride_qb + (n % H).to(tl.int64) * stride_qh
    q = tl.load(
        q_base + rows[:, None] * stride_ql + offs_d[None, :] * stride_qd,
        mask=row_ok[:, None] & (offs_d < D)[None, :],
        other=0.0,
    )
    if UPCAST:  # the interpreter's dot has no bf16
        q = q.to(tl.float32)
    y, x = rows // Q_W, rows % Q_W
    last = tl.minimum(m0 + BLOCK_M, L) - 1
    y_lo, y_hi = m0 // Q_W, last // Q_W
    # The block's columns: all of them once it spans two grid rows, else its own range of one row.
    x_lo = tl.where(y_hi > y_lo, 0, m0 % Q_W)
    x_hi = tl.where(y_hi > y_lo, Q_W - 1, last % Q_W)
    out_h = rh_ptr + n.to(tl.int64) * (L * Q_H) + rows * Q_H
    out_w = rw_ptr + n.to(tl.int64) * (L * Q_W) + rows * Q_W
    _rel_terms(q, out_h, row_ok, y, th_ptr, stride_th, stride_thc, y_lo, y_hi + Q_H - 1,
               Q_H, D, BLOCK_D, BLOCK_TH, DOT_PRECISION)  # fmt: skip
    _rel_terms(q, out_w, row_ok, x, tw_ptr, stride_tw, stride_twc, x_lo, x_hi + Q_W - 1,
               Q_W, D, BLOCK_D, BLOCK_TW, DOT_PRECISION)  # fmt: skip


def _window(size: int, span: int) -> int:
    """``BLOCK_T`` for a table of ``size`` keys whose block needs ``span`` query positions: the rows one block
    needs (``span + size - 1``), as a power of two between the MMA's 16 and :data:`MAX_BLOCK_T`."""
    return max(16, min(MAX_BLOCK_T, triton.next_power_of_2(span + size - 1)))


@functools.lru_cache(maxsize=256)
def _launch_plan(N: int, H: int, q_h: int, q_w: int, D: int, dtype: torch.dtype) -> PlanLaunch:
    """The launch for ``N`` (batch x head) grids of ``q_h x q_w`` queries with head dim ``D``."""
    L = q_h * q_w
    num_m_blocks = triton.cdiv(L, BLOCK_M)
    rows_spanned = min(q_h, (BLOCK_M - 1) // q_w + 2)  # grid rows one block of BLOCK_M consecutive queries touches
    meta = dict(
        Q_H=q_h, Q_W=q_w, D=D, BLOCK_M=BLOCK_M, BLOCK_D=max(16, triton.next_power_of_2(D)),
        BLOCK_TH=_window(q_h, rows_spanned), BLOCK_TW=_window(q_w, q_w if rows_spanned > 1 else min(BLOCK_M, q_w)),
        DOT_PRECISION="ieee" if dtype == torch.float32 else "tf32", UPCAST=triton_interpreting(), num_warps=4,
    )  # fmt: skip
    return PlanLaunch(_sam_rel_pos_kernel, (N * num_m_blocks,), meta, tensors=5)


def sam_rel_pos_plan(q: torch.Tensor, rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor, q_h: int, q_w: int):
    """The launch and its arguments after the five tensors ``(q, rel_pos_h, rel_pos_w, rel_h, rel_w)`` for a
    ``(B, H, L, D)`` query (a 3-D ``(N, L, D)`` one as ``B = N, H = 1``). Metadata only: an eager caller keeps it
    per shape key."""
    B, H = (q.shape[0], q.shape[1]) if q.dim() == 4 else (q.shape[0], 1)
    strides = q.stride() if q.dim() == 4 else (q.stride(0), 0, q.stride(1), q.stride(2))
    launch = cached_plan(_launch_plan, B * H, H, q_h, q_w, int(q.shape[-1]), q.dtype)
    num_m_blocks = -(-(q_h * q_w) // BLOCK_M)
    return launch, (*strides, *rel_pos_h.stride(), *rel_pos_w.stride(), H, num_m_blocks)


def sam_rel_pos_triton(
    q: torch.Tensor, rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor, q_h: int, q_w: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the kernel; arguments are validated by the op. Returns contiguous ``(*lead, L, q_h)`` and
    ``(*lead, L, q_w)`` in ``q``'s dtype."""
    lead = q.shape[:-2]
    rel_h = torch.empty((*lead, q_h * q_w, q_h), dtype=q.dtype, device=q.device)
    rel_w = torch.empty((*lead, q_h * q_w, q_w), dtype=q.dtype, device=q.device)
    if rel_h.numel() == 0:
        return rel_h, rel_w
    launch, scalars = sam_rel_pos_plan(q, rel_pos_h, rel_pos_w, q_h, q_w)
    launch(q, rel_pos_h, rel_pos_w, rel_h, rel_w, *scalars)
    return rel_h, rel_w
