// What every Hopper CUTLASS 3.x GEMM family here includes (the W4A8, group-wise int8 and fp8 weight-only kernels):
// the collective builders, the sm90 EVT visitors, the launcher protocol (run_gemm.h) and "may sm_90a run here"
// (sm90_arch.h), and the guard against a plain sm_90 target.
#pragma once

// clang-format off
#include "cutlass/cutlass.h"
#include "cute/tensor.hpp"
#include "cutlass/epilogue/collective/collective_builder.hpp"
#include "cutlass/epilogue/fusion/sm90_visitor_compute_tma_warpspecialized.hpp"
#include "cutlass/epilogue/fusion/sm90_visitor_load_tma_warpspecialized.hpp"
#include "cutlass/gemm/collective/collective_builder.hpp"
#include "cutlass/gemm/device/gemm_universal_adapter.h"
#include "cutlass/gemm/dispatch_policy.hpp"
#include "cutlass/gemm/kernel/gemm_universal.hpp"
#include "cutlass/gemm/kernel/tile_scheduler.hpp"
// clang-format on
#include "common/run_gemm.h"
#include "common/sm90_arch.h"

// Hopper kernels need the arch-specific sm_90a target (wgmma, setmaxnreg); for plain sm_90 CUTLASS would silently
// compile them as empty stubs.
#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ == 900) && !defined(__CUDA_ARCH_FEAT_SM90_ALL)
#error "lowbit_flex Hopper GEMMs: compile for sm_90a (-gencode=arch=compute_90a,code=sm_90a), not sm_90"
#endif
