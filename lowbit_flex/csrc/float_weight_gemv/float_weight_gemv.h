// Weight-only decode GEMV: fp8 (e4m3fn), fp6 (e3m2, e2m3) or fp4 (e2m1) weights on fp16 / bf16 tensor cores,
// M <= 16 rows of x, shared declarations.
//
//   out[m, n] = dtype( sum_k x[m, k] * decode(w)[n, k] * w_scale[n] + bias[n] )
//
// x: (M, K) fp16 or bf16, rows contiguous; out: (M, N) row-major and bias (N,) (or null) in x's dtype. w: e4m3fn bytes
// (N, K) row-major (fp8), or int32 words of the tile layout (N, ceil(K / 128) * 24 | 16) (fp6 | fp4, see
// lowbit_flex/quant/fpx_tiles.py). w_scale: (N,) fp32, one scale per output channel.
//
// Constraints (problem_ok): 1 <= M <= 16, N >= 1, K >= 8, K % 8 == 0 (fp8: K % 16 == 0, rows of whole 16-byte
// chunks), x and w 16-byte aligned. Why the kernel is built this way: float_weight_gemv.cu and
// docs/float_quantization.md.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "common/fpx_format.h"
#include "common/out_dtype.h"
#include "common/status.h"

namespace lowbit::float_weight_gemv {

// The weight format codes of the launcher: lowbit::FpxFormat (common/fpx_format.h).

constexpr int kMaxM = 16;

struct Problem {
  int format;
  const void* x;
  const void* w;
  const float* w_scale;
  const void* bias;  // x's dtype; may be null
  void* out;
  int M, N, K;
  cudaStream_t stream;
};

inline bool problem_ok(Problem const& p) {
  auto aligned16 = [](const void* ptr) { return (reinterpret_cast<uintptr_t>(ptr) & 15u) == 0; };
  const int k_multiple = p.format == kE4M3 ? 16 : 8;
  return p.format >= kE4M3 && p.format <= kE2M1 && p.M >= 1 && p.M <= kMaxM && p.N >= 1 && p.K >= 8 &&
         p.K % k_multiple == 0 && p.x && p.w && p.w_scale && p.out && aligned16(p.x) && aligned16(p.w);
}

}  // namespace lowbit::float_weight_gemv

// Launch configurations: warps per CTA along N (16 weight rows each) and along K (each takes every warps_k-th tile of
// 128 codes; their sums meet in shared memory). The position is the launcher's `config` index; the names are
// lowbit_flex.kernels.float_weight_gemv_cuda.GEMV_CUDA_CONFIGS (a CPU test checks that both agree).
// X(index, name, warps_n, warps_k)
#define LOWBIT_FLOAT_WEIGHT_GEMV_CONFIGS(X) \
  X(0, "cp_n1k4", 1, 4)                     \
  X(1, "cp_n1k8", 1, 8)                     \
  X(2, "cp_n2k4", 2, 4)                     \
  X(3, "cp_n4k2", 4, 2)                     \
  X(4, "cp_n2k2", 2, 2)

LOWBIT_API int lowbit_float_weight_gemv(int config, int format, int dtype, const void* x, const void* w,
                                        const float* w_scale, const void* bias, void* out, int M, int N, int K,
                                        cudaStream_t stream);
LOWBIT_API int lowbit_float_weight_gemv_num_configs();
LOWBIT_API const char* lowbit_float_weight_gemv_config_name(int config);
