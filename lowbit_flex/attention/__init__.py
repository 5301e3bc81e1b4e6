"""Low-bit attention entry points: ``lowbit_attention`` (the fused fp8/int8 op) and ``fp8_flex_attention``.

Importable without Triton: kernels are imported by the ops' CUDA impls on first use.
"""

from lowbit_flex.attention.fp8_flex import fp8_flex_attention
from lowbit_flex.attention.lowbit_attention import lowbit_attention

__all__ = ["fp8_flex_attention", "lowbit_attention"]
