"""SAM's ``rel_h``/``rel_w`` (the decomposed relative-position terms) from the query and the raw tables, one launch.

``rel_h[n, i, kh] = q[n, i] . T_h[y(i) - kh + q_h - 1]`` and ``rel_w[n, i, kw] = q[n, i] . T_w[x(i) - kw + q_w - 1]``
for query ``i`` at grid row ``y(i) = i // q_w``, column ``x(i) = i % q_w``: self-attention with SAM's native tables
(``2 * size - 1`` rows, so its ``get_rel_pos`` is this index arithmetic, with no resampling).

SAM computes them with two gathers of the tables and two batched matmuls, and its views of the query cost copies
around each: under ``torch.compile`` about five to seven launches per attention block, which kept a batch-1 ViT-B
encoder waiting on the host (docs/measurements/h100_run66_sam_rel_pos.md). One launch here computes both, as
plain matmul tiles:

* All queries of one grid row ``y`` (of every batch and head) share one matrix of table rows, ``T_h[y - kh + q_h -
  1]`` for ``kh < q_h``: their ``rel_h`` rows are ``Q_y @ R_y^T``. Likewise all queries of one grid column ``x`` share
  ``T_w[x - kw + q_w - 1]`` for ``rel_w``. So a program takes 64 queries of one row ``y`` (the ``rel_h`` programs) or
  of one column ``x`` (the ``rel_w`` programs), read through the query's strides (SAM's view of its ``qkv``
  projection, no copy), loads that matrix's rows (a reversed run of the table), and multiplies on the tensor cores:
  each product element is an output element, written once, in whole rows.
* A first version took 64 consecutive queries (mixed columns) against a window of table rows and scattered each
  product to its column: 2.5-4.6x slower than SAM's compiled einsums on 64-wide grids (H100 run 66).

The query is read twice (once per term); fp32 accumulation, one rounding to the output dtype (SAM's bmm rounds the
same way).
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from lowbit_flex.kernels.arch import triton_interpreting
from lowbit_flex.kernels.common import PlanLaunch, cached_plan

# Queries per program (the MMA's M).
BLOCK_M = 64
# Output columns per product: a 64 x 64 fp32 tile (32 registers per thread with 4 warps); wider grids loop.
MAX_BLOCK_K = 64


@triton.jit
def _rel_term_tile(
    q_ptr, t_ptr, out_ptr, tile, N,
    stride_qb, stride_qh, stride_ql, stride_qd, stride_t, stride_tc,
    H: tl.constexpr, FIXED_ROW: tl.constexpr, Q_H: tl.constexpr, Q_W: tl.constexpr, D: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_K: tl.constexpr,
    DOT_PRECISION: tl.constexpr, UPCAST: tl.constexpr,
):  # fmt: skip
    """One tile of one term: ``rel_h`` (``FIXED_ROW``: 64 queries of grid row ``pos``, over every (batch, head) and
    column) or ``rel_w`` (64 queries of grid column ``pos``). ``tile`` counts the term's tiles, ``pos``-major."""
    SIZE: tl.constexpr = Q_H if FIXED_ROW else Q_W  # keys along this term's axis (the output's columns)
    OTHER: tl.constexpr = Q_W if FIXED_ROW else Q_H  # the free axis: queries per (batch, head) sharing ``pos``
    L: tl.constexpr = Q_H * Q_W
    m_tiles = tl.cdiv(N * OTHER, BLOCK_M)
    pos = tile // m_tiles
    m = (tile % m_tiles) * BLOCK_M + tl.arange(0, BLOCK_M)  # (batch * head, free coordinate), flattened
    m_ok = m < N * OTHER
    n = m // OTHER
    if FIXED_ROW:
        i = pos * Q_W + m % OTHER
    else:
        i = (m % OTHER) * Q_W + pos
    offs_d = tl.arange(0, BLOCK_D)
    q_rows = q_ptr + (n // H).to(tl.int64) * stride_qb + (n % H).to(tl.int64) * stride_qh + i * stride_ql
    q = tl.load(q_rows[:, None] + offs_d[None, :] * stride_qd, mask=m_ok[:, None] & (offs_d < D)[None, :], other=0.0)
    if UPCAST:  # the interpreter's dot has no bf16
        q = q.to(tl.float32)
    out_rows = out_ptr + n.to(tl.int64) * (L * SIZE) + i * SIZE
    for k0 in range(0, SIZE, BLOCK_K):
        kk = k0 + tl.arange(0, BLOCK_K)
        k_ok = kk < SIZE
        t = pos - kk + (SIZE - 1)  # this term's table row for (pos, key kk)
        tab = tl.load(
            t_ptr + t[:, None] * stride_t + offs_d[None, :] * stride_tc,
            mask=k_ok[:, None] & (offs_d < D)[None, :],
            other=0.0,
        ).to(q.dtype)
        p = tl.dot(q, tl.trans(tab), input_precision=DOT_PRECISION)
        tl.store(out_rows[:, None] + kk[None, :], p.to(out_ptr.dtype.element_ty), mask=m_ok[:, None] & k_ok[None, :])


@triton.jit
def _sam_rel_pos_kernel(
    q_ptr, th_ptr, tw_ptr, rh_ptr, rw_ptr,
    stride_qb, stride_qh, stride_ql, stride_qd, stride_th, stride_thc, stride_tw, stride_twc,
    N, h_tiles,
    H: tl.constexpr, Q_H: tl.constexpr, Q_W: tl.constexpr, D: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_KH: tl.constexpr, BLOCK_KW: tl.constexpr,
    DOT_PRECISION: tl.constexpr, UPCAST: tl.constexpr,
):  # fmt: skip
    """Programs ``[0, h_tiles)`` write ``rel_h``, the rest ``rel_w``."""
    pid = tl.program_id(0)
    if pid < h_tiles:
        _rel_term_tile(q_ptr, th_ptr, rh_ptr, pid, N, stride_qb, stride_qh, stride_ql, stride_qd, stride_th,
                       stride_thc, H, True, Q_H, Q_W, D, BLOCK_M, BLOCK_D, BLOCK_KH, DOT_PRECISION, UPCAST)  # fmt: skip
    else:
        _rel_term_tile(q_ptr, tw_ptr, rw_ptr, pid - h_tiles, N, stride_qb, stride_qh, stride_ql, stride_qd,
                       stride_tw, stride_twc, H, False, Q_H, Q_W, D, BLOCK_M, BLOCK_D, BLOCK_KW, DOT_PRECISION,
                       UPCAST)  # fmt: skip


def _block_k(size: int) -> int:
    """Output columns per product for ``size`` keys along the axis: a power of two, 16 (the MMA's N) to 64."""
    return max(16, min(MAX_BLOCK_K, triton.next_power_of_2(size)))


def _tiles(N: int, q_h: int, q_w: int) -> tuple[int, int]:
    """Programs of the ``rel_h`` and the ``rel_w`` term: per grid row (column), the tiles of its queries."""
    return q_h * triton.cdiv(N * q_w, BLOCK_M), q_w * triton.cdiv(N * q_h, BLOCK_M)


@functools.lru_cache(maxsize=256)
def _launch_plan(N: int, H: int, q_h: int, q_w: int, D: int, dtype: torch.dtype) -> PlanLaunch:
    """The launch for ``N`` (batch x head) grids of ``q_h x q_w`` queries with head dim ``D`` (``H`` heads: a
    constexpr, so the kernel splits a program's (batch, head) index with a multiply, not a division)."""
    h_tiles, w_tiles = _tiles(N, q_h, q_w)
    meta = dict(
        H=H, Q_H=q_h, Q_W=q_w, D=D, BLOCK_M=BLOCK_M, BLOCK_D=max(16, triton.next_power_of_2(D)),
        BLOCK_KH=_block_k(q_h), BLOCK_KW=_block_k(q_w),
        DOT_PRECISION="ieee" if dtype == torch.float32 else "tf32", UPCAST=triton_interpreting(), num_warps=4,
        # One to four products per program: nothing to pipeline, and three stages of fp32 table tiles at D = 256
        # would ask 200 KB of shared memory (past sm_80's 163 KB).
        num_stages=1,
    )  # fmt: skip
    return PlanLaunch(_sam_rel_pos_kernel, (h_tiles + w_tiles,), meta, tensors=5)


def sam_rel_pos_plan(q: torch.Tensor, rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor, q_h: int, q_w: int):
    """The launch and its arguments after the five tensors ``(q, rel_pos_h, rel_pos_w, rel_h, rel_w)`` for a
    ``(B, H, L, D)`` query (a 3-D ``(N, L, D)`` one as ``B = N, H = 1``). Metadata only: an eager caller keeps it
    per shape key."""
    # The head count is a constexpr: a symbolic one (dynamic-shape tracing) is specialized here (a guard).
    B, H = (q.shape[0], int(q.shape[1])) if q.dim() == 4 else (q.shape[0], 1)
    strides = q.stride() if q.dim() == 4 else (q.stride(0), 0, q.stride(1), q.stride(2))
    N = B * H
    launch = cached_plan(_launch_plan, N, H, q_h, q_w, int(q.shape[-1]), q.dtype)
    h_tiles = _tiles(N, q_h, q_w)[0]
    return launch, (*strides, *rel_pos_h.stride(), *rel_pos_w.stride(), N, h_tiles)


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
