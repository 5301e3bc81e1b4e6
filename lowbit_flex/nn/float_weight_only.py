"""Weight-only linear layers with fp8 (e4m3) or packed fp6/fp4 (MX e3m2, e2m3, e2m1) weights.

``quantize_(model, FP8WeightOnlyConfig())`` / ``quantize_(model, FPxWeightOnlyConfig(3, 2))`` swap each
``nn.Linear`` for a module holding the quantized weight and one float32 scale per output channel; its forward is
one custom op (``lowbit::fp8_weight_only_linear`` / ``lowbit::fpx_weight_only_linear``), so the modules compile
with ``fullgraph=True`` and export with the op in the graph. Activations stay bf16/fp16 (the model's dtype); a
float32 input is computed in bfloat16 and the output cast back. Module casts keep the codes and scales
(:class:`~lowbit_flex.nn._storage.QuantizedModule`); the bias follows them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lowbit_flex._checks import FLOAT_DTYPES
from lowbit_flex.nn._storage import QuantizedModule, half_compute, output_as
from lowbit_flex.nn.quantize_api import SkipLayer, register_quantize_handler
from lowbit_flex.ops.fp8_weight_only_linear import fp8_weight_only_linear_eager
from lowbit_flex.ops.fpx_weight_only_linear import fpx_weight_only_linear_eager, packed_format
from lowbit_flex.quant.fpx_format import E4M3FN
from lowbit_flex.quant.fpx_pack import PACKED_GROUP, unpack_fpx
from lowbit_flex.quant.fpx_tiles import pack_fpx_tiles, tile_words_per_row
from lowbit_flex.quant.fpx_weight import quantize_fpx_weight


@dataclass(frozen=True)
class FP8WeightOnlyConfig:
    """float8_e4m3fn weights (round to nearest even, saturating), per-output-channel float32 scales."""


@dataclass(frozen=True)
class FPxWeightOnlyConfig:
    """Packed MX weights: ``(ebits, mbits)`` = ``(3, 2)`` or ``(2, 3)`` (fp6) or ``(2, 1)`` (fp4)."""

    ebits: int
    mbits: int

    def __post_init__(self) -> None:
        packed_format(self.ebits, self.mbits)  # ValueError naming ebits, mbits


def _bias_buffer(out_features: int, bias: bool, dtype: torch.dtype, device) -> torch.Tensor | None:
    return torch.zeros(out_features, dtype=dtype, device=device) if bias else None


class FP8WeightOnlyLinear(QuantizedModule):
    """``y = x @ (weight * weight_scale[:, None]).T + bias`` with ``weight`` float8_e4m3fn ``(out, in)``,
    ``weight_scale`` float32 ``(out,)``, ``bias`` the float layer's (its dtype; cast to the compute dtype per call
    when they differ)."""

    def __init__(self, in_features, out_features, bias=True, dtype=torch.bfloat16, device=None) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight", torch.zeros(out_features, in_features, device=device).to(torch.float8_e4m3fn))
        self.register_buffer("weight_scale", torch.ones(out_features, dtype=torch.float32, device=device))
        self.register_buffer("bias", _bias_buffer(out_features, bias, dtype, device))

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> FP8WeightOnlyLinear:
        w = linear.weight
        new = cls(linear.in_features, linear.out_features, linear.bias is not None, w.dtype, w.device)
        codes, new.weight_scale = quantize_fpx_weight(w, E4M3FN)
        new.weight = codes.view(torch.float8_e4m3fn)
        if linear.bias is not None:
            new.bias = linear.bias.detach().clone()
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xc, bias = half_compute(x, self.bias)  # the op, minus its dispatcher where that cannot matter
        return output_as(x, fp8_weight_only_linear_eager(xc, self.weight, self.weight_scale, bias))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class FPxWeightOnlyLinear(QuantizedModule):
    """Like :class:`FP8WeightOnlyLinear` with ``weight`` int32 ``(out, tile_words_per_row(in, bits))``: packed MX
    codes in the kernels' tile layout (:func:`lowbit_flex.quant.pack_fpx_tiles`). A state dict saved before that
    layout (uint8 ``(out, in * bits / 8)`` in :func:`~lowbit_flex.quant.pack_fpx` order) is converted on load."""

    def __init__(self, in_features, out_features, ebits, mbits, bias=True, dtype=torch.bfloat16, device=None):
        super().__init__()
        fmt = packed_format(ebits, mbits)
        self.in_features, self.out_features, self.ebits, self.mbits = in_features, out_features, ebits, mbits
        words = tile_words_per_row(in_features, fmt.bits)
        self.register_buffer("weight", torch.zeros(out_features, words, dtype=torch.int32, device=device))
        self.register_buffer("weight_scale", torch.ones(out_features, dtype=torch.float32, device=device))
        self.register_buffer("bias", _bias_buffer(out_features, bias, dtype, device))

    @classmethod
    def from_linear(cls, linear: nn.Linear, ebits: int, mbits: int) -> FPxWeightOnlyLinear:
        w = linear.weight
        new = cls(linear.in_features, linear.out_features, ebits, mbits, linear.bias is not None, w.dtype, w.device)
        fmt = packed_format(ebits, mbits)
        codes, new.weight_scale = quantize_fpx_weight(w, fmt)
        new.weight = pack_fpx_tiles(codes, fmt.bits)
        if linear.bias is not None:
            new.bias = linear.bias.detach().clone()
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xc, bias = half_compute(x, self.bias)
        return output_as(
            x, fpx_weight_only_linear_eager(xc, self.weight, self.weight_scale, self.ebits, self.mbits, bias)
        )

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "weight"
        old = state_dict.get(key)
        bits = 1 + self.ebits + self.mbits
        codes, nbytes = PACKED_GROUP[bits]
        if isinstance(old, torch.Tensor) and old.dtype == torch.uint8 and old.dim() == 2:
            if old.shape[1] * codes != self.in_features * nbytes:
                raise ValueError(
                    f"{key}: a uint8 (pack_fpx order) weight needs {self.in_features * nbytes // codes} bytes per "
                    f"row for in_features={self.in_features}, got shape {tuple(old.shape)}"
                )
            state_dict[key] = pack_fpx_tiles(unpack_fpx(old, bits), bits)  # the pre-0.2 layout, converted exactly
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"format=e{self.ebits}m{self.mbits}"
        )


def _check_linear(linear: nn.Linear) -> None:
    if linear.weight.dtype not in FLOAT_DTYPES:  # float32 models compute in bf16 (see half_compute)
        raise SkipLayer(f"weight dtype {linear.weight.dtype}: expected float16, bfloat16 or float32")


@register_quantize_handler(FP8WeightOnlyConfig)
def _quantize_linear_fp8(linear: nn.Linear, config: FP8WeightOnlyConfig) -> FP8WeightOnlyLinear:
    _check_linear(linear)
    if linear.weight.is_meta:  # empty buffers, for load_state_dict(..., assign=True)
        w = linear.weight
        return FP8WeightOnlyLinear(linear.in_features, linear.out_features, linear.bias is not None, w.dtype, "meta")
    return FP8WeightOnlyLinear.from_linear(linear)


@register_quantize_handler(FPxWeightOnlyConfig)
def _quantize_linear_fpx(linear: nn.Linear, config: FPxWeightOnlyConfig) -> FPxWeightOnlyLinear:
    _check_linear(linear)
    if linear.weight.is_meta:  # empty buffers, for load_state_dict(..., assign=True)
        return FPxWeightOnlyLinear(
            linear.in_features, linear.out_features, config.ebits, config.mbits, linear.bias is not None,
            linear.weight.dtype, "meta",
        )  # fmt: skip
    return FPxWeightOnlyLinear.from_linear(linear, config.ebits, config.mbits)
