"""Quantized modules and ``quantize_(model, config)``."""

from lowbit_flex.nn._storage import QuantizedModule
from lowbit_flex.nn.float_weight_only import (
    FP8WeightOnlyConfig,
    FP8WeightOnlyLinear,
    FPxWeightOnlyConfig,
    FPxWeightOnlyLinear,
)
from lowbit_flex.nn.quantize_api import (
    SkipLayer,
    quantize_,
    quantize_linear,
    register_quantize_handler,
    registered_configs,
)
from lowbit_flex.nn.w4a8 import W4A8Config, W4A8Linear

__all__ = [
    "FP8WeightOnlyConfig",
    "FP8WeightOnlyLinear",
    "FPxWeightOnlyConfig",
    "FPxWeightOnlyLinear",
    "QuantizedModule",
    "SkipLayer",
    "W4A8Config",
    "W4A8Linear",
    "quantize_",
    "quantize_linear",
    "register_quantize_handler",
    "registered_configs",
]
