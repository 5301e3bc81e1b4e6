// Human-readable messages for lowbit::Status codes, called from lowbit_flex.cuda_build.check_status.
#include "common/status.h"

LOWBIT_API const char* lowbit_status_string(int status) {
  switch (status) {
    case lowbit::kOk: return "ok";
    case lowbit::kInvalidArgument: return "invalid argument (shape or alignment the kernel cannot take)";
    case lowbit::kCutlassCannotImplement: return "CUTLASS cannot implement this problem (can_implement failed)";
    case lowbit::kCutlassInitFailed: return "CUTLASS kernel initialisation failed";
    case lowbit::kCutlassRunFailed: return "CUTLASS kernel launch failed";
    default:
      if (status >= lowbit::kCudaErrorBase)
        return cudaGetErrorString(static_cast<cudaError_t>(status - lowbit::kCudaErrorBase));
      return "unknown status";
  }
}
