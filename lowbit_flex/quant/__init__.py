"""Quantization primitives: int8 / int4 / fp8 / FPx (symmetric; no zero-points)."""

from lowbit_flex.ops.quantize_int8_rowwise import quantize_int8_rowwise

__all__ = ["quantize_int8_rowwise"]

from lowbit_flex.quant.fp8 import dequantize, quantize_fp8, quantize_int8_blockwise

__all__ += ["dequantize", "quantize_fp8", "quantize_int8_blockwise"]
