// Exported launcher of the Hopper group-wise int8 GEMM (s8s8_groupwise_sm90.cuh); the instances live in one TU
// per output dtype.
#include "s8s8_groupwise/s8s8_groupwise.h"
#include "s8s8_groupwise/s8s8_groupwise_configs.h"

LOWBIT_EXPORT_CONFIG_NAMES(s8s8_groupwise_sm90, LOWBIT_S8S8G_SM90_CONFIGS)

LOWBIT_API int lowbit_s8s8_groupwise_sm90(LOWBIT_S8S8G_LAUNCHER_PARAMS) {
  const lowbit::s8s8g::Problem p LOWBIT_S8S8G_PROBLEM;
  return lowbit::launch_out_dtype(lowbit::s8s8g::sm90_f16, lowbit::s8s8g::sm90_bf16, config, out_dtype, p,
                                  query_workspace);
}
