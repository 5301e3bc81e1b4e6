// W4A8 GEMM with a fused dequantization epilogue, shared declarations (no CUTLASS headers: the launcher TUs that
// include only this file compile in a second).
//
//   out[m, n] = out_dtype( float(acc[m, n]) * x_scale[m] * w_scale[n] + bias[n] ),
//   acc[m, n] = sum_k x[m, k] * w[n, k]                                   (exact, int32)
//
// x: int8 (M, K) row-major. w: int4 (N, K) row-major packed two per byte (k even in the low nibble, two's
// complement), i.e. the GEMM's B operand K x N column-major. x_scale (M,), w_scale (N,), bias (N,) or null: fp32.
// out: (M, N) row-major, fp16 or bf16. All pointers 16-byte aligned; K % 32 == 0 and N % 8 == 0 (see
// docs/s8s4_cutlass.md for why).
//
// The group-multiplier kernels (LOWBIT_S8S4_SM90_MULT_CONFIGS) read the weight as w[n, k] * w_mult[k / group, n]
// (int8 multipliers in [0, 16], (K / group, N) row-major; the upcast reads them as uint8 and is exact in that
// range only) and w_scale as the per-channel scale.
#pragma once

#include <cstddef>
#include <cstdint>

#include "common/out_dtype.h"
#include "common/status.h"

namespace lowbit::s8s4 {

struct Problem {
  const int8_t* x;
  const float* x_scale;
  const void* w;  // packed int4
  const float* w_scale;
  const float* bias;  // may be null
  void* out;
  int M, N, K;
  void* workspace;  // device memory of at least the queried size (may be null when that size is 0)
  size_t workspace_bytes;
  cudaStream_t stream;
  const int8_t* w_mult = nullptr;  // group-multiplier kernels only: (K / group, N) row-major
  int group = 0;
};

// Each returns a lowbit::Status. With `query_workspace` non-null nothing is launched: the workspace size the
// problem needs is stored there (host-only work). `config` indexes LOWBIT_S8S4_SM80_CONFIGS / _SM90_CONFIGS.
int sm80_f16(int config, Problem const& p, size_t* query_workspace);
int sm80_bf16(int config, Problem const& p, size_t* query_workspace);
int sm90_f16(int config, Problem const& p, size_t* query_workspace);
int sm90_bf16(int config, Problem const& p, size_t* query_workspace);
int sm90_mult_f16(int config, Problem const& p, size_t* query_workspace);  // LOWBIT_S8S4_SM90_MULT_CONFIGS
int sm90_mult_bf16(int config, Problem const& p, size_t* query_workspace);

// The shape and alignment checks every kernel needs (the CUTLASS can_implement checks run after these).
inline bool problem_ok(Problem const& p) {
  auto aligned16 = [](const void* ptr) { return (reinterpret_cast<uintptr_t>(ptr) & 15u) == 0; };
  return p.M > 0 && p.N > 0 && p.K > 0 && p.K % 32 == 0 && p.N % 8 == 0 && p.x && p.x_scale && p.w && p.w_scale &&
         p.out && aligned16(p.x) && aligned16(p.w) && aligned16(p.out) && aligned16(p.w_scale) &&
         (p.bias == nullptr || aligned16(p.bias)) && (reinterpret_cast<uintptr_t>(p.x_scale) & 3u) == 0 &&
         (p.workspace_bytes == 0 || p.workspace != nullptr);
}

// What the group-multiplier kernels need on top: the multipliers' rows are TMA rows (16-byte strides: N % 16) and
// the group a whole number of K tiles (CUTLASS reads one multiplier column per K tile and reuses it across a group).
inline bool mult_problem_ok(Problem const& p, int tile_k) {
  return problem_ok(p) && p.w_mult && (reinterpret_cast<uintptr_t>(p.w_mult) & 15u) == 0 && p.N % 16 == 0 &&
         p.group > 0 && p.group % tile_k == 0 && p.K % p.group == 0;
}

}  // namespace lowbit::s8s4

// The exported launchers (s8s4_gemm_sm80.cu, s8s4_gemm_sm90.cu) all have this signature: with `query_workspace`
// non-null they store the workspace size the problem needs there and launch nothing; otherwise they launch on
// `stream`. `out_dtype` is a lowbit::s8s4::OutDtype.
#define LOWBIT_S8S4_LAUNCHER_PARAMS                                                                      \
  int config, int out_dtype, const int8_t *x, const float *x_scale, const void *w, const float *w_scale, \
      const float *bias, void *out, int M, int N, int K, void *workspace, size_t workspace_bytes,        \
      size_t *query_workspace, cudaStream_t stream
#define LOWBIT_S8S4_PROBLEM {x, x_scale, w, w_scale, bias, out, M, N, K, workspace, workspace_bytes, stream}

// The exported functions of each family ("sm80", "sm90"): the launcher, and the names of the configs it indexes.
#define LOWBIT_S8S4_DECLARE_FAMILY(FAMILY)                          \
  LOWBIT_API int lowbit_s8s4_##FAMILY(LOWBIT_S8S4_LAUNCHER_PARAMS); \
  LOWBIT_API int lowbit_s8s4_##FAMILY##_num_configs();              \
  LOWBIT_API const char* lowbit_s8s4_##FAMILY##_config_name(int config);
LOWBIT_S8S4_DECLARE_FAMILY(sm80)
LOWBIT_S8S4_DECLARE_FAMILY(sm90)
#undef LOWBIT_S8S4_DECLARE_FAMILY

// The group-multiplier family: the same parameters, then the (K / group, N) int8 multipliers and the group.
LOWBIT_API int lowbit_s8s4_sm90_mult(LOWBIT_S8S4_LAUNCHER_PARAMS, const int8_t* w_mult, int group);
LOWBIT_API int lowbit_s8s4_sm90_mult_num_configs();
LOWBIT_API const char* lowbit_s8s4_sm90_mult_config_name(int config);
