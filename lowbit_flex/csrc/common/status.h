// Status codes returned by every exported launcher. Torch-free on purpose: see lowbit_flex/cuda_build.py.
#pragma once

#include <cuda_runtime.h>

#define LOWBIT_API extern "C" __attribute__((visibility("default")))

// The config names of a CUTLASS kernel family, exported for the Python wrappers' consistency checks and the C++ op
// registration: lowbit_<FAMILY>_num_configs() and lowbit_<FAMILY>_config_name(index) from the family's X-macro list
// (entries X(index, "name", ...)). One use per launcher TU.
#define LOWBIT_CONFIG_NAME_(I, NAME, ...) NAME,
#define LOWBIT_EXPORT_CONFIG_NAMES(FAMILY, CONFIGS)                                          \
  namespace {                                                                               \
  constexpr const char* kConfigNames[] = {CONFIGS(LOWBIT_CONFIG_NAME_)};                    \
  constexpr int kNumConfigs = sizeof(kConfigNames) / sizeof(kConfigNames[0]);               \
  }                                                                                         \
  LOWBIT_API int lowbit_##FAMILY##_num_configs() { return kNumConfigs; }                    \
  LOWBIT_API const char* lowbit_##FAMILY##_config_name(int config) {                        \
    return config >= 0 && config < kNumConfigs ? kConfigNames[config] : nullptr;            \
  }

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
