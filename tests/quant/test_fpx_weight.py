"""``quantize_fpx_weight``: the fast paths (torch's fp8 cast; float32 rounding to the format's quantum for fp6/fp4
and other formats up to 8 bits) give the exact path's codes, ties and subnormals included."""

import pytest
import torch

from lowbit_flex import quant as Q
from lowbit_flex.quant.fpx_bits import from_fpx_bits, to_fpx_bits
from lowbit_flex.quant.fpx_format import FPxFormat, Specials


def _weights(fmt):
    torch.manual_seed(0)
    w = torch.randn(64, 128) * torch.logspace(-4, 3, 64)[:, None]  # rows over seven decades
    w[0, :8] = torch.tensor([448.0, 1e-9, -1e-7, 2.0**-9, 2.0**-10 * 3, 0.0, -0.0, 1e-30])  # subnormals, zeros
    w[1] = 0.0  # an all-zero row: scale 1
    # Every tie of the format: a row whose max is max_normal (scale 1) holding each midpoint of adjacent magnitudes.
    half = 2 ** (fmt.bits - 1)
    mags = from_fpx_bits(torch.arange(half), fmt)
    mags = mags[torch.isfinite(mags)].double()
    mid = ((mags[1:] + mags[:-1]) / 2).float()
    w[2] = 0.0
    w[2, 0] = fmt.max_normal
    w[2, 1 : 1 + mid.numel()] = mid[:127]
    w[3, : mid.numel()] = -mid[:128]
    w[3, -1] = -fmt.max_normal
    return w


@pytest.mark.parametrize("fmt", [Q.E4M3FN, Q.E5M2, Q.E3M2_FN, Q.E2M3_FN, Q.E2M1_FN], ids=str)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_fast_codes_equal_the_exact_bit_path(fmt, dtype):
    w = _weights(fmt).to(dtype)
    codes, scale = Q.quantize_fpx_weight(w, fmt)
    assert codes.dtype == torch.uint8 and scale.dtype == torch.float32
    assert torch.equal(codes, to_fpx_bits(w.float() / scale[:, None], fmt))
    assert float(scale[1]) == 1.0


@pytest.mark.parametrize("fmt", [Q.E4M3FN, Q.E3M2_FN, Q.E2M1_FN], ids=str)
def test_row_blocks_give_the_same_codes(fmt, monkeypatch):
    # Large weights are quantized in row blocks (bounded scratch): any block size gives the one-block result.
    import lowbit_flex.quant.fpx_weight as mod

    w = _weights(fmt).bfloat16()
    whole = Q.quantize_fpx_weight(w, fmt)
    monkeypatch.setattr(mod, "_BLOCK_ELEMS", 3 * 128 + 5)  # 3 rows per block, the last block short
    blocked = Q.quantize_fpx_weight(w, fmt)
    assert torch.equal(blocked[0], whole[0]) and torch.equal(blocked[1], whole[1])


# Formats up to 8 bits beyond the presets: other biases (quanta at float32's smallest normal, its top binade),
# every kind of specials, one and four mantissa bits, and formats the float32 path must leave to the exact one.
_CUSTOM = [
    FPxFormat(4, 3, specials=Specials.IEEE),
    FPxFormat(3, 1, bias=5, specials=Specials.NONE),
    FPxFormat(2, 2, bias=-3, specials=Specials.NONE),
    FPxFormat(5, 2, specials=Specials.NAN_ONLY),
    FPxFormat(1, 4, specials=Specials.NONE),
    FPxFormat(3, 4, bias=123, specials=Specials.IEEE),  # quantum 2^-126: float32's smallest normal
    FPxFormat(3, 4, bias=124, specials=Specials.IEEE),  # quantum 2^-127: exact path
    FPxFormat(4, 0, specials=Specials.NONE),  # no mantissa bit: exact path (the even code is not the even multiple)
    FPxFormat(2, 3, bias=-124, specials=Specials.NONE),  # max 2^127 * 1.875: float32's top binade
]


@pytest.mark.parametrize("fmt", [Q.E3M2_FN, Q.E2M3_FN, Q.E2M1_FN, *_CUSTOM], ids=str)
def test_float32_rounding_equals_the_exact_path_on_every_midpoint(fmt):
    import lowbit_flex.quant.fpx_weight as mod

    half = 2 ** (fmt.bits - 1)
    mags = from_fpx_bits(torch.arange(half), fmt, torch.float64)
    mags = mags[torch.isfinite(mags)]
    top = float(mags.max())
    if not mod._float32_grid(fmt):  # the formats float32 cannot hold: quantize_fpx_weight's exact path
        assert fmt.mbits == 0 or not -126 <= fmt.emin - fmt.mbits <= 127
        w = torch.cat([mags, (mags[1:] + mags[:-1]) / 2]).view(1, -1)
        codes, scale = Q.quantize_fpx_weight(w, fmt)
        assert torch.equal(codes, to_fpx_bits(w.float() / scale[:, None], fmt))
        return
    # Every magnitude and midpoint (the ties), their float32 neighbours on both sides, random values, both signs
    # (-0.0 included), and values just past max_normal (saturated).
    points = torch.cat([mags, (mags[1:] + mags[:-1]) / 2]).float()
    up, down = torch.nextafter(points, torch.tensor(float("inf"))), torch.nextafter(points, torch.tensor(0.0))
    y = torch.cat([points, up, down, torch.rand(20000, generator=torch.Generator().manual_seed(3)) * top])
    y = torch.cat([y, -y, torch.tensor([0.0, -0.0, top * (1 + 2.0**-20), -top * (1 + 2.0**-20)])])
    assert torch.equal(mod._nearest_codes(y, fmt), to_fpx_bits(y, fmt))


def test_formats_float32_cannot_round_take_the_exact_path():
    import lowbit_flex.quant.fpx_weight as mod

    assert all(mod._float32_grid(f) for f in (Q.E3M2_FN, Q.E2M3_FN, Q.E2M1_FN, Q.E4M3FN, Q.E5M2))
    no_mantissa, tiny, huge = FPxFormat(4, 0), FPxFormat(3, 4, bias=124), FPxFormat(2, 1, bias=-130)
    assert not any(mod._float32_grid(f) for f in (no_mantissa, tiny, huge))  # 2^-127 and 2^130 quanta
    assert not mod._float32_grid(FPxFormat(5, 5))  # 11 bits: int16 codes


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("where", [(0, 0), (3, 77), (6, 127)])
def test_any_non_finite_element_is_rejected(bad, dtype, where):
    # The check reads the rows' amax: one NaN or inf anywhere, next to larger finite values, still makes it fail.
    w = (torch.randn(7, 128) * 100).to(dtype)
    w[where] = bad
    with pytest.raises(ValueError, match=r"^w: contains NaN or inf"):
        Q.quantize_fpx_weight(w, Q.E2M1_FN)
    with pytest.raises(ValueError, match=r"^w: contains NaN or inf"):
        Q.quantize_fpx_weight(w, Q.E4M3FN)
