// What the decode GEMVs (w4a8_gemv, float_weight_gemv) share after their main loops: float <-> fp16 / bf16
// conversions and the sum of the warps of a CTA that split K.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <type_traits>

namespace lowbit {

template <class T>
__device__ __forceinline__ float to_float(T v) {
  if constexpr (std::is_same_v<T, __half>)
    return __half2float(v);
  else if constexpr (std::is_same_v<T, __nv_bfloat16>)
    return __bfloat162float(v);
  else
    return v;
}

template <class T>
__device__ __forceinline__ T from_float(float v) {
  if constexpr (std::is_same_v<T, __half>)
    return __float2half_rn(v);
  else
    return __float2bfloat16_rn(v);
}

// Adds into `sum` of the warps with wk == 0 the sums of the other warps_k - 1 warps of their warp column wn, in
// warp order (deterministic). `red`: shared memory for every warp's MT x 4 values per lane. Every warp of the CTA
// calls it (two barriers: all stores before the reads, all reads before the next tile's stores).
template <int MT, class Acc>
__device__ __forceinline__ void reduce_k_split(Acc (&sum)[MT][4], Acc* red, int warp, int wn, int wk, int warps_n,
                                               int warps_k, int lane) {
  constexpr int kPerWarp = MT * 4 * 32;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int i = 0; i < 4; ++i) red[warp * kPerWarp + (mt * 4 + i) * 32 + lane] = sum[mt][i];
  __syncthreads();
  if (wk == 0)
    for (int k = 1; k < warps_k; ++k)
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int i = 0; i < 4; ++i) sum[mt][i] += red[(k * warps_n + wn) * kPerWarp + (mt * 4 + i) * 32 + lane];
  __syncthreads();
}

}  // namespace lowbit
