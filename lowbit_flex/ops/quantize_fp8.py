"""``lowbit::quantize_fp8``: saturating fp8 (e4m3fn / e5m2) quantization with tensor, head, token or block scales.

``scale = amax(|x - shift|) / fp8_max`` per group (1.0 for an all-zero group) and
``x_fp8 = cast_rne(clamp((x - shift) / scale, -fp8_max, fp8_max))``. The clamp before the cast is what makes it
saturating: ``float8_e4m3fn`` has no infinity, and a value above 448 would otherwise become NaN. Groups and scale
shapes are listed in :mod:`lowbit_flex.quant.groups`; the maxima come from :data:`lowbit_flex.quant.fp8.FP8_MAX`.

Registered with ``torch.library.triton_op`` (see ``quantize_int8_rowwise``): compiled graphs launch the Triton
kernels from generated code, and the body, traced with fake tensors, is the fake impl.
"""

from __future__ import annotations

import torch

from lowbit_flex.kernels.arch import has_fp8_mma
from lowbit_flex.quant.fp8 import FP8_DTYPES, FP8_MAX
from lowbit_flex.quant.groups import check_group_args, reference_scaled


def _check_args(
    x: torch.Tensor, granularity: str, block_size: int, fp8_dtype: torch.dtype, shift: torch.Tensor | None
) -> None:
    check_group_args(x, granularity, block_size, shift)
    if fp8_dtype not in FP8_DTYPES:
        raise TypeError(f"fp8_dtype: expected torch.float8_e4m3fn or torch.float8_e5m2, got {fp8_dtype}")


@torch.library.triton_op("lowbit::quantize_fp8", mutates_args=())
def quantize_fp8(
    x: torch.Tensor,
    granularity: str = "tensor",
    block_size: int = 128,
    fp8_dtype: torch.dtype = torch.float8_e4m3fn,
    shift: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize ``x`` (float16/bfloat16/float32) to ``fp8_dtype`` with one float32 scale per group.

    Args:
        x: any shape for ``granularity="tensor"``; ``(B, H, L, D)`` otherwise.
        granularity: ``"tensor"`` (scale ``()``), ``"head"`` (``(B, H)``), ``"token"`` (``(B, H, L)``) or
            ``"block"`` (``(B, H, ceil(L / block_size))``: ``block_size`` consecutive tokens of one head).
        block_size: tokens per block (``"block"`` only; the fp8 attention format uses 128).
        fp8_dtype: ``torch.float8_e4m3fn`` (max 448) or ``torch.float8_e5m2`` (max 57344).
        shift: optional ``(B, H, 1, D)`` float32 subtracted before quantizing (smooth-K).

    Returns ``(x_fp8, scale)``, both contiguous, with ``x_fp8.float() * scale`` (scale broadcast over its group,
    see :func:`lowbit_flex.quant.fp8.dequantize`) approximating ``x - shift``. Non-finite values do not enter
    the scales and become NaN (see :mod:`lowbit_flex.quant.groups`). On CUDA one
    fused Triton kernel (two launches when a group is larger than one program: tensor/head scales); elsewhere this
    exact reference, which the kernel matches bit for bit.
    """
    _check_args(x, granularity, block_size, fp8_dtype, shift)
    if x.is_cuda:
        from lowbit_flex.kernels.quantize_groups import quantize_groups_triton

        # Before sm_89 there is no e4m3 conversion instruction (Triton, and Inductor's generated casts, fail to
        # compile there): the kernel then builds the e4m3fn codes with integer operations, bit-identical.
        native_e4m3 = fp8_dtype != torch.float8_e4m3fn or has_fp8_mma(x.device)
        return quantize_groups_triton(x, granularity, block_size, fp8_dtype, shift, native_e4m3=native_e4m3)
    y, scale = reference_scaled(x, granularity, block_size, shift, FP8_MAX[fp8_dtype], nonfinite_to_nan=True)
    return y.to(fp8_dtype), scale  # torch's float32 -> fp8 cast rounds to nearest even
