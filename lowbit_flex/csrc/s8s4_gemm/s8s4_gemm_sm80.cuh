// Ampere W4A8 GEMM (CUTLASS 2.x): GemmUniversal int8 (A, row-major) x int4b_t (B, column-major), int32 accumulate,
// OpMultiplyAddMixedInputUpcast (the int4 fragment is upcast to int8 in registers for mma.sync m16n8k32.s8), and an
// epilogue visitor tree (EVT) that applies both scales and the bias in fp32 and rounds once to fp16/bf16.
// Runs on sm_80 and, as sm_80-style code, on sm_90. Included by one TU per output dtype.
#pragma once

// clang-format off: the visitor headers rely on the GEMM headers being included first.
#include "cutlass/cutlass.h"
#include "cutlass/gemm/device/gemm_universal.h"
#include "cutlass/epilogue/threadblock/fusion/visitors.hpp"
#include "cutlass/gemm/kernel/default_gemm_universal_with_visitor.h"
#include "cutlass/gemm/device/gemm_universal_adapter.h"
#include "cutlass/gemm/threadblock/threadblock_swizzle_streamk.h"
// clang-format on
#include "common/run_gemm.h"
#include "s8s4_gemm/s8s4_configs.h"
#include "s8s4_gemm/s8s4_gemm.h"

namespace lowbit::s8s4::sm80 {

using cute::_0;
using cute::_1;
using cute::Stride;

template <class ElementOut, int TbM, int TbN, int TbK, int WarpM, int WarpN, int WarpK, int Stages>
struct Gemm {
  using ThreadblockShape = cutlass::gemm::GemmShape<TbM, TbN, TbK>;
  using WarpShape = cutlass::gemm::GemmShape<WarpM, WarpN, WarpK>;
  using InstructionShape = cutlass::gemm::GemmShape<16, 8, 32>;  // mma.sync s8 x s8 -> s32
  static constexpr int kAlignA = 16;   // int8: 128-bit loads
  static constexpr int kAlignB = 32;   // int4: 128-bit loads, hence K % 32 == 0
  static constexpr int kAlignOut = 8;  // fp16/bf16: 128-bit stores, hence N % 8 == 0
  static constexpr int kEpilogueStages = 1;

  using ThreadMap = cutlass::epilogue::threadblock::OutputTileThreadLayout<ThreadblockShape, WarpShape, ElementOut,
                                                                           kAlignOut, kEpilogueStages>;
  template <template <class> class Fn, class Out>
  using Compute = cutlass::epilogue::threadblock::VisitorCompute<Fn, Out, float,
                                                                 cutlass::FloatRoundStyle::round_to_nearest>;
  template <class... Ts>
  using EVT = cutlass::epilogue::threadblock::Sm80EVT<Ts...>;

  // Coordinates are the GEMM's (m, n): x_scale varies along m (a column vector), w_scale and bias along n (row
  // vectors, read with 128-bit loads: 16-byte aligned pointers and N % 4 == 0).
  using Acc = cutlass::epilogue::threadblock::VisitorAccFetch;
  using XScale = cutlass::epilogue::threadblock::VisitorColBroadcast<ThreadMap, float, Stride<_1, _0, int32_t>>;
  using WScale = cutlass::epilogue::threadblock::VisitorRowBroadcast<ThreadMap, float, Stride<_0, _1, int32_t>>;
  using Bias = WScale;  // null pointer -> broadcasts null_default (0)
  // ((float(acc) * x_scale) * w_scale) + bias, each step in fp32; the last one rounds to ElementOut.
  using AccTimesX = EVT<Compute<cutlass::multiplies, float>, Acc, XScale>;
  using TimesW = EVT<Compute<cutlass::multiplies, float>, AccTimesX, WScale>;
  using PlusBias = EVT<Compute<cutlass::plus, ElementOut>, TimesW, Bias>;
  using Store = cutlass::epilogue::threadblock::VisitorAuxStore<ThreadMap, ElementOut,
                                                                cutlass::FloatRoundStyle::round_to_nearest,
                                                                Stride<int64_t, _1, int64_t>>;
  using Callbacks = EVT<Store, PlusBias>;

  using Kernel = typename cutlass::gemm::kernel::DefaultGemmWithVisitor<
      int8_t, cutlass::layout::RowMajor, cutlass::ComplexTransform::kNone, kAlignA,
      cutlass::int4b_t, cutlass::layout::ColumnMajor, cutlass::ComplexTransform::kNone, kAlignB,
      ElementOut, cutlass::layout::RowMajor, kAlignOut,
      int32_t, float, cutlass::arch::OpClassTensorOp, cutlass::arch::Sm80,
      ThreadblockShape, WarpShape, InstructionShape, Callbacks,
      cutlass::gemm::threadblock::ThreadblockSwizzleStreamK, Stages,
      cutlass::arch::OpMultiplyAddMixedInputUpcast, kEpilogueStages>::GemmKernel;
  using Device = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;

  static typename Device::Arguments arguments(Problem const& p) {
    auto* out = static_cast<ElementOut*>(p.out);
    const int64_t M = p.M, N = p.N;
    typename Callbacks::Arguments callbacks{
        {                                                  // PlusBias
         {                                                 // TimesW
          {                                                // AccTimesX
           {},                                             // Acc
           {p.x_scale, 0.0f, {_1{}, _0{}, int32_t(M)}},    // XScale
           {}},                                            // multiplies
          {p.w_scale, 0.0f, {_0{}, _1{}, int32_t(N)}},     // WScale
          {}},                                             // multiplies
         {p.bias, 0.0f, {_0{}, _1{}, int32_t(N)}},         // Bias
         {}},                                              // plus
        {out, {N, _1{}, M * N}}};                          // Store
    return typename Device::Arguments(
        cutlass::gemm::GemmUniversalMode::kGemm, {p.M, p.N, p.K},
        /*batch_count=*/1, callbacks, p.x, p.w, /*ptr_C=*/nullptr, /*ptr_D=*/nullptr,
        /*batch_stride_A=*/M * p.K, /*batch_stride_B=*/int64_t(N) * p.K, 0, 0,
        /*lda=*/p.K, /*ldb=*/p.K, 0, 0,
        /*avail_sms=*/-1);  // -1: stream-K balances over every SM (1 would force data-parallel tiles only)
  }

  static int run(Problem const& p, size_t* query_workspace) {
    auto args = arguments(p);
    return run_gemm<Device>(args, p.workspace, p.workspace_bytes, p.stream, query_workspace);
  }
};

template <class ElementOut>
int dispatch(int config, Problem const& p, size_t* query_workspace) {
  if (!problem_ok(p)) return kInvalidArgument;
  switch (config) {
#define LOWBIT_S8S4_CASE(I, NAME, TM, TN, TK, WM, WN, WK, ST) \
  case I: return Gemm<ElementOut, TM, TN, TK, WM, WN, WK, ST>::run(p, query_workspace);
    LOWBIT_S8S4_SM80_CONFIGS(LOWBIT_S8S4_CASE)
#undef LOWBIT_S8S4_CASE
    default: return kInvalidArgument;
  }
}

}  // namespace lowbit::s8s4::sm80
