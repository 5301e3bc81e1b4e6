// Hopper group-wise int8 GEMM instances with bf16 output (one TU per dtype so the two compile in parallel).
#include "s8s8_groupwise/s8s8_groupwise_sm90.cuh"

int lowbit::s8s8g::sm90_bf16(int config, Problem const& p, size_t* query_workspace) {
  return sm90::dispatch<cutlass::bfloat16_t>(config, p, query_workspace);
}
