// The launcher protocol every CUTLASS family shares, for one device-level GEMM: a workspace-size query (nothing is
// launched when `query_workspace` is non-null), then can_implement / initialize / run on the caller's stream, each
// failure mapped to its Status. Torch-free, like every kernel TU (see lowbit_flex/cuda_build.py).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

#include "common/status.h"
#include "cutlass/cutlass.h"

namespace lowbit {

template <class Device>
int run_gemm(typename Device::Arguments const& args, void* workspace, size_t workspace_bytes, cudaStream_t stream,
             size_t* query_workspace) {
  if (Device::can_implement(args) != cutlass::Status::kSuccess) return kCutlassCannotImplement;
  const size_t need = Device::get_workspace_size(args);
  if (query_workspace) {
    *query_workspace = need;
    return kOk;
  }
  if (workspace_bytes < need) return kInvalidArgument;
  Device gemm;
  if (gemm.initialize(args, workspace, stream) != cutlass::Status::kSuccess) return kCutlassInitFailed;
  if (gemm.run(stream) != cutlass::Status::kSuccess) return kCutlassRunFailed;
  return last_launch_status();
}

}  // namespace lowbit
