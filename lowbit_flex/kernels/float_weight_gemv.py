"""Weight-only GEMV for the fewest rows (M <= GEMV_MAX_M): fp8 / fp6 / fp4 weights on CUDA cores, float32 FMA.

At decode sizes a weight-only linear is a stream of the weight bytes and little else. A 16-row tensor-core tile
would be 15/16 padding at M = 1, and its operands would pass through shared memory; here each program owns
``BLOCK_N`` whole rows (split over K only when the rows alone give too few programs), reads them as wide loads
(16 bytes per thread) with the next step's words loaded while this step is multiplied, decodes in registers
(:mod:`~lowbit_flex.kernels.float_weight_decode`: two codes per shift-and-mask in PTX) and multiplies each code
with its activation in float32. Per weight value that is ~1.5 decode instructions (fp4; fp6 ~2.5, fp8 one hardware
conversion per two codes), one conversion to float32 and ``M`` FMAs: on the H200 the kernel is bound by instruction
issue, not memory (28-48% of copy bandwidth at M = 1), and its cost grows with M. The dispatch table
(``kernels/float_weight_dispatch.py``) picks it by M and format from measurement (fp4 / fp6 at M = 1).

Each step covers ``STEP_TILES`` tiles of 128 codes per row: for fp4 / fp6 the tile layout's plane ``p`` of word
``w`` meets activation column ``128 t + 16 p + w`` (16 contiguous columns per plane); fp8 rows are read in K order.
Rows past M and columns past N are wrapped (``% M``, ``% N``) for loads and masked only at the store.
"""

from __future__ import annotations

import triton
import triton.language as tl

from lowbit_flex.kernels.float_weight_decode import decode_fp8, decode_planes, load_tile_words, store_weight_only_tile
from lowbit_flex.kernels.float_weight_only_linear import DotConfig

GEMV_MAX_M = 4


@triton.jit
def _float_weight_gemv_kernel(
    x_ptr, w_ptr, scale_ptr, bias_ptr, out_ptr, part_ptr,
    M, N, K, stride_xm, stride_wn, stride_om, TILES_PER_SPLIT,
    BITS: tl.constexpr, MBITS: tl.constexpr, NATIVE_FP8: tl.constexpr, DEC_SCALE: tl.constexpr,
    ASM: tl.constexpr, CONS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, STEP_TILES: tl.constexpr,
    EVEN_K: tl.constexpr, SPLIT_PARTIALS: tl.constexpr, HAS_BIAS: tl.constexpr,
):  # fmt: skip
    pid_n = tl.program_id(0)
    pid_m = tl.program_id(1)
    pid_k = tl.program_id(2)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    x_rows = x_ptr + (rm % M)[:, None, None, None].to(tl.int64) * stride_xm  # (BM, 1, 1, 1)
    w_rows = w_ptr + (rn % N)[:, None, None].to(tl.int64) * stride_wn  # (BN, 1, 1)
    t_first = pid_k * TILES_PER_SPLIT
    t_end = tl.minimum(t_first + TILES_PER_SPLIT, tl.cdiv(K, 128))
    tt = tl.arange(0, STEP_TILES)[None, :, None]
    WIDTH: tl.constexpr = 128 if BITS == 8 else 16  # values per tile row a thread block holds per plane
    ww = tl.arange(0, WIDTH)[None, None, :]
    acc = tl.zeros((BLOCK_M, BLOCK_N, STEP_TILES, WIDTH), dtype=tl.float32)
    # x is read through a pointer tensor of the products' full shape (stride 0 over the rows): each thread loads the
    # activations its own weights meet (L1 hits after the first row), in the accumulator's layout. Loading an
    # (M, K-slice) tile and broadcasting it made Triton convert its layout through shared memory on every plane.
    x_rows = x_rows + tl.zeros((1, BLOCK_N, 1, 1), dtype=tl.int32)

    # Register double buffering: the next step's weights are in flight while this step is decoded and multiplied
    # (Triton's pipeliner only takes loads that feed a tl.dot). Past t_end the loads are masked off (no traffic).
    if BITS == 8:
        k_mask = (tt * 128 + ww < K) if not EVEN_K else tt >= 0
        w_next = tl.load(w_rows + (t_first + tt) * 128 + ww, mask=(t_first + tt < t_end) & k_mask, other=0.0)
        hi_next = w_next
        lo_next = w_next
    else:
        hi_next, lo_next = load_tile_words(w_rows, t_first + tt, ww, BITS, t_first + tt < t_end)
    for t0 in range(t_first, t_end, STEP_TILES):
        t = t0 + tt
        if BITS == 8:
            wv = w_next
            nxt = t + STEP_TILES
            k_mask = (nxt * 128 + ww < K) if not EVEN_K else nxt >= 0
            w_next = tl.load(w_rows + nxt * 128 + ww, mask=(nxt < t_end) & k_mask, other=0.0)
            k = t * 128 + ww
            xv = tl.load(x_rows + k[None], mask=((k < K) & (t < t_end))[None], other=0.0).to(tl.float32)
            acc += xv * decode_fp8(wv, NATIVE_FP8).to(tl.float32)[None]
        else:
            hi = hi_next
            lo = lo_next
            hi_next, lo_next = load_tile_words(w_rows, t + STEP_TILES, ww, BITS, t + STEP_TILES < t_end)
            planes = decode_planes(hi, lo, BITS, MBITS, True, ASM, CONS)
            for p in tl.static_range(8):
                k = t * 128 + 16 * p + ww
                # Tiles past this split's end (a step can overrun it) must not read x: past K it is not there.
                if EVEN_K:
                    xv = tl.load(x_rows + k[None], mask=(t < t_end)[None], other=0.0)
                else:
                    xv = tl.load(x_rows + k[None], mask=((k < K) & (t < t_end))[None], other=0.0)
                acc += xv.to(tl.float32) * planes[p][None]
    out = tl.sum(tl.sum(acc, axis=3), axis=2)
    store_weight_only_tile(out, scale_ptr, bias_ptr, out_ptr, part_ptr, rm, rn, M, N, stride_om, pid_k,
                           DEC_SCALE, SPLIT_PARTIALS, HAS_BIAS)  # fmt: skip


# ``block_k`` is STEP_TILES (tiles of 128 codes per row and step); split_k=0 splits K only while the rows alone give
# fewer than programs_per_sm programs per SM. Long contiguous runs per row won on the H200 (2026-12-01): 4 rows x
# 8 tiles (512 bytes of fp4 per row and step) ran fp4 at 1.68x bf16 where 16 rows x 2 tiles ran 0.99x; 16 x 2,
# 16 x 4 and 8 x 8 were dropped. Every config is compiled for sm_80 and sm_90 in tests/kernels/aot_cases.py; the
# dispatch table (kernels/float_weight_dispatch.py) says which M runs which.
GEMV_CONFIGS: dict[str, DotConfig] = {
    "gemv_4x4x8": DotConfig(4, 4, 8, num_warps=4, num_stages=1, split_k=0),
    "gemv_4x8x4": DotConfig(4, 8, 4, num_warps=4, num_stages=1, split_k=0),
}
