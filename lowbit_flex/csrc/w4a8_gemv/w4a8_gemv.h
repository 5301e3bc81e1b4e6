// W4A8 decode GEMV on int8 tensor cores (mma.sync m16n8k32), M <= 16 rows of x, shared declarations.
//
//   out[m, n] = out_dtype( float(acc[m, n]) * w_scale[n] * x_scale[m] + bias[n] )                (per channel)
//   out[m, n] = out_dtype( (sum_g float(dot_g[m, n]) * w_scale[n, g]) * x_scale[m] + bias[n] )    (group-wise)
//
// x: int8 (M, K) with x_scale (M,) fp32, or fp16 / bf16 / fp32 (M, K), quantized per row inside the kernel with
// the arithmetic of lowbit::quantize_int8_rowwise (scale = amax / 127, 1 for an all-zero row; q = clamp(rint(x /
// scale), -127, 127), IEEE divides), so the int8 values are bit-identical to the two-kernel path. w: int4 (N, K)
// packed two per byte (k even in the low nibble, two's complement). w_scale (N,) or (N, K / group) row-major with
// group % 128 == 0; bias (N,) or null: fp32. out: (M, N) row-major fp16 or bf16.
//
// Constraints (problem_ok): 1 <= M <= 16 (a float x: M <= 8 and M * K <= kMaxFusedXBytes, its int8 rows are kept
// in shared memory), K % 128 == 0, per channel K < 2^17 (the int32 sum of 16x the dot stays exact), x and w 16-byte
// aligned. Each CTA also copies x's rows (an int8 x split across CTAs: its split's columns) into shared memory first
// where they fit the device's per-CTA limit (set LOWBIT_W4A8_GEMV_STAGE_X=0 to read them from global memory
// instead, the A/B switch).
// Why the kernel is built this way: w4a8_gemv.cu and docs/w4a8.md.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "common/out_dtype.h"
#include "common/status.h"

namespace lowbit::w4a8_gemv {

// The input dtype codes of the launcher (lowbit_flex/kernels/w4a8_gemv_cuda.py X_DTYPE_CODE).
enum XDtype : int { kXInt8 = 0, kXF16 = 1, kXBF16 = 2, kXF32 = 3 };

constexpr int kMaxM = 16;
constexpr int kMaxFusedM = 8;
constexpr int kMaxFusedXBytes = 64 * 1024;  // the quantized x rows a CTA keeps in shared memory
constexpr int kMaxKPerChannel = 1 << 17;

struct Problem {
  int x_dtype;
  const void* x;
  const float* x_scale;  // int8 x only
  const void* w;         // packed int4
  const float* w_scale;
  int group;          // 0: per channel
  const float* bias;  // may be null
  void* out;
  int M, N, K;
  // 1 (an int8 x only; lowbit_w4a8_quantize_then_gemv): launched as the programmatic dependent of the kernel before
  // it (sm_90; common/pdl.cuh), the quantizer kernel that wrote x, which lets it start at once: the CTAs start while
  // it runs and wait for it before their first load (exact after any kernel). 0: after it.
  int after_quantizer;
  cudaStream_t stream;
};

inline bool problem_ok(Problem const& p) {
  auto aligned16 = [](const void* ptr) { return (reinterpret_cast<uintptr_t>(ptr) & 15u) == 0; };
  const bool fused = p.x_dtype != kXInt8;
  const bool x_ok = fused ? p.x_dtype <= kXF32 && p.M <= kMaxFusedM && static_cast<long>(p.M) * p.K <= kMaxFusedXBytes
                          : p.x_scale != nullptr;
  const bool group_ok = p.group == 0 ? p.K < kMaxKPerChannel : p.group > 0 && p.group % 128 == 0 && p.K % p.group == 0;
  const bool after_ok = p.after_quantizer == 0 || (p.after_quantizer == 1 && !fused);
  return p.M >= 1 && p.M <= kMaxM && p.N >= 1 && p.K >= 128 && p.K % 128 == 0 && x_ok && group_ok && after_ok && p.x &&
         p.w && p.w_scale && p.out && aligned16(p.x) && aligned16(p.w);
}

}  // namespace lowbit::w4a8_gemv

// Launch configurations: warps per CTA along N (16 weight rows each) and along K (each takes every warps_k-th step
// of 4 chunks of 128 values; their sums meet in shared memory), how many steps ahead each warp asks L2 for its
// weight bytes (0: none), and the K splits across CTAs (1: none; else on sm_90 a thread-block cluster of that many
// CTAs per row tile, each summing a contiguous K range, their sums added in split order through distributed shared
// memory; where the GPU cannot hold such clusters, or off sm_90, the config runs unsplit). The position is the
// launcher's `config` index; the names are lowbit_flex.kernels.w4a8_gemv_cuda.GEMV_CUDA_CONFIGS (a CPU test checks
// that both agree).
// X(index, name, warps_n, warps_k, prefetch, splits)
#define LOWBIT_W4A8_GEMV_CONFIGS(X)    \
  X(0, "mma_n1k8_pf0", 1, 8, 0, 1)     \
  X(1, "mma_n1k8_pf2", 1, 8, 2, 1)     \
  X(2, "mma_n2k4_pf0", 2, 4, 0, 1)     \
  X(3, "mma_n2k4_pf2", 2, 4, 2, 1)     \
  X(4, "mma_n4k2_pf2", 4, 2, 2, 1)     \
  X(5, "mma_n1k16_pf0", 1, 16, 0, 1)   \
  X(6, "mma_n2k8_pf0", 2, 8, 0, 1)     \
  X(7, "mma_n4k4_pf0", 4, 4, 0, 1)     \
  X(8, "mma_n4k4_pf2", 4, 4, 2, 1)     \
  X(9, "mma_n4k2_s2_pf2", 4, 2, 2, 2)  \
  X(10, "mma_n4k4_s2_pf0", 4, 4, 0, 2) \
  X(11, "mma_n2k4_s2_pf0", 2, 4, 0, 2) \
  X(12, "mma_n2k8_s2_pf0", 2, 8, 0, 2) \
  X(13, "mma_n4k4_s4_pf0", 4, 4, 0, 4) \
  X(14, "mma_n2k4_s4_pf0", 2, 4, 0, 4)

LOWBIT_API int lowbit_w4a8_gemv(int config, int x_dtype, int out_dtype, const void* x, const float* x_scale,
                                const void* w, const float* w_scale, int group, const float* bias, void* out, int M,
                                int N, int K, cudaStream_t stream);
// x float16 / bfloat16 / float32 (M, K): quantized per row into xq (int8, (M, K), 16-byte aligned) and xq_scale
// ((M,) fp32) by a quantizer kernel, then the GEMV above on them, with `programmatic` 1 launched as that kernel's
// programmatic dependent (sm_90: its launch overlaps the quantization), 0 after it. One call, two launches; the
// other arguments as lowbit_w4a8_gemv's.
LOWBIT_API int lowbit_w4a8_quantize_then_gemv(int config, int x_dtype, int out_dtype, const void* x, void* xq,
                                              float* xq_scale, const void* w, const float* w_scale, int group,
                                              const float* bias, void* out, int M, int N, int K, int programmatic,
                                              cudaStream_t stream);
LOWBIT_API int lowbit_w4a8_gemv_num_configs();
LOWBIT_API const char* lowbit_w4a8_gemv_config_name(int config);
