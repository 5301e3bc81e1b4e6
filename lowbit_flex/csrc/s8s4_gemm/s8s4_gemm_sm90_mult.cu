// Exported launcher of the Hopper W4A8 GEMM with int8 group multipliers (s8s4_gemm_sm90.cuh, GroupMult); the
// instances live in one TU per output dtype.
#include "s8s4_gemm/s8s4_configs.h"
#include "s8s4_gemm/s8s4_gemm.h"

LOWBIT_EXPORT_CONFIG_NAMES(s8s4_sm90_mult, LOWBIT_S8S4_SM90_MULT_CONFIGS)

LOWBIT_API int lowbit_s8s4_sm90_mult(LOWBIT_S8S4_LAUNCHER_PARAMS, const int8_t* w_mult, int group) {
  lowbit::s8s4::Problem p LOWBIT_S8S4_PROBLEM;
  p.w_mult = w_mult;
  p.group = group;
  return lowbit::launch_out_dtype(lowbit::s8s4::sm90_mult_f16, lowbit::s8s4::sm90_mult_bf16, config, out_dtype, p,
                                  query_workspace);
}
