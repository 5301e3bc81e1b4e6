"""K and V of ``lowbit::lowbit_attention`` quantized in one pass, into the layouts the attention kernel reads.

One program takes one 128-token block of one ``(b, kv head)``. It reads the block's k rows in chunks, subtracting
the smooth-K shift, for the finite amax, then reads them again (from L2) and writes int8/e4m3 codes and one float32
scale; with ``pv="fp8"`` it does the same for v and writes the codes transposed (``(D, Lk)`` per head: Hopper's
fp8 MMA reads both operands K-major, and for P·V that is v with the token axis contiguous). Each byte of k and v
comes from HBM once.

The smooth-K shift is the mean of the head's first block of keys (finite values only; ``min(Lk, 128)`` tokens), not
of all keys: any vector subtracted from every key shifts each query's logits by a constant and cancels in softmax,
and the first block's mean removes a per-channel offset (what makes K's outlier channels) as well as the full mean,
without a pass over all keys first. Each program recomputes it from the same 128 rows (read from L2 after the
first).

The quantized tensors have the strides of block-padded buffers (for v, whose rows are tokens, that keeps every row
16-byte aligned, as TMA needs), but the padding is neither written nor read: the attention kernel masks keys past
``Lk`` (its TMA loads zero-fill them).
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from lowbit_flex.kernels.arch import triton_interpreting
from lowbit_flex.kernels.common import PlanLaunch, cached_plan
from lowbit_flex.kernels.quantize_groups import OUT_KINDS, QMAX_OF_KIND, codes_of_scaled, finite_abs
from lowbit_flex.quant.fp8 import K_BLOCK

# Rows per step: a block is read in chunks of CHUNK_ELEMS / D rows, so a program holds 32 values per thread
# instead of a whole 128-row block (which took 16 warps of 128 registers, one program per SM, one load in flight).
_CHUNK_ELEMS = 4096
_NUM_WARPS = 4


@triton.jit
def _load_chunk(base, rows, Lk, stride_n, stride_d, D: tl.constexpr):
    offs_d = tl.arange(0, D)
    ok = rows[:, None] < Lk
    return tl.load(base + rows[:, None] * stride_n + offs_d[None, :] * stride_d, mask=ok, other=0.0).to(tl.float32)


@triton.jit
def _first_block_mean(k_base, Lk, stride_kn, stride_kd, D: tl.constexpr, BLOCK: tl.constexpr, CHUNK: tl.constexpr):
    """The smooth-K shift: the mean of the finite values of the first ``min(Lk, BLOCK)`` keys, ``(D,)``."""
    total = tl.zeros((D,), tl.float32)
    for c in tl.range(0, BLOCK, CHUNK, num_stages=2, loop_unroll_factor=1):
        x = _load_chunk(k_base, c + tl.arange(0, CHUNK), Lk, stride_kn, stride_kd, D)
        total += tl.sum(tl.where(tl.abs(x) < float("inf"), x, 0.0), axis=0)  # a NaN key must not shift the others
    return tl.math.div_rn(total, tl.zeros((D,), tl.float32) + tl.minimum(Lk, BLOCK).to(tl.float32))


@triton.jit
def _quantize_block(
    src, dst, scale_ptr, row0, Lk, stride_n, stride_d, dst_stride_n, dst_stride_d, shift,
    SHIFT: tl.constexpr, QMAX: tl.constexpr, KIND: tl.constexpr, EXACT: tl.constexpr,
    D: tl.constexpr, BLOCK: tl.constexpr, CHUNK: tl.constexpr,
):  # fmt: skip
    """One block of ``BLOCK`` rows: the finite amax over its valid rows (first pass, from HBM), then the codes
    (second pass, the same rows again, from L2) and its float32 scale."""
    amax = tl.zeros((), tl.float32)
    for c in tl.range(0, BLOCK, CHUNK, num_stages=2, loop_unroll_factor=1):
        rows = row0 + c + tl.arange(0, CHUNK)
        x = _load_chunk(src, rows, Lk, stride_n, stride_d, D)
        if SHIFT:
            x = tl.where(rows[:, None] < Lk, x - shift[None, :], 0.0)
        amax = tl.maximum(amax, tl.max(tl.max(finite_abs(x), axis=1), axis=0))
    scale = tl.math.div_rn(amax, tl.zeros_like(amax) + QMAX)
    scale = tl.where(scale == 0.0, 1.0, scale)
    inv = tl.math.div_rn(tl.zeros_like(scale) + 1.0, scale)
    tl.store(scale_ptr, scale)
    offs_d = tl.arange(0, D)
    for c in tl.range(0, BLOCK, CHUNK, num_stages=2, loop_unroll_factor=1):
        rows = row0 + c + tl.arange(0, CHUNK)
        x = _load_chunk(src, rows, Lk, stride_n, stride_d, D)
        if SHIFT:
            x = x - shift[None, :]
        out = dst + rows[:, None].to(tl.int64) * dst_stride_n + offs_d[None, :] * dst_stride_d
        tl.store(out, codes_of_scaled(x, x * inv, QMAX, KIND, EXACT), mask=rows[:, None] < Lk)


@triton.jit
def _quantize_kv_kernel(
    K, V, K8, V8, KS, VS, HKV, Lk, L_PAD, NBLK,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    D: tl.constexpr, BLOCK: tl.constexpr, CHUNK: tl.constexpr, K_KIND: tl.constexpr, K_QMAX: tl.constexpr,
    SMOOTH_K: tl.constexpr, V_FP8: tl.constexpr, V_QMAX: tl.constexpr, EXACT: tl.constexpr,
):  # fmt: skip
    blk = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // HKV
    h = bh % HKV
    k_base = K + b.to(tl.int64) * stride_kb + h.to(tl.int64) * stride_kh
    shift = tl.zeros((D,), tl.float32)
    if SMOOTH_K:
        shift = _first_block_mean(k_base, Lk, stride_kn, stride_kd, D, BLOCK, CHUNK)
    # k8: (Lk, D) rows over L_PAD-row heads; v8: token-major, (D, L_PAD) per head.
    _quantize_block(
        k_base, K8 + bh.to(tl.int64) * L_PAD * D, KS + bh * NBLK + blk, blk * BLOCK, Lk, stride_kn, stride_kd, D, 1,
        shift, SMOOTH_K, K_QMAX, K_KIND, EXACT, D, BLOCK, CHUNK,
    )  # fmt: skip
    if V_FP8:
        v_base = V + b.to(tl.int64) * stride_vb + h.to(tl.int64) * stride_vh
        _quantize_block(
            v_base, V8 + bh.to(tl.int64) * D * L_PAD, VS + bh * NBLK + blk, blk * BLOCK, Lk, stride_vn, stride_vd,
            1, L_PAD, shift, False, V_QMAX, 0, EXACT, D, BLOCK, CHUNK,
        )  # fmt: skip


@functools.lru_cache(maxsize=512)
def _launch_plan(B: int, Hkv: int, Lk: int, D: int, k_kind: int, smooth_k: bool, v_fp8: bool, *strides):
    meta = dict(
        D=D, BLOCK=K_BLOCK, CHUNK=max(1, min(K_BLOCK, _CHUNK_ELEMS // D)), K_KIND=k_kind,
        K_QMAX=QMAX_OF_KIND[k_kind], SMOOTH_K=smooth_k, V_FP8=v_fp8,
        V_QMAX=QMAX_OF_KIND[OUT_KINDS[torch.float8_e4m3fn]], EXACT=triton_interpreting(), num_warps=_NUM_WARPS,
    )  # fmt: skip
    return PlanLaunch(_quantize_kv_kernel, (triton.cdiv(Lk, K_BLOCK), B * Hkv), meta, tensors=6)


def _padded_empty(shape, strides, dtype, device) -> torch.Tensor:
    """``torch.empty_strided``, except on CPU (Triton's interpreter): there the interpreter's copy back of a kernel
    argument fails on an ``empty_strided`` tensor ("cpu" vs "cpu:0" storage), so it gets a view of a plain buffer.
    CUDA takes no view: fake CUDA tensors in a CPU-only build (the compile tests) cannot take one."""
    if device.type == "cuda":
        return torch.empty_strided(shape, strides, dtype=dtype, device=device)
    size = 1 + sum((n - 1) * st for n, st in zip(shape, strides))
    return torch.empty(size, dtype=dtype, device=device).as_strided(shape, strides)


def quantize_kv_triton(
    k: torch.Tensor, v: torch.Tensor, qk_dtype: torch.dtype, smooth_k: bool, v_fp8: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """``(k8, k_scale, v8, v_scale)``: ``k8`` ``(B, Hkv, Lk, D)`` in ``qk_dtype`` over block-padded storage,
    ``k_scale`` ``(B, Hkv, ceil(Lk / 128))``; with ``v_fp8`` ``v8`` e4m3 ``(B, Hkv, Lk, D)`` with the token axis
    contiguous (strides of a transposed ``(B, Hkv, D, L_pad)`` buffer) and ``v_scale`` per 128-key block, else
    ``None, None``.
    Arguments are validated by the op."""
    B, Hkv, Lk, D = k.shape
    D = int(D)
    nblk = triton.cdiv(Lk, K_BLOCK)
    l_pad = nblk * K_BLOCK
    # (B, Hkv, Lk, D) tensors with the strides of block-padded buffers (storage up to their last element).
    k8 = _padded_empty((B, Hkv, Lk, D), (Hkv * l_pad * D, l_pad * D, D, 1), qk_dtype, k.device)
    ks = torch.empty((B, Hkv, nblk), dtype=torch.float32, device=k.device)
    if v_fp8:
        v8 = _padded_empty((B, Hkv, Lk, D), (Hkv * D * l_pad, D * l_pad, 1, l_pad), torch.float8_e4m3fn, k.device)
        vs = torch.empty((B, Hkv, nblk), dtype=torch.float32, device=k.device)
    else:
        v8, vs = k8, ks  # placeholders, never written (V_FP8 is false)
    launch = cached_plan(_launch_plan, B, Hkv, Lk, D, OUT_KINDS[qk_dtype], smooth_k, v_fp8, *k.stride(), *v.stride())
    launch(k, v, k8, v8, ks, vs, Hkv, Lk, l_pad, nblk, *k.stride(), *v.stride())
    return (k8, ks, v8, vs) if v_fp8 else (k8, ks, None, None)
