"""Every quantization config the module tests run through (one of each kind and scale granularity)."""

from lowbit_flex.nn import FP8WeightOnlyConfig, FPxWeightOnlyConfig, W4A8Config

CONFIGS = [
    W4A8Config(),
    W4A8Config(group_size=32),
    W4A8Config(group_size=32, group_multipliers=True),  # two more buffers: the multipliers and the channel scale
    FP8WeightOnlyConfig(),
    FPxWeightOnlyConfig(3, 2),
    FPxWeightOnlyConfig(2, 1),
]
