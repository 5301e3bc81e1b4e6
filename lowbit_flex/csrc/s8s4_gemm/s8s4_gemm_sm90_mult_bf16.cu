// Hopper W4A8 GEMM instances with int8 group multipliers and bf16 output (one TU per dtype so the two compile
// in parallel).
#include "s8s4_gemm/s8s4_gemm_sm90.cuh"

int lowbit::s8s4::sm90_mult_bf16(int config, Problem const& p, size_t* query_workspace) {
  return sm90::dispatch<cutlass::bfloat16_t, true>(config, p, query_workspace);
}
