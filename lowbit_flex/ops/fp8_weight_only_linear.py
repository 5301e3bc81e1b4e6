"""``lowbit::fp8_weight_only_linear``: ``x @ (w_fp8 * w_scale[:, None]).T + bias`` with float8_e4m3fn weights.

Per-output-channel float32 scales. The weight stays fp8 in memory; the CUDA kernel dequantizes it in registers,
so a small-M (decode) call moves half the bytes of a bf16 ``torch.mm``.
"""

from __future__ import annotations

import torch

from lowbit_flex._checks import check_same_device, check_tensor, check_weight_only_epilogue


def _check_args(x: torch.Tensor, w_fp8: torch.Tensor, w_scale: torch.Tensor, bias: torch.Tensor | None) -> None:
    check_tensor("w_fp8", w_fp8, dtypes=(torch.float8_e4m3fn,), ndim=2)
    check_weight_only_epilogue(x, "w_fp8", w_fp8.shape[0], w_fp8.shape[1], w_scale, bias)
    check_same_device(x=x, w_fp8=w_fp8)


@torch.library.custom_op("lowbit::fp8_weight_only_linear", mutates_args=())
def fp8_weight_only_linear(
    x: torch.Tensor, w_fp8: torch.Tensor, w_scale: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """``out[..., n] = sum_k x[..., k] * w_fp8[n, k] * w_scale[n] + bias[n]``, in ``x``'s dtype.

    ``x``: bfloat16/float16 ``(..., K)``; ``w_fp8``: float8_e4m3fn ``(N, K)`` (finite codes); ``w_scale``:
    float32 ``(N,)``; ``bias``: ``None`` or ``(N,)`` in ``x``'s dtype. This reference dequantizes exactly in
    float64 (an e4m3 value times a float32 scale is exact there), multiplies in float64 and rounds once to
    ``x``'s dtype; the CUDA kernel accumulates in float32.
    """
    _check_args(x, w_fp8, w_scale, bias)
    out = x.double() @ w_fp8.double().T * w_scale.double()
    if bias is not None:
        out = out + bias.double()
    return out.to(x.dtype)


@fp8_weight_only_linear.register_fake
def _(x, w_fp8, w_scale, bias=None):
    _check_args(x, w_fp8, w_scale, bias)
    return x.new_empty((*x.shape[:-1], w_fp8.shape[0]))


@fp8_weight_only_linear.register_kernel("cuda")
def _(x, w_fp8, w_scale, bias=None):
    _check_args(x, w_fp8, w_scale, bias)
    from lowbit_flex.kernels.float_weight_only_linear import fp8_weight_only_linear_triton

    return fp8_weight_only_linear_triton(x, w_fp8, w_scale, bias)
