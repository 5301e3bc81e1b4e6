"""fp8 quantization for attention tensors: ``quantize_fp8`` (the ``lowbit::quantize_fp8`` op) and its inverse.

Granularities and scale shapes (``x`` is ``(B, H, L, D)`` except for ``"tensor"``):
``"tensor"`` → ``()``, ``"head"`` → ``(B, H)``, ``"token"`` → ``(B, H, L)``,
``"block"`` → ``(B, H, ceil(L / block_size))``. Scales are float32, ``amax / fp8_max`` (1.0 for all-zero groups).
"""

from __future__ import annotations

import torch

from lowbit_flex.ops._groups import GRANULARITIES, expand_scale
from lowbit_flex.ops.quantize_fp8 import FP8_DTYPES, FP8_MAX, quantize_fp8
from lowbit_flex.ops.quantize_int8_blockwise import quantize_int8_blockwise


def dequantize(
    xq: torch.Tensor,
    scale: torch.Tensor,
    granularity: str = "tensor",
    block_size: int = 128,
    shift: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Inverse of :func:`quantize_fp8` / ``quantize_int8_blockwise``: ``xq * scale (+ shift)`` in ``dtype``.

    Computed in float64 then rounded once to ``dtype`` (float64 gives the exact dequantized values)."""
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity: expected one of {GRANULARITIES}, got {granularity!r}")
    x = xq.double() * expand_scale(scale.double(), xq.shape, granularity, block_size)
    if shift is not None:
        x = x + shift.double()
    return x.to(dtype)


__all__ = ["FP8_DTYPES", "FP8_MAX", "GRANULARITIES", "dequantize", "quantize_fp8", "quantize_int8_blockwise"]
