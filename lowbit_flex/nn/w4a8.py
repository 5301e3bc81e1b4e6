"""W4A8 linear layers: int4 weights (symmetric, per channel or per group) × int8 activations quantized per token
on the fly. ``quantize_(model, W4A8Config())`` swaps every ``nn.Linear`` whose shape the kernels take."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lowbit_flex.nn._storage import QuantizedModule
from lowbit_flex.nn.quantize_api import SkipLayer, register_quantize_handler
from lowbit_flex.ops.s8s4_linear import K_MULTIPLE
from lowbit_flex.ops.w4a8_linear import w4a8_linear_eager
from lowbit_flex.quant.int4 import quantize_int4_weight

_HALF = (torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class W4A8Config:
    """``group_size=None``: one weight scale per output channel; else one per ``group_size`` input channels (a
    multiple of 32, e.g. 128). Activations always get one dynamic scale per token."""

    group_size: int | None = None

    def __post_init__(self) -> None:
        g = self.group_size
        if g is not None and (isinstance(g, bool) or not isinstance(g, int) or g <= 0 or g % K_MULTIPLE):
            raise ValueError(f"group_size: expected None or a positive multiple of {K_MULTIPLE}, got {g!r}")


class W4A8Linear(QuantizedModule):
    """``y = s8s4_linear(quantize_int8_rowwise(x), int4 weight) + bias``, output in ``x``'s dtype, as one op call
    (``lowbit::w4a8_linear``; eagerly without its dispatcher, see ``w4a8_linear_eager``: at M = 1 one kernel that also
    quantizes ``x``).

    Buffers: ``weight`` int8 ``(out_features, in_features // 2)`` (packed int4, see :mod:`lowbit_flex.quant.int4`),
    ``weight_scale`` float32 ``(out_features,)`` or ``(out_features, in_features // group_size)``, ``bias`` float32
    ``(out_features,)`` or None, all three kept through module casts (the kernels read a float32 bias: another dtype
    would cost a cast per call). float32 inputs are computed with a bfloat16 output, then cast back (the op writes
    fp16/bf16; int4 weight error dominates bf16 rounding by far).
    """

    storage_buffers = ("weight", "weight_scale", "bias")

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        group_size: int | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        W4A8Config(group_size)  # validates group_size
        if in_features % K_MULTIPLE or (group_size is not None and in_features % group_size):
            raise ValueError(
                f"in_features: expected a multiple of {K_MULTIPLE} and of group_size={group_size}, got {in_features}"
            )
        self.in_features, self.out_features, self.group_size = in_features, out_features, group_size
        scale_shape = (out_features,) if group_size is None else (out_features, in_features // group_size)
        self.register_buffer("weight", torch.zeros(out_features, in_features // 2, dtype=torch.int8, device=device))
        self.register_buffer("weight_scale", torch.ones(scale_shape, dtype=torch.float32, device=device))
        self.register_buffer("bias", torch.zeros(out_features, dtype=torch.float32, device=device) if bias else None)

    @classmethod
    def from_linear(cls, linear: nn.Linear, group_size: int | None = None) -> W4A8Linear:
        w = linear.weight.detach()
        new = cls(linear.in_features, linear.out_features, linear.bias is not None, group_size, device=w.device)
        new.weight, new.weight_scale = quantize_int4_weight(w, group_size)
        if linear.bias is not None:
            new.bias = linear.bias.detach().float().clone()
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = w4a8_linear_eager(x, self.weight, self.weight_scale, self.bias)  # the op, minus its dispatch cost
        return out if x.dtype in _HALF else out.to(x.dtype)  # float32 x: computed with a bf16 output

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"group_size={self.group_size}"
        )


@register_quantize_handler(W4A8Config)
def _quantize_linear_w4a8(linear: nn.Linear, config: W4A8Config) -> W4A8Linear:
    K = linear.in_features
    if K % K_MULTIPLE:
        raise SkipLayer(f"in_features={K} is not a multiple of {K_MULTIPLE}")
    if config.group_size is not None and K % config.group_size:
        raise SkipLayer(f"in_features={K} is not a multiple of group_size={config.group_size}")
    if linear.weight.is_meta:  # empty buffers, for load_state_dict(..., assign=True)
        return W4A8Linear(K, linear.out_features, linear.bias is not None, config.group_size, device="meta")
    return W4A8Linear.from_linear(linear, config.group_size)
