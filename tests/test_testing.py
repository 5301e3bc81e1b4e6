"""The shared checking helpers of ``lowbit_flex.testing`` that kernels' tests and sanitizer drivers rely on."""

import pytest
import torch

from lowbit_flex.testing import w4a8_rounding_misses


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_rounding_misses_accepts_one_rounding_of_fresh_values(dtype):
    # values over many decades, float16's subnormals included (below 6.1e-5 it rounds in absolute steps of 2**-24)
    exact = torch.randn(4096, dtype=torch.float64) * 10 ** (torch.rand(4096, dtype=torch.float64) * 12 - 9)
    out = exact.to(dtype)
    assert w4a8_rounding_misses(out, exact, torch.zeros_like(exact), 0) == 0


def test_rounding_misses_float16_subnormal_from_the_sanitizer():
    """The value that failed run 54's group-multiplier sanitizer with a purely relative bound: a float16 subnormal."""
    exact = torch.tensor([3.2693980157541156e-06], dtype=torch.float64)
    out = exact.to(torch.float16)
    assert float(out) == 3.2782554626464844e-06  # 0.27 % off: more than half an ulp of a normal float16
    assert w4a8_rounding_misses(out, exact, torch.zeros_like(exact), 0) == 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_rounding_misses_counts_two_ulps_off_and_nan(dtype):
    exact = torch.randn(64, dtype=torch.float64) + 3.0
    out = exact.to(dtype)
    bumped = out.clone()
    bumped[5] = out[5] + (out[5].abs() * torch.finfo(dtype).eps * 2).to(dtype)  # two ulps off
    bumped[9] = float("nan")
    zeros = torch.zeros_like(exact)
    assert w4a8_rounding_misses(bumped, exact, zeros, 0) == 2
    # float32 roundings of the magnitude widen the bound: 2**20 of them cover a 2-ulp step at this magnitude
    assert w4a8_rounding_misses(bumped, exact, exact.abs(), 2**20) == 1  # the NaN still counts
