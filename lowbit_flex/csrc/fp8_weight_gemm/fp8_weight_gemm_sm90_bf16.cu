// Hopper fp8 weight-only GEMM instances for bf16 x and out (one TU per dtype so the two compile in parallel).
#include "fp8_weight_gemm/fp8_weight_gemm_sm90.cuh"

int lowbit::fp8_weight_gemm::sm90_bf16(int config, Problem const& p, size_t* query_workspace) {
  return sm90::dispatch<cutlass::bfloat16_t>(config, p, query_workspace);
}
