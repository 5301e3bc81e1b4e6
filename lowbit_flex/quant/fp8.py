"""fp8 (and int8 block) quantization of attention tensors: the fp8 dtypes, their maxima and the inverse of the
quantizers (the quantizers themselves are the ops ``lowbit_flex.quantize_fp8`` / ``quantize_int8_blockwise``).

Granularities and scale shapes (``x`` is ``(B, H, L, D)`` except for ``"tensor"``):
``"tensor"`` → ``()``, ``"head"`` → ``(B, H)``, ``"token"`` → ``(B, H, L)``,
``"block"`` → ``(B, H, ceil(L / block_size))``. Scales are float32, ``amax / fp8_max`` (1.0 for all-zero groups).
"""

from __future__ import annotations

import torch

from lowbit_flex.quant.fpx_format import E4M3FN, E5M2
from lowbit_flex.quant.groups import GRANULARITIES, expand_scale

FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)
# The largest finite values (448, 57344), from the format presets: the one home of these numbers.
FP8_MAX = {torch.float8_e4m3fn: E4M3FN.max_normal, torch.float8_e5m2: E5M2.max_normal}

# The fp8 attention format (``lowbit::fp8_attention``): one q scale per Q_BLOCK query tokens, one k scale per
# K_BLOCK key tokens (also the kernel's online-softmax block, so each key tile has one scalar scale).
Q_BLOCK = 128
K_BLOCK = 128
# The floor of the logit scale q_scale * k_scale * sm_scale * log2(e): float32's smallest normal. Tiny q and k make
# the product underflow to 0, and a masked score (-inf) times 0 would be NaN; at that size every logit is ~0 anyway.
LOGIT_SCALE_FLOOR = 1.1754943508222875e-38
# The floor of P's factor before its e4m3 rounding (p_scale, times the v block's scale in units of the head's
# largest): below 2^-11 every P * factor (P <= 1) rounds to e4m3's zero either way, so the floor changes no code and
# keeps the kernels' exp2(... + log2(factor)) from underflowing in float32 before the row sum has counted it.
P_FACTOR_FLOOR = 2.0**-11


def p_scale(pv_fp16_accum: bool) -> float:
    """The factor P (in [0, 1]) is multiplied by before its e4m3 rounding for the PV MMA: e4m3's maximum, so small
    probabilities keep 3 mantissa bits instead of flushing to subnormals; 1 with fp16 PV accumulation, so that a
    128-term sum of P <= 1 times |v| <= 448 cannot overflow fp16's 65504."""
    return 1.0 if pv_fp16_accum else FP8_MAX[torch.float8_e4m3fn]


def dequantize(
    xq: torch.Tensor,
    scale: torch.Tensor,
    granularity: str = "tensor",
    block_size: int = 128,
    shift: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Inverse of ``quantize_fp8`` / ``quantize_int8_blockwise``: ``xq * scale (+ shift)`` in ``dtype``.

    Computed in float64 then rounded once to ``dtype`` (float64 gives the exact dequantized values)."""
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity: expected one of {GRANULARITIES}, got {granularity!r}")
    x = xq.double() * expand_scale(scale.double(), xq.shape, granularity, block_size)
    if shift is not None:
        x = x + shift.double()
    return x.to(dtype)


__all__ = [
    "FP8_DTYPES", "FP8_MAX", "GRANULARITIES", "K_BLOCK", "LOGIT_SCALE_FLOOR", "P_FACTOR_FLOOR", "Q_BLOCK", "dequantize",
    "p_scale",
]  # fmt: skip
