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
from lowbit_flex.quant.int4 import (
    GROUP_MULT_INT8_MAX,
    check_group_mult_format,
    group_mult_scales,
    quantize_int4_weight,
    quantize_int4_weight_group_mult,
)

_HALF = (torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class W4A8Config:
    """``group_size=None``: one weight scale per output channel; else one per ``group_size`` input channels (a
    multiple of 32, e.g. 128). Activations always get one dynamic scale per token.

    ``group_multipliers=True`` (group-wise only): each group scale is an integer multiple, 1 to 16, of a per-channel
    scale (QServe's progressive group quantization, :func:`~lowbit_flex.quant.quantize_int4_weight_group_mult`).
    Weight error at group 128 is ~3.5 % below float group scales at ``amax / 7`` (per channel: ~34 % above). From
    M = 129 the GEMM multiplies them into the weight as it unpacks it and runs the per-channel main loop, with no
    per-group rescale (``docs/w4a8.md``). Decode kernels read the same scales in float: no cost there."""

    group_size: int | None = None
    group_multipliers: bool = False

    def __post_init__(self) -> None:
        g = self.group_size
        if g is not None and (isinstance(g, bool) or not isinstance(g, int) or g <= 0 or g % K_MULTIPLE):
            raise ValueError(f"group_size: expected None or a positive multiple of {K_MULTIPLE}, got {g!r}")
        if not isinstance(self.group_multipliers, bool):
            raise TypeError(f"group_multipliers: expected a bool, got {self.group_multipliers!r}")
        if self.group_multipliers and g is None:
            raise ValueError("group_multipliers: expected a group_size (the multipliers are group scales)")


class W4A8Linear(QuantizedModule):
    """``y = s8s4_linear(quantize_int8_rowwise(x), int4 weight) + bias``, output in ``x``'s dtype, as one op call
    (``lowbit::w4a8_linear``; eagerly without its dispatcher, see ``w4a8_linear_eager``: at M = 1 one kernel that also
    quantizes ``x``).

    Buffers: ``weight`` int8 ``(out_features, in_features // 2)`` (packed int4, see :mod:`lowbit_flex.quant.int4`),
    ``weight_scale`` float32 ``(out_features,)`` or ``(out_features, in_features // group_size)``, ``bias`` float32
    ``(out_features,)`` or None, all three kept through module casts (the kernels read a float32 bias: another dtype
    would cost a cast per call). With ``group_multipliers``, also ``weight_group_mult`` int8
    ``(in_features // group_size, out_features)`` and ``weight_channel_scale`` float32 ``(out_features,)``, with
    ``weight_scale == weight_channel_scale[:, None] * weight_group_mult.T`` exactly (else both None). float32 inputs
    are computed with a bfloat16 output, then cast back (the op writes fp16/bf16; int4 weight error dominates bf16
    rounding by far).
    """

    storage_buffers = ("weight", "weight_scale", "bias", "weight_group_mult", "weight_channel_scale")

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        group_size: int | None = None,
        device: torch.device | str | None = None,
        group_multipliers: bool = False,
    ) -> None:
        super().__init__()
        W4A8Config(group_size, group_multipliers)  # validates both
        if in_features % K_MULTIPLE or (group_size is not None and in_features % group_size):
            raise ValueError(
                f"in_features: expected a multiple of {K_MULTIPLE} and of group_size={group_size}, got {in_features}"
            )
        self.in_features, self.out_features, self.group_size = in_features, out_features, group_size
        scale_shape = (out_features,) if group_size is None else (out_features, in_features // group_size)
        self.register_buffer("weight", torch.zeros(out_features, in_features // 2, dtype=torch.int8, device=device))
        self.register_buffer("weight_scale", torch.ones(scale_shape, dtype=torch.float32, device=device))
        self.register_buffer("bias", torch.zeros(out_features, dtype=torch.float32, device=device) if bias else None)
        mult_shape = (scale_shape[-1], out_features)
        mult = torch.ones(mult_shape, dtype=torch.int8, device=device) if group_multipliers else None
        channel = torch.ones(out_features, dtype=torch.float32, device=device) if group_multipliers else None
        self.register_buffer("weight_group_mult", mult)
        self.register_buffer("weight_channel_scale", channel)
        if group_multipliers:  # the GEMM multiplies codes in int8: a loaded state must keep the format's invariants
            self.register_load_state_dict_post_hook(_check_loaded_group_mult)

    @property
    def group_multipliers(self) -> bool:
        """Whether the group scales come with their integer multipliers (``W4A8Config.group_multipliers``)."""
        return self.weight_group_mult is not None

    @classmethod
    def from_linear(
        cls, linear: nn.Linear, group_size: int | None = None, group_multipliers: bool = False
    ) -> W4A8Linear:
        w = linear.weight.detach()
        new = cls(linear.in_features, linear.out_features, linear.bias is not None, group_size, device=w.device,
                  group_multipliers=group_multipliers)  # fmt: skip
        if group_multipliers:
            new.weight, channel, mult = quantize_int4_weight_group_mult(w, group_size, GROUP_MULT_INT8_MAX)
            new.weight_scale = group_mult_scales(channel, mult)
            new.weight_channel_scale, new.weight_group_mult = channel, mult.t().contiguous()
        else:
            new.weight, new.weight_scale = quantize_int4_weight(w, group_size)
        if linear.bias is not None:
            new.bias = linear.bias.detach().float().clone()
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = w4a8_linear_eager(  # the op, minus its dispatch cost
            x, self.weight, self.weight_scale, self.bias, None, self.weight_group_mult, self.weight_channel_scale
        )
        return out if x.dtype in _HALF else out.to(x.dtype)  # float32 x: computed with a bf16 output

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"group_size={self.group_size}" + (", group_multipliers=True" if self.group_multipliers else "")
        )


def _check_loaded_group_mult(module: W4A8Linear, incompatible_keys) -> None:
    if not module.weight_group_mult.is_meta:
        check_group_mult_format(module.weight_scale, module.weight_group_mult, module.weight_channel_scale)


@register_quantize_handler(W4A8Config)
def _quantize_linear_w4a8(linear: nn.Linear, config: W4A8Config) -> W4A8Linear:
    K = linear.in_features
    if K % K_MULTIPLE:
        raise SkipLayer(f"in_features={K} is not a multiple of {K_MULTIPLE}")
    if config.group_size is not None and K % config.group_size:
        raise SkipLayer(f"in_features={K} is not a multiple of group_size={config.group_size}")
    if linear.weight.is_meta:  # empty buffers, for load_state_dict(..., assign=True)
        return W4A8Linear(K, linear.out_features, linear.bias is not None, config.group_size, device="meta",
                          group_multipliers=config.group_multipliers)  # fmt: skip
    return W4A8Linear.from_linear(linear, config.group_size, config.group_multipliers)
