"""``lowbit::quantize_int8_rowwise``: symmetric per-row (per-token) int8 quantization.

``scale = amax(|x|, dim=-1) / 127`` (1.0 for an all-zero row) and ``xq = round_half_even(x / scale)``, so that
``xq * scale`` approximates ``x`` with ``|error| <= scale / 2``. Symmetric only: there is no zero-point.

Registered with ``torch.library.triton_op``: ``torch.compile`` traces the body, so compiled graphs launch the Triton
kernel from generated code; ``torch.export`` keeps the op as one node. The body is also the fake impl (traced with
fake tensors), so the checks run there too.
"""

from __future__ import annotations

import torch

from lowbit_flex._checks import FLOAT_DTYPES, check_tensor


def _check_args(x: torch.Tensor) -> None:
    check_tensor("x", x, dtypes=FLOAT_DTYPES, min_ndim=1)
    if x.shape[-1] == 0:
        raise ValueError(f"x: expected a non-empty last dimension, got shape {tuple(x.shape)}")


@torch.library.triton_op("lowbit::quantize_int8_rowwise", mutates_args=())
def quantize_int8_rowwise(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize ``x`` (float, ``(..., K)``) to int8 with one float32 scale per row.

    Returns ``(xq, scale)``: ``xq`` int8 of ``x``'s shape and ``scale`` float32 of shape ``(..., 1)``, both
    contiguous, so that ``xq.float() * scale`` dequantizes. Inputs must be finite. On CUDA this is one fused Triton
    kernel that reads ``x`` once; elsewhere it is this exact reference, which the kernel matches bit for bit.
    """
    _check_args(x)
    if x.is_cuda:
        from lowbit_flex.kernels.quantize_int8_rowwise import quantize_int8_rowwise_triton

        return quantize_int8_rowwise_triton(x)
    xf = x.float().contiguous()  # contiguous outputs whatever x's strides, as the kernel gives
    scale = xf.abs().amax(dim=-1, keepdim=True) / 127.0
    scale = torch.where(scale == 0, torch.ones_like(scale), scale)
    xq = torch.round(xf / scale).clamp_(-127, 127).to(torch.int8)
    return xq, scale
