// Exported launcher of the Hopper fp6 / fp4 weight-only GEMM (float_weight_gemm_sm90.cuh); the instances live in one
// TU per dtype.
#include "float_weight_gemm/float_weight_gemm.h"

LOWBIT_EXPORT_CONFIG_NAMES(float_weight_gemm_sm90, LOWBIT_FLOAT_WEIGHT_GEMM_CONFIGS)

LOWBIT_API int lowbit_float_weight_gemm_sm90(LOWBIT_FLOAT_WEIGHT_GEMM_LAUNCHER_PARAMS) {
  namespace fg = lowbit::float_weight_gemm;
  if (config < 0 || config >= kNumConfigs) return lowbit::kInvalidArgument;
  const fg::Problem p{format, x, w, w_scale, bias, out, M, N, K, workspace, workspace_bytes, stream};
  return lowbit::launch_out_dtype(fg::sm90_f16, fg::sm90_bf16, config, dtype, p, query_workspace);
}
