"""``lowbit::fpx_weight_only_linear``: weight-only linear with packed MX fp6 (e3m2, e2m3) or fp4 (e2m1) weights.

The weight is ``(N, K * bits / 8)`` uint8 in the :func:`lowbit_flex.quant.pack_fpx` layout (fp4: two codes per
byte; fp6: four codes per three bytes), with one float32 scale per output channel. The CUDA kernel unpacks and
decodes in registers.
"""

from __future__ import annotations

import torch

from lowbit_flex._checks import check_same_device, check_tensor, check_weight_only_epilogue
from lowbit_flex.quant.fpx_bits import from_fpx_bits
from lowbit_flex.quant.fpx_format import E2M1_FN, E2M3_FN, E3M2_FN, FPxFormat
from lowbit_flex.quant.fpx_pack import PACKED_GROUP, unpack_fpx

# (ebits, mbits) -> format: the OCP MX element types the kernel decodes.
PACKED_FORMATS: dict[tuple[int, int], FPxFormat] = {(f.ebits, f.mbits): f for f in (E3M2_FN, E2M3_FN, E2M1_FN)}


def packed_format(ebits: int, mbits: int) -> FPxFormat:
    fmt = PACKED_FORMATS.get((ebits, mbits))
    if fmt is None:
        known = ", ".join(f"({e}, {m})" for e, m in PACKED_FORMATS)
        raise ValueError(f"ebits, mbits: expected one of {known} (fp6 e3m2/e2m3, fp4 e2m1), got ({ebits}, {mbits})")
    return fmt


def _check_args(x, w_packed, w_scale, ebits, mbits, bias) -> FPxFormat:
    fmt = packed_format(ebits, mbits)
    check_tensor("w_packed", w_packed, dtypes=(torch.uint8,), ndim=2)
    codes, nbytes = PACKED_GROUP[fmt.bits]
    check_tensor("x", x, min_ndim=1)
    k = x.shape[-1]
    if k % codes:
        raise ValueError(f"x: the last dimension ({k}) must be a multiple of {codes} for {fmt.bits}-bit weights")
    if w_packed.shape[1] * codes != k * nbytes:
        raise ValueError(
            f"w_packed: expected {k * nbytes // codes} bytes per row ({k} {fmt.bits}-bit codes), "
            f"got shape {tuple(w_packed.shape)}"
        )
    check_weight_only_epilogue(x, "w_packed", w_packed.shape[0], k, w_scale, bias)
    check_same_device(x=x, w_packed=w_packed)
    return fmt


@torch.library.custom_op("lowbit::fpx_weight_only_linear", mutates_args=())
def fpx_weight_only_linear(
    x: torch.Tensor,
    w_packed: torch.Tensor,
    w_scale: torch.Tensor,
    ebits: int,
    mbits: int,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """``out[..., n] = sum_k x[..., k] * decode(w)[n, k] * w_scale[n] + bias[n]``, in ``x``'s dtype.

    ``x``: bfloat16/float16 ``(..., K)`` (``K`` a multiple of 2 for fp4, 4 for fp6); ``w_packed``: uint8
    ``(N, K * (1 + ebits + mbits) / 8)``; ``(ebits, mbits)`` in ``{(3, 2), (2, 3), (2, 1)}``; ``w_scale``: float32
    ``(N,)``; ``bias``: ``None`` or ``(N,)`` in ``x``'s dtype. This reference decodes exactly to float64,
    multiplies in float64 and rounds once to ``x``'s dtype; the CUDA kernel accumulates in float32.
    """
    fmt = _check_args(x, w_packed, w_scale, ebits, mbits, bias)
    w = from_fpx_bits(unpack_fpx(w_packed, fmt.bits), fmt, torch.float64)
    out = x.double() @ w.T * w_scale.double()
    if bias is not None:
        out = out + bias.double()
    return out.to(x.dtype)


@fpx_weight_only_linear.register_fake
def _(x, w_packed, w_scale, ebits, mbits, bias=None):
    _check_args(x, w_packed, w_scale, ebits, mbits, bias)
    return x.new_empty((*x.shape[:-1], w_packed.shape[0]))


@fpx_weight_only_linear.register_kernel("cuda")
def _(x, w_packed, w_scale, ebits, mbits, bias=None):
    _check_args(x, w_packed, w_scale, ebits, mbits, bias)
    from lowbit_flex.kernels.float_weight_only_linear import fpx_weight_only_linear_triton

    return fpx_weight_only_linear_triton(x, w_packed, w_scale, ebits, mbits, bias)
