"""``quantize_fpx_weight``: the fast paths (torch's fp8 cast; a table lookup for fp6/fp4) give the exact path's
codes, ties and subnormals included."""

import pytest
import torch

from lowbit_flex import quant as Q
from lowbit_flex.quant.fpx_bits import from_fpx_bits, to_fpx_bits


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
