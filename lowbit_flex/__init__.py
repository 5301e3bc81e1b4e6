"""lowbit_flex: low-bit attention and linear layers that compose with FlexAttention and torch.library.

Importing this package registers the ``torch.ops.lowbit.*`` custom ops (schemas, fake impls, CPU references).
It never initialises CUDA, imports Triton or builds CUDA code: kernels are imported and built on first use.

Layers, each importing only the ones below it (``tests/test_layers.py`` enforces it; ``docs/architecture.md``):
``_checks``/``_version`` → ``quant``, ``score_mods`` → ``kernels``, ``cuda_build`` → ``ops`` → ``nn``, ``attention``.
"""

from lowbit_flex import attention, nn, ops, quant, score_mods
from lowbit_flex._version import __version__
from lowbit_flex.nn import W4A8Config, quantize_
from lowbit_flex.ops import quantize_fp8, quantize_int8_blockwise, quantize_int8_rowwise

__all__ = [
    "W4A8Config",
    "__version__",
    "attention",
    "nn",
    "ops",
    "quant",
    "quantize_",
    "quantize_fp8",
    "quantize_int8_blockwise",
    "quantize_int8_rowwise",
    "score_mods",
]
