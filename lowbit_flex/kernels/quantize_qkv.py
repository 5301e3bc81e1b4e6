"""Q, K and V of ``lowbit::lowbit_attention`` quantized in one launch, into the layouts the attention kernel reads.

One program takes one 128-token block of q of one ``(b, head)`` and, on the first head of each GQA group, the same
block of k (and v) of its kv head. It reads a block's rows in chunks (subtracting the smooth-K shift from k) for the
finite amax, then reads them again (from L2) and writes int8/e4m3 codes and one float32 scale; with ``pv="fp8"``
it does the same for v and writes the codes transposed (``(D, Lk)`` per head: Hopper's
fp8 MMA reads both operands K-major, and for P·V that is v with the token axis contiguous). Each byte of q, k and
v comes from HBM once.

Q is quantized here, not inside the attention kernel: measured on the H200 (Triton 3.6, B=4 H=16 L=4096 D=128),
quantizing each q tile in the attention kernel made it 8% slower (int8/fp16: 0.95 -> 1.03 ms), more than this
pass spends on q.

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
from lowbit_flex.quant.fp8 import K_BLOCK, Q_BLOCK

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
    D: tl.constexpr, BLOCK: tl.constexpr, CHUNK: tl.constexpr, ZERO_SCALE_IF_EMPTY: tl.constexpr,
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
    # v: an all-zero block (zero padding) stores scale 0, not 1: the attention kernel takes the head's largest v
    # block scale as P's unit, and a 1 there would push every other block's P towards e4m3's subnormals.
    tl.store(scale_ptr, tl.where(ZERO_SCALE_IF_EMPTY and amax == 0.0, 0.0, scale))
    offs_d = tl.arange(0, D)
    for c in tl.range(0, BLOCK, CHUNK, num_stages=2, loop_unroll_factor=1):
        rows = row0 + c + tl.arange(0, CHUNK)
        x = _load_chunk(src, rows, Lk, stride_n, stride_d, D)
        if SHIFT:
            x = x - shift[None, :]
        out = dst + rows[:, None].to(tl.int64) * dst_stride_n + offs_d[None, :] * dst_stride_d
        tl.store(out, codes_of_scaled(x, x * inv, QMAX, KIND, EXACT), mask=rows[:, None] < Lk)


@triton.jit
def _quantize_qkv_kernel(
    Q, K, V, Q8, K8, V8, QS, KS, VS, H, GROUP, Lq, Lk, L_PAD, NBLK_Q, NBLK_K,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    D: tl.constexpr, BLOCK: tl.constexpr, CHUNK: tl.constexpr, KIND: tl.constexpr, QMAX: tl.constexpr,
    SMOOTH_K: tl.constexpr, V_FP8: tl.constexpr, V_QMAX: tl.constexpr, EXACT: tl.constexpr,
):  # fmt: skip
    """Program ``(blk, b * H + h)``: q block ``blk`` of head ``h``; and, on the first query head of each kv head
    group, k (and v) block ``blk`` of kv head ``h // GROUP``."""
    blk = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    zero = tl.zeros((D,), tl.float32)
    if blk < NBLK_Q:
        q_base = Q + b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh
        _quantize_block(
            q_base, Q8 + bh.to(tl.int64) * Lq * D, QS + bh * NBLK_Q + blk, blk * BLOCK, Lq, stride_qm, stride_qd, D, 1,
            zero, False, QMAX, KIND, EXACT, D, BLOCK, CHUNK, False,
        )  # fmt: skip
    if h % GROUP == 0 and blk < NBLK_K:
        hk = h // GROUP
        bhk = b * (H // GROUP) + hk
        k_base = K + b.to(tl.int64) * stride_kb + hk.to(tl.int64) * stride_kh
        shift = zero
        if SMOOTH_K:
            shift = _first_block_mean(k_base, Lk, stride_kn, stride_kd, D, BLOCK, CHUNK)
        # k8: (Lk, D) rows over L_PAD-row heads; v8: token-major, (D, L_PAD) per head.
        _quantize_block(
            k_base, K8 + bhk.to(tl.int64) * L_PAD * D, KS + bhk * NBLK_K + blk, blk * BLOCK, Lk, stride_kn, stride_kd,
            D, 1, shift, SMOOTH_K, QMAX, KIND, EXACT, D, BLOCK, CHUNK, False,
        )  # fmt: skip
        if V_FP8:
            v_base = V + b.to(tl.int64) * stride_vb + hk.to(tl.int64) * stride_vh
            _quantize_block(
                v_base, V8 + bhk.to(tl.int64) * D * L_PAD, VS + bhk * NBLK_K + blk, blk * BLOCK, Lk, stride_vn,
                stride_vd, 1, L_PAD, zero, False, V_QMAX, 0, EXACT, D, BLOCK, CHUNK, True,
            )  # fmt: skip


@functools.lru_cache(maxsize=512)
def _launch_plan(B: int, H: int, Lq: int, Lk: int, D: int, kind: int, smooth_k: bool, v_fp8: bool, *ints):
    meta = dict(
        D=D, BLOCK=K_BLOCK, CHUNK=max(1, min(K_BLOCK, _CHUNK_ELEMS // D)), KIND=kind, QMAX=QMAX_OF_KIND[kind],
        SMOOTH_K=smooth_k, V_FP8=v_fp8, V_QMAX=QMAX_OF_KIND[OUT_KINDS[torch.float8_e4m3fn]],
        EXACT=triton_interpreting(), num_warps=_NUM_WARPS,
    )  # fmt: skip
    grid = (max(triton.cdiv(Lq, Q_BLOCK), triton.cdiv(Lk, K_BLOCK)), B * H)
    return PlanLaunch(_quantize_qkv_kernel, grid, meta, tensors=9)


def _padded_empty(shape, strides, dtype, device) -> torch.Tensor:
    """``torch.empty_strided``, except on CPU (Triton's interpreter): there the interpreter's copy back of a kernel
    argument fails on an ``empty_strided`` tensor ("cpu" vs "cpu:0" storage), so it gets a view of a plain buffer.
    CUDA takes no view: fake CUDA tensors in a CPU-only build (the compile tests) cannot take one."""
    if device.type == "cuda":
        return torch.empty_strided(shape, strides, dtype=dtype, device=device)
    size = 1 + sum((n - 1) * st for n, st in zip(shape, strides))
    return torch.empty(size, dtype=dtype, device=device).as_strided(shape, strides)


def quantize_qkv_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, qk_dtype: torch.dtype, smooth_k: bool,
                        v_fp8: bool) -> tuple:  # fmt: skip
    """``(q8, q_scale, k8, k_scale, v8, v_scale)`` in the layouts ``lowbit::fp8_attention`` reads: ``q8``
    ``(B, H, Lq, D)`` contiguous and ``k8`` ``(B, Hkv, Lk, D)`` (over block-padded storage) in ``qk_dtype``, scales
    per 128 tokens; with ``v_fp8`` ``v8`` e4m3 ``(B, Hkv, Lk, D)`` with the token axis contiguous (strides of a
    transposed ``(B, Hkv, D, L_pad)`` buffer) and ``v_scale`` per 128-key block, else ``None, None``.
    Arguments are validated by the op."""
    B, H, Lq, D = q.shape
    Hkv, Lk = k.shape[1], k.shape[2]
    D = int(D)
    nblk_q, nblk_k = triton.cdiv(Lq, Q_BLOCK), triton.cdiv(Lk, K_BLOCK)
    l_pad = nblk_k * K_BLOCK
    dev = q.device
    q8 = torch.empty((B, H, Lq, D), dtype=qk_dtype, device=dev)
    qs = torch.empty((B, H, nblk_q), dtype=torch.float32, device=dev)
    # (B, Hkv, Lk, D) tensors with the strides of block-padded buffers (storage up to their last element).
    k8 = _padded_empty((B, Hkv, Lk, D), (Hkv * l_pad * D, l_pad * D, D, 1), qk_dtype, dev)
    ks = torch.empty((B, Hkv, nblk_k), dtype=torch.float32, device=dev)
    if v_fp8:
        v8 = _padded_empty((B, Hkv, Lk, D), (Hkv * D * l_pad, D * l_pad, 1, l_pad), torch.float8_e4m3fn, dev)
        vs = torch.empty((B, Hkv, nblk_k), dtype=torch.float32, device=dev)
    else:
        v8, vs = k8, ks  # placeholders, never written (V_FP8 is false)
    strides = (*q.stride(), *k.stride(), *v.stride())
    launch = cached_plan(_launch_plan, B, H, Lq, Lk, D, OUT_KINDS[qk_dtype], smooth_k, v_fp8, Hkv, *strides)
    launch(q, k, v, q8, k8, v8, qs, ks, vs, H, H // Hkv, Lq, Lk, l_pad, nblk_q, nblk_k, *strides)
    return (q8, qs, k8, ks, v8, vs) if v_fp8 else (q8, qs, k8, ks, None, None)
