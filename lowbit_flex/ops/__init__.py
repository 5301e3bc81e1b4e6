"""The ``torch.ops.lowbit`` custom ops.

One file per op (``lowbit_flex/ops/<op>.py``) holds its schema (``torch.library.triton_op`` where the CUDA path only
launches Triton kernels, else ``torch.library.custom_op``), the typed Python wrapper with its docstring, the shared
argument checks, the fake impl (a triton_op's body, traced), the exact CPU reference (every device without a
kernel) and the CUDA path, which imports its kernel lazily and dispatches between backends. See
``docs/architecture.md``.
"""

from lowbit_flex.ops import cutlass_gemm  # noqa: F401  (registers the CUTLASS ops)
from lowbit_flex.ops.fp8_attention import fp8_attention
from lowbit_flex.ops.fp8_weight_only_linear import fp8_weight_only_linear
from lowbit_flex.ops.fpx_weight_only_linear import fpx_weight_only_linear
from lowbit_flex.ops.lowbit_attention import lowbit_attention
from lowbit_flex.ops.quantize_fp8 import quantize_fp8
from lowbit_flex.ops.quantize_int8_blockwise import quantize_int8_blockwise
from lowbit_flex.ops.quantize_int8_rowwise import quantize_int8_rowwise
from lowbit_flex.ops.rel_pos_attention import rel_pos_attention
from lowbit_flex.ops.s8s4_linear import s8s4_linear
from lowbit_flex.ops.sam_rel_pos import sam_rel_pos
from lowbit_flex.ops.w4a8_linear import w4a8_linear

__all__ = [
    "fp8_attention",
    "fp8_weight_only_linear",
    "fpx_weight_only_linear",
    "lowbit_attention",
    "quantize_fp8",
    "quantize_int8_blockwise",
    "quantize_int8_rowwise",
    "rel_pos_attention",
    "s8s4_linear",
    "sam_rel_pos",
    "w4a8_linear",
]
