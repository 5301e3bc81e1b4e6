// The int4 -> int8 upcast of the Hopper W4A8 kernel with group multipliers (s8s4_gemm_sm90.cuh, GroupMult): each
// code times its group's multiplier, four codes per multiply-add.
//
// CUTLASS's mixed-input collective (ConvertAndScale mode) upcasts the codes with NumericArrayConverter and then
// multiplies element by element (extract, multiply, repack): its K-tile loop had 2.8-2.9x the per-channel kernel's
// instructions, this one 1.14-1.21x (benchmarks/sass_mainloop.py, docs/s8s4_cutlass.md). Here one 32-bit register of four codes of one weight row (the int8 WGMMA's A fragment holds
// four consecutive k of a row per register) is multiplied at once. With u = code + 8 in [0, 15] per byte (offset
// binary) and 0 <= mult <= 16:
//
//     u * mult + (128 - 8 * mult) = code * mult + 128   in [0, 240] per byte,
//
// so the 32-bit multiply-add of the four bytes carries nothing between them; flipping each byte's top bit gives the
// int8 two's complement of code * mult, which lies in [-128, 112]. Per 8 codes: 3 logic ops to spread the nibbles
// into offset-binary bytes, 2 byte permutes to put them in k order, and per 4 codes one multiply-add for the bias,
// one for the product and one XOR.
//
// How it plugs in: the collective calls the static functions of detail::MixedInputUtils<its own type> to move the
// scales and to dequantize each k-block. The partial specialization below matches the collectives whose A operand
// is (int4, uint8 multiplier), which only this kernel instantiates (the layer's int8 multipliers, all in [0, 16],
// are passed as uint8), and takes everything from the stock utilities except dequantize_A_kblock. The stock
// utilities are instantiated for StockUtilsView<Collective>, a distinct type that re-exports the members they read
// (the 14 below; CUTLASS 4.2). It cannot derive from the collective instead: the collective instantiates its
// utilities while it is itself being instantiated (its SharedStorage sizes the scale buffer through them), when it
// is not yet a complete type to derive from.
#pragma once

// clang-format off
#include "cutlass/cutlass.h"
#include "cute/tensor.hpp"
#include "cutlass/gemm/collective/collective_builder.hpp"  // (before the utilities: they rely on its includes)
#include "cutlass/detail/collective/mixed_input_utils.hpp"
// clang-format on

namespace lowbit::s8s4 {

template <class Collective>
struct StockUtilsView {
  using KernelSchedule = typename Collective::KernelSchedule;
  using SmemLayoutA = typename Collective::SmemLayoutA;
  using SmemLayoutB = typename Collective::SmemLayoutB;
  using SmemLayoutScale = typename Collective::SmemLayoutScale;
  using SwappedElementA = typename Collective::SwappedElementA;
  using SwappedElementB = typename Collective::SwappedElementB;
  using RealSwappedElementA = typename Collective::RealSwappedElementA;
  using RealSwappedElementB = typename Collective::RealSwappedElementB;
  using ElementScale = typename Collective::ElementScale;
  using ElementZero = typename Collective::ElementZero;
  using SmemCopyAtomScale = typename Collective::SmemCopyAtomScale;
  static constexpr auto KernelConversionMode = Collective::KernelConversionMode;
  static constexpr auto ModeHasScales = Collective::ModeHasScales;
  static constexpr auto UseScaleLookupTable = Collective::UseScaleLookupTable;
};

// Whether every register of the MMA's A fragment (values 4j .. 4j + 3 of a thread, four int8) holds four codes of
// one weight row: the upcast reads one multiplier per register. AtomLayoutA_TV maps (thread, value) to the index
// m + M * k of the atom's M x K tile.
template <class TiledMma>
constexpr bool registers_hold_one_row() {
  using LayoutTV = typename TiledMma::AtomLayoutA_TV;
  constexpr int kRows = cute::size<0>(typename TiledMma::AtomShape_MNK{});
  for (int t = 0; t < cute::size<0>(LayoutTV{}); ++t) {
    for (int v = 0; v < cute::size<1>(LayoutTV{}); ++v) {
      if (LayoutTV{}(t, v) % kRows != LayoutTV{}(t, v & ~3) % kRows) return false;
    }
  }
  return true;
}

// Four int4 codes (the nibbles of `nibbles_u`, already offset to u = code + 8 and spread one per byte) times `mult`
// as four int8 (see the file comment).
CUTLASS_DEVICE uint32_t times_group_mult(uint32_t nibbles_u, uint32_t mult) {
  const uint32_t bias = 0x80808080u - mult * 0x08080808u;  // 128 - 8 * mult in every byte
  return (nibbles_u * mult + bias) ^ 0x80808080u;
}

}  // namespace lowbit::s8s4

namespace cutlass::gemm::collective::detail {

template <int Stages, class ClusterShape, class KernelSchedule, class TileShape, class StrideA, class ElementB,
          class StrideB, class TiledMma, class... Rest>
struct MixedInputUtils<cutlass::gemm::collective::CollectiveMma<
    cutlass::gemm::MainloopSm90TmaGmmaRmemAWarpSpecializedMixedInput<Stages, ClusterShape, KernelSchedule>, TileShape,
    cute::tuple<cutlass::int4b_t, uint8_t>, StrideA, ElementB, StrideB, TiledMma, Rest...>>
    : MixedInputUtils<lowbit::s8s4::StockUtilsView<cutlass::gemm::collective::CollectiveMma<
          cutlass::gemm::MainloopSm90TmaGmmaRmemAWarpSpecializedMixedInput<Stages, ClusterShape, KernelSchedule>,
          TileShape, cute::tuple<cutlass::int4b_t, uint8_t>, StrideA, ElementB, StrideB, TiledMma, Rest...>>> {
  static_assert(lowbit::s8s4::registers_hold_one_row<TiledMma>(),
                "the upcast reads one multiplier per A register: its four codes must share a weight row");
  // tCrA_load: the k-block's int4 codes in the MMA's register layout (the weight is not reordered in memory);
  // tCrA_mma: the int8 operand; get<1>(extra): the multipliers, one per code, loaded at the K tile's first k-block.
  template <class EngineIn, class EngineOut, class LayoutIn, class LayoutOut, class... Ts>
  CUTLASS_DEVICE static void dequantize_A_kblock(cute::Tensor<EngineIn, LayoutIn> const& tCrA_load,
                                                 cute::Tensor<EngineOut, LayoutOut>& tCrA_mma,
                                                 cute::tuple<Ts...>& partitioned_extra_info, int const k_block) {
    using namespace cute;
    static_assert(is_same_v<typename EngineIn::value_type, cutlass::int4b_t>);
    static_assert(is_same_v<typename EngineOut::value_type, int8_t>);
    Tensor src = tCrA_load(_, _, k_block);
    Tensor dst = tCrA_mma(_, _, k_block);
    Tensor mult = get<1>(partitioned_extra_info)(_, _, k_block);
    CUTE_STATIC_ASSERT_V(size(src) == size(dst) && size(src) == size(mult));
    // The int8 A fragment of a 64xNx32 WGMMA: per thread 16 values, (row r, k 0..3), (r + 8, k 0..3),
    // (r, k 16..19), (r + 8, k 16..19) (PTX ISA, wgmma register fragments). Each group of 8 is one 32-bit register
    // of codes and two of int8, each of the latter four k of one row, so of one group: one multiplier.
    CUTE_STATIC_ASSERT_V(size<0>(src) == Int<16>{}, "expected the int8 WGMMA's A fragment (16 values per atom)");
    CUTE_STATIC_ASSERT_V(size(src(_, 0)) == cosize(src(_, 0).layout()), "the codes of an atom must be contiguous");
    Tensor src_vm = group_modes<1, -1>(zipped_divide(src, Int<8>{}));
    Tensor dst_vm = group_modes<1, -1>(zipped_divide(dst, Int<8>{}));
    Tensor mult_vm = group_modes<1, -1>(zipped_divide(mult, Int<8>{}));
    CUTLASS_PRAGMA_UNROLL
    for (int i = 0; i < size<1>(dst_vm); ++i) {
      const uint32_t codes = recast<uint32_t>(src_vm(_, i))(0);
      // u = code + 8 of the even codes (bytes 0, 2, 4, 6 of the 8) and of the odd ones (1, 3, 5, 7)
      const uint32_t even = (codes & 0x0F0F0F0Fu) ^ 0x08080808u;
      const uint32_t odd = ((codes >> 4) & 0x0F0F0F0Fu) ^ 0x08080808u;
      auto&& out = recast<uint32_t>(dst_vm(_, i));
      out(0) = lowbit::s8s4::times_group_mult(__byte_perm(even, odd, 0x5140), mult_vm(0, i));  // codes 0..3
      out(1) = lowbit::s8s4::times_group_mult(__byte_perm(even, odd, 0x7362), mult_vm(4, i));  // codes 4..7
    }
  }
};

}  // namespace cutlass::gemm::collective::detail
