// Hopper fp8 weight-only GEMM instances for fp16 x and out (one TU per dtype so the two compile in parallel).
#include "fp8_weight_gemm/fp8_weight_gemm_sm90.cuh"

int lowbit::fp8_weight_gemm::sm90_f16(int config, Problem const& p, size_t* query_workspace) {
  return sm90::dispatch<cutlass::half_t>(config, p, query_workspace);
}
