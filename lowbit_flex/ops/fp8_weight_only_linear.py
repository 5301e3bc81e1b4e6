"""``lowbit::fp8_weight_only_linear``: ``x @ (w_fp8 * w_scale[:, None]).T + bias`` with float8_e4m3fn weights.

Per-output-channel float32 scales. The weight stays fp8 in memory; on CUDA the kernel the dispatch table picks by
M (``kernels/float_weight_dispatch.py``) decodes it in registers, so a decode step moves half the bytes of a bf16
``torch.mm``. Registered with ``torch.library.triton_op``: ``torch.compile`` traces into the launch and calls the
Triton kernel from generated code; ``torch.export`` keeps the op as one node. :func:`fp8_weight_only_linear_eager`
is the module fast path (no dispatcher where it cannot matter).
"""

from __future__ import annotations

import torch

from lowbit_flex._checks import check_same_device, check_tensor, check_weight_only_epilogue
from lowbit_flex.ops.eager import needs_dispatcher
from lowbit_flex.ops.float_weight_eager import float_weight_only_eager


def check_args(x, w_fp8, w_scale, bias, *, w_name: str = "w_fp8") -> None:
    """The op's argument checks (``w_name``: the weight's argument name in messages; ``lowbit::float_weight_gemv_cuda``
    shares them)."""
    check_tensor(w_name, w_fp8, dtypes=(torch.float8_e4m3fn,), ndim=2)
    check_weight_only_epilogue(x, w_name, w_fp8.shape[0], w_fp8.shape[1], w_scale, bias)
    check_same_device(x=x, **{w_name: w_fp8})


def _fp8_weight_only_linear(x, w_fp8, w_scale, bias=None):
    check_args(x, w_fp8, w_scale, bias)
    if x.is_cuda:
        from lowbit_flex.kernels.float_weight_dispatch import float_weight_only_linear_cuda

        return float_weight_only_linear_cuda(x, w_fp8, w_scale, bias, 4, 3)
    # The reference: exact in float64 (an e4m3 value times a float32 scale is exact there), one rounding.
    out = x.double() @ w_fp8.double().T * w_scale.double()
    if bias is not None:
        out = out + bias.double()
    return out.to(x.dtype)


@torch.library.triton_op("lowbit::fp8_weight_only_linear", mutates_args=())
def fp8_weight_only_linear(
    x: torch.Tensor, w_fp8: torch.Tensor, w_scale: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """``out[..., n] = sum_k x[..., k] * w_fp8[n, k] * w_scale[n] + bias[n]``, in ``x``'s dtype.

    ``x``: bfloat16/float16 ``(..., K)``; ``w_fp8``: float8_e4m3fn ``(N, K)`` (finite codes); ``w_scale``:
    float32 ``(N,)``; ``bias``: ``None`` or ``(N,)`` in ``x``'s dtype. Off CUDA: the exact float64 product, rounded
    once to ``x``'s dtype. On CUDA: float32 accumulation; at the largest M (``DEQUANT_MM`` rows of the dispatch
    table) the weight is dequantized to ``x``'s dtype first and multiplied by cuBLAS.
    """
    return _fp8_weight_only_linear(x, w_fp8, w_scale, bias)


def fp8_weight_only_linear_eager(x, w_fp8, w_scale, bias=None) -> torch.Tensor:
    """``torch.ops.lowbit.fp8_weight_only_linear`` minus the dispatcher where it cannot matter
    (:func:`~lowbit_flex.ops.eager.needs_dispatcher`); checks and launches planned once per metadata key
    (:func:`~lowbit_flex.ops.float_weight_eager.float_weight_only_eager`)."""
    if needs_dispatcher(x):
        return torch.ops.lowbit.fp8_weight_only_linear(x, w_fp8, w_scale, bias)
    return float_weight_only_eager(x, w_fp8, w_scale, bias, 4, 3, _eager_check, _eager_body)


def _eager_check(x, w_fp8, w_scale, bias, ebits, mbits) -> None:
    check_args(x, w_fp8, w_scale, bias)


def _eager_body(x, w_fp8, w_scale, bias, ebits, mbits) -> torch.Tensor:
    return _fp8_weight_only_linear(x, w_fp8, w_scale, bias)
