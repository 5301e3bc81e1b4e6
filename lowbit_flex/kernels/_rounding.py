"""Round-half-to-even to an integer with two IEEE float32 adds (interpreter-safe: no libdevice call)."""

import triton
import triton.language as tl

# 1.5 * 2**23: in float32, (y + M) - M rounds |y| < 2**22 to the nearest integer, ties to even, exactly as
# torch.round does. Module-level values read by @triton.jit code must be tl.constexpr (a plain float compiles
# under the interpreter but fails on the GPU).
_RNE_MAGIC = tl.constexpr(12582912.0)


@triton.jit
def round_half_even(y):
    """``torch.round(y)`` for float32 ``|y| < 2**22``."""
    return (y + _RNE_MAGIC) - _RNE_MAGIC
