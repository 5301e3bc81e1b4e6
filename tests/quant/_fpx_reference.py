"""Independent references for the FPx tests: ml_dtypes casts and an exact Fraction-based rounding."""

from __future__ import annotations

import math
from fractions import Fraction

import ml_dtypes
import numpy as np
import torch

from lowbit_flex.quant import FPxFormat


def ml_dtype(fmt: FPxFormat):
    return getattr(ml_dtypes, fmt.name)


def ml_round(x: torch.Tensor, fmt: FPxFormat) -> torch.Tensor:
    """``x`` (float32) cast to the ml_dtypes type of a preset and back to float32."""
    with np.errstate(invalid="ignore", over="ignore"):  # NaN/overflow casts are what these tests probe
        return torch.from_numpy(x.numpy().astype(ml_dtype(fmt)).astype(np.float32))


def representable(fmt: FPxFormat) -> torch.Tensor:
    """Every finite value of a preset, sorted, from ml_dtypes' decoding of every code."""
    codes = np.arange(2**fmt.bits, dtype=np.uint8)
    vals = torch.from_numpy(codes.view(ml_dtype(fmt)).astype(np.float32))
    return torch.unique(vals[torch.isfinite(vals)])  # sorted; -0 and +0 collapse


def boundary_probes(values: torch.Tensor, top: float) -> torch.Tensor:
    """Every value, every midpoint between neighbours (ties) and the overflow boundary ``top + ulp/2``, each with
    both float32 neighbours, with both signs."""
    v = values.double()
    mids = (v[1:] + v[:-1]) / 2
    over = v[-1] + (v[-1] - v[-2]) / 2  # the tie between max and the first value beyond it
    pts = torch.cat([v, mids, over.view(1)]).float()
    assert torch.equal(pts.double()[: len(v)], v)  # midpoints of these formats are exact in float32
    up = torch.nextafter(pts, torch.full_like(pts, math.inf))
    down = torch.nextafter(pts, torch.full_like(pts, -math.inf))
    probes = torch.cat([pts, up, down, torch.tensor([top * 2, 3.0e38, math.inf, 0.0])])
    return torch.cat([probes, -probes, torch.tensor([math.nan])])


def random_float32(n: int) -> torch.Tensor:
    """Random bit patterns: every exponent (subnormals, inf and NaN included) equally likely."""
    return torch.randint(-(2**31), 2**31 - 1, (n,), dtype=torch.int32).view(torch.float32)


def fraction_round(v: float, fmt: FPxFormat, saturate: bool) -> float:
    """Round-to-nearest-even of ``v`` to ``fmt`` in exact rational arithmetic (a Python float result)."""
    if math.isnan(v):
        return v
    e_max, m_max = fmt._max_code_fields()
    top = Fraction(2**fmt.mbits + m_max, 2**fmt.mbits) * Fraction(2) ** (e_max - fmt.bias)
    if math.isinf(v):
        y = top if saturate else None
    else:
        a = Fraction(abs(v))
        if a == 0:
            return v
        e = max(math.floor(math.log2(a)), fmt.emin)
        while Fraction(2) ** e > a and e > fmt.emin:  # log2 of a Fraction can be off by one near powers of 2
            e -= 1
        while Fraction(2) ** (e + 1) <= a:
            e += 1
        q = Fraction(2) ** (e - fmt.mbits)
        y = round(a / q) * q  # Fraction.__round__ rounds half to even
        if y > top:
            y = top if saturate else None
    if y is None:
        y_f = math.inf if fmt.has_inf else math.nan
    else:
        try:
            y_f = float(y)
        except OverflowError:
            y_f = math.inf
    return math.copysign(y_f, v)


def same_bits(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Elementwise: identical values including the sign of zero, or both NaN."""
    if a.dtype != b.dtype or a.shape != b.shape:
        raise AssertionError(f"{a.dtype}{tuple(a.shape)} vs {b.dtype}{tuple(b.shape)}")
    ints = {torch.float64: torch.int64, torch.float32: torch.int32}.get(a.dtype, torch.int16)
    return (a.view(ints) == b.view(ints)) | (torch.isnan(a) & torch.isnan(b))


def assert_same_bits(got: torch.Tensor, want: torch.Tensor, x: torch.Tensor) -> None:
    ok = same_bits(got, want)
    if not bool(ok.all()):
        i = (~ok).nonzero().flatten()[:5]
        raise AssertionError(f"{int((~ok).sum())} mismatches, e.g. x={x[i].tolist()} got={got[i].tolist()} "
                             f"want={want[i].tolist()}")  # fmt: skip
