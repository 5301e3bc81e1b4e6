"""Weight-only linear on tensor cores: ``out = (x @ decode(w).T) * w_scale + bias`` with fp8 / fp6 / fp4 weights.

The weight is read once per output tile in its stored bytes and decoded to ``x``'s dtype in registers
(:mod:`~lowbit_flex.kernels.float_weight_decode`); ``tl.dot`` accumulates in float32 and the epilogue applies the
per-channel scale and bias. It serves the M range between the CUDA-core GEMV (a few rows) and, at the largest M,
dequantize-then-cuBLAS (``kernels/float_weight_dequant.py``); the dispatch table picks, by measurement.

* fp4 / fp6 (tile layout of :mod:`lowbit_flex.quant.fpx_tiles`): a step reads ``STEP_TILES`` tiles of 128 codes
  per row as int32 words and decodes each of the 8 planes into a ``(BLOCK_N, 16 * STEP_TILES)`` operand. Plane
  ``p`` meets activation columns ``128 t + 16 p .. + 15``: one ``tl.dot`` per plane against those columns
  (contiguous 32-byte runs), so nothing is re-ordered in registers.
* fp8: rows in K order, ``128 * STEP_TILES`` codes per step, hardware e4m3 conversion on sm_89+ (and in the
  interpreter), the bit decode on sm_80 (which has no e4m3 conversion instruction).
* ``swap_ab`` configs compute ``out.T = w @ x.T``: the decoded weight becomes the MMA's left operand, which Hopper's
  WGMMA takes from registers and whose 64-row minimum falls on N instead of a 16-row M (fp4 at M = 16: 1.37x bf16
  against 0.97x unswapped on the H200).
* Decode-sized M (<= 16): 16-row tiles split over K until the GPU is full (partials summed in split order by the
  shared reduce kernel: deterministic); larger M: no split.
Configs come from the fixed table ``DOT_CONFIGS`` (no autotuning on first call).
"""

from __future__ import annotations

from dataclasses import dataclass

import triton
import triton.language as tl

from lowbit_flex.kernels.common import LaunchConfig, dot_acc
from lowbit_flex.kernels.float_weight_decode import decode_fp8, decode_planes, load_tile_words, store_weight_only_tile


@triton.jit
def _mma(x, w, acc, SWAP_AB: tl.constexpr, UPCAST: tl.constexpr):
    """``acc + x @ w.T`` (``acc`` ``(BM, BN)``), or with SWAP_AB ``acc + w @ x.T`` (``acc`` ``(BN, BM)``)."""
    if SWAP_AB:
        out = dot_acc(w, tl.trans(x), acc, UPCAST, "tf32")
    else:
        out = dot_acc(x, tl.trans(w), acc, UPCAST, "tf32")
    return out


@triton.jit
def _float_weight_dot_kernel(
    x_ptr, w_ptr, scale_ptr, bias_ptr, out_ptr, part_ptr,
    M, N, K, stride_xm, stride_wn, stride_om, TILES_PER_SPLIT,
    BITS: tl.constexpr, MBITS: tl.constexpr, NATIVE_FP8: tl.constexpr, DEC_SCALE: tl.constexpr,
    ASM: tl.constexpr, CONS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, STEP_TILES: tl.constexpr,
    EVEN_K: tl.constexpr, SPLIT_PARTIALS: tl.constexpr, HAS_BIAS: tl.constexpr, UPCAST_DOT: tl.constexpr,
    SWAP_AB: tl.constexpr, NONEMPTY_K: tl.constexpr,
):  # fmt: skip
    pid_n = tl.program_id(0)
    pid_m = tl.program_id(1)
    pid_k = tl.program_id(2)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    t_first = pid_k * TILES_PER_SPLIT
    t_end = tl.minimum(t_first + TILES_PER_SPLIT, tl.cdiv(K, 128))
    if NONEMPTY_K:  # no empty split, K >= 1: lets ptxas pipeline the WGMMAs where that is safe (float_weight_tma)
        tl.assume(t_end > t_first)
    # SWAP_AB accumulates out.T = w @ x.T: the decoded weight is the MMA's left operand, which Hopper's WGMMA takes
    # from registers (and whose 64-row minimum BLOCK_N meets where BLOCK_M = 16 cannot), x.T the right one.
    if SWAP_AB:
        acc = tl.zeros((BLOCK_N, BLOCK_M), dtype=tl.float32)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    x_dtype = x_ptr.dtype.element_ty
    if BITS == 8:
        x_rows = x_ptr + (rm % M)[:, None].to(tl.int64) * stride_xm  # wrapped rows: stored only if < M
        w_rows = w_ptr + (rn % N)[:, None].to(tl.int64) * stride_wn
        kk = tl.arange(0, 128 * STEP_TILES)[None, :]
        for t0 in range(t_first, t_end, STEP_TILES):
            k = t0 * 128 + kk
            k_ok = (k < K) & (k < t_end * 128)
            xv = tl.load(x_rows + k, mask=k_ok, other=0.0)
            wv = decode_fp8(tl.load(w_rows + k, mask=k_ok, other=0.0), NATIVE_FP8)
            acc = _mma(xv, wv.to(x_dtype), acc, SWAP_AB, UPCAST_DOT)
    else:
        x_rows = x_ptr + (rm % M)[:, None, None].to(tl.int64) * stride_xm  # (BM, 1, 1)
        w_rows = w_ptr + (rn % N)[:, None, None].to(tl.int64) * stride_wn  # (BN, 1, 1)
        tt = tl.arange(0, STEP_TILES)[None, :, None]
        ww = tl.arange(0, 16)[None, None, :]
        for t0 in range(t_first, t_end, STEP_TILES):
            t = t0 + tt
            hi, lo = load_tile_words(w_rows, t, ww, BITS, t < t_end)
            planes = decode_planes(hi, lo, BITS, MBITS, False, ASM, CONS)
            for p in tl.static_range(8):  # one dot per plane, against its 16 contiguous activation columns per tile
                k = t * 128 + 16 * p + ww
                if EVEN_K:
                    xv = tl.load(x_rows + k, mask=t < t_end, other=0.0)
                else:
                    xv = tl.load(x_rows + k, mask=(k < K) & (t < t_end), other=0.0)
                xv = tl.reshape(xv, (BLOCK_M, 16 * STEP_TILES))
                wp = tl.reshape(planes[p].to(x_dtype), (BLOCK_N, 16 * STEP_TILES))
                acc = _mma(xv, wp, acc, SWAP_AB, UPCAST_DOT)
    if SWAP_AB:
        acc = tl.trans(acc)
    store_weight_only_tile(acc, scale_ptr, bias_ptr, out_ptr, part_ptr, rm, rn, M, N, stride_om, pid_k,
                           DEC_SCALE, SPLIT_PARTIALS, HAS_BIAS)  # fmt: skip


@dataclass(frozen=True)
class DotConfig(LaunchConfig):
    """``block_k`` is ``STEP_TILES``: tiles of 128 codes per step. ``split_k``: 0 splits K while the output tiles
    give fewer than ``programs_per_sm`` programs per SM, 1 never."""

    split_k: int = 1
    programs_per_sm: int = 2
    swap_ab: bool = False  # out.T = w @ x.T: the decoded weight as the MMA's register operand
    wgmma_pipelined: bool = False  # measured right with pipelined WGMMAs (arch.register_a_wgmma_pipelines)


# Shared memory (sm_90: 227 KiB per block; the pipeliner keeps num_stages copies of the loads feeding tl.dot):
# fp8 128x128 with 128-code steps holds 3 x (32 KiB of x + 16 KiB of w). The old 256-code, 3-stage fp8 tile needed
# 320 KiB and crashed at M = 4096. Every config is compiled for sm_80 and sm_90 in tests/kernels/aot_cases.py.
DOT_CONFIGS: dict[str, DotConfig] = {
    "dot_16x64x2": DotConfig(16, 64, 2, num_warps=4, num_stages=3, split_k=0, wgmma_pipelined=True),
    "dot_16x128x1_swap": DotConfig(
        16, 128, 1, num_warps=4, num_stages=3, split_k=0, swap_ab=True, wgmma_pipelined=True
    ),
    "dot_128x128x1_swap": DotConfig(128, 128, 1, num_warps=8, num_stages=3, swap_ab=True),
}
