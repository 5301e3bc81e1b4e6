import dataclasses
import math

import numpy as np
import pytest
import torch

from lowbit_flex.quant import E4M3FN, E5M2, PRESETS, FPxFormat, Specials, from_fpx_bits, to_fpx_bits
from tests.quant._fpx_reference import (
    assert_same_bits,
    boundary_probes,
    fraction_round,
    ml_dtype,
    random_float32,
    representable,
)


def _ml_codes(x: torch.Tensor, fmt: FPxFormat) -> torch.Tensor:
    with np.errstate(invalid="ignore", over="ignore"):
        return torch.from_numpy(x.numpy().astype(ml_dtype(fmt)).view(np.uint8).copy())


@pytest.mark.parametrize("fmt", PRESETS, ids=str)
def test_decode_every_code_matches_ml_dtypes(fmt):
    codes = torch.arange(2**fmt.bits, dtype=torch.uint8)
    want = torch.from_numpy(codes.numpy().view(ml_dtype(fmt)).astype(np.float32))
    assert_same_bits(from_fpx_bits(codes, fmt), want, codes)
    assert_same_bits(from_fpx_bits(codes, fmt, torch.float64), want.double(), codes)


@pytest.mark.parametrize("fmt", PRESETS, ids=str)
def test_encode_matches_ml_dtypes_codes(fmt):
    # Non-saturating where the format overflows to inf/NaN (ml_dtypes' convention); MX formats saturate there too.
    fmt = dataclasses.replace(fmt, saturate=not (fmt.has_inf or fmt.has_nan))
    x = torch.cat([boundary_probes(representable(fmt), fmt.max_normal), random_float32(100_000)])
    if not fmt.has_nan:
        x = x[~torch.isnan(x)]
    codes = to_fpx_bits(x, fmt)
    assert codes.dtype == torch.uint8
    want = _ml_codes(x, fmt)
    # NaN payloads: ml_dtypes keeps some mantissa bits of a float32 NaN; we write the canonical NaN (with x's sign).
    nan = torch.isnan(x)
    assert torch.equal(codes[~nan], want[~nan])
    assert bool(torch.isnan(from_fpx_bits(codes[nan], fmt)).all())
    assert torch.equal(codes[nan] >> (fmt.bits - 1), torch.signbit(x[nan]).to(torch.uint8))


@pytest.mark.parametrize("fmt", [*PRESETS, FPxFormat(5, 10), FPxFormat(8, 7), FPxFormat(6, 5, specials=Specials.NONE)],
                         ids=str)  # fmt: skip
def test_every_code_round_trips(fmt):
    fmt = dataclasses.replace(fmt, saturate=not (fmt.has_inf or fmt.has_nan))
    codes = torch.arange(2**fmt.bits, dtype=torch.int64)
    vals = from_fpx_bits(codes, fmt, torch.float64)
    keep = ~torch.isnan(vals)
    back = to_fpx_bits(vals[keep], fmt).to(torch.int64) & (2**fmt.bits - 1)
    assert torch.equal(back, codes[keep])
    assert back.dtype == torch.int64 and to_fpx_bits(vals[:1], fmt).dtype == (
        torch.uint8 if fmt.bits <= 8 else torch.int16
    )


def test_sixteen_bit_codes_match_fp16_and_bf16_patterns():
    x = random_float32(50_000)
    x = x[~torch.isnan(x)]
    for fmt, dtype in (
        (FPxFormat(5, 10, saturate=False), torch.float16),
        (FPxFormat(8, 7, saturate=False), torch.bfloat16),
    ):
        assert torch.equal(to_fpx_bits(x, fmt), x.to(dtype).view(torch.int16))
        assert_same_bits(from_fpx_bits(x.to(dtype).view(torch.int16), fmt), x.to(dtype).float(), x)


def test_custom_format_encode_decode_against_rational_rounding():
    fmt = FPxFormat(3, 4, bias=5, specials=Specials.NAN_ONLY)
    x = random_float32(5000)
    want = torch.tensor([fraction_round(v, fmt, True) for v in x.tolist()])
    assert_same_bits(from_fpx_bits(to_fpx_bits(x, fmt), fmt), want, x)


def test_signed_zero_and_specials():
    x = torch.tensor([0.0, -0.0, math.inf, -math.inf])
    assert to_fpx_bits(x, dataclasses.replace(E5M2, saturate=False)).tolist() == [0x00, 0x80, 0x7C, 0xFC]
    assert to_fpx_bits(x, E4M3FN).tolist() == [0x00, 0x80, 0x7E, 0xFE]  # saturating: ±448


@pytest.mark.parametrize("call, exc, match", [
    (lambda: to_fpx_bits(torch.tensor([math.nan]), PRESETS[2]), ValueError, "x: contains NaN"),
    (lambda: to_fpx_bits(torch.tensor([1], dtype=torch.int32), E4M3FN), ValueError, "x: expected a float"),
    (lambda: to_fpx_bits(torch.tensor([1.0]), (4, 3)), ValueError, "fmt: expected an FPxFormat"),
    (lambda: from_fpx_bits(torch.tensor([1.0]), E4M3FN), ValueError, "codes: expected an integer tensor"),
    (lambda: from_fpx_bits(torch.tensor([16], dtype=torch.uint8), PRESETS[4]), ValueError, "codes: values outside"),
    (lambda: from_fpx_bits([1], E4M3FN), TypeError, "codes: expected a torch.Tensor"),
])  # fmt: skip
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
