"""``lowbit::quantize_int8_blockwise``: symmetric int8 with one scale per block of tokens (the int8-QKᵀ format).

``scale = amax(|x - shift|) / 127`` per block of ``block_size`` tokens of one head (1.0 for an all-zero block) and
``xq = round_half_even((x - shift) / scale)``. With ``shift = k.mean(dim=-2, keepdim=True)`` this is SageAttention's
smooth-K: the per-channel mean of K (where its outlier channels live) is removed before int8 quantization; it adds
the same ``q·mean`` to every score of a query row, which cancels in softmax.

Registered with ``torch.library.triton_op`` (see ``quantize_int8_rowwise``).
"""

from __future__ import annotations

import torch

from lowbit_flex.quant.groups import check_group_args, reference_scaled


def _check_args(x: torch.Tensor, block_size: int, shift: torch.Tensor | None) -> None:
    check_group_args(x, "block", block_size, shift)


@torch.library.triton_op("lowbit::quantize_int8_blockwise", mutates_args=())
def quantize_int8_blockwise(
    x: torch.Tensor, block_size: int = 128, shift: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize ``x`` (float, ``(B, H, L, D)``) to int8 with float32 scales of shape ``(B, H, ceil(L/block_size))``.

    ``shift``: optional ``(B, H, 1, D)`` float32 subtracted first. Returns ``(xq, scale)``, both contiguous;
    ``xq.float()`` times the scale of its block approximates ``x - shift`` with ``|error| <= scale / 2``. Non-finite
    values do not enter the scales; NaN becomes 0 and ±inf ±127 (see :mod:`lowbit_flex.quant.groups`). On CUDA one
    fused Triton kernel (the one behind ``quantize_fp8``); elsewhere this exact reference, matched bit for bit.
    """
    _check_args(x, block_size, shift)
    if x.is_cuda:
        from lowbit_flex.kernels.quantize_groups import quantize_groups_triton

        return quantize_groups_triton(x, "block", block_size, torch.int8, shift)
    y, scale = reference_scaled(x, "block", block_size, shift, 127.0, nonfinite_to_nan=False)
    return torch.round(y).to(torch.int8), scale
