// The output dtype code every exported launcher takes (lowbit_flex/kernels/cutlass_launch.py OUT_DTYPE_CODE), and the
// body those launchers share: pick the fp16 or bf16 instance of a kernel family and run (or size) it.
#pragma once

#include <cstddef>

#include "common/status.h"

namespace lowbit {

enum OutDtype : int { kF16 = 0, kBF16 = 1 };

template <class Problem>
using InstanceFn = int (*)(int config, Problem const& p, size_t* query_workspace);

template <class Problem>
int launch_out_dtype(InstanceFn<Problem> f16, InstanceFn<Problem> bf16, int config, int out_dtype, Problem const& p,
                     size_t* query_workspace) {
  if (out_dtype == kF16) return f16(config, p, query_workspace);
  if (out_dtype == kBF16) return bf16(config, p, query_workspace);
  return kInvalidArgument;
}

}  // namespace lowbit
