"""Quantization primitives: int8 / int4 / fp8 / FPx (symmetric; no zero-points)."""

from lowbit_flex.ops.quantize_int8_rowwise import quantize_int8_rowwise

__all__ = ["quantize_int8_rowwise"]
