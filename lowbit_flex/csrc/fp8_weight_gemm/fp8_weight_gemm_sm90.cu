// Exported launcher of the Hopper fp8 weight-only GEMM (fp8_weight_gemm_sm90.cuh); the instances live in one TU per
// dtype.
#include "fp8_weight_gemm/fp8_weight_gemm.h"
#include "fp8_weight_gemm/fp8_weight_gemm_configs.h"

LOWBIT_EXPORT_CONFIG_NAMES(fp8_weight_gemm_sm90, LOWBIT_FP8_WEIGHT_GEMM_SM90_CONFIGS)

LOWBIT_API int lowbit_fp8_weight_gemm_sm90(LOWBIT_FP8_WEIGHT_GEMM_LAUNCHER_PARAMS) {
  const lowbit::fp8_weight_gemm::Problem p{x, w, w_scale, bias, out, M, N, K, workspace, workspace_bytes, stream};
  return lowbit::launch_out_dtype(lowbit::fp8_weight_gemm::sm90_f16, lowbit::fp8_weight_gemm::sm90_bf16, config, dtype,
                                  p, query_workspace);
}
