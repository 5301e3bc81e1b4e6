// Hopper fp6 / fp4 weight-only GEMM instances for bf16 x and out (one TU per dtype so the two compile in parallel).
#include "float_weight_gemm/float_weight_gemm_sm90.cuh"

int lowbit::float_weight_gemm::sm90_bf16(int config, Problem const& p, size_t* query_workspace) {
  return sm90::dispatch<__nv_bfloat16>(config, p, query_workspace);
}
