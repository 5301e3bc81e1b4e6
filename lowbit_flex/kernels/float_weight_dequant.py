"""Dequantize a fp8 / fp6 / fp4 weight to ``x``'s dtype, ``decode(w) * w_scale`` rounded once, for cuBLAS.

At prefill sizes a linear is compute bound and cuBLAS's bf16 GEMM is the fastest tensor-core code on the machine;
dequantizing the weight once per call (one read of the packed bytes, one write of the 16-bit weight) and handing it
to ``torch.addmm`` costs a few percent of the GEMM there. The product then equals ``nn.Linear`` with the
dequantized weight stored in ``x``'s dtype: the scale is applied before the 16-bit rounding, not after the sum (the
fused kernels' epilogue), which is the one numerical difference between the paths.
"""

from __future__ import annotations

import triton
import triton.language as tl

from lowbit_flex.kernels.float_weight_decode import decode_fp8, decode_planes, load_tile_words


@triton.jit
def _float_weight_dequant_kernel(
    w_ptr, scale_ptr, out_ptr, N, K, stride_wn,
    BITS: tl.constexpr, MBITS: tl.constexpr, NATIVE_FP8: tl.constexpr, DEC_SCALE: tl.constexpr,
    ASM: tl.constexpr, CONS: tl.constexpr, BLOCK_N: tl.constexpr, STEP_TILES: tl.constexpr,
):  # fmt: skip
    rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    t0 = tl.program_id(1) * STEP_TILES
    n_ok = rn < N
    scale = tl.load(scale_ptr + rn, mask=n_ok, other=0.0) * DEC_SCALE
    out_dtype = out_ptr.dtype.element_ty
    if BITS == 8:
        k = t0 * 128 + tl.arange(0, 128 * STEP_TILES)[None, :]
        ok = n_ok[:, None] & (k < K)
        w = tl.load(w_ptr + rn[:, None].to(tl.int64) * stride_wn + k, mask=ok, other=0.0)
        val = decode_fp8(w, NATIVE_FP8).to(tl.float32) * scale[:, None]
        tl.store(out_ptr + rn[:, None].to(tl.int64) * K + k, val.to(out_dtype), mask=ok)
    else:
        t = t0 + tl.arange(0, STEP_TILES)[None, :, None]
        ww = tl.arange(0, 16)[None, None, :]
        rows = rn[:, None, None]
        hi, lo = load_tile_words(w_ptr + rows.to(tl.int64) * stride_wn, t, ww, BITS, (rows < N) & (t * 128 < K))
        planes = decode_planes(hi, lo, BITS, MBITS, True, ASM, CONS)
        for p in tl.static_range(8):
            k = t * 128 + 16 * p + ww
            val = planes[p] * scale[:, None, None]
            tl.store(out_ptr + rows.to(tl.int64) * K + k, val.to(out_dtype), mask=(rows < N) & (k < K))


# 64 rows x 2 tiles (128 codes each) per program, 4 warps: 64 values per thread (the GEMV's decode with float32
# outputs, then the scale, in registers).
DEQUANT_BLOCK_N = 64
DEQUANT_STEP_TILES = 2
DEQUANT_WARPS = 4
