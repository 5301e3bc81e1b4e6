"""Triton W4A8 GEMM: int8 activations × packed int4 weights on int8 tensor cores, scales and bias fused.

One kernel covers every case through constexpr switches:
- the weight tile is unpacked in registers into its two nibble planes (two arithmetic shifts sign-extend each
  nibble). Byte ``j`` holds elements ``2j`` (low) and ``2j + 1`` (high), so ``x @ Wᵀ = x[:, 0::2] @ W_lowᵀ +
  x[:, 1::2] @ W_highᵀ``: two int8 ``tl.dot`` on the planes as loaded, with int32 accumulation (``mma.sync`` on
  sm_80, WGMMA on sm_90). Splitting the activations instead of interleaving the nibbles (``tl.join`` + reshape)
  saves a register shuffle of the weight tile per K block. Decode M (<= 16) reads ``x``'s even and odd columns
  with stride 2 (x is a few KB, in L2); larger M first de-interleaves ``x`` once (``X_SPLIT``:
  ``[x[:, 0::2] | x[:, 1::2]]``, one copy of M·K bytes, ~2% of the GEMM) so both operands stream with contiguous
  loads;
- per-channel scales: one int32 accumulator over the whole K range, scales applied once in the epilogue;
  group-wise scales: each K block lies inside one group (the launcher picks ``BLOCK_K`` dividing the group size),
  its int32 dot is converted to float32 and scaled by that group's weight scale before being added up;
- ``SWAP_AB`` computes ``outᵀ = w @ xᵀ``: the unpacked weight (the operand produced in registers) becomes the MMA's
  A operand, which WGMMA may take from registers, and the few tokens of a decode step fill the MMA's N side (which
  can be small) instead of padding its 64-row M side;
- split-K (for decode-sized M): program ``(tile, s)`` reduces the K blocks of split ``s`` and writes a float32
  partial (scales already applied); :func:`lowbit_flex.kernels.common.reduce_split_k` adds the partials in a fixed
  order, adds the bias and casts, so results are deterministic (no atomics).
Row indices past M / N are wrapped (``% M``) instead of masked in the main loop, so loads need no mask; the
epilogue masks the stores. ``K`` is always a multiple of ``BLOCK_K`` (the launcher picks a power of two dividing
``K``), so there is no K tail.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import triton
import triton.language as tl

from lowbit_flex.kernels.arch import rows_hint, sm_count
from lowbit_flex.kernels.common import LaunchConfig, PlanLaunch, grouped_tile, largest_pow2_divisor, reduce_split_k


@triton.jit
def _mma(w, x, acc, SWAP_AB: tl.constexpr):
    """``acc + w @ xᵀ`` (swap-AB, ``(BLOCK_N, BLOCK_M)``) or ``acc + x @ wᵀ`` (``(BLOCK_M, BLOCK_N)``), int32."""
    if SWAP_AB:
        acc = tl.dot(w, tl.trans(x), acc, out_dtype=tl.int32)
    else:
        acc = tl.dot(x, tl.trans(w), acc, out_dtype=tl.int32)
    return acc


@triton.jit
def _s8s4_matmul_kernel(
    x_ptr, w_ptr, xs_ptr, ws_ptr, bias_ptr, out_ptr,
    M, N, K, stride_wsn, GROUP_K, BLOCKS_PER_SPLIT,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    GROUPWISE: tl.constexpr, SWAP_AB: tl.constexpr, SPLIT_PARTIALS: tl.constexpr, HAS_BIAS: tl.constexpr,
    X_SPLIT: tl.constexpr, INTERLEAVE: tl.constexpr,
):  # fmt: skip
    pid_m, pid_n = grouped_tile(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)
    pid_k = tl.program_id(1)

    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rm_load = rm % M  # wrapped rows: unmasked loads; their results are never stored
    rn_load = rn % N
    k_first = pid_k * BLOCKS_PER_SPLIT
    k_blocks = tl.minimum(BLOCKS_PER_SPLIT, K // BLOCK_K - k_first)
    HALF_K: tl.constexpr = BLOCK_K // 2
    cols = k_first * HALF_K + tl.arange(0, HALF_K)  # packed-byte columns of this split's first K block
    x_rows = x_ptr + rm_load[:, None].to(tl.int64) * K
    if X_SPLIT:  # x_ptr holds [x[:, 0::2] | x[:, 1::2]]
        x_even_ptrs = x_rows + cols[None, :]
        x_odd_ptrs = x_even_ptrs + K // 2
        x_step = HALF_K
    elif INTERLEAVE:  # x_even_ptrs walks whole (BLOCK_M, BLOCK_K) tiles of x
        x_even_ptrs = x_rows + (k_first * BLOCK_K + tl.arange(0, BLOCK_K))[None, :]
        x_odd_ptrs = x_even_ptrs
        x_step = BLOCK_K
    else:
        x_even_ptrs = x_rows + 2 * cols[None, :]
        x_odd_ptrs = x_even_ptrs + 1
        x_step = BLOCK_K
    w_ptrs = w_ptr + rn_load[:, None].to(tl.int64) * (K // 2) + cols[None, :]
    ws_row = ws_ptr + rn_load * stride_wsn

    # int32 accumulator for per-channel scales (applied once at the end), float32 for group-wise ones.
    if SWAP_AB:
        if GROUPWISE:
            acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
        else:
            acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.int32)
    else:
        if GROUPWISE:
            acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        else:
            acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
    for i in range(k_blocks):
        packed = tl.load(w_ptrs)  # (BLOCK_N, HALF_K) int8
        # Sign-extend each nibble with arithmetic shifts. The cast after << keeps 8 bits (drops the high nibble)
        # whether or not this Triton version promotes `int8 << 4` to int32; >> on a signed type is arithmetic.
        w_low = ((packed << 4).to(tl.int8) >> 4).to(tl.int8)
        w_high = (packed >> 4).to(tl.int8)
        # Per channel: accumulate in the MMA's own int32 registers. Group-wise: a fresh int32 partial per K block.
        part = tl.zeros(acc.shape, dtype=tl.int32) if GROUPWISE else acc
        if INTERLEAVE:
            # K blocks of 32 (K = 32 mod 64, or groups of 32): a nibble plane would give a K = 16 dot, below the
            # int8 MMA's K = 32, so interleave the planes back into one (BLOCK_N, BLOCK_K) tile instead.
            w = tl.reshape(tl.join(w_low, w_high), (BLOCK_N, BLOCK_K))
            part = _mma(w, tl.load(x_even_ptrs), part, SWAP_AB)
        else:
            part = _mma(w_low, tl.load(x_even_ptrs), part, SWAP_AB)  # x[:, k0 + 2j]
            part = _mma(w_high, tl.load(x_odd_ptrs), part, SWAP_AB)  # x[:, k0 + 2j + 1]
        if GROUPWISE:
            scale = tl.load(ws_row + ((k_first + i) * BLOCK_K) // GROUP_K)  # (BLOCK_N,) float32
            acc += part.to(tl.float32) * (scale[:, None] if SWAP_AB else scale[None, :])
        else:
            acc = part
        x_even_ptrs += x_step
        x_odd_ptrs += x_step
        w_ptrs += HALF_K

    out = acc.to(tl.float32)
    if SWAP_AB:
        out = tl.trans(out)  # (BLOCK_M, BLOCK_N)
    x_scale = tl.load(xs_ptr + rm_load)
    store_w4a8_tile(out, x_scale, ws_row, bias_ptr, out_ptr, rm, rn, rn_load, M, N, pid_k,
                    GROUPWISE, SPLIT_PARTIALS, HAS_BIAS)  # fmt: skip


@triton.jit
def store_w4a8_tile(
    out, x_scale, ws_row, bias_ptr, out_ptr, rm, rn, rn_load, M, N, pid_k,
    GROUPWISE: tl.constexpr, SPLIT_PARTIALS: tl.constexpr, HAS_BIAS: tl.constexpr,
):  # fmt: skip
    """The W4A8 epilogue both Triton kernels share: ``out`` is a float32 ``(BLOCK_M, BLOCK_N)`` tile of dot
    products (group scales already applied when ``GROUPWISE``); apply the per-channel and per-token scales, then
    store a float32 split-K partial (the reduce adds the bias) or the biased ``out_ptr`` dtype result. Rows past M
    and columns past N are masked."""
    if not GROUPWISE:
        out = out * tl.load(ws_row)[None, :]
    out = out * x_scale[:, None]
    mask = (rm < M)[:, None] & (rn < N)[None, :]
    offs = rm[:, None].to(tl.int64) * N + rn[None, :]
    if SPLIT_PARTIALS:
        tl.store(out_ptr + pid_k.to(tl.int64) * M * N + offs, out, mask=mask)
    else:
        if HAS_BIAS:
            out = out + tl.load(bias_ptr + rn_load)[None, :]
        tl.store(out_ptr + offs, out.to(out_ptr.dtype.element_ty), mask=mask)


@dataclass(frozen=True)
class TritonConfig(LaunchConfig):
    """``block_k`` is an upper bound: the launcher uses the largest power of two ``<= block_k`` dividing K (and the
    group size). ``split_k`` lets decode-sized problems split K across programs until about ``_PROGRAMS_PER_SM``
    programs per SM are in flight."""

    swap_ab: bool = False
    split_k: bool = False
    group_m: int = 8


# Named configs (the benchmark can force each one). Hopper large-M: 128×256 tiles with 8 warps (two warpgroups of
# WGMMA) and 3 stages fit in shared memory (3 × (16 KB x + 16 KB packed w) + the unpacked w tile). On Hopper the
# swap-AB configs are the default: compiled for sm_90 (Triton 3.9), their unpacked weight feeds WGMMA as a register
# A operand (`dot_op opIdx=0`), while without the swap it takes a register -> shared memory round trip per K block.
TRITON_CONFIGS: dict[str, TritonConfig] = {
    "gemv_16x64x256_splitk": TritonConfig(16, 64, 256, num_warps=4, num_stages=4, swap_ab=True, split_k=True),
    "mid_64x128x128": TritonConfig(64, 128, 128, num_warps=4, num_stages=4),
    "mid_swap_64x128x128": TritonConfig(64, 128, 128, num_warps=4, num_stages=4, swap_ab=True),
    # The same tile splitting K until the GPU is full (M <= 64 on N = 4096 gives the unsplit tile 32 programs for
    # 132 SMs). H100, run 55, group 128, kernel alone x bf16 torch.mm at M = 64: 0.82x / 0.87x on 14336 x 4096 /
    # 8192² against 0.54x / 0.65x for the unpack-first tile (the dispatch's row for K >= 8192); 0.55x / 0.78x on
    # 4096² / 4096 x 14336, where other rows win; 0.36-0.61x at M = 128-256.
    "mid_swap_64x128x128_splitk": TritonConfig(64, 128, 128, num_warps=4, num_stages=4, swap_ab=True, split_k=True),
}

_PROGRAMS_PER_SM = 4
# From this M on (past the 16-row decode tiles), x is de-interleaved once so the main loop's x loads are contiguous
# (see the module docstring). It was 64 until H100 run 55 timed the 64-row tiles at M = 32 against M = 64 with group
# scales: the same grid and work (rows past M wrap), yet 3.2-4.2x slower with x read in stride 2 (mid_swap: 0.76 vs
# 0.18 ms on 14336 x 4096; its split-K form 0.18 vs 0.057 ms), against one copy of M·K bytes.
_X_SPLIT_MIN_M = 17


def _split_count(k_blocks: int, tiles: int, sms: int) -> tuple[int, int]:
    """(number of splits, K blocks per split) so that tiles × splits ≈ _PROGRAMS_PER_SM × SMs."""
    want = max(1, min(k_blocks, round(_PROGRAMS_PER_SM * sms / tiles)))
    per_split = triton.cdiv(k_blocks, want)
    return triton.cdiv(k_blocks, per_split), per_split


def s8s4_linear_triton(
    x: torch.Tensor,
    x_scale: torch.Tensor,
    w: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None,
    out_dtype: torch.dtype,
    config: TritonConfig,
) -> torch.Tensor:
    """``x`` int8 ``(M, K)``, ``x_scale`` float32 ``(M,)``, ``w`` int8 ``(N, K // 2)``, ``w_scale`` float32 ``(N,)`` or
    ``(N, groups)``, ``bias`` float32 ``(N,)`` or None, all contiguous and validated by the op -> ``(M, N)``.
    ``config``: the tile, chosen by the dispatch table (``lowbit_flex.kernels.s8s4_dispatch``)."""
    M, K = x.shape
    N = w.shape[0]
    out = torch.empty((M, N), dtype=out_dtype, device=x.device)
    if M == 0 or N == 0:
        return out
    cfg = config
    groupwise = w_scale.dim() == 2 and w_scale.shape[1] > 1
    group_k = K // w_scale.shape[1] if groupwise else K
    block_k = largest_pow2_divisor(group_k, cfg.block_k)  # divides K too; >= 32 as the op checks K % 32
    cfg = replace(cfg, block_k=block_k)
    k_blocks = K // block_k
    tiles = triton.cdiv(M, cfg.block_m) * triton.cdiv(N, cfg.block_n)
    splits, per_split = _split_count(k_blocks, tiles, sm_count(x.device)) if cfg.split_k else (1, k_blocks)
    partials = torch.empty((splits, M, N), dtype=torch.float32, device=x.device) if splits > 1 else out
    bias_arg = bias if bias is not None else x_scale  # any valid pointer; unused when HAS_BIAS is False
    interleave = block_k < 64
    # A layout choice, right for every M: a symbolic M (a dynamic batch) decides by its example value, unguarded.
    x_split = rows_hint(M)[0] >= _X_SPLIT_MIN_M and not interleave
    if x_split:
        x = x.view(M, K // 2, 2).transpose(1, 2).reshape(M, K)  # [x[:, 0::2] | x[:, 1::2]], one copy
    meta = dict(
        BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k, GROUP_M=cfg.group_m,
        GROUPWISE=groupwise, SWAP_AB=cfg.swap_ab, SPLIT_PARTIALS=splits > 1, HAS_BIAS=bias is not None,
        X_SPLIT=x_split, INTERLEAVE=interleave, num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )  # fmt: skip
    PlanLaunch(_s8s4_matmul_kernel, (tiles, splits), meta)(
        x, w, x_scale, w_scale, bias_arg, partials,
        M, N, K, w_scale.shape[1] if w_scale.dim() == 2 else 1, group_k, per_split,
    )  # fmt: skip
    if splits > 1:
        reduce_split_k(partials, out, bias=bias)
    return out
