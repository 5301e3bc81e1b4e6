// Status codes returned by every exported launcher. Torch-free on purpose: see lowbit_flex/cuda_build.py.
#pragma once

#include <cuda_runtime.h>

#define LOWBIT_API extern "C" __attribute__((visibility("default")))

namespace lowbit {

enum Status : int {
  kOk = 0,
  kInvalidArgument = 1,  // a shape/alignment the kernel cannot take (Python checks should have caught it)
  kCutlassCannotImplement = 2,
  kCutlassInitFailed = 3,
  kCutlassRunFailed = 4,
  kCudaErrorBase = 1000,  // kCudaErrorBase + cudaError_t
};

inline int from_cuda(cudaError_t err) { return err == cudaSuccess ? kOk : kCudaErrorBase + static_cast<int>(err); }

// The launch error of the last kernel on this thread, as a Status.
inline int last_launch_status() { return from_cuda(cudaGetLastError()); }

}  // namespace lowbit

// The message of a Status (status.cu).
LOWBIT_API const char* lowbit_status_string(int status);
