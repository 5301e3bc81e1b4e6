"""Quantization primitives: int8 / int4 / fp8 / FPx (symmetric; no zero-points)."""

from lowbit_flex.ops.quantize_int8_rowwise import quantize_int8_rowwise
from lowbit_flex.quant.fp8 import dequantize, quantize_fp8, quantize_int8_blockwise
from lowbit_flex.quant.int4 import pack_int4, quantize_int4_weight, unpack_int4

__all__ = [
    "dequantize",
    "pack_int4",
    "quantize_fp8",
    "quantize_int4_weight",
    "quantize_int8_blockwise",
    "quantize_int8_rowwise",
    "unpack_int4",
]
