"""Quantization primitives in plain torch: formats, rounding, packing, weight quantizers (symmetric; no zero-points).

The bottom layer of the package: nothing here imports ``ops``, ``kernels`` or anything above them. The fused
activation quantizers are ops (they have CUDA kernels), so they live one layer up and are exported at the top
level: ``lowbit_flex.quantize_int8_rowwise``, ``lowbit_flex.quantize_fp8``, ``lowbit_flex.quantize_int8_blockwise``.
"""

from lowbit_flex.quant.float_quantize import float_quantize
from lowbit_flex.quant.fp8 import FP8_DTYPES, FP8_MAX, dequantize
from lowbit_flex.quant.fpx_bits import from_fpx_bits, to_fpx_bits
from lowbit_flex.quant.fpx_format import E2M1_FN, E2M3_FN, E3M2_FN, E4M3FN, E5M2, PRESETS, FPxFormat, Specials
from lowbit_flex.quant.fpx_pack import pack_fpx, unpack_fpx
from lowbit_flex.quant.fpx_tiles import pack_fpx_tiles, tile_words_per_row, unpack_fpx_tiles
from lowbit_flex.quant.fpx_weight import quantize_fpx_weight
from lowbit_flex.quant.int4 import (
    group_mult_scales,
    pack_int4,
    quantize_int4_weight,
    quantize_int4_weight_group_mult,
    unpack_int4,
)

__all__ = [
    "E2M1_FN", "E2M3_FN", "E3M2_FN", "E4M3FN", "E5M2", "FP8_DTYPES", "FP8_MAX", "PRESETS", "FPxFormat", "Specials",
    "dequantize", "float_quantize", "from_fpx_bits", "group_mult_scales", "pack_fpx", "pack_fpx_tiles", "pack_int4",
    "quantize_fpx_weight", "quantize_int4_weight", "quantize_int4_weight_group_mult", "tile_words_per_row",
    "to_fpx_bits", "unpack_fpx", "unpack_fpx_tiles", "unpack_int4",
]  # fmt: skip

# Names that moved to the top level when the package's layers were made to import one way (quant/ sits below the
# ops that implement these): a clear error instead of a bare AttributeError.
_MOVED = ("quantize_int8_rowwise", "quantize_fp8", "quantize_int8_blockwise")


def __getattr__(name: str):
    if name in _MOVED:
        raise AttributeError(f"lowbit_flex.quant.{name} moved to lowbit_flex.{name} (the same op)")
    raise AttributeError(f"module 'lowbit_flex.quant' has no attribute {name!r}")
