// Exported launcher of the Ampere W4A8 GEMM (s8s4_gemm_sm80.cuh); the instances live in one TU per output dtype.
#include "s8s4_gemm/s8s4_configs.h"
#include "s8s4_gemm/s8s4_gemm.h"

LOWBIT_EXPORT_CONFIG_NAMES(s8s4_sm80, LOWBIT_S8S4_SM80_CONFIGS)

LOWBIT_API int lowbit_s8s4_sm80(LOWBIT_S8S4_LAUNCHER_PARAMS) {
  const lowbit::s8s4::Problem p LOWBIT_S8S4_PROBLEM;
  return lowbit::launch_out_dtype(lowbit::s8s4::sm80_f16, lowbit::s8s4::sm80_bf16, config, out_dtype, p,
                                  query_workspace);
}
