"""What the package's Gluon kernels for Hopper share: the shared-memory layout TMA writes and WGMMA reads, and the
TMA load under the name this Triton version gives it."""

from __future__ import annotations

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import tma

# Triton 3.6 (the GPU machine's) names the TMA load async_copy_global_to_shared; 3.9 renamed it async_load.
tma_load = getattr(tma, "async_load", None) or tma.async_copy_global_to_shared
# A CTA-wide barrier (bar.sync): Triton 3.6's thread_barrier, 3.9's barrier.
cta_barrier = getattr(gl, "thread_barrier", None) or gl.barrier


@gluon.constexpr_function
def smem_layout(row_bytes, bitwidth):
    """The NVMMA shared layout TMA writes and WGMMA reads for rows of ``row_bytes`` bytes."""
    swizzle = 128 if row_bytes % 128 == 0 else (64 if row_bytes % 64 == 0 else 32)
    return gl.NVMMASharedLayout(swizzle_byte_width=swizzle, element_bitwidth=bitwidth, rank=2)
