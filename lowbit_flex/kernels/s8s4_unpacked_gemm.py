"""W4A8 GEMM for large M: unpack the int4 weight to int8 once per call, then an int8 × int8 tensor-core GEMM whose
operands both stream through shared memory, group-wise scales applied per K block.

Why unpack first. At large M a W4A8 GEMM is compute-bound, and its weight is read from DRAM once per call whatever
its width: writing an int8 copy (N·K bytes; 10-29 us on the H200 for 4096² to 8192², 4-6% of a bf16 GEMM's time at
M = 4096, 16-25% at M = 1024) buys a main loop with no
register work on the weight. The in-register unpack of :mod:`lowbit_flex.kernels.s8s4_linear` makes Triton route
the weight tile shared memory -> registers -> (shared memory on sm_90 without swap-AB) -> MMA, and ran at 0.57x
bf16 per channel on the H200; here both tiles go straight from shared memory into WGMMA (``mma.sync`` on sm_80),
the layout int8 tensor cores want (``x`` and the unpacked ``w`` are both K-contiguous).

Group-wise scales. Each K block lies inside one scale group (``BLOCK_K`` divides the group size), so its int32 dot
is exact and one conversion and multiply-add per output put it into the float32 accumulator: ``acc +=
float(dot) * scale[n, group]``. That costs group-wise tiles their speed: Triton waits for each K block's MMA before
scaling it (``wgmma.wait_group 0`` inside the loop in the sm_90 PTX, also when the next block's dot is issued
first), so the tensor cores idle while the CUDA cores rescale. Two programs per SM (the 64-row, 4-warp tile) overlap
them best; an 8-warp tile is one program whose two warpgroups rescale in step. Measured on the H200 (2026-12-01):
0.62-0.79x bf16 at M = 1024-4096, against 0.29-0.35x for the in-register kernel and 1.2-1.7x per channel with
the same main loop. Starting the MMA from the bits of 1.5·2**23 (so the int32 result reads as an exact float after
one subtraction) instead of converting measured 2-4% slower than the conversion and was dropped.

Row indices past M / N are wrapped (``% M``) for loads and masked at the store; ``BLOCK_K`` divides K (and the
group), so there is no K tail. Launch plans are cached per shape (:class:`~lowbit_flex.kernels.common.PlanLaunch`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from lowbit_flex.kernels.common import LaunchConfig, PlanLaunch, cached_plan, grouped_tile, largest_pow2_divisor
from lowbit_flex.kernels.s8s4_linear import store_w4a8_tile


@triton.jit
def _nibbles_to_bytes(h):
    """The four nibbles of ``h`` (bits 0-15) as four sign-extended bytes of an int32 word, nibble ``i`` in byte ``i``
    (little-endian: packed byte ``j``'s low nibble, then its high nibble, as the unpacked order wants)."""
    x = _nibbles_to_unsigned_bytes(h)
    return x | ((x & 0x08080808) * 0x1E)  # a set nibble sign bit 0x08 becomes 0xF8 in its byte: no carry out


@triton.jit
def _unpack_int4_kernel(w_ptr, out_ptr, n_words, BLOCK: tl.constexpr):
    """``w_ptr``: the packed weight as int32 words (8 nibbles each); ``out_ptr``: the int8 result as int32 words,
    two per packed word (its bytes 0-1, then 2-3), so loads and stores are whole words."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    packed = tl.load(w_ptr + offs, mask=offs < n_words)
    both = tl.join(_nibbles_to_bytes(packed & 0xFFFF), _nibbles_to_bytes((packed >> 16) & 0xFFFF))
    out_offs = 2 * tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, 2 * BLOCK)
    tl.store(out_ptr + out_offs, tl.reshape(both, (2 * BLOCK,)), mask=out_offs < 2 * n_words)


@triton.jit
def _unpack_int4_mult_kernel(w_ptr, mult_ptr, out_ptr, n_words, N, words_per_row, words_per_group, BLOCK: tl.constexpr):
    """:func:`_unpack_int4_kernel` times integer group multipliers: ``mult_ptr`` int8 ``(groups, N)``, each in
    [0, 16], so every ``code * mult`` is an int8. A packed word's 8 codes share one group (the group is a multiple of
    8), so the 4 codes of an output word multiply as one int32: with ``u = code + 8`` in [0, 15] (the nibble's top bit
    flipped), ``u * mult + 128 - 8 * mult = code * mult + 128`` lies in [0, 240] for every byte, so one multiply-add
    of the packed bytes has no carry between them, and flipping each byte's top bit gives ``code * mult`` in two's
    complement."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    live = offs < n_words
    row = offs // words_per_row
    group = (offs % words_per_row) // words_per_group
    m = tl.load(mult_ptr + group * N + row, mask=live, other=0).to(tl.int32)
    packed = tl.load(w_ptr + offs, mask=live) ^ -2004318072  # 0x88888888: code + 8 in every nibble
    lo = _nibbles_to_unsigned_bytes(packed & 0xFFFF) * m + (128 - 8 * m) * 0x01010101
    hi = _nibbles_to_unsigned_bytes((packed >> 16) & 0xFFFF) * m + (128 - 8 * m) * 0x01010101
    both = tl.join(lo ^ -2139062144, hi ^ -2139062144)  # 0x80808080: offset binary -> two's complement
    out_offs = 2 * tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, 2 * BLOCK)
    tl.store(out_ptr + out_offs, tl.reshape(both, (2 * BLOCK,)), mask=out_offs < 2 * n_words)


@triton.jit
def _nibbles_to_unsigned_bytes(h):
    """The four nibbles of ``h`` (bits 0-15) as four unsigned bytes of an int32 word, nibble ``i`` in byte ``i``."""
    return (h & 0xF) | ((h & 0xF0) << 4) | ((h & 0xF00) << 8) | ((h & 0xF000) << 12)


@triton.jit
def _s8s8_gemm_kernel(
    x_ptr, w_ptr, xs_ptr, ws_ptr, bias_ptr, out_ptr,
    M, N, K, stride_wsn, GROUP_K,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
    GROUPWISE: tl.constexpr, HAS_BIAS: tl.constexpr,
):  # fmt: skip
    pid_m, pid_n = grouped_tile(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    rm_load = rm % M  # wrapped rows: unmasked loads; their results are never stored
    rn_load = rn % N
    rk = tl.arange(0, BLOCK_K)
    x_ptrs = x_ptr + rm_load[:, None].to(tl.int64) * K + rk[None, :]
    w_ptrs = w_ptr + rn_load[:, None].to(tl.int64) * K + rk[None, :]
    ws_row = ws_ptr + rn_load * stride_wsn

    if GROUPWISE:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
    for kb in range(K // BLOCK_K):
        x = tl.load(x_ptrs)
        w = tl.load(w_ptrs)
        if GROUPWISE:
            part = tl.dot(x, tl.trans(w), tl.zeros((BLOCK_M, BLOCK_N), tl.int32), out_dtype=tl.int32)
            scale = tl.load(ws_row + (kb * BLOCK_K) // GROUP_K)  # (BLOCK_N,) float32
            acc += part.to(tl.float32) * scale[None, :]
        else:
            acc = tl.dot(x, tl.trans(w), acc, out_dtype=tl.int32)
        x_ptrs += BLOCK_K
        w_ptrs += BLOCK_K

    x_scale = tl.load(xs_ptr + rm_load)
    store_w4a8_tile(acc.to(tl.float32), x_scale, ws_row, bias_ptr, out_ptr, rm, rn, rn_load, M, N, 0,
                    GROUPWISE, False, HAS_BIAS)  # fmt: skip


@dataclass(frozen=True)
class UnpackedConfig(LaunchConfig):
    """``block_k`` is an upper bound: the plan uses the largest power of two ``<= block_k`` dividing K and the group
    size. Group-wise tiles hold two accumulators (the float32 sum and the MMA's int32 block), so a warpgroup's
    share of the tile stays at 64 x 128 (128 registers per thread for both)."""

    group_m: int = 8


# Named configs (the benchmark can force each one); which runs for which M is decided by the one W4A8 table,
# DISPATCH_TABLE in lowbit_flex/kernels/s8s4_dispatch.py.
# Measured on the H200 (2026-12-01) and dropped: 128x128 with 4 stages (0.70-1.37x per channel, below 3 stages),
# 64x256 and 128x256 with 8 warps (never best; 128x256 holds two 128-register accumulators group-wise and spills).
UNPACKED_CONFIGS: dict[str, UnpackedConfig] = {
    "s8s8_128x128x128_w8_s3": UnpackedConfig(128, 128, 128, num_warps=8, num_stages=3),
    "s8s8_64x128x128_w4_s3": UnpackedConfig(64, 128, 128, num_warps=4, num_stages=3),
    "s8s8_64x128x128_w4": UnpackedConfig(64, 128, 128, num_warps=4, num_stages=4),
    "s8s8_64x64x128_w4": UnpackedConfig(64, 64, 128, num_warps=4, num_stages=4),
}

_UNPACK_BLOCK = 2048  # packed int32 words per program of the unpack pass


@functools.lru_cache(maxsize=512)
def _unpack_launch(n_words: int) -> PlanLaunch:
    return PlanLaunch(_unpack_int4_kernel, (triton.cdiv(n_words, _UNPACK_BLOCK),), dict(BLOCK=_UNPACK_BLOCK))


@functools.lru_cache(maxsize=512)
def _unpack_mult_launch(n_words: int) -> PlanLaunch:
    return PlanLaunch(_unpack_int4_mult_kernel, (triton.cdiv(n_words, _UNPACK_BLOCK),), dict(BLOCK=_UNPACK_BLOCK))


def unpack_int4_triton(w: torch.Tensor, w_group_mult: torch.Tensor | None = None) -> torch.Tensor:
    """Packed int4 ``(N, K // 2)`` int8, ``K % 8 == 0`` -> ``(N, K)`` int8 in natural column order (one pass over
    the weight, in int32 words). With ``w_group_mult`` (int8 ``(K // group, N)``, contiguous, each in [0, 16], the
    group a multiple of 8), ``code * mult`` instead (exact)."""
    N, half_k = w.shape
    out = torch.empty((N, 2 * half_k), dtype=torch.int8, device=w.device)
    if w.numel():
        if w.storage_offset() % 4:  # an int32 view needs a word-aligned start
            w = w.clone()
        n_words = w.numel() // 4
        if w_group_mult is None:
            cached_plan(_unpack_launch, n_words)(w.view(torch.int32), out.view(torch.int32), n_words)
        else:
            words_per_row = half_k // 4
            launch = cached_plan(_unpack_mult_launch, n_words)
            launch(w.view(torch.int32), w_group_mult, out.view(torch.int32), n_words, N, words_per_row,
                   words_per_row // w_group_mult.shape[0])  # fmt: skip
    return out


@functools.lru_cache(maxsize=512)
def _gemm_launch(M: int, N: int, K: int, groups: int, has_bias: bool, cfg: UnpackedConfig) -> PlanLaunch:
    group_k = K // groups
    meta = dict(
        BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_K=largest_pow2_divisor(group_k, cfg.block_k),
        GROUP_M=cfg.group_m, GROUPWISE=groups > 1, HAS_BIAS=has_bias,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )  # fmt: skip
    return PlanLaunch(_s8s8_gemm_kernel, (triton.cdiv(M, cfg.block_m) * triton.cdiv(N, cfg.block_n),), meta)


def s8s4_unpacked_gemm_triton(
    x: torch.Tensor,
    x_scale: torch.Tensor,
    w: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None,
    out_dtype: torch.dtype,
    config: UnpackedConfig,
    w_group_mult: torch.Tensor | None = None,
) -> torch.Tensor:
    """The W4A8 GEMM launcher contract of :func:`~lowbit_flex.kernels.s8s4_linear.s8s4_linear_triton` (``w`` packed
    int4 ``(N, K // 2)``, arguments validated by the op), through an int8 copy of the weight made here. With
    ``w_group_mult`` (int8 ``(K // group, N)``, each in [0, 16]) the copy is ``code * mult`` and ``w_scale`` the
    per-channel scale ``(N,)``: group-wise scales in the integer-multiplier format, on the per-channel main loop."""
    M, K = x.shape
    N = w.shape[0]
    out = torch.empty((M, N), dtype=out_dtype, device=x.device)
    if M == 0 or N == 0:
        return out
    groups = w_scale.shape[1] if w_scale.dim() == 2 else 1
    w8 = unpack_int4_triton(w, w_group_mult)
    launch = cached_plan(_gemm_launch, M, N, K, groups, bias is not None, config)
    bias_arg = bias if bias is not None else x_scale  # any valid pointer; unused when HAS_BIAS is False
    launch(x, w8, x_scale, w_scale, bias_arg, out, M, N, K, groups, K // groups)
    return out
