// Hopper int8 x int8 GEMM with group-wise weight scales (CUTLASS 3.x GemmUniversal, cooperative warp-specialized
// kernel, the custom mainloop of s8s8_groupwise_mainloop.cuh, TMA-store epilogue with an sm90 EVT).
//
// No operand swap: A = x (M x K, K-major), B = w (N x K, K-major, i.e. CUTLASS's K x N column-major), D = out
// (M x N, row-major). The mainloop leaves sum_g float(dot_g) * w_scale[n, g] in fp32 accumulators (integer
// multipliers: sum_g dot_g * mult[n, g] in int32 ones); the epilogue multiplies by x_scale (a column vector in these
// coordinates; integer multipliers: then by w_channel_scale, a row vector), adds bias (a row vector) and rounds
// once.
// Included by one TU per output dtype. In a build for sm_80 only (CI compiles every TU for both) no Hopper kernel
// is instantiated and the launcher refuses to run (common/sm90_arch.h).
#pragma once

#include "common/sm90_cutlass_gemm.cuh"
#include "s8s8_groupwise/s8s8_groupwise.h"
#include "s8s8_groupwise/s8s8_groupwise_configs.h"
#if defined(CUTLASS_ARCH_MMA_SM90_SUPPORTED)
#include "s8s8_groupwise/s8s8_groupwise_mainloop.cuh"
#endif

namespace lowbit::s8s8g::sm90 {

#if defined(CUTLASS_ARCH_MMA_SM90_SUPPORTED)  // CUDA >= 12: the CUTLASS 3.x Hopper headers are usable

using namespace cute;
namespace fusion = cutlass::epilogue::fusion;

template <class ElementOut, int TileM, int TileN, int KBlocksPerGroup, bool PingPong, bool IntegerScales>
struct Gemm {
  static constexpr int TileK = 128;
  using TileShape = Shape<Int<TileM>, Int<TileN>, Int<TileK>>;
  using ClusterShape = Shape<_1, _1, _1>;
  using LayoutX = cutlass::layout::RowMajor;     // A: (M, K), K-major
  using LayoutW = cutlass::layout::ColumnMajor;  // B: (K, N) column-major == w (N, K) row-major
  using LayoutOut = cutlass::layout::RowMajor;   // D: (M, N)
  static constexpr int kAlignIn = 16;            // TMA: 16-byte rows, K % 16 (K % 32 by contract)
  static constexpr int kAlignOut = 8;            // TMA store: 16-byte rows, N % 8
  static constexpr auto kRound = cutlass::FloatRoundStyle::round_to_nearest;

  // x_scale varies along M (a column vector), bias and w_channel_scale along N (row vectors; a null bias -> 0).
  using XScale = fusion::Sm90ColBroadcast<0, TileShape, float, float, Stride<_1, _0, int64_t>>;
  using Bias = fusion::Sm90RowBroadcast<0, TileShape, float, float, Stride<_0, _1, int64_t>>;
  using WChannel = Bias;
  // (acc * x_scale) [* w_channel_scale] + bias in fp32, one rounding to the output dtype at the end.
  using AccTimesX = fusion::Sm90EVT<fusion::Sm90Compute<cutlass::multiplies, float, float, kRound>,
                                    fusion::Sm90AccFetch, XScale>;
  using Scaled = cute::conditional_t<
      IntegerScales, fusion::Sm90EVT<fusion::Sm90Compute<cutlass::multiplies, float, float, kRound>, AccTimesX, WChannel>,
      AccTimesX>;
  using Callbacks = fusion::Sm90EVT<fusion::Sm90Compute<cutlass::plus, ElementOut, float, kRound>, Scaled, Bias>;
  using ElementAccumulator = cute::conditional_t<IntegerScales, int32_t, float>;

  using Epilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, ClusterShape,
      cutlass::epilogue::collective::EpilogueTileAuto, ElementAccumulator, float,
      void, LayoutOut, kAlignOut,  // no source tensor C
      ElementOut, LayoutOut, kAlignOut, cutlass::epilogue::TmaWarpSpecializedCooperative, Callbacks>::CollectiveOp;

  // Stages: what is left of the 227 KiB after the epilogue and ~1 KiB of kernel barriers / scheduler state, per
  // (A tile + B tile + the tile's scales + a full/empty barrier pair).
  static constexpr int kGroupsPerTile = 4 / KBlocksPerGroup;
  static constexpr int kStageBytes = (TileM + TileN) * TileK + kGroupsPerTile * TileN * 4 + 16;
  static constexpr int kStages = int(cutlass::gemm::collective::detail::sm90_smem_capacity_bytes -
                                     sizeof(typename Epilogue::SharedStorage) - 1024) / kStageBytes;
  static_assert(kStages >= 3, "too few pipeline stages fit in shared memory");

  using MainloopS32 = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp,
      int8_t, LayoutX, kAlignIn, int8_t, LayoutW, kAlignIn, int32_t, TileShape, ClusterShape,
      cutlass::gemm::collective::StageCount<kStages>,
      cutlass::gemm::KernelTmaWarpSpecializedCooperative>::CollectiveOp;
  using Mainloop = GroupwiseMainloop<MainloopS32, KBlocksPerGroup, PingPong, IntegerScales>;

  using Kernel = cutlass::gemm::kernel::GemmUniversal<Shape<int, int, int, int>, Mainloop, Epilogue>;
  using Device = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;
  static_assert(sizeof(typename Kernel::SharedStorage) <= cutlass::gemm::collective::detail::sm90_smem_capacity_bytes,
                "kernel shared storage exceeds the sm90 capacity");

  static typename Device::Arguments arguments(Problem const& p) {
    // Packed strides in elements: the K-major operands step K along their M/N mode; D steps N along M.
    typename Kernel::StrideA dX{};
    get<0>(dX) = int64_t(p.K);
    get<2>(dX) = int64_t(p.M) * p.K;
    typename Kernel::StrideB dW{};
    get<0>(dW) = int64_t(p.K);
    get<2>(dW) = int64_t(p.N) * p.K;
    typename Kernel::StrideD dOut{};
    get<0>(dOut) = int64_t(p.N);
    get<2>(dOut) = int64_t(p.M) * p.N;
    static_assert(is_same_v<remove_cvref_t<decltype(get<1>(dX))>, _1>);
    static_assert(is_same_v<remove_cvref_t<decltype(get<1>(dW))>, _1>);
    static_assert(is_same_v<remove_cvref_t<decltype(get<1>(dOut))>, _1>);
    typename AccTimesX::Arguments acc_times_x{
        {},                      // AccFetch
        {p.x_scale, 0.0f, {}},   // XScale
        {}};                     // multiplies
    typename Scaled::Arguments scaled{};
    if constexpr (IntegerScales) {
      scaled = {acc_times_x, {p.w_channel_scale, 0.0f, {}}, {}};  // AccTimesX, WChannel, multiplies
    } else {
      scaled = acc_times_x;
    }
    typename Callbacks::Arguments callbacks{scaled, {p.bias, 0.0f, {}}, {}};  // Scaled, Bias, plus
    using Scale = typename Mainloop::Scale;
    return typename Device::Arguments{
        cutlass::gemm::GemmUniversalMode::kGemm,
        {p.M, p.N, p.K, 1},
        {p.x, dX, p.w, dW, static_cast<Scale const*>(p.w_scale), p.group},
        {callbacks, nullptr, dOut, static_cast<ElementOut*>(p.out), dOut}};
  }

  static int run(Problem const& p, size_t* query_workspace) {
    if (!device_is_sm90()) return kInvalidArgument;
    if (!Mainloop::group_ok(p.group) || IntegerScales != (p.w_channel_scale != nullptr)) return kInvalidArgument;
    auto args = arguments(p);
    return run_gemm<Device>(args, p.workspace, p.workspace_bytes, p.stream, query_workspace);
  }
};

template <class ElementOut>
int dispatch(int config, Problem const& p, size_t* query_workspace) {
  if constexpr (!built_for_sm90()) {
    return kInvalidArgument;
  } else {
  if (!problem_ok(p)) return kInvalidArgument;
  switch (config) {
#define LOWBIT_S8S8G_CASE(I, NAME, TM, TN, KBG, PP, INT) \
  case I:                                                \
    return Gemm<ElementOut, TM, TN, KBG, PP != 0, INT != 0>::run(p, query_workspace);
    LOWBIT_S8S8G_SM90_CONFIGS(LOWBIT_S8S8G_CASE)
#undef LOWBIT_S8S8G_CASE
    default: return kInvalidArgument;
  }
  }
}

#else  // a CUDA toolkit without the Hopper CUTLASS path: every call is refused

template <class ElementOut>
int dispatch(int, Problem const&, size_t*) { return kInvalidArgument; }

#endif

}  // namespace lowbit::s8s8g::sm90
