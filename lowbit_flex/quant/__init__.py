"""Quantization primitives: int8 / int4 / fp8 / FPx (symmetric; no zero-points)."""

from lowbit_flex.ops.quantize_int8_rowwise import quantize_int8_rowwise
from lowbit_flex.quant.float_quantize import float_quantize
from lowbit_flex.quant.fp8 import dequantize, quantize_fp8, quantize_int8_blockwise
from lowbit_flex.quant.fpx_bits import from_fpx_bits, to_fpx_bits
from lowbit_flex.quant.fpx_format import E2M1_FN, E2M3_FN, E3M2_FN, E4M3FN, E5M2, PRESETS, FPxFormat, Specials
from lowbit_flex.quant.fpx_pack import pack_fpx, unpack_fpx
from lowbit_flex.quant.fpx_weight import quantize_fpx_weight
from lowbit_flex.quant.int4 import pack_int4, quantize_int4_weight, unpack_int4

__all__ = [
    "E2M1_FN", "E2M3_FN", "E3M2_FN", "E4M3FN", "E5M2", "PRESETS", "FPxFormat", "Specials",
    "dequantize", "float_quantize", "from_fpx_bits", "pack_fpx", "pack_int4", "quantize_fp8",
    "quantize_fpx_weight", "quantize_int4_weight", "quantize_int8_blockwise", "quantize_int8_rowwise",
    "to_fpx_bits", "unpack_fpx", "unpack_int4",
]  # fmt: skip
