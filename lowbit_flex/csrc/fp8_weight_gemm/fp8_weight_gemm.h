// fp8 (e4m3) weight-only GEMM for prefill sizes (the dispatch runs it from M = 33) on Hopper, shared declarations (no CUTLASS headers: the
// launcher TU that includes only this file compiles in a second).
//
//   out[m, n] = T( (sum_k x[m, k] * float(w[n, k])) * w_scale[n] + bias[n] ),   T = x's dtype (fp16 or bf16)
//
// x: (M, K) row-major in T. w: float8_e4m3fn (N, K) row-major (what FP8WeightOnlyLinear stores). w_scale (N,) fp32;
// bias (N,) in T or null. out: (M, N) row-major in T. Every base 16-byte aligned; K % 16 == 0 and N % 8 == 0 (TMA's
// 16-byte rows: w's K bytes, out's transposed rows of N elements).
#pragma once

#include <cstddef>
#include <cstdint>

#include "common/out_dtype.h"
#include "common/status.h"

namespace lowbit::fp8_weight_gemm {

struct Problem {
  const void* x;
  const void* w;  // e4m3 bytes
  const float* w_scale;
  const void* bias;  // may be null
  void* out;
  int M, N, K;
  void* workspace;  // device memory of at least the queried size (may be null when that size is 0)
  size_t workspace_bytes;
  cudaStream_t stream;
};

// Each returns a lowbit::Status; with `query_workspace` non-null nothing is launched and the workspace size the
// problem needs is stored there. `config` indexes LOWBIT_FP8_WEIGHT_GEMM_SM90_CONFIGS. The dtype is x's = out's.
int sm90_f16(int config, Problem const& p, size_t* query_workspace);
int sm90_bf16(int config, Problem const& p, size_t* query_workspace);

inline bool problem_ok(Problem const& p) {
  auto aligned16 = [](const void* ptr) { return (reinterpret_cast<uintptr_t>(ptr) & 15u) == 0; };
  return p.M > 0 && p.N > 0 && p.K > 0 && p.K % 16 == 0 && p.N % 8 == 0 && p.x && p.w && p.w_scale && p.out &&
         aligned16(p.x) && aligned16(p.w) && aligned16(p.out) && aligned16(p.w_scale) &&
         (p.bias == nullptr || aligned16(p.bias)) && (p.workspace_bytes == 0 || p.workspace != nullptr);
}

}  // namespace lowbit::fp8_weight_gemm

// The exported launcher (fp8_weight_gemm_sm90.cu): `dtype` is x's and out's (a lowbit::OutDtype).
#define LOWBIT_FP8_WEIGHT_GEMM_LAUNCHER_PARAMS                                                                   \
  int config, int dtype, const void *x, const void *w, const float *w_scale, const void *bias, void *out, int M, \
      int N, int K, void *workspace, size_t workspace_bytes, size_t *query_workspace, cudaStream_t stream
LOWBIT_API int lowbit_fp8_weight_gemm_sm90(LOWBIT_FP8_WEIGHT_GEMM_LAUNCHER_PARAMS);
LOWBIT_API int lowbit_fp8_weight_gemm_sm90_num_configs();
LOWBIT_API const char* lowbit_fp8_weight_gemm_sm90_config_name(int config);
