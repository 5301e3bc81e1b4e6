"""lowbit_flex: low-bit attention and linear layers that compose with FlexAttention and torch.library.

Importing this package registers the ``torch.ops.lowbit.*`` custom ops (schemas, fake impls, CPU references).
It never initialises CUDA, imports Triton or builds CUDA code: kernels are imported and built on first use.
"""

from lowbit_flex import nn, ops, quant, score_mods
from lowbit_flex._version import __version__
from lowbit_flex.nn import quantize_
from lowbit_flex.nn.w4a8 import W4A8Config

__all__ = ["__version__", "nn", "ops", "quant", "quantize_", "score_mods"]
__all__ += ["W4A8Config"]
