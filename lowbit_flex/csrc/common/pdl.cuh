// Programmatic dependent launch (sm_90). Three uses:
// - The W4A8 decode GEMV right after the quantizer kernel that wrote its int8 x (lowbit_w4a8_quantize_then_gemv):
//   the quantizer triggers its dependents at its start, and the GEMV waits before its first load, so only its
//   launch and CTA start move earlier, into the quantization. It makes quantizing first beat quantizing in the GEMV
//   at M = 1 on deep and large square layers, the rows that use it (H100 run 77, 2.7-5.5 % per channel:
//   docs/measurements/h100_run77_w4a8_one_call_quantizer.md).
// - Opt-in with LOWBIT_FLEX_PDL=1: a decode GEMV may start while the kernel before it in the stream finishes, and
//   warm L2 with its first weight bytes meanwhile, so a layer's launch and DRAM ramp-up overlap the previous kernel's
//   tail instead of following it.
// - On by default (reduce_pdl): a split-K reduce kernel is the dependent of the GEMM that writes its partials, which
//   triggers it at its start; the reduce waits before its first load, so only its launch moves earlier.
//
// Why the GEMV's is opt-in: on the H200 it made back-to-back W4A8 GEMVs at M = 1 1.09-1.27x faster (run 25), but a
// GEMV right after an elementwise kernel that writes its x, what follows a norm in a model, 17-22 % slower on every
// shape and scale kind (run 38, docs/measurements/h200_run38_w4a8_decode_limits.md). The default path is the
// measured one: no attribute, no prefetch.
//
// The rule that keeps it exact: before pdl_wait() a kernel only issues L2 prefetches (which never return data to
// it: L2 is the point of coherence, so a byte the previous kernel is still writing is never read stale). Every
// load and every store comes after pdl_wait(), which returns once the previous kernel has completed and its writes
// are visible. Without the launch attribute both device calls are no-ops.
#pragma once

#include <cuda_runtime.h>

#include <cstdlib>
#include <utility>

#include "common/status.h"

namespace lowbit {

// Lets the next kernel in the stream (if launched with the attribute) start its own pre-wait part now.
__device__ __forceinline__ void pdl_launch_dependents() {
#if __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// Returns once the previous kernel in the stream has completed and its writes are visible.
__device__ __forceinline__ void pdl_wait() {
#if __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// Whether the current device has programmatic dependent launch (compute capability 9.0+; cached per device: this
// runs on every decode step).
inline bool device_has_pdl() {
  constexpr int kDevices = 64;
  static int major[kDevices] = {};  // 0: not yet asked
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess || device < 0 || device >= kDevices) return false;
  if (major[device] == 0 &&
      cudaDeviceGetAttribute(&major[device], cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess)
    major[device] = -1;
  return major[device] >= 9;
}

// Whether every decode GEMV may overlap whatever kernel precedes it: LOWBIT_FLEX_PDL=1 (read once).
inline bool pdl_requested() {
  static const bool requested = [] {
    const char* e = std::getenv("LOWBIT_FLEX_PDL");
    return e && e[0] == '1';
  }();
  return requested;
}

// Whether a split-K reduce kernel launches as the programmatic dependent of the GEMM whose partials it adds
// (float_weight_gemm): on, unless LOWBIT_FLEX_REDUCE_PDL=0 (read once; the A/B switch of H100 run 69). Unlike the
// GEMV's opt-in above, the dependent issues nothing before pdl_wait(): it only takes its launch off the GEMM's tail.
inline bool reduce_pdl() {
  static const bool on = [] {
    const char* e = std::getenv("LOWBIT_FLEX_REDUCE_PDL");
    return !(e && e[0] == '0');
  }();
  return on;
}

// kernel<<<grid, threads, smem, stream>>>(args...), with programmatic stream serialization when `pdl`.
template <class... Params, class... Args>
int launch_with_pdl(bool pdl, void (*kernel)(Params...), int grid, int threads, size_t smem, cudaStream_t stream,
                    Args&&... args) {
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(grid);
  config.blockDim = dim3(threads);
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  config.attrs = attr;
  config.numAttrs = pdl ? 1 : 0;
  return from_cuda(cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...));
}

}  // namespace lowbit
