"""Q, K and V of ``lowbit::lowbit_attention`` quantized in one launch, into the layouts the attention kernel reads.

One program quantizes one 128-token block of one head of q, k or v (a 1-D task list per batch: q blocks, then k
blocks, then v blocks). It takes the block's finite amax (after subtracting the smooth-K shift from k) and writes
int8/e4m3 codes and one float32 scale, from registers: each block is read once (see ``_NUM_WARPS``). v
(``pv="fp8"``) is written transposed
(``(D, Lk)`` per head: Hopper's fp8 MMA reads both operands K-major, and for P·V that is v with the token axis
contiguous; the transpose goes through shared memory). Each byte of q, k and v comes from HBM once.

Q is quantized here, not inside the attention kernel: measured on the H200 (Triton 3.6, B=4 H=16 L=4096 D=128),
quantizing each q tile in the attention kernel made it 8% slower (int8/fp16: 0.95 -> 1.03 ms), more than this
pass spends on q.

The smooth-K shift is the mean of the head's first block of keys (finite values only; ``min(Lk, 128)`` tokens), not
of all keys: any vector subtracted from every key shifts each query's logits by a constant and cancels in softmax,
and the first block's mean removes a per-channel offset (what makes K's outlier channels) as well as the full mean,
without a pass over all keys first. Each k program recomputes it from the same 128 rows (read from L2 after the
first), after issuing its own block's loads, so the two reads overlap.

The quantized tensors have the strides of block-padded buffers (for v, whose rows are tokens, that keeps every row
16-byte aligned, as TMA needs), but the padding is neither written nor read: the attention kernel masks keys past
``Lk`` (its TMA loads zero-fill them).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from lowbit_flex.kernels.arch import triton_interpreting
from lowbit_flex.kernels.common import PlanLaunch, StreamScratch, cached_plan
from lowbit_flex.kernels.quantize_groups import OUT_KINDS, QMAX_OF_KIND, codes_of_scaled, finite_abs
from lowbit_flex.quant.fp8 import K_BLOCK, Q_BLOCK

# One 128-token block per program (8 warps), read whole into registers, once (64 values per thread at D = 128).
# From the H200 (B=4 H=16 D=128 bf16, L = 1024-16384, against a clone of q, k, v; runs 26 and 36):
#  - e4m3 q, k and v: 0.78-0.80x the clone's speed, where run 17's chunked form (one program for q, k and v of a
#    block, an amax pass then a codes pass re-reading chunks of 4096 values from L2) ran at 0.57-0.60x;
#  - int8 q and k (the accurate mode): whole blocks 0.66-0.74x the clone; the chunked form in this task layout
#    0.56-0.59x (run 36), in run 17's layout 0.75-0.86x. int8 codes take more arithmetic than e4m3's one
#    conversion (a clamp, selects for non-finite values), which the chunked form overlapped with its loads.
# 16 warps per program were slower than 8 for both formats. Those measurements predate two changes, not yet timed:
# codes_of_scaled's shorter forms (Triton 3.6, sm_90: 162 -> 97 registers with int8 codes, i.e. two programs per SM
# instead of one; 24% fewer instructions) and k programs issuing their own block's loads before the smooth-K mean's
# (they waited for the mean's loads and two CTA barriers first).
_NUM_WARPS = 8

# The quantized Q/K/V of eager lowbit_attention calls (ops/lowbit_attention.py): one kept buffer per stream and
# thread up to StreamScratch.MAX_KEPT (the small calls, whose host time matters), the caching allocator above that.
QKV_SCRATCH = StreamScratch(per_thread=True)


@triton.jit
def _load_block(base, rows, L, stride_n, stride_d, D: tl.constexpr):
    """Rows ``rows`` of a ``(L, D)`` slice in float32; rows past ``L`` read as 0."""
    offs_d = tl.arange(0, D)
    ptrs = base + rows[:, None].to(tl.int64) * stride_n + offs_d[None, :] * stride_d
    return tl.load(ptrs, mask=rows[:, None] < L, other=0.0).to(tl.float32)


@triton.jit
def _first_block_mean(k_base, Lk, stride_kn, stride_kd, D: tl.constexpr, BLOCK: tl.constexpr):
    """The smooth-K shift: the mean of the finite values of the first ``min(Lk, BLOCK)`` keys, ``(D,)``. Every k
    program of a head reads the same block, from L2 after the first (the k programs of a head are adjacent)."""
    x = _load_block(k_base, tl.arange(0, BLOCK), Lk, stride_kn, stride_kd, D)
    total = tl.sum(tl.where(tl.abs(x) < float("inf"), x, 0.0), axis=0)  # a NaN key must not shift the others
    return tl.math.div_rn(total, tl.zeros((D,), tl.float32) + tl.minimum(Lk, BLOCK).to(tl.float32))


@triton.jit
def _scale_of(amax, QMAX: tl.constexpr):
    """``(scale, 1 / scale)`` of a block's finite amax (scale 1 for an all-zero block), IEEE divides."""
    scale = tl.math.div_rn(amax, tl.zeros_like(amax) + QMAX)
    scale = tl.where(scale == 0.0, 1.0, scale)
    return scale, tl.math.div_rn(tl.zeros_like(scale) + 1.0, scale)


@triton.jit
def _quantize_block(
    src, dst, scale_ptr, row0, L, stride_n, stride_d, dst_stride_n, dst_stride_d,
    SHIFT: tl.constexpr, QMAX: tl.constexpr, KIND: tl.constexpr, EXACT: tl.constexpr,
    D: tl.constexpr, BLOCK: tl.constexpr, ZERO_SCALE_IF_EMPTY: tl.constexpr, MMA_KEY_ORDER: tl.constexpr,
):  # fmt: skip
    """One block of ``BLOCK`` rows, read once into registers: its finite amax over the valid rows, its float32
    scale, the codes. ``MMA_KEY_ORDER`` (v): within each 16 rows, row ``16g + 4a + 2h + l`` is written from source
    row ``16g + 8h + 2a + l``, the order of the attention kernel's P registers (its ``V_MMA_KEY_ORDER``), and
    rows up to ``L`` rounded up to 16 are written, zeros past ``L``."""
    offs_d = tl.arange(0, D)
    rows = row0 + tl.arange(0, BLOCK)
    src_rows = rows
    end = L
    if MMA_KEY_ORDER:  # rows read in permuted order: each is a contiguous run of D values, so loads stay whole
        src_rows = (rows & -16) | (((rows >> 1) & 1) << 3) | (((rows >> 2) & 3) << 1) | (rows & 1)
        end = tl.cdiv(L, 16) * 16
    x = _load_block(src, src_rows, L, stride_n, stride_d, D)
    if SHIFT:  # the smooth-K shift after this block's loads are issued: its loads and reduction overlap them
        shift = _first_block_mean(src, L, stride_n, stride_d, D, BLOCK)
        x = tl.where(src_rows[:, None] < L, x - shift[None, :], 0.0)
    amax = tl.max(tl.max(finite_abs(x), axis=1), axis=0)
    scale, inv = _scale_of(amax, QMAX)
    out = dst + rows[:, None].to(tl.int64) * dst_stride_n + offs_d[None, :] * dst_stride_d
    tl.store(out, codes_of_scaled(x, x * inv, QMAX, KIND, EXACT), mask=rows[:, None] < end)
    # v: an all-zero block (zero padding) stores scale 0, not 1: the attention kernel takes the head's largest v
    # block scale as P's unit, and a 1 there would push every other block's P towards e4m3's subnormals.
    tl.store(scale_ptr, tl.where(ZERO_SCALE_IF_EMPTY and amax == 0.0, 0.0, scale))


@triton.jit
def _quantize_qkv_kernel(
    Q, K, V, Q8, K8, V8, QS, KS, VS, H, HKV, Lq, Lk, L_PAD, NBLK_Q, NBLK_K,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    D: tl.constexpr, BLOCK: tl.constexpr, KIND: tl.constexpr, QMAX: tl.constexpr,
    SMOOTH_K: tl.constexpr, V_FP8: tl.constexpr, V_QMAX: tl.constexpr, EXACT: tl.constexpr,
    V_MMA_KEY_ORDER: tl.constexpr,
):  # fmt: skip
    """Program ``(t, b)``: task ``t`` of batch ``b``, one block each: the ``H · NBLK_Q`` q blocks, then the
    ``HKV · NBLK_K`` k blocks, then (``V_FP8``) as many v blocks, head-major within each tensor."""
    t = tl.program_id(0)
    b = tl.program_id(1)
    n_q = H * NBLK_Q
    n_k = HKV * NBLK_K
    if t < n_q:
        h = t // NBLK_Q
        blk = t % NBLK_Q
        bh = b * H + h
        q_base = Q + b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh
        _quantize_block(
            q_base, Q8 + bh.to(tl.int64) * Lq * D, QS + bh * NBLK_Q + blk, blk * BLOCK, Lq, stride_qm, stride_qd, D, 1,
            False, QMAX, KIND, EXACT, D, BLOCK, False, False,
        )  # fmt: skip
    elif t < n_q + n_k:
        t -= n_q
        hk = t // NBLK_K
        blk = t % NBLK_K
        bhk = b * HKV + hk
        k_base = K + b.to(tl.int64) * stride_kb + hk.to(tl.int64) * stride_kh
        # k8: (Lk, D) rows over L_PAD-row heads.
        _quantize_block(
            k_base, K8 + bhk.to(tl.int64) * L_PAD * D, KS + bhk * NBLK_K + blk, blk * BLOCK, Lk, stride_kn, stride_kd,
            D, 1, SMOOTH_K, QMAX, KIND, EXACT, D, BLOCK, False, False,
        )  # fmt: skip
    elif V_FP8:
        t -= n_q + n_k
        hk = t // NBLK_K
        blk = t % NBLK_K
        bhk = b * HKV + hk
        v_base = V + b.to(tl.int64) * stride_vb + hk.to(tl.int64) * stride_vh
        # v8: token-major, (D, L_PAD) per head.
        _quantize_block(
            v_base, V8 + bhk.to(tl.int64) * D * L_PAD, VS + bhk * NBLK_K + blk, blk * BLOCK, Lk, stride_vn, stride_vd,
            1, L_PAD, False, V_QMAX, 0, EXACT, D, BLOCK, True, V_MMA_KEY_ORDER,
        )  # fmt: skip


@functools.lru_cache(maxsize=512)
def _launch_plan(
    B: int, H: int, Hkv: int, Lq: int, Lk: int, D: int, kind: int, smooth_k: bool, v_fp8: bool, v_mma_key_order: bool,
    *ints,
):  # fmt: skip
    meta = dict(
        D=D, BLOCK=K_BLOCK, KIND=kind, QMAX=QMAX_OF_KIND[kind], SMOOTH_K=smooth_k, V_FP8=v_fp8,
        V_MMA_KEY_ORDER=v_mma_key_order,
        V_QMAX=QMAX_OF_KIND[OUT_KINDS[torch.float8_e4m3fn]], EXACT=triton_interpreting(), num_warps=_NUM_WARPS,
    )  # fmt: skip
    tasks = H * triton.cdiv(Lq, Q_BLOCK) + (2 if v_fp8 else 1) * Hkv * triton.cdiv(Lk, K_BLOCK)
    return PlanLaunch(_quantize_qkv_kernel, (tasks, B), meta, tensors=9)


def _span(shape: tuple, strides: tuple) -> int:
    """Elements of storage a strided tensor reaches (0 when it is empty)."""
    return 1 + sum((n - 1) * st for n, st in zip(shape, strides)) if all(shape) else 0


class Carving(NamedTuple):
    """Tensors of the given ``(shape, strides, dtype)`` laid out in one allocation of ``nbytes``: each starts at its
    byte offset, a multiple of 16 (TMA bases), and none overlaps another."""

    specs: tuple
    nbytes: int
    offsets: tuple[int, ...]


def carving(specs: tuple) -> Carving:
    offsets, end = [], 0
    for shape, strides, dtype in specs:
        offsets.append(end)
        end = -(-(end + _span(shape, strides) * dtype.itemsize) // 16) * 16
    return Carving(specs, end, tuple(offsets))


def carve(layout: Carving, device: torch.device) -> list[torch.Tensor]:
    """The tensors of ``layout``, views of one new allocation."""
    buf = torch.empty(layout.nbytes, dtype=torch.uint8, device=device)
    typed: dict[torch.dtype, torch.Tensor] = {}
    out = []
    for (shape, strides, dtype), off in zip(layout.specs, layout.offsets):
        base = typed.get(dtype)
        if base is None:
            base = typed[dtype] = buf.view(dtype)
        out.append(base.as_strided(shape, strides, off // dtype.itemsize))
    return out


@functools.lru_cache(maxsize=512)
def _output_specs(
    B: int, H: int, Hkv: int, Lq: int, Lk: int, D: int, qk_dtype: torch.dtype, v_fp8: bool, v_mma_key_order: bool
) -> tuple:
    """``(shape, strides, dtype)`` of ``q_scale, k_scale, q8, k8`` and, with ``v_fp8``, ``v_scale, v8``: scales first
    (4-byte elements), then the codes. ``(B, Hkv, Lk, D)`` k8 and v8 have the strides of block-padded buffers; v8 is
    token-major, and in MMA key order it has ``Lk`` rounded up to 16 rows (the pass writes the last group whole)."""
    nblk_q, nblk_k = -(-Lq // Q_BLOCK), -(-Lk // K_BLOCK)
    l_pad = nblk_k * K_BLOCK
    f32 = torch.float32
    specs = (
        ((B, H, nblk_q), (H * nblk_q, nblk_q, 1), f32),
        ((B, Hkv, nblk_k), (Hkv * nblk_k, nblk_k, 1), f32),
        ((B, H, Lq, D), (H * Lq * D, Lq * D, D, 1), qk_dtype),
        ((B, Hkv, Lk, D), (Hkv * l_pad * D, l_pad * D, D, 1), qk_dtype),
    )
    if v_fp8:
        specs += (
            ((B, Hkv, nblk_k), (Hkv * nblk_k, nblk_k, 1), f32),
            (
                (B, Hkv, -(-Lk // 16) * 16 if v_mma_key_order else Lk, D),
                (Hkv * D * l_pad, D * l_pad, 1, l_pad),
                torch.float8_e4m3fn,
            ),
        )
    return specs


@functools.lru_cache(maxsize=512)
def output_carving(*key) -> Carving:
    """:func:`_output_specs` laid out in one allocation, once per (concrete) shape."""
    return carving(_output_specs(*key))


def _outputs(q: torch.Tensor, key: tuple) -> list[torch.Tensor]:
    """The kernel's outputs for ``key``, the arguments of :func:`_output_specs`. An eager CUDA call carves them out of
    one allocation (:func:`carve`): one ``torch.empty`` instead of six, which cost 7 us each of host time on the H200
    machine. Elsewhere each gets its own: a traced (fake) CUDA tensor in a CPU-only build cannot take a view, and on
    CPU (Triton's interpreter) the copy back of a kernel argument fails on an ``empty_strided`` tensor ("cpu" vs
    "cpu:0" storage), so it gets a view of a plain buffer of its own."""
    if type(q) is torch.Tensor and q.is_cuda:
        return carve(output_carving(*key), q.device)
    specs = cached_plan(_output_specs, *key)  # symbolic sizes when traced with dynamic shapes
    if q.is_cuda:
        return [torch.empty_strided(sh, st, dtype=dt, device=q.device) for sh, st, dt in specs]
    return [torch.empty(_span(sh, st), dtype=dt, device=q.device).as_strided(sh, st) for sh, st, dt in specs]


def qkv_plan(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, qk_dtype: torch.dtype, smooth_k: bool,
             v_fp8: bool, v_mma_key_order: bool = False) -> tuple[PlanLaunch, tuple, tuple]:  # fmt: skip
    """``(launch, outputs_key, scalars)`` for these inputs' metadata: the launch takes ``(q, k, v, q8, k8, v8, qs,
    ks, vs, *scalars)``; ``outputs_key`` is the key of :func:`_output_specs` (and :func:`output_carving`), whose
    tensors are ``qs, ks, q8, k8`` and, with ``v_fp8``, ``vs, v8`` (without it ``ks, k8`` stand in for them, never
    written). Depends on metadata only, so an eager caller can keep it per shape key."""
    B, H, Lq, D = q.shape
    Hkv, Lk = k.shape[1], k.shape[2]
    D = int(D)
    # Integer ceil-divisions: triton.cdiv is a Triton constexpr function, whose call costs microseconds on the host.
    nblk_q, nblk_k = -(-Lq // Q_BLOCK), -(-Lk // K_BLOCK)
    strides = (*q.stride(), *k.stride(), *v.stride())
    launch = cached_plan(
        _launch_plan, B, H, Hkv, Lq, Lk, D, OUT_KINDS[qk_dtype], smooth_k, v_fp8, v_fp8 and v_mma_key_order, *strides
    )
    scalars = (H, Hkv, Lq, Lk, nblk_k * K_BLOCK, nblk_q, nblk_k, *strides)
    return launch, (B, H, Hkv, Lq, Lk, D, qk_dtype, v_fp8, v_fp8 and v_mma_key_order), scalars


def quantize_qkv_triton(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, qk_dtype: torch.dtype, smooth_k: bool,
                        v_fp8: bool, v_mma_key_order: bool = False) -> tuple:  # fmt: skip
    """``(q8, q_scale, k8, k_scale, v8, v_scale)`` in the layouts ``lowbit::fp8_attention`` reads: ``q8``
    ``(B, H, Lq, D)`` contiguous and ``k8`` ``(B, Hkv, Lk, D)`` (over block-padded storage) in ``qk_dtype``, scales
    per 128 tokens; with ``v_fp8`` ``v8`` e4m3 ``(B, Hkv, Lk, D)`` with the token axis contiguous (strides of a
    transposed ``(B, Hkv, D, L_pad)`` buffer) and ``v_scale`` per 128-key block, else ``None, None``.
    ``v_mma_key_order``: ``v8``'s keys permuted within each 16 into the attention kernel's P register order, with
    ``Lk`` rounded up to 16 rows, zeros past ``Lk`` (not v's values in their order any more: only for
    ``fp8_attention_triton(..., v_mma_key_order=True)``).
    Arguments are validated by the op."""
    launch, key, scalars = qkv_plan(q, k, v, qk_dtype, smooth_k, v_fp8, v_mma_key_order)
    qs, ks, q8, k8, *v_outs = _outputs(q, key)
    vs, v8 = v_outs or (ks, k8)  # without v_fp8: placeholders, never written (V_FP8 is false)
    launch(q, k, v, q8, k8, v8, qs, ks, vs, *scalars)
    return (q8, qs, k8, ks, v8, vs) if v_fp8 else (q8, qs, k8, ks, None, None)
