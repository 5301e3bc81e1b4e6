"""Weight-only linear at prefill sizes on Hopper: TMA-fed tensor-core tiles, ``out = x @ (decode(w) * s).T + b``.

The M range between decode and large prefill (16 ... 1024 rows) is where the weight-only formats lost most to
bf16: the pointer-load tiles of :mod:`~lowbit_flex.kernels.float_weight_only_linear` pay masks and address
arithmetic on every element, and dequantize + cuBLAS pays a full 16-bit write and read of the weight. Here every
operand tile is copied by the TMA engine (device-side descriptors; zero fill past M, N and K: no mask in the loop),
and each program computes ``out.T = w @ x.T`` (swap-AB), so the decoded weight is WGMMA's register operand (no
shared-memory round trip) and ``x.T`` its shared-memory one:

* fp8: a ``(BLOCK_N, 128 * STEP_TILES)`` tile of codes, converted to ``x``'s dtype in registers (hardware e4m3
  conversion, exact).
* fp4 / fp6 (tile layout of :mod:`lowbit_flex.quant.fpx_tiles`): one 128-code tile per step, its 16 hi words (and
  fp6's 8 lo words) per row. :func:`~lowbit_flex.kernels.float_weight_decode.decode_planes` gives 8 planes of 16
  codes and :func:`_join_planes` puts them side by side, which is the tile's K order: one ``(BLOCK_M, 128)`` box of
  ``x`` and one ``tl.dot`` per tile. Triton undoes the join in registers (its K-split of the dot lands on the
  planes; no layout conversion). One ``tl.dot`` per plane was measured 1.4-1.7x slower: Triton waits for each of
  several dots in a loop before issuing the next.
* Split-K where the output tiles leave SMs idle (partials reduced in split order by the shared reduce kernel:
  deterministic).

WGMMA pipelining, and a hazard. With a zero-trip path through the K loop (as far as the compiler knows, it may run
zero times) the zeroed accumulator meets the loop's result right after the last in-flight WGMMA, and ptxas
serializes every WGMMA of the loop (warning C7515: each waits for the previous one). ``tl.assume(t_end > t_first)``
(true: no split is empty and the op rejects K = 0) removes that path and the serialization. But then ptxas before
13.3 lets the next step's decoded weight overwrite registers an in-flight WGMMA still reads
(triton-lang/triton#9433). On the H200 (run 19) the pipelined tiles returned NaN or 3-10x the rounding bound on long
K loops with Triton 3.6's ptxas 12.8; with ptxas 13.5 the 16- and 64-row tiles were right, while the 8-warp
256-row tile (and a 4-warp 256x64 one tried) still were not. So a config makes the assume only where it was measured
right pipelined (its ``wgmma_pipelined`` flag) and the toolchain is the one it was measured with (``NONEMPTY_K``,
from :func:`~lowbit_flex.kernels.arch.register_a_wgmma_pipelines`: ptxas >= 13.3, named by ``TRITON_PTXAS_PATH``,
and Triton 3.6); elsewhere the loop runs serialized and correct.

TMA needs sm_90, a unit last stride, 16-byte aligned row strides and bases; the dispatch's ``tma_supported`` says
whether a call qualifies (otherwise the next rule of its table applies). Configs: the fixed table
:data:`TMA_CONFIGS`.
"""

from __future__ import annotations

from dataclasses import dataclass

import triton
import triton.language as tl

from lowbit_flex.kernels.common import LaunchConfig, dot_acc, grouped_tile
from lowbit_flex.kernels.float_weight_decode import decode_planes, store_weight_only_tile


@triton.jit
def _join_planes(planes, BLOCK_N: tl.constexpr):
    """The 8 ``(BLOCK_N, 16)`` planes of a tile side by side, ``(BLOCK_N, 128)``: column ``16 p + w`` is plane
    ``p``'s column ``w``, i.e. the tile's codes in K order (one ``tl.dot`` per tile instead of eight)."""
    j0 = tl.join(tl.join(planes[0], planes[1]), tl.join(planes[2], planes[3]))  # (BN, 16, b0, b1)
    j1 = tl.join(tl.join(planes[4], planes[5]), tl.join(planes[6], planes[7]))
    j = tl.join(j0, j1)  # (BN, 16, b0, b1, b2): plane p = b0 + 2 b1 + 4 b2
    return tl.reshape(tl.permute(j, (0, 4, 3, 2, 1)), (BLOCK_N, 128))


@triton.jit
def _float_weight_tma_kernel(
    x_ptr, w_ptr, scale_ptr, bias_ptr, out_ptr, part_ptr,
    M, N, K, KW, stride_xm, stride_wn, stride_om, TILES_PER_SPLIT,
    BITS: tl.constexpr, MBITS: tl.constexpr, DEC_SCALE: tl.constexpr, ASM: tl.constexpr, CONS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, STEP_TILES: tl.constexpr, GROUP_M: tl.constexpr,
    SPLIT_PARTIALS: tl.constexpr, HAS_BIAS: tl.constexpr, UPCAST_DOT: tl.constexpr, NONEMPTY_K: tl.constexpr,
):  # fmt: skip
    pid_m, pid_n = grouped_tile(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)
    pid_k = tl.program_id(1)
    m0 = pid_m * BLOCK_M
    n0 = pid_n * BLOCK_N
    t_first = pid_k * TILES_PER_SPLIT  # a multiple of STEP_TILES: a step never crosses into the next split
    t_end = tl.minimum(t_first + TILES_PER_SPLIT, tl.cdiv(K, 128))
    # No split is empty (split_k_blocks) and K >= 1: telling the compiler removes the zero-trip path whose zeroed
    # accumulator makes ptxas serialize every WGMMA of the loop (C7515), where its WGMMA pipelining is safe
    # (NONEMPTY_K: arch.register_a_wgmma_pipelines; see the module docstring).
    if NONEMPTY_K:
        tl.assume(t_end > t_first)
    acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)  # out.T = w @ x.T (swap-AB)
    x_dtype = x_ptr.dtype.element_ty
    if BITS == 8:
        x_desc = tl.make_tensor_descriptor(x_ptr, [M, K], [stride_xm, 1], [BLOCK_M, 128 * STEP_TILES])
        w_desc = tl.make_tensor_descriptor(w_ptr, [N, K], [stride_wn, 1], [BLOCK_N, 128 * STEP_TILES])
        for t in range(t_first, t_end, STEP_TILES):
            xv = x_desc.load([m0, t * 128])
            wv = w_desc.load([n0, t * 128]).to(x_dtype)  # e4m3 -> 16 bits: exact (DEC_SCALE is 1)
            acc = dot_acc(wv, tl.trans(xv), acc, UPCAST_DOT, "tf32")
    else:
        TILE_WORDS: tl.constexpr = 16 if BITS == 4 else 24
        x_desc = tl.make_tensor_descriptor(x_ptr, [M, K], [stride_xm, 1], [BLOCK_M, 128])
        hi_desc = tl.make_tensor_descriptor(w_ptr, [N, KW], [stride_wn, 1], [BLOCK_N, 16])
        if BITS == 6:
            lo_desc = tl.make_tensor_descriptor(w_ptr, [N, KW], [stride_wn, 1], [BLOCK_N, 8])
        for t in range(t_first, t_end):
            hi = hi_desc.load([n0, t * TILE_WORDS])
            lo = hi
            if BITS == 6:
                # word w's two low bits per code sit in lo word w % 8, 8 bits higher for w >= 8 (fpx_tiles):
                # widen the 8 lo words to 16, word w = lo[w % 8] >> 8 * (w // 8), as decode_planes takes them.
                lo8 = lo_desc.load([n0, t * TILE_WORDS + 16])
                lo = tl.reshape(tl.permute(tl.join(lo8, lo8 >> 8), (0, 2, 1)), (BLOCK_N, 16))
            planes = decode_planes(hi, lo, BITS, MBITS, False, ASM, CONS)
            xv = x_desc.load([m0, t * 128])
            acc = dot_acc(_join_planes(planes, BLOCK_N).to(x_dtype), tl.trans(xv), acc, UPCAST_DOT, "tf32")
    acc = tl.trans(acc)
    rm = m0 + tl.arange(0, BLOCK_M)
    rn = n0 + tl.arange(0, BLOCK_N)
    store_weight_only_tile(acc, scale_ptr, bias_ptr, out_ptr, part_ptr, rm, rn, M, N, stride_om, pid_k,
                           DEC_SCALE, SPLIT_PARTIALS, HAS_BIAS)  # fmt: skip


@dataclass(frozen=True)
class TmaConfig(LaunchConfig):
    """``block_m`` rows of ``x`` (WGMMA's N), ``block_n`` rows of the weight (its M), ``block_k`` tiles of 128 codes
    per step (fp8; fp4 / fp6 always step one tile). ``split_k``: 0 splits K while the output tiles give fewer than
    ``programs_per_sm`` programs per SM, 1 never. ``group_m``: row tiles that share one weight tile in consecutive
    programs (L2 reuse)."""

    split_k: int = 0
    programs_per_sm: int = 1
    group_m: int = 8
    wgmma_pipelined: bool = False  # measured right with pipelined WGMMAs (arch.register_a_wgmma_pipelines)


# Shared memory per stage (sm_90: 227 KiB per block): BLOCK_M x 128 of x (16 bits) plus BLOCK_N x 128 fp8 codes or
# BLOCK_N x 16 (fp6: + 8) words; the 256-row tile fits 3 stages. Triton 3.6 compiles every config for sm_90 without
# spills (up to 216 registers), the ``wgmma_pipelined`` ones without WGMMA serialization where NONEMPTY_K holds.
# Every config is compiled for sm_90 in tests/kernels/aot_cases.py (the dispatch picks these on sm_90 only).
# Measured on the H200 (docs/measurements/h200_run18_weight_only_tma.md, h200_run19_weight_only_ptxas.md).
TMA_CONFIGS: dict[str, TmaConfig] = {
    "tma_16x128x1_swap": TmaConfig(16, 128, 1, num_warps=4, num_stages=4, programs_per_sm=2, wgmma_pipelined=True),
    "tma_64x128x1_swap": TmaConfig(64, 128, 1, num_warps=4, num_stages=4, wgmma_pipelined=True),
    "tma_128x128x1_swap": TmaConfig(128, 128, 1, num_warps=8, num_stages=4),
    "tma_256x128x1_swap": TmaConfig(256, 128, 1, num_warps=8, num_stages=3),
}
