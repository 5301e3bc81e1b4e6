// The two halves of "may a Hopper (sm_90a) kernel run here", shared by every sm90 launcher. Torch- and
// CUTLASS-free.
#pragma once

#include <cuda_runtime.h>

namespace lowbit {

// Launch time: sm_90a SASS (wgmma, setmaxnreg) runs on compute capability 9.0 only.
inline bool device_is_sm90() {
  int dev = 0, major = 0, minor = 0;
  if (cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) != cudaSuccess) {
    cudaGetLastError();  // clear it: the next launch check must not report this query's failure
    return false;
  }
  return major == 9 && minor == 0;
}

// Compile time: nvcc defines __CUDA_ARCH_LIST__ (e.g. 800 or 800,900) in the host pass too, so a library built
// only for sm_80 instantiates no Hopper kernel at all, which also halves its build time.
constexpr bool built_for_sm90() {
#if defined(__CUDA_ARCH_LIST__)
  constexpr int archs[] = {__CUDA_ARCH_LIST__};
  for (int a : archs)
    if (a == 900) return true;
#endif
  return false;
}

}  // namespace lowbit
