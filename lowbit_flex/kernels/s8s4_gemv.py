"""W4A8 GEMV for the fewest rows (``M <= GEMV_MAX_M``) on CUDA cores with ``dp4a``: one launch per linear, the
activation's int8 quantization fused in, each packed weight byte read once.

At M = 1..4 a W4A8 linear is a stream of the packed int4 weight (N·K/2 bytes) and little else, so the kernel is
built around issuing those loads and spending few instructions per byte (an H200 streams ~32 GB/s per SM, which
leaves ~8 issued instructions per weight byte at full bandwidth):

- the weight is read as int32 words (8 nibbles; 16-byte vector loads), ``BLOCK_K / 8`` words per row and step, with
  the next step's words loaded into registers while this one is multiplied (Triton's pipeliner only takes loads that
  feed a ``tl.dot``). Each program owns ``BLOCK_N`` full rows (all of K, no split-K reduce) unless the N tiles alone
  are too few for the GPU, when K is split as in :mod:`lowbit_flex.kernels.s8s4_decode`;
- per word, two PTX instructions take 16x its nibble planes (``(w << 4) & 0xF0F0F0F0`` and ``w & 0xF0F0F0F0``:
  signed bytes, no shifting back) and two ``dp4a`` multiply them with four int8 values of x each (even and odd
  columns packed into words once per step and reused by all ``BLOCK_N`` rows): ~5 instructions per 4 weight bytes
  and row of x, where the tensor-core form pads M to 16 and a float FMA form (which this kernel replaced) converted
  every nibble to float;
- fused quantization (float x): each program reads its rows in full for the amax (the scale needs the whole row; x
  is a few KB in L2), then quantizes the slice it multiplies with the quantizer's own helpers
  (:mod:`lowbit_flex.kernels.quantize_int8_rowwise`), so the int8 values are bit-identical to
  ``lowbit::quantize_int8_rowwise``. With int8 x (quantized beforehand) the kernel reads it and its scales;
- per channel, each word's sums stay exact in int32 (16·128·8·K < 2**31 for K < 2**17, checked by
  :func:`gemv_supports`) and are scaled once in the shared epilogue. Group-wise, each step's int32 words are
  converted and scaled by their group's weight scale into float32 words (tiles carry a groups-per-step axis, so a
  scale is one load per row, group and step, broadcast over the group's words); either way the words are summed
  once after the loop.

Rows past M and columns past N are wrapped (``% M``, ``% N``) for loads and masked only at the store. Where
``BLOCK_K`` does not divide K (K = 11008 = 2**8 * 43 in Llama 2), the last step's weight, x and scale loads are
masked to zero (``K_TAIL``) rather than stepping K in the largest power of two dividing it (256 there: half the
speed). Launch plans are cached per shape key and launched through
:class:`~lowbit_flex.kernels.common.PlanLaunch` (no per-call argument binding in eager decode loops).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from lowbit_flex.kernels.arch import sm_count, triton_interpreting
from lowbit_flex.kernels.common import LaunchConfig, PlanLaunch, largest_pow2_divisor, split_k_blocks
from lowbit_flex.kernels.quantize_int8_rowwise import int8_row_scale_of, quantize_int8_values
from lowbit_flex.kernels.s8s4_decode import launch_decode_plan
from lowbit_flex.kernels.s8s4_linear import store_w4a8_tile

GEMV_MAX_M = 4
# Per channel, each int32 word sum and the row total are exact while 16 * 128 * 8 * K < 2**31 (x may be -128).
_MAX_K_PER_CHANNEL = 2**17


@triton.jit
def _bit_or(a, b):
    return a | b


@triton.jit
def _x_words(x, x_scale, FUSED_QUANT: tl.constexpr, BLOCK_M: tl.constexpr, WORDS: tl.constexpr):
    """A ``(BLOCK_M, 8 * WORDS)`` tile of x (float: quantized here; int8) as the dp4a operands of the weight words:
    word ``j`` of ``x_even`` holds the int8 values of columns ``8j, 8j+2, 8j+4, 8j+6`` (byte 0 first), the
    columns that meet the low nibbles of weight word ``j``; ``x_odd`` the odd columns (the high nibbles)."""
    if FUSED_QUANT:
        q = quantize_int8_values(x.to(tl.float32), x_scale[:, None]).to(tl.int32)
    else:
        q = x.to(tl.int32)
    even, odd = tl.split(tl.reshape(q & 0xFF, (BLOCK_M, WORDS, 4, 2)))
    shift = (tl.arange(0, 4) * 8)[None, None, :]
    return tl.reduce(even << shift, 2, _bit_or), tl.reduce(odd << shift, 2, _bit_or)


@triton.jit
def _dp4a_nibbles_x16(w, x_even, x_odd, acc, PTX: tl.constexpr):
    """``acc + 16 * Σ_b (low_b(w) * x_even_b + high_b(w) * x_odd_b)`` per int32 word (broadcast): ``low_b`` /
    ``high_b`` are the signed nibbles of byte ``b`` of ``w``, ``x_*_b`` the signed bytes of the x words."""
    if PTX:
        return tl.inline_asm_elementwise(
            "{ .reg .b32 lo, hi, t; shl.b32 t, $1, 4; and.b32 lo, t, 0xF0F0F0F0; and.b32 hi, $1, 0xF0F0F0F0; "
            "dp4a.s32.s32 t, lo, $2, $4; dp4a.s32.s32 $0, hi, $3, t; }",
            "=r,r,r,r,r", [w, x_even, x_odd, acc], dtype=tl.int32, is_pure=True, pack=1,
        )  # fmt: skip
    else:  # the interpreter runs no PTX: the same sum with arithmetic shifts (sign-extending each field)
        for b in tl.static_range(4):
            low = (w << (28 - 8 * b)) >> 28
            high = (w << (24 - 8 * b)) >> 28
            acc += 16 * (low * ((x_even << (24 - 8 * b)) >> 24) + high * ((x_odd << (24 - 8 * b)) >> 24))
        return acc


@triton.jit
def _load_w_block(w_ptrs, word_in_row, step, WORDS: tl.constexpr, K_TAIL: tl.constexpr, K_WORDS):
    """Weight words of K block ``step`` (0 past the row's end when the last block is partial)."""
    if K_TAIL:
        return tl.load(w_ptrs + step * WORDS, mask=word_in_row + step * WORDS < K_WORDS, other=0)
    return tl.load(w_ptrs + step * WORDS)


@triton.jit
def _load_x_block(x_ptrs, col_in_row, step, BLOCK_K: tl.constexpr, K_TAIL: tl.constexpr, K):
    """x values of K block ``step`` (0 past the row's end when the last block is partial)."""
    if K_TAIL:
        return tl.load(x_ptrs + step * BLOCK_K, mask=col_in_row + step * BLOCK_K < K, other=0)
    return tl.load(x_ptrs + step * BLOCK_K)


@triton.jit
def _s8s4_gemv_kernel(
    x_ptr, xs_ptr, w_ptr, ws_ptr, bias_ptr, out_ptr,
    M, N, K, stride_w_words, stride_wsn, GROUP_K, BLOCKS_PER_SPLIT,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, STEP_GROUPS: tl.constexpr,
    AMAX_BLOCK: tl.constexpr, FUSED_QUANT: tl.constexpr, GROUPWISE: tl.constexpr,
    SPLIT_PARTIALS: tl.constexpr, HAS_BIAS: tl.constexpr, PTX: tl.constexpr,
    K_TAIL: tl.constexpr,
):  # fmt: skip
    pid_n = tl.program_id(0)
    pid_m = tl.program_id(1)
    pid_k = tl.program_id(2)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rm_load = rm % M  # wrapped rows / columns: unmasked loads; their results are never stored
    rn_load = rn % N
    x_rows = x_ptr + rm_load[:, None].to(tl.int64) * K

    # A step of BLOCK_K values is STEP_GROUPS scale groups (group-wise, groups shorter than the step) of GROUP_WORDS
    # words each; per channel and for long groups STEP_GROUPS = 1. Tiles are (BLOCK_M, BLOCK_N, STEP_GROUPS,
    # GROUP_WORDS), so a group's scale is loaded once per row and step (contiguous) and broadcast over its words.
    WORDS: tl.constexpr = BLOCK_K // 8
    GROUP_WORDS: tl.constexpr = WORDS // STEP_GROUPS
    k_first = pid_k * BLOCKS_PER_SPLIT
    k_blocks = tl.minimum(BLOCKS_PER_SPLIT, tl.cdiv(K, BLOCK_K) - k_first)
    words = tl.arange(0, STEP_GROUPS)[:, None] * GROUP_WORDS + tl.arange(0, GROUP_WORDS)[None, :]
    # Loaded in the layout of the products, so only the small x words are re-laid out per step. The first block is
    # in flight during the amax pass. K_TAIL: the last block is partial, its loads masked to 0 (zero products).
    word_in_row = (k_first * WORDS + words)[None, None]
    w_ptrs = w_ptr + rn_load[None, :, None, None].to(tl.int64) * stride_w_words + word_in_row
    col_in_row = (k_first * BLOCK_K + tl.arange(0, BLOCK_K))[None, :]
    x_ptrs = x_rows + col_in_row
    K_WORDS = K // 8
    w_next = _load_w_block(w_ptrs, word_in_row, 0, WORDS, K_TAIL, K_WORDS)
    if FUSED_QUANT:
        x_scale = int8_row_scale_of(x_rows, K, BLOCK_M, AMAX_BLOCK)
    else:
        x_scale = tl.load(xs_ptr + rm_load)
    ws_row = ws_ptr + rn_load * stride_wsn
    ws_ptrs = ws_row[None, :, None, None] + tl.arange(0, STEP_GROUPS)[None, None, :, None]

    if GROUPWISE:
        acc = tl.zeros((BLOCK_M, BLOCK_N, STEP_GROUPS, GROUP_WORDS), dtype=tl.float32)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N, STEP_GROUPS, GROUP_WORDS), dtype=tl.int32)
    for i in range(k_blocks):
        w = w_next
        # Register double buffering; the last iteration re-reads its own block (a cache hit) instead of masking.
        # (Measured on the H200 and dropped: x loaded a step ahead too, and a second weight block in flight: equal
        # or 2-15% slower on every M = 1 shape.)
        w_next = _load_w_block(w_ptrs, word_in_row, tl.minimum(i + 1, k_blocks - 1), WORDS, K_TAIL, K_WORDS)
        x_block = _load_x_block(x_ptrs, col_in_row, i, BLOCK_K, K_TAIL, K)
        x_even, x_odd = _x_words(x_block, x_scale, FUSED_QUANT, BLOCK_M, WORDS)
        x_even = tl.reshape(x_even, (BLOCK_M, 1, STEP_GROUPS, GROUP_WORDS))
        x_odd = tl.reshape(x_odd, (BLOCK_M, 1, STEP_GROUPS, GROUP_WORDS))
        if GROUPWISE:
            first_group = ((k_first + i) * BLOCK_K) // GROUP_K
            if K_TAIL:  # groups past K in the partial last block: scale 0 (their products are 0 already)
                in_k = first_group + tl.arange(0, STEP_GROUPS)[None, None, :, None] < K // GROUP_K
                scale = tl.load(ws_ptrs + first_group, mask=in_k, other=0.0)
            else:
                scale = tl.load(ws_ptrs + first_group)  # (1, BLOCK_N, STEP_GROUPS, 1)
            part = _dp4a_nibbles_x16(w, x_even, x_odd, tl.zeros(acc.shape, dtype=tl.int32), PTX)
            acc += part.to(tl.float32) * scale
        else:
            acc = _dp4a_nibbles_x16(w, x_even, x_odd, acc, PTX)

    # 16x the nibbles: scaling by 1/16 is exact (and commutes with rounding to float32).
    out = tl.sum(tl.sum(acc, axis=3), axis=2).to(tl.float32) * 0.0625
    store_w4a8_tile(out, x_scale, ws_row, bias_ptr, out_ptr, rm, rn, rn_load, M, N, pid_k,
                    GROUPWISE, SPLIT_PARTIALS, HAS_BIAS)  # fmt: skip


@dataclass(frozen=True)
class GemvConfig(LaunchConfig):
    """``block_m``: the most rows per program (``min(block_m, next_pow2(M))`` are used). ``block_k``: int8
    values per step (``min(block_k, next_pow2(K))``; the last step may be partial, masked), or with groups that are
    not a power of two the largest power of two ``<= block_k`` dividing the group.
    ``num_stages`` is unused (the kernel double-buffers in registers). ``split_k``: 0 splits K only while the
    tiles give fewer than ``programs_per_sm`` programs per SM, 1 never, ``s > 1`` into ``s``."""

    split_k: int = 0
    programs_per_sm: int = 2


# Registers: the (BLOCK_M, BLOCK_N, BLOCK_K / 8) word sums plus two (BLOCK_N, BLOCK_K / 8) weight buffers over
# 32 * num_warps threads. Compiled for sm_90 (tests/kernels/aot_cases.py) none spills; on sm_80 the 4x16x1024 tile
# with fused quantization at M = 4 spills 8 bytes. Measured on the H200 (2026-12-01) and dropped: 1-row tiles with
# 2048-4096-value steps (never best; 4-row versions spilled hundreds of bytes) and a 32x1024 tile with 8 warps.
# 4x32x512 stays as the challenger the benchmark times (best once on 4096×14336, within noise of 4x16x1024).
# Which config runs for which M is decided by the one W4A8 table, DISPATCH_TABLE in
# lowbit_flex/kernels/s8s4_dispatch.py.
GEMV_CONFIGS: dict[str, GemvConfig] = {
    "dp4a_4x8x2048": GemvConfig(4, 8, 2048, num_warps=4, num_stages=1),
    "dp4a_4x16x1024": GemvConfig(4, 16, 1024, num_warps=4, num_stages=1),
    "dp4a_4x32x512": GemvConfig(4, 32, 512, num_warps=4, num_stages=1),
}

# Elements of x per program per amax step (the fused path): 32 float32 registers per thread at 128 threads.
_AMAX_ELEMS = 4096


def gemv_supports(M: int, K: int, groupwise: bool) -> bool:
    """Whether the kernel takes this problem exactly: few rows, and per channel a K whose int32 sums stay exact."""
    return 1 <= M <= GEMV_MAX_M and (groupwise or K < _MAX_K_PER_CHANNEL)


class _Plan(NamedTuple):
    splits: int
    per_split: int  # K blocks per split
    k_blocks: int  # K blocks in the whole row
    block_k: int
    launch: PlanLaunch


@functools.lru_cache(maxsize=512)
def _plan(
    device: torch.device, M: int, N: int, K: int, groups: int, x_dtype: torch.dtype, out_dtype: torch.dtype,
    has_bias: bool, cfg: GemvConfig,
) -> _Plan:  # fmt: skip
    """Everything about a launch that depends only on the shape key (cached: decode loops repeat a few shapes).
    ``out_dtype`` is part of the key because the launch is cached with its argument dtypes."""
    assert gemv_supports(M, K, groups > 1) and K % 32 == 0 and K % groups == 0, (M, K, groups)
    group_k = K // groups
    pow2_groups = group_k & (group_k - 1) == 0
    if groups == 1 or pow2_groups:
        # The config's step even where it does not divide K (the last block is masked): K = 11008 = 2**8 * 43 (Llama
        # 2's down projection) in 256-value steps ran 0.97x bf16 per channel, in 1024-value steps 1.91x (H200).
        block_k = min(cfg.block_k, triton.next_power_of_2(K))
    else:  # e.g. groups of 96: steps dividing the group (and so K)
        block_k = largest_pow2_divisor(K, cfg.block_k)  # >= 32 as K % 32 == 0
    step_groups = 1
    if groups > 1 and group_k % block_k:
        if block_k % group_k == 0 and pow2_groups:  # power-of-two groups, several per step
            step_groups = block_k // group_k
        else:  # e.g. groups of 96: steps inside one group
            block_k = largest_pow2_divisor(group_k, block_k)
    block_m = min(cfg.block_m, triton.next_power_of_2(M))
    k_blocks = triton.cdiv(K, block_k)
    tiles = triton.cdiv(N, cfg.block_n) * triton.cdiv(M, block_m)
    splits, per_split = split_k_blocks(k_blocks, tiles, cfg.split_k, cfg.programs_per_sm, sm_count(device))
    meta = dict(
        BLOCK_M=block_m, BLOCK_N=cfg.block_n, BLOCK_K=block_k, STEP_GROUPS=step_groups,
        AMAX_BLOCK=min(triton.next_power_of_2(K), _AMAX_ELEMS // block_m),
        FUSED_QUANT=x_dtype != torch.int8, GROUPWISE=groups > 1,
        SPLIT_PARTIALS=splits > 1, HAS_BIAS=has_bias, PTX=not triton_interpreting(),
        K_TAIL=K % block_k != 0, num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )  # fmt: skip
    grid = (triton.cdiv(N, cfg.block_n), triton.cdiv(M, block_m), splits)
    return _Plan(splits, per_split, k_blocks, block_k, PlanLaunch(_s8s4_gemv_kernel, grid, meta))


def s8s4_gemv_triton(
    x: torch.Tensor,
    x_scale: torch.Tensor | None,
    w: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None,
    out_dtype: torch.dtype,
    config: GemvConfig,
    *,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """``x`` ``(M, K)``, ``1 <= M <= GEMV_MAX_M``: int8 with ``x_scale`` float32 ``(M,)``, or float16 / bfloat16 /
    float32 with ``x_scale=None`` (quantized per row in the kernel, bit-exact with ``lowbit::quantize_int8_rowwise``).
    ``w`` int8 ``(N, K // 2)`` packed int4, ``w_scale`` float32 ``(N,)`` or ``(N, groups)``, ``bias`` float32 ``(N,)``
    or None, all contiguous and validated by the op (and :func:`gemv_supports`) -> ``(M, N)`` of ``out_dtype``
    (written into ``out`` if given: contiguous ``(M, N)`` of ``out_dtype``)."""
    return launch_decode_plan(_plan, x, x_scale, w, w_scale, bias, out_dtype, config, out, w_word_bytes=4)
