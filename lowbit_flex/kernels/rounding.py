"""Interpreter-safe rounding in Triton: to integers (ties to even) and onto the fp8 grids, with plain float32 /
int32 arithmetic and no libdevice call or conversion instruction.

Why not the conversion instructions: Triton's interpreter rounds float32 -> fp8 incorrectly near powers of two (e.g.
124.66 -> 64 instead of 128 in e4m3), and float32 -> bfloat16 by truncation, while the GPU conversions
(``cvt.rn.satfinite``, ``cvt.rn.bf16``) are exact RNE. Kernels that
must match the CPU reference bit for bit under ``TRITON_INTERPRET=1`` round with :func:`round_to_fp8_grid` first;
the following ``.to(fp8)`` then only converts an exactly representable value, which the interpreter gets right too.
"""

from __future__ import annotations

import triton
import triton.language as tl

# 1.5 * 2**23: in float32, (y + M) - M rounds |y| < 2**22 to the nearest integer, ties to even, exactly as
# torch.round does. Module-level values read by @triton.jit code must be tl.constexpr (a plain float compiles
# under the interpreter but fails on the GPU).
_RNE_MAGIC = tl.constexpr(12582912.0)


@triton.jit
def round_half_even(y):
    """``torch.round(y)`` for float32 ``|y| < 2**22``."""
    return (y + _RNE_MAGIC) - _RNE_MAGIC


@triton.jit
def round_half_even_to_int8(y):
    """``torch.round(y).to(torch.int8)`` for float32 ``|y| <= 127``, with no float-to-int conversion (F2I runs at a
    quarter of the FP32 rate on sm_80/sm_90): ``y + 1.5 * 2**23`` is a float whose ulp is 1, so its low mantissa bits
    hold ``round(y)`` with ties to even, in two's complement in the low byte."""
    return (y + _RNE_MAGIC).to(tl.int32, bitcast=True).to(tl.int8)


@triton.jit
def round_to_fp8_grid(x, MANT_BITS: tl.constexpr, MIN_NORMAL_EXP: tl.constexpr):
    """``x`` (float32, |x| <= fp8 max) rounded to the nearest fp8 value, ties to even; returns float32."""
    DROP: tl.constexpr = 23 - MANT_BITS
    bits = x.to(tl.int32, bitcast=True)
    sign = bits & -2147483648  # 0x80000000
    mag = bits & 2147483647  # 0x7FFFFFFF: |x| as int
    # Normal range: drop the low mantissa bits with round-half-even (a carry into the exponent is correct).
    normal = (mag + ((1 << (DROP - 1)) - 1) + ((mag >> DROP) & 1)) & ~((1 << DROP) - 1)
    # Subnormal range: a fixed spacing of 2**(MIN_NORMAL_EXP - MANT_BITS). Adding and subtracting 1.5 * 2**23 times
    # that spacing rounds |x| to a multiple of it (ties to even) with IEEE adds.
    MAGIC: tl.constexpr = 1.5 * 2.0 ** (23 + MIN_NORMAL_EXP - MANT_BITS)
    ax = mag.to(tl.float32, bitcast=True)
    sub = ((ax + MAGIC) - MAGIC).to(tl.int32, bitcast=True)
    mag = tl.where(ax < 2.0**MIN_NORMAL_EXP, sub, normal)
    return (mag | sign).to(tl.float32, bitcast=True)


@triton.jit
def round_to_16bit_grid(x, dtype: tl.constexpr):
    """``x`` (float32, finite, within ``dtype``'s range) rounded to the nearest bfloat16 / float16 value, ties to
    even; returns float32. For the interpreter, whose float32 -> bfloat16 cast truncates."""
    if dtype == tl.bfloat16:
        return round_to_fp8_grid(x, 7, -126)
    return round_to_fp8_grid(x, 10, -14)


@triton.jit
def e4m3_code(y):
    """The float8_e4m3fn code (int32, 0..255) of float32 ``y`` already on the e4m3 grid (|y| <= 448), with integer
    operations only: GPUs before sm_89 have no e4m3 conversion, and Triton refuses ``.to(tl.float8e4nv)`` there."""
    bits = y.to(tl.int32, bitcast=True)
    sign = (bits >> 24) & 128  # arithmetic shift: bit 31 lands on bit 7
    mag = bits & 2147483647
    ay = mag.to(tl.float32, bitcast=True)
    normal = (((mag >> 23) - 120) << 3) | ((mag >> 20) & 7)  # exponent bias 127 -> 7, the top 3 mantissa bits
    subnormal = (ay * 512.0).to(tl.int32)  # multiples of 2**-9 below 2**-6: the code is the multiple, exactly
    return tl.where(ay < 0.015625, subnormal, normal) | sign


@triton.jit
def to_e4m3(x, EXACT_ROUND: tl.constexpr):
    """float32 (already within ±448) -> float8_e4m3fn, RNE; ``EXACT_ROUND`` for the interpreter (see above)."""
    if EXACT_ROUND:
        x = round_to_fp8_grid(x, 3, -6)
    return x.to(tl.float8e4nv)
