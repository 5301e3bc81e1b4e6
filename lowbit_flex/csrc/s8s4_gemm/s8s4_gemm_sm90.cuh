// Hopper W4A8 GEMM (CUTLASS 3.x): TMA loads, warp-specialized mainloop with the mixed-input collective
// (MainloopSm90TmaGmmaRmemAWarpSpecializedMixedInput) and int8 WGMMA with int32 accumulators.
//
// WGMMA can only take its A operand from registers, and the mixed-input collective converts the narrow operand on
// its way from shared memory to registers, so the int4 weight must be A. We therefore compute the transposed
// problem out^T (N x M) = W (N x K, K-major) * x^T (K x M, K-major): the int4 -> int8 upcast is the collective's
// DirectConvert mode (NumericArrayConverter<int8_t, int4b_t>, exact), the MMA is s8 x s8 -> s32, and out^T stored
// column-major is exactly out (M x N) row-major, so the TMA epilogue writes the caller's layout. The same fused
// epilogue as the Ampere kernel runs as an sm90 EVT, with the roles of row and column vectors swapped.
// With GroupMult the weight operand is (int4, multiplier) and the collective runs in ConvertAndScale mode: each
// code is upcast and multiplied by its group's multiplier (exact in int8 for multipliers in [0, 16]; four codes per
// multiply-add, s8s4_group_mult_upcast.cuh), so the group scales cost about one instruction per weight element and
// CTA tile and nothing per accumulator.
// Included by one TU per output dtype. In a build for sm_80 only (CI compiles every TU for both) no Hopper kernel
// is instantiated and the launcher refuses to run (common/sm90_arch.h).
#pragma once

#include "common/sm90_cutlass_gemm.cuh"
#include "s8s4_gemm/s8s4_configs.h"
#include "s8s4_gemm/s8s4_gemm.h"
#if defined(CUTLASS_ARCH_MMA_SM90_SUPPORTED)
#include "s8s4_gemm/s8s4_group_mult_upcast.cuh"
#endif

namespace lowbit::s8s4::sm90 {

#if defined(CUTLASS_ARCH_MMA_SM90_SUPPORTED)  // CUDA >= 12: the CUTLASS 3.x Hopper headers are usable

using namespace cute;
namespace fusion = cutlass::epilogue::fusion;

template <class ElementOut, int TileM, int TileN, int TileK, class KernelSchedule, class EpilogueSchedule,
          bool GroupMult = false>
struct Gemm {
  // CUTLASS problem (M', N', K) = (N, M, K); see the file comment.
  using TileShape = Shape<Int<TileN>, Int<TileM>, Int<TileK>>;
  using ClusterShape = Shape<_1, _1, _1>;
  using LayoutW = cutlass::layout::RowMajor;      // A': (N, K), K-major
  using LayoutX = cutlass::layout::ColumnMajor;   // B': (K, M), K-major
  using LayoutOut = cutlass::layout::ColumnMajor; // D': (N, M) column-major == out (M, N) row-major
  static constexpr int kAlignW = 32;    // TMA: 16-byte rows, hence K % 32 == 0
  static constexpr int kAlignX = 16;
  static constexpr int kAlignOut = 8;   // TMA store: 16-byte strides, hence N % 8 == 0
  static constexpr auto kRound = cutlass::FloatRoundStyle::round_to_nearest;

  // In out^T coordinates w_scale and bias vary along the rows (column vectors), x_scale along the columns.
  using WScale = fusion::Sm90ColBroadcast<0, TileShape, float, float, Stride<_1, _0, int64_t>>;
  using Bias = WScale;  // null pointer -> broadcasts null_default (0)
  using XScale = fusion::Sm90RowBroadcast<0, TileShape, float, float, Stride<_0, _1, int64_t>>;
  // ((float(acc) * x_scale) * w_scale) + bias, each step in fp32 as in the Ampere kernel; the last rounds once.
  using AccTimesX = fusion::Sm90EVT<fusion::Sm90Compute<cutlass::multiplies, float, float, kRound>,
                                    fusion::Sm90AccFetch, XScale>;
  using TimesW = fusion::Sm90EVT<fusion::Sm90Compute<cutlass::multiplies, float, float, kRound>, AccTimesX, WScale>;
  using Callbacks = fusion::Sm90EVT<fusion::Sm90Compute<cutlass::plus, ElementOut, float, kRound>, TimesW, Bias>;

  using Epilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, ClusterShape,
      cutlass::epilogue::collective::EpilogueTileAuto, int32_t, float,
      void, LayoutOut, kAlignOut,  // no source tensor C
      ElementOut, LayoutOut, kAlignOut, EpilogueSchedule, Callbacks>::CollectiveOp;

  // (int4, multiplier): ConvertAndScale with the upcast of s8s4_group_mult_upcast.cuh (the multipliers, int8 in
  // [0, 16], read as uint8: the type that selects that upcast); int4 alone: DirectConvert.
  using ElementW = cute::conditional_t<GroupMult, cute::tuple<cutlass::int4b_t, uint8_t>, cutlass::int4b_t>;
  using Mainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp,
      ElementW, LayoutW, kAlignW,  // narrow operand first: no implicit swap inside the collective
      int8_t, LayoutX, kAlignX, int32_t, TileShape, ClusterShape,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(sizeof(typename Epilogue::SharedStorage))>,
      KernelSchedule>::CollectiveOp;

  using Kernel = cutlass::gemm::kernel::GemmUniversal<Shape<int, int, int, int>, Mainloop, Epilogue>;
  using Device = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;

  static typename Device::Arguments arguments(Problem const& p) {
    // Packed strides, in elements (int4 elements for W): the K-major operands step K along their M/N mode.
    typename Kernel::StrideA dW{};
    get<0>(dW) = int64_t(p.K);
    get<2>(dW) = int64_t(p.N) * p.K;
    typename Kernel::StrideB dX{};
    get<0>(dX) = int64_t(p.K);
    get<2>(dX) = int64_t(p.M) * p.K;
    typename Kernel::StrideD dOut{};  // column-major (N, M): element (n, m) at n + m * N
    get<1>(dOut) = int64_t(p.N);
    get<2>(dOut) = int64_t(p.N) * p.M;
    static_assert(is_same_v<decltype(get<1>(dW)), _1 const&> || is_same_v<remove_cvref_t<decltype(get<1>(dW))>, _1>);
    static_assert(is_same_v<remove_cvref_t<decltype(get<1>(dX))>, _1>);
    static_assert(is_same_v<remove_cvref_t<decltype(get<0>(dOut))>, _1>);
    typename Callbacks::Arguments callbacks{
        {                                  // TimesW
         {                                 // AccTimesX
          {},                              // AccFetch
          {p.x_scale, 0.0f, {}},           // XScale
          {}},                             // multiplies
         {p.w_scale, 0.0f, {}},            // WScale
         {}},                              // multiplies
        {p.bias, 0.0f, {}},                // Bias
        {}};                               // plus
    typename Mainloop::Arguments mainloop{static_cast<cutlass::int4b_t const*>(p.w), dW, p.x, dX};
    if constexpr (GroupMult) {
      // multipliers (N, K / group) in the collective's coordinates, N-major: element (n, g) at n + g * N
      mainloop.ptr_S = reinterpret_cast<uint8_t const*>(p.w_mult);
      mainloop.dS = {cute::_1{}, int64_t(p.N), int64_t(p.N) * (p.K / p.group)};
      mainloop.group_size = p.group;
    }
    return typename Device::Arguments{
        cutlass::gemm::GemmUniversalMode::kGemm,
        {p.N, p.M, p.K, 1},
        mainloop,
        {callbacks, nullptr, dOut, static_cast<ElementOut*>(p.out), dOut}};
  }

  static int run(Problem const& p, size_t* query_workspace) {
    if (!device_is_sm90()) return kInvalidArgument;
    if (GroupMult && !mult_problem_ok(p, TileK)) return kInvalidArgument;
    auto args = arguments(p);
    return run_gemm<Device>(args, p.workspace, p.workspace_bytes, p.stream, query_workspace);
  }
};

// GroupMult selects the family: LOWBIT_S8S4_SM90_CONFIGS (false) or LOWBIT_S8S4_SM90_MULT_CONFIGS (true).
template <class ElementOut, bool GroupMult = false>
int dispatch(int config, Problem const& p, size_t* query_workspace) {
  if constexpr (!built_for_sm90()) {
    return kInvalidArgument;
  } else {
  if (!problem_ok(p)) return kInvalidArgument;
#define LOWBIT_S8S4_CASE(I, NAME, TM, TN, TK, KS, ES)                                        \
  case I:                                                                                    \
    return Gemm<ElementOut, TM, TN, TK, cutlass::gemm::KS, cutlass::epilogue::ES, GroupMult>::run( \
        p, query_workspace);
  if constexpr (GroupMult) {
    switch (config) {
      LOWBIT_S8S4_SM90_MULT_CONFIGS(LOWBIT_S8S4_CASE)
      default: return kInvalidArgument;
    }
  } else {
    switch (config) {
      LOWBIT_S8S4_SM90_CONFIGS(LOWBIT_S8S4_CASE)
      default: return kInvalidArgument;
    }
  }
#undef LOWBIT_S8S4_CASE
  }
}

#else  // a CUDA toolkit without the Hopper CUTLASS path: every call is refused

template <class ElementOut, bool GroupMult = false>
int dispatch(int, Problem const&, size_t*) { return kInvalidArgument; }

#endif

}  // namespace lowbit::s8s4::sm90
