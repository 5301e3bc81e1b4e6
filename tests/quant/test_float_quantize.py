import dataclasses
import math

import pytest
import torch

from lowbit_flex.quant import (
    E2M1_FN,
    E2M3_FN,
    E3M2_FN,
    E4M3FN,
    E5M2,
    PRESETS,
    FPxFormat,
    Specials,
    float_quantize,
    from_fpx_bits,
)  # fmt: skip
from tests.quant._fpx_reference import (
    assert_same_bits,
    boundary_probes,
    fraction_round,
    ml_round,
    random_float32,
    representable,
)

IEEE_LIKE = [E4M3FN, E5M2]  # ml_dtypes overflows these to NaN / inf
MX = [E3M2_FN, E2M3_FN, E2M1_FN]  # ml_dtypes saturates these


def _probes(fmt: FPxFormat) -> torch.Tensor:
    return torch.cat([boundary_probes(representable(fmt), fmt.max_normal), random_float32(200_000)])


@pytest.mark.parametrize("fmt", IEEE_LIKE, ids=str)
def test_non_saturating_matches_ml_dtypes_bit_exact(fmt):
    x = _probes(fmt)
    assert_same_bits(float_quantize(x, fmt, saturate=False), ml_round(x, fmt), x)


@pytest.mark.parametrize("fmt", IEEE_LIKE, ids=str)
def test_saturating_clamps_where_ml_dtypes_overflows(fmt):
    x = _probes(fmt)
    ref = ml_round(x, fmt)
    overflowed = ~torch.isnan(x) & ~torch.isfinite(ref)  # ml_dtypes: NaN (e4m3fn) or inf (e5m2) from non-NaN x
    assert bool(overflowed.any()) and bool((x[overflowed].abs() > fmt.max_normal).all())
    want = torch.where(overflowed, torch.copysign(torch.tensor(fmt.max_normal), x), ref)
    assert_same_bits(float_quantize(x, fmt, saturate=True), want, x)
    assert_same_bits(float_quantize(x, fmt), want, x)  # the presets saturate by default


@pytest.mark.parametrize("fmt", MX, ids=str)
def test_mx_formats_match_ml_dtypes_and_keep_nan(fmt):
    x = _probes(fmt)
    got = float_quantize(x, fmt)
    finite_in = ~torch.isnan(x)
    assert_same_bits(got[finite_in], ml_round(x[finite_in], fmt), x[finite_in])
    # ml_dtypes turns NaN into a number for these NaN-less formats; the fake-quantized float keeps the NaN.
    assert bool(torch.isnan(got[~finite_in]).all())
    with pytest.raises(ValueError, match="saturate"):
        float_quantize(x, fmt, saturate=False)


def test_signed_zero_inf_nan_and_just_above_max():
    for fmt in PRESETS:
        x = torch.tensor([0.0, -0.0, math.inf, -math.inf, math.nan, fmt.max_normal])
        x = torch.cat([x, torch.nextafter(x[-1:], torch.tensor(math.inf))])
        got = float_quantize(x, fmt)
        assert got[0].item() == 0 and not torch.signbit(got[0]) and torch.signbit(got[1])
        assert got[2].item() == fmt.max_normal and got[3].item() == -fmt.max_normal and math.isnan(got[4])
        assert got[5].item() == fmt.max_normal == got[6].item()
    assert float_quantize(torch.tensor([math.inf]), E5M2, saturate=False).item() == math.inf
    assert math.isnan(float_quantize(torch.tensor([math.inf]), E4M3FN, saturate=False).item())
    assert math.isnan(float_quantize(torch.tensor([465.0]), E4M3FN, saturate=False).item())
    assert float_quantize(torch.tensor([464.0]), E4M3FN, saturate=False).item() == 448  # tie to even, below 480


@pytest.mark.parametrize("fmt, tdtype", [(E4M3FN, torch.float8_e4m3fn), (E5M2, torch.float8_e5m2)], ids=str)
def test_matches_torch_float8_casts_inside_range(fmt, tdtype):
    x = _probes(fmt)
    x = x[torch.isfinite(x) & (x.abs() <= fmt.max_normal)]
    assert_same_bits(float_quantize(x, fmt), x.to(tdtype).float(), x)


@pytest.mark.parametrize("fmt", PRESETS, ids=str)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_input_dtypes(fmt, dtype):
    x32 = _probes(fmt)
    x = x32.to(dtype)
    got = float_quantize(x, fmt)
    assert got.dtype == dtype
    # fp16/bf16 inputs are exact in float32, and the formats' values are exact in fp16/bf16/float64.
    assert_same_bits(got, float_quantize(x.float(), fmt).to(dtype), x)


def test_float64_inputs_round_once_from_float64():
    x = torch.randn(2000, dtype=torch.float64) * torch.exp2(torch.randint(-20, 20, (2000,))).double()
    for fmt in (E4M3FN, E3M2_FN, FPxFormat(11, 4)):
        want = torch.tensor([fraction_round(v, fmt, True) for v in x.tolist()], dtype=torch.float64)
        assert_same_bits(float_quantize(x, fmt), want, x)


@pytest.mark.parametrize("ebits, mbits, to", [(8, 7, torch.bfloat16), (5, 10, torch.float16)])
def test_ieee_formats_match_bf16_and_fp16_casts(ebits, mbits, to):
    x = random_float32(200_000)
    assert_same_bits(float_quantize(x, ebits, mbits, saturate=False), x.to(to).float(), x)


_CUSTOM = [
    FPxFormat(1, 0, specials=Specials.NONE), FPxFormat(3, 0), FPxFormat(1, 2, specials=Specials.NAN_ONLY),
    FPxFormat(6, 9, bias=40), FPxFormat(9, 6), FPxFormat(15, 0), FPxFormat(4, 11, specials=Specials.NONE),
]  # fmt: skip


@pytest.mark.parametrize(
    "fmt, saturate",
    [(f, s) for f in _CUSTOM for s in (True, False) if s or f.has_inf or f.has_nan],  # NONE formats only saturate
    ids=str,
)
def test_custom_formats_match_exact_rational_rounding(fmt, saturate):
    x = random_float32(3000)
    for v in (fmt.min_subnormal, fmt.min_normal, fmt.max_normal):
        if 1e-44 < v < 3e38:
            x = torch.cat([x, torch.tensor([v, v / 2, v * 0.75, v * 1.5, -v])])
    got = float_quantize(x, fmt, saturate=saturate)
    want = torch.tensor([fraction_round(v, fmt, saturate) for v in x.tolist()], dtype=torch.float32)
    assert_same_bits(got, want, x)


@pytest.mark.parametrize(
    "fmt, dtype",
    [(E4M3FN, torch.float32), (E2M1_FN, torch.float32), (FPxFormat(5, 4), torch.float32), (E4M3FN, torch.float64)],
    ids=str,
)
def test_stochastic_rounding_is_unbiased_within_six_sigma(fmt, dtype):
    gen = torch.Generator().manual_seed(torch.seed() % 2**31)
    x = torch.rand(64, generator=gen, dtype=dtype) * fmt.max_normal * 0.98 + fmt.min_subnormal / 7  # below max
    x[:8] = torch.rand(8, generator=gen, dtype=dtype) * fmt.min_normal  # the subnormal range
    x[8:16] *= -1
    n = 4000
    q = float_quantize(x.expand(n, -1), fmt, rounding="stochastic", generator=gen).double()
    assert q.dtype == torch.float64 if dtype == torch.float64 else True
    # The two representable neighbours of each |x|, from the format's full grid (every code decoded).
    codes = torch.arange(2**fmt.bits, dtype=torch.int64)
    grid = torch.unique(from_fpx_bits(codes, fmt, torch.float64).abs().nan_to_num(posinf=0.0))
    a = x.double().abs()
    idx = torch.searchsorted(grid, a)
    hi = grid[idx]
    lo = torch.where(hi == a, hi, grid[idx - 1])
    assert bool(((q.abs() == lo) | (q.abs() == hi)).all())  # only the two neighbours, with x's sign
    assert bool((torch.signbit(q) == torch.signbit(x)).all())
    lo, hi = lo * x.sign(), hi * x.sign()
    p = torch.where(hi == lo, 0.0, (x.double() - lo) / (hi - lo))
    # The mean of n draws of lo + (hi - lo) Bernoulli(p) has std |hi - lo| sqrt(p (1 - p) / n).
    sigma = (hi - lo).abs() * torch.sqrt(p * (1 - p) / n)
    err = (q.mean(0) - x.double()).abs()
    assert bool((err <= 6 * sigma + 1e-9 * x.double().abs()).all()), (err / sigma.clamp_min(1e-300)).max()


def test_stochastic_rounding_is_reproducible():
    x = torch.randn(1000)
    a = float_quantize(x, E4M3FN, rounding="stochastic", seed=123)
    b = float_quantize(x, E4M3FN, rounding="stochastic", generator=torch.Generator().manual_seed(123))
    c = float_quantize(x, E4M3FN, rounding="stochastic", seed=124)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert_same_bits(float_quantize(a, E4M3FN), a, x)  # every draw is on the grid


def test_compiles_to_one_kernel_with_fullgraph():
    from torch._inductor.utils import run_and_get_code

    fn = torch.compile(lambda t: float_quantize(t, E4M3FN, saturate=False), fullgraph=True, dynamic=False)
    x = _probes(E4M3FN)
    out, codes = run_and_get_code(fn, x)
    assert_same_bits(out, ml_round(x, E4M3FN), x)
    n_kernels = sum(code.count("async_compile.cpp_pybinding(") for code in codes)
    assert n_kernels == 1, f"expected one fused kernel, got {n_kernels}"


@pytest.mark.parametrize("call, match", [
    (lambda x: float_quantize(x, 0, 3), "ebits: expected >= 1"),
    (lambda x: float_quantize(x, 4, -1), "mbits: expected >= 0"),
    (lambda x: float_quantize(x, 8, 8), "ebits, mbits: expected 1 \\+ ebits \\+ mbits <= 16"),
    (lambda x: float_quantize(x, 4), "mbits: required"),
    (lambda x: float_quantize(x, E4M3FN, 3), "mbits: must be None"),
    (lambda x: float_quantize(x.to(torch.int32), 4, 3), "x: expected a float16"),
    (lambda x: float_quantize(x, 4, 3, rounding="up"), "rounding: expected one of"),
    (lambda x: float_quantize(x, 4, 3, seed=1), "generator, seed: only used"),
    (lambda x: float_quantize(x, 4, 3, rounding="stochastic", seed=1, generator=torch.Generator()), "seed:"),
    (lambda x: float_quantize(x, E2M1_FN, saturate=False), "saturate:"),
    (lambda x: FPxFormat(1, 0), "ebits: 1 exponent bit"),
    (lambda x: FPxFormat(4, 3, bias=1.5), "bias: expected an int"),
    (lambda x: dataclasses.replace(E3M2_FN, saturate=False), "saturate:"),
])  # fmt: skip
def test_bad_arguments_raise_value_error_naming_them(call, match):
    with pytest.raises(ValueError, match=match):
        call(torch.randn(4))


@pytest.mark.parametrize(
    "ebits, mbits, preset, max_normal",
    [(4, 3, E4M3FN, 448.0), (5, 2, E5M2, 57344.0), (3, 2, E3M2_FN, 28.0), (2, 3, E2M3_FN, 7.5), (2, 1, E2M1_FN, 6.0)],
)
def test_bare_ocp_pairs_mean_the_ocp_formats(ebits, mbits, preset, max_normal):
    x = random_float32(20_000)
    assert_same_bits(float_quantize(x, ebits, mbits), float_quantize(x, preset), x)
    assert float_quantize(torch.tensor([1e9]), ebits, mbits).item() == max_normal  # saturates at the OCP max
    # An explicit specials= keeps the IEEE-style format (top exponent reserved): e4m3 tops out at 240 there.
    if (ebits, mbits) == (4, 3):
        assert float_quantize(torch.tensor([1e9]), 4, 3, specials=Specials.IEEE).item() == 240.0


def test_other_pairs_keep_the_ieee_convention():
    x = random_float32(20_000)
    assert_same_bits(float_quantize(x, 3, 1), float_quantize(x, FPxFormat(3, 1)), x)
    assert float_quantize(torch.tensor([1e9]), 3, 1).item() == 12.0  # 1.5 * 2**(6 - 3): top exponent reserved
