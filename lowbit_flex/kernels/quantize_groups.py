"""Fused group quantization to fp8 (e4m3fn / e5m2) or int8: one scale per contiguous group of a contiguous tensor.

Every granularity of :mod:`lowbit_flex.quant.groups` is a run of ``SEG`` elements inside a slice of ``S`` elements
(the last run of a slice may be shorter: the ragged last block). Small groups (token, block: at most
``_MAX_SINGLE_PASS`` elements) are quantized in one pass from registers, several groups per program. Larger ones
(tensor, head) take two launches: a chunked amax with ``atomic_max`` (max is order-independent, so the result is
still bit-exact), then the quantization, which re-reads ``x`` (mostly from L2). Launches go through cached
:class:`~lowbit_flex.kernels.common.PlanLaunch` plans, so ``torch.compile`` traces them (``wrap_triton``).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from lowbit_flex.kernels.arch import triton_interpreting
from lowbit_flex.kernels.common import PlanLaunch, cached_plan
from lowbit_flex.kernels.rounding import e4m3_code, round_half_even_to_int8, round_to_fp8_grid
from lowbit_flex.quant.fp8 import FP8_MAX
from lowbit_flex.quant.groups import scale_shape

_MAX_SINGLE_PASS = 16384
_CHUNK = 8192

# OUT_KIND: what the scaled value is rounded and stored as. _E4M3_CODES: e4m3fn built as uint8 codes with integer
# operations, for GPUs without the conversion instruction (before sm_89).
_E4M3, _E5M2, _INT8, _E4M3_CODES = 0, 1, 2, 3
OUT_KINDS = {torch.float8_e4m3fn: _E4M3, torch.float8_e5m2: _E5M2, torch.int8: _INT8}
QMAX_OF_KIND = {_E4M3: FP8_MAX[torch.float8_e4m3fn], _E5M2: FP8_MAX[torch.float8_e5m2], _INT8: 127.0}
QMAX_OF_KIND[_E4M3_CODES] = QMAX_OF_KIND[_E4M3]


@triton.jit
def _load_shifted(x_ptr, shift_ptr, offs, mask, SLICE, D, HAS_SHIFT: tl.constexpr):
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_SHIFT:
        # shift is (B*H, D): the slice index and channel of flat element e are e // (L*D) and e % D.
        sh = tl.load(shift_ptr + (offs // SLICE) * D + offs % D, mask=mask, other=0.0)
        x = tl.where(mask, x - sh, 0.0)
    return x


@triton.jit
def finite_abs(x):
    """``|x|`` with non-finite values as 0: what the group amax reads, so a NaN or inf leaves its group's scale as it
    would be without it (``NaN < inf`` is false)."""
    ax = tl.abs(x)
    return tl.where(ax < float("inf"), ax, 0.0)


@triton.jit
def codes_of_scaled(x, y, QMAX: tl.constexpr, OUT_KIND: tl.constexpr, EXACT: tl.constexpr):
    """The stored codes of ``y = x / scale`` (float32): int8, e4m3fn, e5m2 or e4m3fn as uint8 codes by ``OUT_KIND``.
    Saturates at ``±QMAX``. Finite ``x`` gives finite ``y`` (``|x| <= amax``). Non-finite ``x``: NaN in fp8, 0 (NaN)
    or ±QMAX (±inf) in int8, decided with selects before any min/max sees a NaN: their NaN handling differs between
    the GPU and the interpreter.

    The quantization passes are memory-bound with few warps per SM, so instructions per element count: e4m3 on
    sm_89+ (``_E4M3``, compiled) relies on the conversion saturating (``cvt.rn.satfinite``: beyond ±448 to ±448,
    NaN to NaN) and needs only ``y + x · 0``, which is ``y`` for finite ``x`` (a zero of ``y``'s sign) and NaN for
    ±inf and NaN (2 instructions per element where the clamp and selects took 6). int8 maps a NaN ``y`` to 0, as
    the reference's ``nan_to_num`` does, and the clamp then takes ±inf to ±127: deciding on ``y`` rather than ``x``
    lets ``x`` die once ``y`` exists, which took the Q/K/V pass's int8 block from 162 registers to 96 (Triton 3.6,
    sm_90: two programs per SM instead of one)."""
    if OUT_KIND == 0 and not EXACT:
        codes = (y + x * 0.0).to(tl.float8e4nv)
    elif OUT_KIND == 2:
        codes = round_half_even_to_int8(tl.minimum(tl.maximum(tl.where(y == y, y, 0.0), -QMAX), QMAX))
    else:
        finite = tl.abs(x) < float("inf")
        y = tl.minimum(tl.maximum(tl.where(finite, y, 0.0), -QMAX), QMAX)
        if OUT_KIND == 3 or OUT_KIND == 0:  # _E4M3 here: the interpreter (EXACT), which also converts NaN wrongly
            codes = tl.where(finite, e4m3_code(round_to_fp8_grid(y, 3, -6)), 127).to(tl.uint8)  # 0x7F: NaN
            if OUT_KIND == 0:
                codes = codes.to(tl.float8e4nv, bitcast=True)
        elif EXACT:
            bits = round_to_fp8_grid(y, 2, -14).to(tl.float8e5).to(tl.uint8, bitcast=True)
            bits = tl.where(finite, bits, 127).to(tl.uint8)  # 0x7F: NaN, the code torch and the GPU give
            codes = bits.to(tl.float8e5, bitcast=True)
        else:
            codes = tl.where(finite, y, float("nan")).to(tl.float8e5)
    return codes


@triton.jit
def _round_store(q_ptr, offs, mask, x, scale, QMAX: tl.constexpr, OUT_KIND: tl.constexpr, EXACT: tl.constexpr):
    # div_rn: Triton's `/` on float32 may lower to an approximate divide; the reference uses IEEE division.
    y = tl.math.div_rn(x, scale)
    tl.store(q_ptr + offs, codes_of_scaled(x, y, QMAX, OUT_KIND, EXACT), mask=mask)


@triton.jit
def _segment(seg, S, SEG, NSEG):
    """Start (int64 element offset) and length of group ``seg``."""
    g = seg // NSEG
    j = seg % NSEG
    return g.to(tl.int64) * S + j.to(tl.int64) * SEG, tl.minimum(SEG, S - j * SEG)


@triton.jit
def _quantize_single_pass_kernel(
    x_ptr, q_ptr, scale_ptr, shift_ptr, N_SEG_TOTAL, S, SEG, NSEG, SLICE, D,
    ROWS: tl.constexpr, SEG_P2: tl.constexpr, QMAX: tl.constexpr, OUT_KIND: tl.constexpr,
    HAS_SHIFT: tl.constexpr, EXACT: tl.constexpr,
):  # fmt: skip
    seg = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    seg_ok = seg < N_SEG_TOTAL
    start, length = _segment(seg, S, SEG, NSEG)
    cols = tl.arange(0, SEG_P2)
    mask = seg_ok[:, None] & (cols[None, :] < length[:, None])
    offs = start[:, None] + cols[None, :]
    x = _load_shifted(x_ptr, shift_ptr, offs, mask, SLICE, D, HAS_SHIFT)
    scale = tl.math.div_rn(tl.max(finite_abs(x), axis=1), tl.full((ROWS,), QMAX, tl.float32))
    scale = tl.where(scale == 0.0, 1.0, scale)
    tl.store(scale_ptr + seg, scale, mask=seg_ok)
    _round_store(q_ptr, offs, mask, x, scale[:, None], QMAX, OUT_KIND, EXACT)


@triton.jit
def _amax_kernel(
    x_ptr, amax_ptr, shift_ptr, S, SEG, NSEG, SLICE, D, CHUNK: tl.constexpr, HAS_SHIFT: tl.constexpr
):  # fmt: skip
    seg = tl.program_id(0)
    start, length = _segment(seg, S, SEG, NSEG)
    cols = tl.program_id(1) * CHUNK + tl.arange(0, CHUNK)
    mask = cols < length
    x = _load_shifted(x_ptr, shift_ptr, start + cols, mask, SLICE, D, HAS_SHIFT)
    tl.atomic_max(amax_ptr + seg, tl.max(finite_abs(x), axis=0))  # >= 0: float max is exact and order-free


@triton.jit
def _quantize_chunk_kernel(
    x_ptr, q_ptr, amax_ptr, scale_ptr, shift_ptr, S, SEG, NSEG, SLICE, D,
    CHUNK: tl.constexpr, QMAX: tl.constexpr, OUT_KIND: tl.constexpr, HAS_SHIFT: tl.constexpr, EXACT: tl.constexpr,
):  # fmt: skip
    seg = tl.program_id(0)
    start, length = _segment(seg, S, SEG, NSEG)
    amax = tl.load(amax_ptr + seg)
    scale = tl.math.div_rn(amax, tl.zeros_like(amax) + QMAX)  # both operands fp32 tensors, as div_rn expects
    scale = tl.where(scale == 0.0, 1.0, scale)
    if tl.program_id(1) == 0:
        tl.store(scale_ptr + seg, scale)
    cols = tl.program_id(1) * CHUNK + tl.arange(0, CHUNK)
    mask = cols < length
    x = _load_shifted(x_ptr, shift_ptr, start + cols, mask, SLICE, D, HAS_SHIFT)
    _round_store(q_ptr, start + cols, mask, x, scale, QMAX, OUT_KIND, EXACT)


def _layout(shape: torch.Size, granularity: str, block_size: int) -> tuple[int, int]:
    """``(S, SEG)``: elements per slice and per group (see the module docstring)."""
    if granularity == "tensor":
        n = shape.numel()
        return n, n
    _, _, L, D = shape
    seg = {"head": L * D, "token": D, "block": block_size * D}[granularity]
    return L * D, min(seg, L * D)


class _Plan(NamedTuple):
    amax: PlanLaunch | None  # the chunked amax launch of large groups; None when one pass does it all
    quantize: PlanLaunch


@functools.lru_cache(maxsize=512)
def _launch_plan(n_total: int, S: int, SEG: int, nseg: int, slice_ld: int, D: int, kind: int, has_shift: bool):
    common = dict(QMAX=QMAX_OF_KIND[kind], OUT_KIND=kind, HAS_SHIFT=has_shift, EXACT=triton_interpreting())
    if SEG <= _MAX_SINGLE_PASS:
        seg_p2 = triton.next_power_of_2(SEG)
        rows = max(1, min(64, 4096 // seg_p2))  # ~4096 elements per program: short groups share one
        num_warps = 4 if rows * seg_p2 <= 4096 else 8 if seg_p2 <= 8192 else 16
        meta = dict(ROWS=rows, SEG_P2=seg_p2, num_warps=num_warps, **common)
        return _Plan(None, PlanLaunch(_quantize_single_pass_kernel, (triton.cdiv(n_total, rows),), meta))
    grid = (n_total, triton.cdiv(SEG, _CHUNK))
    amax = PlanLaunch(_amax_kernel, grid, dict(CHUNK=_CHUNK, HAS_SHIFT=has_shift, num_warps=8))
    return _Plan(amax, PlanLaunch(_quantize_chunk_kernel, grid, dict(CHUNK=_CHUNK, num_warps=8, **common)))


def quantize_groups_triton(
    x: torch.Tensor,
    granularity: str,
    block_size: int,
    out_dtype: torch.dtype,
    shift: torch.Tensor | None,
    native_e4m3: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the fused kernel(s); arguments are already validated by the op. ``out_dtype``: fp8 or int8.
    ``native_e4m3=False`` builds e4m3fn codes with integer operations (the same bits), for GPUs before sm_89."""
    kind = _E4M3_CODES if out_dtype == torch.float8_e4m3fn and not native_e4m3 else OUT_KINDS[out_dtype]
    xc = x.contiguous()
    q = torch.empty(x.shape, dtype=torch.uint8 if kind == _E4M3_CODES else out_dtype, device=x.device)
    scale = torch.empty(scale_shape(x.shape, granularity, block_size), dtype=torch.float32, device=x.device)
    S, SEG = _layout(x.shape, granularity, block_size)
    nseg = -(-S // SEG)
    n_total = (x.numel() // S) * nseg
    D = x.shape[-1]
    slice_ld = x.shape[2] * x.shape[3] if x.dim() == 4 else S  # the shift's (b, h) period in elements
    has_shift = shift is not None
    shift_arg = shift.contiguous() if has_shift else scale  # never read when HAS_SHIFT is false
    plan = cached_plan(_launch_plan, n_total, S, SEG, nseg, slice_ld, D, kind, has_shift)
    if plan.amax is None:
        plan.quantize(xc, q, scale, shift_arg, n_total, S, SEG, nseg, slice_ld, D)
    else:
        amax = torch.zeros(n_total, dtype=torch.float32, device=x.device)
        plan.amax(xc, amax, shift_arg, S, SEG, nseg, slice_ld, D)
        plan.quantize(xc, q, amax, scale, shift_arg, S, SEG, nseg, slice_ld, D)
    return (q.view(out_dtype) if kind == _E4M3_CODES else q), scale
