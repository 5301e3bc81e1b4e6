// int8 x int8 GEMM with group-wise weight scales, shared declarations (no CUTLASS headers: the launcher TU that
// includes only this file compiles in a second).
//
//   out[m, n] = out_dtype( (sum_g float(dot_g[m, n]) * w_scale[n, g]) * x_scale[m] + bias[n] ),
//   dot_g[m, n] = sum_{k in group g} x[m, k] * w[n, k]                     (exact, int32)
//
// or, for the integer-multiplier configs (names ending in _int), with w_scale int32 multipliers:
//
//   out[m, n] = out_dtype( float(sum_g dot_g[m, n] * w_scale[n, g]) * x_scale[m] * w_channel_scale[n] + bias[n] )
//
// where the int32 sum is exact while it fits: the caller keeps K * 128 * 8 * max|w_scale| < 2^31 (W4A8 weights,
// |mult| <= 128: K < 2^14).
//
// x: int8 (M, K) row-major. w: int8 (N, K) row-major (the W4A8 weight after unpack_int4_triton, values in
// [-8, 7]; any int8 works while |dot_g| <= 2^22, which holds for every int8 pair when group <= 256).
// x_scale (M,), w_scale (N, K / group) row-major, bias (N,) or null: fp32. out: (M, N) row-major, fp16 or bf16.
// See docs/s8s8_groupwise_cutlass.md for the kernel and the constraints problem_ok() checks.
#pragma once

#include <cstddef>
#include <cstdint>

#include "common/out_dtype.h"
#include "common/status.h"

namespace lowbit::s8s8g {

struct Problem {
  const int8_t* x;
  const float* x_scale;
  const int8_t* w;
  const void* w_scale;          // float scales, or int32 multipliers for the _int configs
  const float* w_channel_scale;  // the _int configs' (N,) scale; null for the others
  const float* bias;             // may be null
  void* out;
  int M, N, K, group;
  void* workspace;  // device memory of at least the queried size (may be null when that size is 0)
  size_t workspace_bytes;
  cudaStream_t stream;
};

// Each returns a lowbit::Status. With `query_workspace` non-null nothing is launched: the workspace size the
// problem needs is stored there (host-only work). `config` indexes LOWBIT_S8S8G_SM90_CONFIGS.
int sm90_f16(int config, Problem const& p, size_t* query_workspace);
int sm90_bf16(int config, Problem const& p, size_t* query_workspace);

// The shape and alignment checks every config needs (each config's group rule and CUTLASS's can_implement run
// after these). TMA: 16-byte aligned bases and row strides (K % 16 for x and w, N % 8 for the fp16/bf16 out);
// K % 32 is the W4A8 packing rule; w_scale and bias are read 4 bytes at a time.
inline bool problem_ok(Problem const& p) {
  auto aligned = [](const void* ptr, uintptr_t n) { return (reinterpret_cast<uintptr_t>(ptr) & (n - 1)) == 0; };
  return p.M > 0 && p.N > 0 && p.K > 0 && p.K % 32 == 0 && p.N % 8 == 0 && p.group > 0 && p.group % 32 == 0 &&
         p.K % p.group == 0 && p.x && p.x_scale && p.w && p.w_scale && p.out && aligned(p.x, 16) && aligned(p.w, 16) &&
         aligned(p.out, 16) && aligned(p.x_scale, 4) && aligned(p.w_scale, 4) && aligned(p.w_channel_scale, 4) &&
         (p.bias == nullptr || aligned(p.bias, 4)) && (p.workspace_bytes == 0 || p.workspace != nullptr);
}

}  // namespace lowbit::s8s8g

// The exported launcher (s8s8_groupwise_sm90.cu): with `query_workspace` non-null it stores the workspace size
// the problem needs there and launches nothing; otherwise it launches on `stream`. `out_dtype` is a
// lowbit::s8s8g::OutDtype.
#define LOWBIT_S8S8G_LAUNCHER_PARAMS                                                                         \
  int config, int out_dtype, const int8_t *x, const float *x_scale, const int8_t *w, const void *w_scale,    \
      const float *w_channel_scale, const float *bias, void *out, int M, int N, int K, int group, void *workspace, \
      size_t workspace_bytes, size_t *query_workspace, cudaStream_t stream
#define LOWBIT_S8S8G_PROBLEM \
  {x, x_scale, w, w_scale, w_channel_scale, bias, out, M, N, K, group, workspace, workspace_bytes, stream}

// The exported functions: the launcher, and the names of the configs it indexes (s8s8_groupwise_sm90.cu).
LOWBIT_API int lowbit_s8s8_groupwise_sm90(LOWBIT_S8S8G_LAUNCHER_PARAMS);
LOWBIT_API int lowbit_s8s8_groupwise_sm90_num_configs();
LOWBIT_API const char* lowbit_s8s8_groupwise_sm90_config_name(int config);
