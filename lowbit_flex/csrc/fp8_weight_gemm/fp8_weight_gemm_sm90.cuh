// Hopper fp8 weight-only GEMM (CUTLASS 3.x): TMA loads, a warp-specialized mainloop with the mixed-input collective
// (the e4m3 weight converted to x's 16-bit type on its way from shared memory to registers, exactly: every e4m3
// value is a bf16 and an fp16 value), 16-bit WGMMA with fp32 accumulators, and an EVT epilogue.
//
// As in the W4A8 kernel (s8s4_gemm/s8s4_gemm_sm90.cuh), the narrow operand must be WGMMA's A, so this computes
// out^T (N x M) = W (N x K, K-major) * x^T (K x M, K-major); out^T column-major is out (M x N) row-major, which the
// TMA epilogue writes. w_scale and bias vary along out^T's rows: column-broadcast vectors.
// Included by one TU per dtype. In a build for sm_80 only no Hopper kernel is instantiated (common/sm90_arch.h).
#pragma once

#include "common/sm90_cutlass_gemm.cuh"
#include "fp8_weight_gemm/fp8_weight_gemm.h"
#include "fp8_weight_gemm/fp8_weight_gemm_configs.h"

namespace lowbit::fp8_weight_gemm::sm90 {

#if defined(CUTLASS_ARCH_MMA_SM90_SUPPORTED)  // CUDA >= 12: the CUTLASS 3.x Hopper headers are usable

using namespace cute;
namespace fusion = cutlass::epilogue::fusion;

template <class Element, int TileM, int TileN, int TileK, class KernelSchedule, class EpilogueSchedule, class Scheduler>
struct Gemm {
  // CUTLASS problem (M', N', K) = (N, M, K); see the file comment.
  using TileShape = Shape<Int<TileN>, Int<TileM>, Int<TileK>>;
  using ClusterShape = Shape<_1, _1, _1>;
  using LayoutW = cutlass::layout::RowMajor;       // A': (N, K), K-major
  using LayoutX = cutlass::layout::ColumnMajor;    // B': (K, M), K-major
  using LayoutOut = cutlass::layout::ColumnMajor;  // D': (N, M) column-major == out (M, N) row-major
  static constexpr int kAlignW = 16;               // 16-byte TMA rows: K % 16 == 0
  static constexpr int kAlignX = 8;
  static constexpr int kAlignOut = 8;  // N % 8 == 0
  static constexpr auto kRound = cutlass::FloatRoundStyle::round_to_nearest;

  using WScale = fusion::Sm90ColBroadcast<0, TileShape, float, float, Stride<_1, _0, int64_t>>;
  using Bias = fusion::Sm90ColBroadcast<0, TileShape, Element, float, Stride<_1, _0, int64_t>>;  // null -> 0
  // (acc * w_scale) + bias in fp32, rounded once to the output dtype: the Triton kernels' order.
  using Scaled =
      fusion::Sm90EVT<fusion::Sm90Compute<cutlass::multiplies, float, float, kRound>, fusion::Sm90AccFetch, WScale>;
  using Callbacks = fusion::Sm90EVT<fusion::Sm90Compute<cutlass::plus, Element, float, kRound>, Scaled, Bias>;

  using Epilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, ClusterShape,
      cutlass::epilogue::collective::EpilogueTileAuto, float, float, void, LayoutOut, kAlignOut,  // no source tensor C
      Element, LayoutOut, kAlignOut, EpilogueSchedule, Callbacks>::CollectiveOp;

  using Mainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, cutlass::float_e4m3_t, LayoutW,
      kAlignW,  // narrow operand first: no implicit swap inside the collective
      Element, LayoutX, kAlignX, float, TileShape, ClusterShape,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(sizeof(typename Epilogue::SharedStorage))>,
      KernelSchedule>::CollectiveOp;

  using Kernel = cutlass::gemm::kernel::GemmUniversal<Shape<int, int, int, int>, Mainloop, Epilogue, Scheduler>;
  using Device = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;

  static typename Device::Arguments arguments(Problem const& p) {
    typename Kernel::StrideA dW{};  // packed, in elements: the K-major operands step K along their M/N mode
    get<0>(dW) = int64_t(p.K);
    get<2>(dW) = int64_t(p.N) * p.K;
    typename Kernel::StrideB dX{};
    get<0>(dX) = int64_t(p.K);
    get<2>(dX) = int64_t(p.M) * p.K;
    typename Kernel::StrideD dOut{};  // column-major (N, M): element (n, m) at n + m * N
    get<1>(dOut) = int64_t(p.N);
    get<2>(dOut) = int64_t(p.N) * p.M;
    typename Callbacks::Arguments callbacks{{                                                       // Scaled
                                             {},                                                    // AccFetch
                                             {p.w_scale, 0.0f, {}},                                 // WScale
                                             {}},                                                   // multiplies
                                            {static_cast<Element const*>(p.bias), Element(0), {}},  // Bias
                                            {}};                                                    // plus
    return typename Device::Arguments{
        cutlass::gemm::GemmUniversalMode::kGemm,
        {p.N, p.M, p.K, 1},
        {static_cast<cutlass::float_e4m3_t const*>(p.w), dW, static_cast<Element const*>(p.x), dX},
        {callbacks, nullptr, dOut, static_cast<Element*>(p.out), dOut}};
  }

  static int run(Problem const& p, size_t* query_workspace) {
    if (!device_is_sm90()) return kInvalidArgument;
    auto args = arguments(p);
    return run_gemm<Device>(args, p.workspace, p.workspace_bytes, p.stream, query_workspace);
  }
};

template <class Element>
int dispatch(int config, Problem const& p, size_t* query_workspace) {
  if constexpr (!built_for_sm90()) {
    return kInvalidArgument;
  } else {
    if (!problem_ok(p)) return kInvalidArgument;
    switch (config) {
#define LOWBIT_FP8_WEIGHT_GEMM_CASE(I, NAME, TM, TN, TK, KS, ES, SCHED)                                    \
  case I:                                                                                                  \
    return Gemm<Element, TM, TN, TK, cutlass::gemm::KS, cutlass::epilogue::ES, cutlass::gemm::SCHED>::run( \
        p, query_workspace);
      LOWBIT_FP8_WEIGHT_GEMM_SM90_CONFIGS(LOWBIT_FP8_WEIGHT_GEMM_CASE)
#undef LOWBIT_FP8_WEIGHT_GEMM_CASE
      default:
        return kInvalidArgument;
    }
  }
}

#else  // a CUDA toolkit without the Hopper CUTLASS path: every call is refused

template <class Element>
int dispatch(int, Problem const&, size_t*) {
  return kInvalidArgument;
}

#endif

}  // namespace lowbit::fp8_weight_gemm::sm90
