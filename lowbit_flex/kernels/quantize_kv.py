"""K and V of ``lowbit::lowbit_attention`` quantized in one pass, into the layouts the attention kernel reads.

One program takes ``BLOCKS`` consecutive 128-token blocks of one ``(b, kv head)``. For each block it reads the k
rows once, subtracts the smooth-K shift, takes the block's finite amax, and writes int8/e4m3 codes and one float32
scale; with ``pv="fp8"`` it does the same for v and writes the codes transposed (``(D, Lk)`` per head: Hopper's
fp8 MMA reads both operands K-major, and for P·V that is v with the token axis contiguous).

The smooth-K shift is the mean of the head's first block of keys (finite values only; ``min(Lk, 128)`` tokens), not
of all keys: any vector subtracted from every key shifts each query's logits by a constant and cancels in softmax,
and the first block's mean removes a per-channel offset (what makes K's outlier channels) as well as the full mean,
without a pass over all keys first. Each program recomputes it from the same 128 rows (read from L2 after the
first), which is why a program takes several blocks on long sequences.

The quantized tensors have the strides of block-padded buffers (for v, whose rows are tokens, that keeps every row
16-byte aligned, as TMA needs), but the padding is neither written nor read: the attention kernel masks keys past
``Lk`` (its TMA loads zero-fill them).
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from lowbit_flex.kernels.arch import sm_count, triton_interpreting
from lowbit_flex.kernels.common import PlanLaunch, cached_plan
from lowbit_flex.kernels.quantize_groups import OUT_KINDS, QMAX_OF_KIND, codes_of_scaled, finite_abs
from lowbit_flex.quant.fp8 import K_BLOCK

# Programs per SM the grid aims for: a program streams 2 x 32 KB per block, and a few per SM keep loads in flight.
_PROGRAMS_PER_SM = 4
_MAX_BLOCKS_PER_PROGRAM = 8


@triton.jit
def _quantize_block(x, ok, QMAX: tl.constexpr, KIND: tl.constexpr, EXACT: tl.constexpr):
    """``(codes, scale)`` of one ``(BLOCK, D)`` float32 tile: one scale from the finite amax of the valid rows."""
    x = tl.where(ok, x, 0.0)
    amax = tl.max(tl.max(finite_abs(x), axis=1), axis=0)
    scale = tl.math.div_rn(amax, tl.zeros_like(amax) + QMAX)
    scale = tl.where(scale == 0.0, 1.0, scale)
    inv = tl.math.div_rn(tl.zeros_like(scale) + 1.0, scale)
    return codes_of_scaled(x, x * inv, QMAX, KIND, EXACT), scale


@triton.jit
def _quantize_kv_kernel(
    K, V, K8, V8T, KS, VS, HKV, Lk, L_PAD, NBLK,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    D: tl.constexpr, BLOCK: tl.constexpr, BLOCKS: tl.constexpr, K_KIND: tl.constexpr, K_QMAX: tl.constexpr,
    SMOOTH_K: tl.constexpr, V_FP8: tl.constexpr, V_QMAX: tl.constexpr, EXACT: tl.constexpr,
):  # fmt: skip
    bh = tl.program_id(1)
    b = bh // HKV
    h = bh % HKV
    offs_n = tl.arange(0, BLOCK)
    offs_d = tl.arange(0, D)
    k_base = K + b.to(tl.int64) * stride_kb + h.to(tl.int64) * stride_kh
    v_base = V + b.to(tl.int64) * stride_vb + h.to(tl.int64) * stride_vh
    if SMOOTH_K:
        first = tl.load(
            k_base + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd, mask=offs_n[:, None] < Lk, other=0.0
        ).to(tl.float32)
        first = tl.where(tl.abs(first) < float("inf"), first, 0.0)  # a NaN key must not shift every other key
        n_first = tl.minimum(Lk, BLOCK).to(tl.float32)
        shift = tl.math.div_rn(tl.sum(first, axis=0), tl.zeros((D,), tl.float32) + n_first)
    for i in tl.range(BLOCKS, loop_unroll_factor=1):
        blk = tl.program_id(0) * BLOCKS + i
        if blk < NBLK:
            rows = blk * BLOCK + offs_n
            ok = rows[:, None] < Lk
            k = tl.load(k_base + rows[:, None] * stride_kn + offs_d[None, :] * stride_kd, mask=ok, other=0.0)
            k = k.to(tl.float32)
            if SMOOTH_K:
                k = k - shift[None, :]
            k8, ks = _quantize_block(k, ok, K_QMAX, K_KIND, EXACT)
            out = bh.to(tl.int64) * L_PAD * D + rows[:, None] * D + offs_d[None, :]
            tl.store(K8 + out, k8, mask=ok)
            tl.store(KS + bh * NBLK + blk, ks)
            if V_FP8:
                v = tl.load(v_base + rows[:, None] * stride_vn + offs_d[None, :] * stride_vd, mask=ok, other=0.0)
                v8, vs = _quantize_block(v.to(tl.float32), ok, V_QMAX, 0, EXACT)
                out_t = bh.to(tl.int64) * D * L_PAD + offs_d[None, :] * L_PAD + rows[:, None]
                tl.store(V8T + out_t, v8, mask=ok)
                tl.store(VS + bh * NBLK + blk, vs)


def blocks_per_program(nblk: int, heads: int, sms: int) -> int:
    """Blocks each program takes: the most (up to 8) that still leaves ``_PROGRAMS_PER_SM`` programs per SM, so
    the smooth-K shift is recomputed as rarely as the grid allows."""
    blocks = 1
    while blocks < _MAX_BLOCKS_PER_PROGRAM and triton.cdiv(nblk, 2 * blocks) * heads >= _PROGRAMS_PER_SM * sms:
        blocks *= 2
    return blocks


@functools.lru_cache(maxsize=512)
def _launch_plan(B: int, Hkv: int, Lk: int, D: int, k_kind: int, smooth_k: bool, v_fp8: bool, sms: int, *strides):
    nblk = triton.cdiv(Lk, K_BLOCK)
    blocks = blocks_per_program(nblk, B * Hkv, sms)
    meta = dict(
        D=D, BLOCK=K_BLOCK, BLOCKS=blocks, K_KIND=k_kind, K_QMAX=QMAX_OF_KIND[k_kind], SMOOTH_K=smooth_k,
        V_FP8=v_fp8, V_QMAX=QMAX_OF_KIND[OUT_KINDS[torch.float8_e4m3fn]], EXACT=triton_interpreting(),
        num_warps=16 if D > 64 else 8, num_stages=1,  # one tile in flight: the loop is over few blocks
    )  # fmt: skip
    return PlanLaunch(_quantize_kv_kernel, (triton.cdiv(nblk, blocks), B * Hkv), meta, tensors=6)


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
    launch = cached_plan(
        _launch_plan, B, Hkv, Lk, D, OUT_KINDS[qk_dtype], smooth_k, v_fp8, sm_count(k.device), *k.stride(), *v.stride()
    )
    launch(k, v, k8, v8, ks, vs, Hkv, Lk, l_pad, nblk, *k.stride(), *v.stride())
    return (k8, ks, v8, vs) if v_fp8 else (k8, ks, None, None)
