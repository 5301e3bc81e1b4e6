"""``lowbit::quantize_int8_rowwise``: symmetric per-row (per-token) int8 quantization.

``scale = amax(|x|, dim=-1) / 127`` (1.0 for an all-zero row) and ``xq = round_half_even(x / scale)``, so that
``xq * scale`` approximates ``x`` with ``|error| <= scale / 2``. Symmetric only: there is no zero-point.
"""

from __future__ import annotations

import torch

from lowbit_flex._checks import FLOAT_DTYPES, check_tensor


def _check_args(x: torch.Tensor) -> None:
    check_tensor("x", x, dtypes=FLOAT_DTYPES, min_ndim=1)
    if x.shape[-1] == 0:
        raise ValueError(f"x: expected a non-empty last dimension, got shape {tuple(x.shape)}")


@torch.library.custom_op("lowbit::quantize_int8_rowwise", mutates_args=())
def quantize_int8_rowwise(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize ``x`` (float, ``(..., K)``) to int8 with one float32 scale per row.

    Returns ``(xq, scale)``: ``xq`` int8 of ``x``'s shape and ``scale`` float32 of shape ``(..., 1)``, so that
    ``xq.float() * scale`` dequantizes. Inputs must be finite. On CUDA this is one fused Triton kernel that reads
    ``x`` once; elsewhere it is this exact reference, which the kernel matches bit for bit.
    """
    _check_args(x)
    xf = x.float().contiguous()  # contiguous outputs whatever x's strides, as the kernel and the fake give
    scale = xf.abs().amax(dim=-1, keepdim=True) / 127.0
    scale = torch.where(scale == 0, torch.ones_like(scale), scale)
    xq = torch.round(xf / scale).clamp_(-127, 127).to(torch.int8)
    return xq, scale


@quantize_int8_rowwise.register_fake
def _(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    _check_args(x)
    return x.new_empty(x.shape, dtype=torch.int8), x.new_empty((*x.shape[:-1], 1), dtype=torch.float32)


@quantize_int8_rowwise.register_kernel("cuda")
def _(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    _check_args(x)
    from lowbit_flex.kernels.quantize_int8_rowwise import quantize_int8_rowwise_triton

    return quantize_int8_rowwise_triton(x)
