"""Triton pieces every kernel shares: launch configs, the deterministic split-K reduce, the interpreter-safe dot.

Imports Triton at the top, so only kernel modules import it (never an op file at module level).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from torch.library import wrap_triton


@dataclass(frozen=True)
class LaunchConfig:
    """One launch configuration of a tiled kernel: tile sizes and Triton's ``num_warps`` / ``num_stages``.

    ``block_m`` / ``block_n`` tile the output; ``block_k`` is the reduction step in the kernel's own unit (int8
    values for W4A8, packed units for the weight-only kernels; 0 where the kernel derives it from the head dim).
    Kernels with more knobs subclass it; each kernel module keeps its configs in one named table."""

    block_m: int
    block_n: int
    block_k: int
    num_warps: int
    num_stages: int


def largest_pow2_divisor(n: int, cap: int) -> int:
    """The largest power of two ``<= cap`` (a power of two) that divides ``n``: a K block that tiles K (and a scale
    group) exactly, so a kernel needs no K tail."""
    b = cap
    while n % b:
        b //= 2
    return b


@triton.jit
def dot_acc(a, b, acc, UPCAST: tl.constexpr, PRECISION: tl.constexpr = "tf32"):
    """``acc + a @ b`` in float32. ``UPCAST`` is set only under ``TRITON_INTERPRET=1``: Triton's interpreter
    computes bf16 x bf16 ``tl.dot`` wrongly (it multiplies the raw uint16 bits); products of bf16/fp16 values are
    exact in float32, so upcasting first gives the GPU's answer."""
    if UPCAST:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    return tl.dot(a, b, acc, input_precision=PRECISION)


@triton.jit
def _split_k_reduce_kernel(
    part_ptr, scale_ptr, bias_ptr, out_ptr, M, N, stride_om, SPLITS,
    POST_SCALE: tl.constexpr, HAS_SCALE: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < M * N
    m = offs // N
    n = offs % N
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for s in range(SPLITS):  # a fixed order: the result does not depend on scheduling (no atomics)
        acc += tl.load(part_ptr + s * M * N + offs, mask=ok, other=0.0)
    if HAS_SCALE:
        acc = acc * (tl.load(scale_ptr + n, mask=ok, other=0.0) * POST_SCALE)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + n, mask=ok, other=0.0).to(tl.float32)
    tl.store(out_ptr + m * stride_om + n, acc.to(out_ptr.dtype.element_ty), mask=ok)


_REDUCE_BLOCK = 1024


def reduce_split_k(
    partials: torch.Tensor,
    out: torch.Tensor,
    scale: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    post_scale: float = 1.0,
) -> torch.Tensor:
    """``out[m, n] = (Σ_s partials[s, m, n]) · scale[n] · post_scale + bias[n]``, summed in split order.

    ``partials``: float32 ``(splits, M, N)`` contiguous; ``out``: ``(M, N)`` with unit column stride; ``scale``
    float32 ``(N,)`` or None; ``bias`` ``(N,)`` of any float dtype or None. Deterministic: no atomics."""
    splits, M, N = partials.shape
    any_ptr = partials  # a valid pointer for the operands a constexpr switch leaves unread
    wrap_triton(_split_k_reduce_kernel)[(triton.cdiv(M * N, _REDUCE_BLOCK),)](
        partials, any_ptr if scale is None else scale, any_ptr if bias is None else bias, out,
        M, N, out.stride(0), splits,
        POST_SCALE=post_scale, HAS_SCALE=scale is not None, HAS_BIAS=bias is not None, BLOCK=_REDUCE_BLOCK,
        num_warps=4,
    )  # fmt: skip
    return out
