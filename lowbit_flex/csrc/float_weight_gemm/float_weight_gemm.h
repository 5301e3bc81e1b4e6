// fp8 (e4m3) / fp6 (e3m2, e2m3) / fp4 (e2m1) weight-only GEMM on Hopper, built for M >= 16 rows of x, shared
// declarations (no CUTLASS headers: the launcher's callers compile in a second).
//
//   out[m, n] = T( (sum_k x[m, k] * decode(w)[n, k]) * w_scale[n] + bias[n] ),   T = x's dtype (fp16 or bf16)
//
// x: (M, K) row-major in T. w: e4m3fn bytes (N, K) (fp8, what FP8WeightOnlyLinear stores), or int32 words of the
// tile layout (N, ceil(K / 128) * (24 | 16)) (fp6 | fp4, lowbit_flex/quant/fpx_tiles.py, what FPxWeightOnlyLinear
// stores). w_scale (N,) fp32; bias (N,) in T or null; out (M, N) row-major in T.
//
// Split-K where the output tiles leave SMs idle (split_plan): CTA z sums its range of 128-code K tiles in fp32. Up
// to 8 splits of a tile run as one thread-block cluster and add their sums through distributed shared memory (no
// workspace); more, or where the GPU cannot hold every tile's cluster at once, write fp32 partials to the workspace
// and a second kernel adds them, launched as the GEMM's programmatic dependent (its launch overlaps the GEMM). Both
// add in split order (deterministic, the same bits) and apply the epilogue.
// The workspace protocol is the CUTLASS launchers': a call with `query_workspace` stores the bytes needed and
// launches nothing.
//
// Constraints (problem_ok): M, N >= 1, K >= 8, K % 8 == 0 (x's rows are TMA rows of 16-byte multiples; fp8:
// K % 16 == 0, w's rows too), x and w 16-byte aligned. Why the kernel is built this way: float_weight_gemm_sm90.cuh.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "common/fpx_format.h"
#include "common/out_dtype.h"
#include "common/status.h"

namespace lowbit::float_weight_gemm {

struct Problem {
  int format;  // a lowbit::FpxFormat
  const void* x;
  const void* w;
  const float* w_scale;
  const void* bias;  // x's dtype; may be null
  void* out;
  int M, N, K;
  void* workspace;  // device memory of at least the queried size (may be null when that size is 0)
  size_t workspace_bytes;
  cudaStream_t stream;
};

// The per-dtype instances (float_weight_gemm_sm90_{f16,bf16}.cu); kInvalidArgument off sm_90 or for a bad problem.
int sm90_f16(int config, Problem const& p, size_t* query_workspace);
int sm90_bf16(int config, Problem const& p, size_t* query_workspace);

inline int k_tiles(int K) { return (K + kFpxTileCodes - 1) / kFpxTileCodes; }

inline bool problem_ok(Problem const& p) {
  auto aligned16 = [](const void* ptr) { return (reinterpret_cast<uintptr_t>(ptr) & 15u) == 0; };
  if (p.format < kE4M3 || p.format > kE2M1) return false;
  const int k_multiple = p.format == kE4M3 ? 16 : 8;  // TMA rows of 16-byte multiples: x's, and fp8 w's
  if (p.M < 1 || p.N < 1 || p.K < 8 || p.K % k_multiple != 0) return false;
  return p.x && p.w && p.w_scale && p.out && aligned16(p.x) && aligned16(p.w) &&
         (p.workspace_bytes == 0 || p.workspace != nullptr);
}

// K splits for `out_tiles` CTAs of `tiles` K tiles each on `sms` SMs: about one CTA per SM in flight (a CTA holds
// most of an SM's shared memory), never an empty split. {splits, K tiles per split}.
struct SplitPlan {
  int splits, tiles_per_split;
};
inline SplitPlan split_plan(int64_t out_tiles, int tiles, int sms) {
  const int64_t want = out_tiles >= sms ? 1 : sms / out_tiles;
  const int64_t parts = want < tiles ? want : tiles;
  const int per = static_cast<int>((tiles + parts - 1) / parts);
  return {(tiles + per - 1) / per, per};
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
// lowbit::FpxFormat. Returns a lowbit::Status; with `query_workspace` non-null it launches nothing and stores the
// workspace bytes the problem needs.
#define LOWBIT_FLOAT_WEIGHT_GEMM_LAUNCHER_PARAMS                                                                      \
  int config, int format, int dtype, const void *x, const void *w, const float *w_scale, const void *bias, void *out, \
      int M, int N, int K, void *workspace, size_t workspace_bytes, size_t *query_workspace, cudaStream_t stream
LOWBIT_API int lowbit_float_weight_gemm_sm90(LOWBIT_FLOAT_WEIGHT_GEMM_LAUNCHER_PARAMS);
LOWBIT_API int lowbit_float_weight_gemm_sm90_num_configs();
LOWBIT_API const char* lowbit_float_weight_gemm_sm90_config_name(int config);
