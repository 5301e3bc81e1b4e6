"""``quantize_fpx_weight``: the fp8 fast path (torch's cast) gives the exact path's codes."""

import pytest
import torch

from lowbit_flex import quant as Q
from lowbit_flex.quant.fpx_bits import to_fpx_bits


def _weights():
    torch.manual_seed(0)
    w = torch.randn(64, 96) * torch.logspace(-4, 3, 64)[:, None]  # rows over seven decades
    w[0, :8] = torch.tensor([448.0, 1e-9, -1e-7, 2.0**-9, 2.0**-10 * 3, 0.0, -0.0, 1e-30])  # subnormals, zeros
    w[1] = 0.0  # an all-zero row: scale 1
    w[2, 0] = 7.0  # ties in the scaled row: 7 * (k + 0.5) / 8 values
    w[2, 1:9] = torch.arange(8) * 7.0 / 8 + 7.0 / 16
    return w


@pytest.mark.parametrize("fmt", [Q.E4M3FN, Q.E5M2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_fp8_codes_equal_the_exact_bit_path(fmt, dtype):
    w = _weights().to(dtype)
    codes, scale = Q.quantize_fpx_weight(w, fmt)
    assert codes.dtype == torch.uint8 and scale.dtype == torch.float32
    assert torch.equal(codes, to_fpx_bits(w.float() / scale[:, None], fmt))
    assert float(scale[1]) == 1.0
