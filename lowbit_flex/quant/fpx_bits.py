"""Bit-level encode/decode between float tensors and FPx codes.

A code is the format's bit pattern ``sign | exponent field | mantissa field`` in the low ``fmt.bits`` bits:
``torch.uint8`` for formats of up to 8 bits, ``torch.int16`` (the 16-bit pattern, so negative when the top bit is
set) for 9 to 16 bits. Both directions compute in float64, which holds every float16/bfloat16/float32 value and
every code of formats with ``ebits <= 10`` exactly. These are offline (weight preparation) utilities: they check
their data (NaN that the format cannot encode, codes out of range) and so synchronise with the device.
"""

from __future__ import annotations

import torch

from lowbit_flex._checks import has_values
from lowbit_flex.quant.float_quantize import F64, check_float_input, float_quantize, scale_by_pow2, split_abs
from lowbit_flex.quant.fpx_format import FPxFormat, Specials

_CODE_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def check_format(fmt: object) -> FPxFormat:
    if not isinstance(fmt, FPxFormat):
        raise ValueError(
            f"fmt: expected an FPxFormat (a preset such as lowbit_flex.quant.E4M3FN or FPxFormat(ebits, mbits)), "
            f"got {type(fmt).__name__} {fmt!r}"
        )
    return fmt


def code_dtype(fmt: FPxFormat) -> torch.dtype:
    """``uint8`` for formats of at most 8 bits, else ``int16``."""
    return torch.uint8 if fmt.bits <= 8 else torch.int16


def to_fpx_bits(x: torch.Tensor, fmt: FPxFormat) -> torch.Tensor:
    """Round ``x`` to ``fmt`` (nearest-even, ``fmt.saturate`` on overflow) and return the codes.

    NaN becomes the format's canonical NaN with ``x``'s sign bit (IEEE: top exponent, top mantissa bit set;
    ``NAN_ONLY``: all ones), as ``ml_dtypes`` does. A format without NaN raises ``ValueError`` on NaN input, and
    one without inf raises on values that stay infinite in float64.
    """
    check_float_input("x", x)
    fmt = check_format(fmt)
    q = float_quantize(x.to(torch.float64), fmt)
    nan, inf = torch.isnan(q), torch.isinf(q)
    if not fmt.has_nan and has_values(x) and bool(nan.any()):
        raise ValueError(f"x: contains NaN, which {fmt} cannot encode")
    if not fmt.has_inf and has_values(x) and bool(inf.any()):
        raise ValueError(f"x: contains values beyond float64 that {fmt} cannot encode")
    sig, e = split_abs(q.abs(), F64)
    W, m = F64.mant_bits, fmt.mbits
    normal = e >= fmt.emin
    # On the grid, the bits below the format's quantum are zero, so these shifts are exact.
    mant = torch.where(normal, (sig >> (W - m)) & (2**m - 1), sig >> torch.clamp(W - m + fmt.emin - e, max=63))
    exp_field = torch.where(normal & (sig != 0), e + fmt.bias, 0)
    top_e = 2**fmt.ebits - 1
    exp_field = torch.where(nan | inf, top_e, exp_field)
    nan_mant = 2 ** (m - 1) if fmt.specials is Specials.IEEE and m > 0 else 2**m - 1
    mant = torch.where(inf, 0, torch.where(nan, nan_mant, mant))
    code = (torch.signbit(q).to(torch.int64) << (fmt.bits - 1)) | (exp_field << m) | mant
    if fmt.bits <= 8:
        return code.to(torch.uint8)
    return torch.where(code >= 2**15, code - 2**16, code).to(torch.int16)


def from_fpx_bits(codes: torch.Tensor, fmt: FPxFormat, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Decode ``codes`` (any integer dtype; ``int16`` holds 16-bit patterns) to ``dtype`` values of ``fmt``.

    Exact whenever ``dtype`` can represent the value (always for fp8/fp6/fp4 into float32).
    """
    fmt = check_format(fmt)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype: expected a floating-point dtype (codes decode to NaN and inf too), got {dtype}")
    if not isinstance(codes, torch.Tensor):
        raise TypeError(f"codes: expected a torch.Tensor, got {type(codes).__name__}")
    if codes.dtype not in _CODE_DTYPES:
        raise ValueError(f"codes: expected an integer tensor (uint8/int8/int16/int32/int64), got {codes.dtype}")
    c = codes.to(torch.int64)
    if codes.dtype in (torch.int8, torch.int16) and fmt.bits == codes.dtype.itemsize * 8:
        c = c & (2**fmt.bits - 1)  # a signed container holding a full-width bit pattern
    if has_values(c) and bool(((c < 0) | (c >= 2**fmt.bits)).any()):
        raise ValueError(f"codes: values outside the {fmt.bits}-bit range of {fmt}")
    m = fmt.mbits
    mant = c & (2**m - 1)
    exp_field = (c >> m) & (2**fmt.ebits - 1)
    normal = exp_field > 0
    sig = torch.where(normal, mant | 2**m, mant)
    y = scale_by_pow2(sig, torch.where(normal, exp_field, 1) - fmt.bias - m, F64)
    top_e = exp_field == 2**fmt.ebits - 1
    if fmt.specials is Specials.IEEE:
        y = torch.where(top_e, torch.where(mant == 0, float("inf"), float("nan")), y)
    elif fmt.specials is Specials.NAN_ONLY:
        y = torch.where(top_e & (mant == 2**m - 1), float("nan"), y)
    y = torch.where((c >> (fmt.bits - 1)) == 1, -y, y)
    return y.to(dtype)
