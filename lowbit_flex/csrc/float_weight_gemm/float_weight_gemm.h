// fp6 (e3m2, e2m3) / fp4 (e2m1) weight-only GEMM on Hopper for M >= 16 rows of x, shared declarations (no CUTLASS
// headers: the launcher's callers compile in a second).
//
//   out[m, n] = T( (sum_k x[m, k] * decode(w)[n, k]) * w_scale[n] + bias[n] ),   T = x's dtype (fp16 or bf16)
//
// x: (M, K) row-major in T. w: int32 words of the tile layout (N, ceil(K / 128) * (24 | 16)) (fp6 | fp4,
// lowbit_flex/quant/fpx_tiles.py), what FPxWeightOnlyLinear stores. w_scale (N,) fp32; bias (N,) in T or null;
// out (M, N) row-major in T.
//
// Split-K: with splits > 1, CTA z sums the 128-code K tiles [z * tiles_per_split, (z + 1) * tiles_per_split) and
// writes its raw sums to partials[z] ((splits, M, N) fp32; times fpx_post_scale, then w_scale and bias, is the
// caller's reduction: lowbit_flex.kernels.common.reduce_split_k); out, w_scale and bias are not read.
//
// Constraints (problem_ok): M, N >= 1, K >= 8, K % 8 == 0 (x's rows are TMA rows of 16-byte multiples), x and w
// 16-byte aligned, no empty split. Why the kernel is built this way: float_weight_gemm_sm90.cu.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "common/fpx_format.h"
#include "common/out_dtype.h"
#include "common/status.h"

namespace lowbit::float_weight_gemm {

struct Problem {
  int format;  // kE3M2, kE2M3 or kE2M1
  const void* x;
  const void* w;
  const float* w_scale;
  const void* bias;  // x's dtype; may be null
  void* out;
  float* partials;  // splits > 1 only
  int M, N, K, splits, tiles_per_split;
  cudaStream_t stream;
};

// The per-dtype instances (float_weight_gemm_sm90_{f16,bf16}.cu); kInvalidArgument off sm_90 or for a bad problem.
int sm90_f16(int config, Problem const& p);
int sm90_bf16(int config, Problem const& p);

inline int k_tiles(int K) { return (K + kFpxTileCodes - 1) / kFpxTileCodes; }

inline bool problem_ok(Problem const& p) {
  auto aligned16 = [](const void* ptr) { return (reinterpret_cast<uintptr_t>(ptr) & 15u) == 0; };
  if (p.format != kE3M2 && p.format != kE2M3 && p.format != kE2M1) return false;
  if (p.M < 1 || p.N < 1 || p.K < 8 || p.K % 8 != 0 || !p.x || !p.w || !aligned16(p.x) || !aligned16(p.w)) return false;
  if (p.splits < 1 || p.tiles_per_split < 1) return false;
  const int tiles = k_tiles(p.K);
  // every split has work and the last one ends at or past the last tile
  if (static_cast<int64_t>(p.splits - 1) * p.tiles_per_split >= tiles) return false;
  if (static_cast<int64_t>(p.splits) * p.tiles_per_split < tiles) return false;
  return p.splits > 1 ? p.partials != nullptr : (p.out != nullptr && p.w_scale != nullptr);
}

}  // namespace lowbit::float_weight_gemm

// Tile configurations: x rows per CTA (the WGMMA's N: 16 .. 256) and the most pipeline stages (fewer where the
// format's stages do not fit shared memory). Every config has 128 weight rows per CTA (two consumer warpgroups).
// The position is the launcher's `config` index; the names are
// lowbit_flex.kernels.float_weight_gemm_cuda.GEMM_CUDA_CONFIGS (a CPU test checks that both agree).
// X(index, name, block_m, max_stages)
#define LOWBIT_FLOAT_WEIGHT_GEMM_CONFIGS(X) \
  X(0, "wgmma_16x128", 16, 8)               \
  X(1, "wgmma_32x128", 32, 8)               \
  X(2, "wgmma_64x128", 64, 6)               \
  X(3, "wgmma_128x128", 128, 4)             \
  X(4, "wgmma_256x128", 256, 3)

// The exported launcher (float_weight_gemm_sm90.cu): `dtype` is x's and out's (a lowbit::OutDtype), `format` a
// lowbit::FpxFormat. Returns a lowbit::Status.
LOWBIT_API int lowbit_float_weight_gemm_sm90(int config, int format, int dtype, const void* x, const void* w,
                                             const float* w_scale, const void* bias, void* out, float* partials, int M,
                                             int N, int K, int splits, int tiles_per_split, cudaStream_t stream);
LOWBIT_API int lowbit_float_weight_gemm_sm90_num_configs();
LOWBIT_API const char* lowbit_float_weight_gemm_sm90_config_name(int config);
