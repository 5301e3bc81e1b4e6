"""Quantized modules and ``quantize_(model, config)``."""

from lowbit_flex.nn.float_weight_only import (
    FP8WeightOnlyConfig,
    FP8WeightOnlyLinear,
    FPxWeightOnlyConfig,
    FPxWeightOnlyLinear,
)
from lowbit_flex.nn.quantize_api import SkipLayer, quantize_, register_quantize_handler
from lowbit_flex.nn.w4a8 import W4A8Config, W4A8Linear

__all__ = [
    "FP8WeightOnlyConfig",
    "FP8WeightOnlyLinear",
    "FPxWeightOnlyConfig",
    "FPxWeightOnlyLinear",
    "SkipLayer",
    "W4A8Config",
    "W4A8Linear",
    "quantize_",
    "register_quantize_handler",
]
