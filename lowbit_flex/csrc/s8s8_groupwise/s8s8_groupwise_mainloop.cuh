// A CUTLASS 3.x mainloop collective for int8 x int8 GEMMs with group-wise (per K block) scales of the B operand,
// promoted into an fp32 accumulator on the consumer warp groups, or (IntegerScales) integer group multipliers
// promoted into an int32 accumulator.
//
// Why not CUTLASS's own block-scaled mainloop (MainloopSm90TmaGmmaWarpSpecializedBlockwiseFP8, CUTLASS 4.2):
//  - its builder static_asserts FP8 inputs (collective/builders/sm90_gmma_builder.inl: "Warp Specialized gemm with
//    FP8 Blockwise (Software) Scaling is only compatible with FP8 inputs");
//  - the collective makes the scale type the MMA accumulator type (ElementBlockScale = TiledMma::ValTypeC, with a
//    static_assert that they agree), i.e. int32 scales for an int8 MMA;
//  - GmmaFP8Accumulation keeps its partial accumulator as make_fragment_like(main accumulator): one element type
//    for both, where int8 needs an int32 partial and an fp32 sum;
//  - its promotion interval must equal the K tile (a multiple of 4 MMAs), so groups 32/64 cannot be expressed.
//
// What this collective reuses: everything that moves the int8 operands. It derives from the stock warp-specialized
// SS collective that the CUTLASS builder makes for int8 x int8 -> int32 (TMA descriptors, shared-memory layouts,
// producer load, pipeline), and adds
//  - the kernel-facing TiledMma: the fp8 TiledMma of the same tile, whose fp32 accumulator fragment has the same
//    layout as the int8 one (static_assert below). The kernel layer allocates the accumulators from it and hands
//    them to the epilogue, so the kernel (GemmUniversal, cooperative schedule) and the epilogue see an fp32 GEMM;
//  - w_scale in shared memory, one [group-in-tile][n] slice per pipeline stage, loaded with cp.async by the
//    kernel's auxiliary producer warp (the role CUTLASS added for block-scaled mainloops: HasAuxiliaryLoad);
//  - a consumer loop that runs each group's WGMMAs into an int32 register accumulator, waits, and adds
//    float(dot) * w_scale[n, g] into the fp32 accumulator. While one warp group converts, the other warp group's
//    WGMMAs keep the tensor cores busy (the two consumers of the cooperative kernel drift out of phase);
//  - for PingPong instances, a consumer loop with two int32 accumulators that take alternate groups, so that a warp
//    group issues group g+1's WGMMAs before it promotes group g (mma_ping_pong below): its own promotion overlaps
//    its own tensor-core work instead of relying on the other warp group only;
//  - for IntegerScales instances, int32 multipliers instead of float scales: the promotion is one IMAD per
//    accumulator element and group (acc += dot * mult[n, g]) instead of three instructions (the exact int -> float
//    conversion's integer and float adds, then the FFMA), the kernel-facing accumulators are the int32 ones and the
//    epilogue applies a per-channel float scale. At group 128 the float promotion issues 3 instructions per 128
//    MACs of each accumulator element, i.e. ~3 of the 4 warp-instruction slots per clock an SM has while its int8
//    tensor cores run at full rate; the integer one issues ~1. The caller bounds the integer sum (|x| <= 128,
//    |w| <= 8, |mult| <= 128: K < 2^14 keeps every partial sum inside int32).
#pragma once

// clang-format off
#include "cutlass/cutlass.h"
#include "cute/tensor.hpp"
#include "cute/arch/copy_sm80.hpp"
#include "cutlass/arch/barrier.h"
#include "cutlass/gemm/dispatch_policy.hpp"
#include "cutlass/gemm/collective/collective_builder.hpp"
// clang-format on

#include "common/magic_round.cuh"

namespace lowbit::s8s8g {

// Dispatch policy of the collective below. The kernel layer picks the cooperative GemmUniversal from `Schedule`.
template <int Stages_, int KBlocksPerGroup_, bool PingPong_ = false, bool IntegerScales_ = false>
struct MainloopSm90GroupwiseS8 {
  static constexpr int Stages = Stages_;
  static constexpr int KBlocksPerGroup = KBlocksPerGroup_;
  static constexpr bool PingPong = PingPong_;
  static constexpr bool IntegerScales = IntegerScales_;
  using ClusterShape = cute::Shape<cute::_1, cute::_1, cute::_1>;
  using ArchTag = cutlass::arch::Sm90;
  using Schedule = cutlass::gemm::KernelTmaWarpSpecializedCooperative;
};

// dot (an int32 WGMMA result with |dot| <= 2^22) as an exact float with one integer and one float add
// (common/magic_round.cuh): I2F, the direct conversion, runs at a fraction of the FP32 rate on sm_90, and the
// promotion converts every accumulator element once per group.
CUTLASS_DEVICE float exact_float(int32_t dot) { return lowbit::small_int_to_float(dot); }

// One group's contribution to the running sum: float(dot) * scale (contracted with the caller's add into one FFMA)
// or, for integer multipliers, dot * mult (one IMAD).
CUTLASS_DEVICE float scaled_dot(int32_t dot, float scale) { return exact_float(dot) * scale; }
CUTLASS_DEVICE int32_t scaled_dot(int32_t dot, int32_t mult) { return dot * mult; }

// Base: the builder's int8 x int8 -> int32 SS collective for the same tile and stage count.
// PingPong: the consumer loop of mma_ping_pong (two int32 accumulators) instead of mma_serial.
// IntegerScales: int32 group multipliers and an int32 running sum instead of float scales and an fp32 sum.
template <class Base, int KBlocksPerGroup, bool PingPong = false, bool IntegerScales = false>
struct GroupwiseMainloop : Base {
  using DispatchPolicy =
      MainloopSm90GroupwiseS8<Base::DispatchPolicy::Stages, KBlocksPerGroup, PingPong, IntegerScales>;
  // The scales in memory and the running sum they are promoted into.
  using Scale = cute::conditional_t<IntegerScales, int32_t, float>;
  using typename Base::MainloopPipeline;
  using typename Base::PipelineState;
  using typename Base::SmemLayoutA;
  using typename Base::SmemLayoutB;
  using typename Base::StrideA;
  using typename Base::StrideB;
  using typename Base::TileShape;
  using MmaS32 = typename Base::TiledMma;  // issues the s8 x s8 -> s32 WGMMAs

  static constexpr int Stages = DispatchPolicy::Stages;
  static constexpr int TileM = cute::size<0>(TileShape{});
  static constexpr int TileN = cute::size<1>(TileShape{});
  static constexpr int TileK = cute::size<2>(TileShape{});
  static constexpr int KBlocks = TileK / cute::size<2>(typename MmaS32::AtomShape_MNK{});  // WGMMAs per K tile
  static_assert(KBlocks % KBlocksPerGroup == 0, "a group must cover whole WGMMA k-blocks of one K tile");
  static constexpr int GroupsPerTile = KBlocks / KBlocksPerGroup;
  // KBlocksPerGroup == KBlocks: the group is a multiple of the K tile (params.group / TileK tiles per group).
  static constexpr bool GroupSpansTiles = GroupsPerTile == 1;
  // Load a group's scales into registers while its WGMMAs run (TileN / 4 registers per thread), and release the
  // stage before promoting. Only where that fits: with two accumulators of TileN / 2 registers each, a 192-wide
  // tile has no room left, and with several groups per K tile ptxas hoists every group's scale loads (spills).
  // Otherwise the promotion reads the scales from shared memory and the stage is released after it.
  static constexpr bool ScalesInRegisters = TileN <= 128 && GroupSpansTiles;
  // The ping-pong loop alternates accumulators per group and promotes at K-tile boundaries only.
  static_assert(!PingPong || GroupSpansTiles, "the ping-pong consumer takes groups that are multiples of the K tile");

  // What the kernel layer allocates, partitions and passes to the epilogue: fp32 accumulators laid out exactly
  // like the int8 MMA's (the C fragment of a 64xNx32 WGMMA does not depend on the A/B types), or for integer
  // multipliers the int32 accumulators of the int8 MMA itself.
  using TiledMmaF32 = decltype(cute::make_tiled_mma(
      cute::GMMA::ss_op_selector<cutlass::float_e4m3_t, cutlass::float_e4m3_t, float, TileShape,
                                 cute::GMMA::Major::K, cute::GMMA::Major::K>(),
      cute::Layout<cute::Shape<cute::_2, cute::_1, cute::_1>>{}));
  static_assert(cute::is_same_v<decltype(TiledMmaF32{}.get_layoutC_TV()), decltype(MmaS32{}.get_layoutC_TV())> &&
                    cute::size(TiledMmaF32{}) == cute::size(MmaS32{}),
                "the fp32 and int32 accumulator fragments must have one layout");
  using TiledMma = cute::conditional_t<IntegerScales, MmaS32, TiledMmaF32>;
  using ElementAccumulator = Scale;

  // Full-barrier arrivals per stage: the TMA thread (with the transaction bytes) and the 32 cp.async lanes.
  static constexpr int NumProducerThreadEvents = 1 + cutlass::NumThreadsPerWarp;

  struct SharedStorage {
    struct TensorStorage : cute::aligned_struct<128, cute::_0> {
      typename Base::TensorStorage operands;
      cute::array_aligned<Scale, Stages * GroupsPerTile * TileN> scales;  // [stage][group in tile][n]
    } tensors;
    using PipelineStorage = typename Base::PipelineStorage;
    PipelineStorage pipeline;
  };
  using TensorStorage = typename SharedStorage::TensorStorage;
  using PipelineStorage = typename SharedStorage::PipelineStorage;

  struct Arguments {
    int8_t const* ptr_A;
    StrideA dA;
    int8_t const* ptr_B;
    StrideB dB;
    Scale const* ptr_scale;  // (N, K / group) row-major
    int group;
  };

  struct Params : Base::Params {
    Scale const* ptr_scale;
    int group;
    int groups_per_row;  // K / group: w_scale's row stride
    int N;
  };

  template <class ProblemShape>
  static Params to_underlying_arguments(ProblemShape const& problem_shape, Arguments const& args, void* workspace) {
    auto [M, N, K, L] = cute::append<4>(problem_shape, 1);
    typename Base::Arguments base{args.ptr_A, args.dA, args.ptr_B, args.dB};
    return {Base::to_underlying_arguments(problem_shape, base, workspace), args.ptr_scale, args.group,
            int(K) / args.group, int(N)};
  }

  // The group rule of this instance (the launcher checks the shape and alignment rules before).
  static bool group_ok(int group) {
    if constexpr (GroupSpansTiles) return group % TileK == 0;
    return group * GroupsPerTile == TileK;
  }

  template <class ProblemShape>
  static bool can_implement(ProblemShape const& problem_shape, Arguments const& args) {
    auto [M, N, K, L] = cute::append<4>(problem_shape, 1);
    typename Base::Arguments base{args.ptr_A, args.dA, args.ptr_B, args.dB};
    return Base::can_implement(problem_shape, base) && args.ptr_scale != nullptr && args.group > 0 &&
           int(K) % args.group == 0 && group_ok(args.group);
  }

  // Producer warp: the operand tiles by TMA, exactly as the int8 collective loads them.
  template <class LoadInputs, class BlockCoord, class KTileIterator>
  CUTLASS_DEVICE void load(Params const& params, MainloopPipeline pipeline, PipelineState smem_pipe_write,
                           LoadInputs const& load_inputs, BlockCoord const& blk_coord, KTileIterator k_tile_iter,
                           int k_tile_count, int thread_idx, uint32_t block_rank_in_cluster,
                           TensorStorage& shared_tensors) {
    Base::load(params, pipeline, smem_pipe_write, load_inputs, blk_coord, k_tile_iter, k_tile_count, thread_idx,
               block_rank_in_cluster, shared_tensors.operands);
  }

  // Auxiliary producer warp: the w_scale slice of each K tile into the same pipeline stage, by cp.async (w_scale
  // is K-major, so a tile's TileN scales are strided by K / group: no TMA box). Columns past N and groups past K
  // (the ragged last K tile of group 32/64) are zero-filled; their operands are TMA zero-fill too.
  template <class LoadInputs, class BlockCoord, class KTileIterator>
  CUTLASS_DEVICE void load_auxiliary(Params const& params, MainloopPipeline pipeline, PipelineState smem_pipe_write,
                                     LoadInputs const&, BlockCoord const& blk_coord, KTileIterator k_tile_iter,
                                     int k_tile_count, int lane, uint32_t, TensorStorage& shared_tensors) {
    auto [m_coord, n_coord, k_coord, l_coord] = blk_coord;
    const int n0 = int(n_coord) * TileN;
    Scale* scales = shared_tensors.scales.data();
    CUTLASS_PRAGMA_NO_UNROLL
    for (; k_tile_count > 0; --k_tile_count) {
      pipeline.producer_acquire(smem_pipe_write);  // every lane waits; only the TMA leader arrives here
      const int g0 = int(*k_tile_iter) * TileK / params.group;  // the first group this K tile touches
      Scale* dst = scales + smem_pipe_write.index() * (GroupsPerTile * TileN);
      // Lanes walk j (group in tile) fastest: consecutive lanes read consecutive groups of one w_scale row.
      CUTLASS_PRAGMA_UNROLL
      for (int i = lane; i < GroupsPerTile * TileN; i += cutlass::NumThreadsPerWarp) {
        const int j = i % GroupsPerTile, n = i / GroupsPerTile;
        const bool in = n0 + n < params.N && g0 + j < params.groups_per_row;
        Scale const* src = in ? params.ptr_scale + int64_t(n0 + n) * params.groups_per_row + (g0 + j)
                              : params.ptr_scale;
        cute::SM80_CP_ASYNC_CACHEALWAYS_ZFILL<Scale>::copy(*src, dst[j * TileN + n], in);
      }
      pipeline.producer_commit(smem_pipe_write, cutlass::arch::cpasync_barrier_arrive_noinc);
      ++k_tile_iter;
      ++smem_pipe_write;
    }
  }

  // Consumer warp groups. accum: the kernel's fp32 (int32) accumulators (MMA, MMA_M, MMA_N). Every stage read is released
  // before this returns.
  template <class FrgTensorC>
  CUTLASS_DEVICE void mma(MainloopPipeline pipeline, PipelineState smem_pipe_read, FrgTensorC& accum,
                          int k_tile_count, int thread_idx, TensorStorage& shared_tensors, Params const& params) {
    if constexpr (PingPong) {
      mma_ping_pong(pipeline, smem_pipe_read, accum, k_tile_count, thread_idx, shared_tensors, params);
    } else {
      mma_serial(pipeline, smem_pipe_read, accum, k_tile_count, thread_idx, shared_tensors, params);
    }
  }

  // One int32 accumulator: each group's WGMMAs, wait for them, promote.
  template <class FrgTensorC>
  CUTLASS_DEVICE void mma_serial(MainloopPipeline pipeline, PipelineState smem_pipe_read, FrgTensorC& accum,
                                 int k_tile_count, int thread_idx, TensorStorage& shared_tensors,
                                 Params const& params) {
    using namespace cute;
    static_assert(is_same_v<typename FrgTensorC::value_type, Scale>);
    Tensor sA = make_tensor(make_smem_ptr(shared_tensors.operands.smem_A.data()), SmemLayoutA{});  // (M,K,PIPE)
    Tensor sB = make_tensor(make_smem_ptr(shared_tensors.operands.smem_B.data()), SmemLayoutB{});  // (N,K,PIPE)
    // The scales as an (M, N, (group in tile, PIPE)) tensor that is constant along M: partitioned like the
    // accumulators, each thread sees the scale of each of its accumulator columns.
    Tensor sS = make_tensor(
        make_smem_ptr(shared_tensors.scales.data()),
        make_layout(make_shape(Int<TileM>{}, Int<TileN>{}, make_shape(Int<GroupsPerTile>{}, Int<Stages>{})),
                    make_stride(_0{}, _1{}, make_stride(Int<TileN>{}, Int<GroupsPerTile * TileN>{}))));

    MmaS32 mma_s32;
    // A and B are partitioned per warp group (WGMMA operands), C per thread.
    const int warp_group_idx = __shfl_sync(0xffffffff, thread_idx / cutlass::NumThreadsPerWarpGroup, 0);
    auto wg_mma = mma_s32.get_slice(warp_group_idx * cutlass::NumThreadsPerWarpGroup);
    Tensor tCrA = wg_mma.make_fragment_A(wg_mma.partition_A(sA));  // (MMA,MMA_M,MMA_K,PIPE) smem descriptors
    Tensor tCrB = wg_mma.make_fragment_B(wg_mma.partition_B(sB));  // (MMA,MMA_N,MMA_K,PIPE)
    static_assert(decltype(size<2>(tCrA))::value == KBlocks);
    Tensor tCsS = mma_s32.get_slice(thread_idx).partition_C(sS);   // (MMA,MMA_M,MMA_N,(G,PIPE))
    Tensor tCrS = make_tensor_like<Scale>(tCsS(_, _, _, make_coord(0, 0)));  // stride-0 rows: one reg per column
    (void)tCrS;  // unused unless ScalesInRegisters
    Tensor dot = partition_fragment_C(mma_s32, take<0, 2>(TileShape{}));  // int32, the running group's sum
    CUTE_STATIC_ASSERT_V(size(dot) == size(accum));

    clear(accum);
    // Only GroupSpansTiles instances carry a group's int32 sum across K tiles (group 256: two tiles).
    const int tiles_per_group = GroupSpansTiles ? params.group / TileK : 1;
    int tile_in_group = 0;

    CUTLASS_PRAGMA_NO_UNROLL
    for (; k_tile_count > 0; --k_tile_count) {
      pipeline.consumer_wait(smem_pipe_read);
      const int stage = smem_pipe_read.index();
      const bool group_ends = tile_in_group + 1 == tiles_per_group || k_tile_count == 1;
      CUTLASS_PRAGMA_UNROLL
      for (int j = 0; j < GroupsPerTile; ++j) {
        warpgroup_fence_operand(dot);
        warpgroup_arrive();
        CUTLASS_PRAGMA_UNROLL
        for (int kb = 0; kb < KBlocksPerGroup; ++kb) {
          // A group's first k-block overwrites the int32 sum instead of adding to it.
          mma_s32.accumulate_ = kb == 0 && tile_in_group == 0 ? GMMA::ScaleOut::Zero : GMMA::ScaleOut::One;
          cute::gemm(mma_s32, tCrA(_, _, j * KBlocksPerGroup + kb, stage), tCrB(_, _, j * KBlocksPerGroup + kb, stage),
                     dot);
        }
        warpgroup_commit_batch();
        if constexpr (ScalesInRegisters) {
          if (group_ends) copy(tCsS(_, _, _, make_coord(j, stage)), tCrS);  // while the WGMMAs run
        }
        warpgroup_wait<0>();
        warpgroup_fence_operand(dot);
        if constexpr (ScalesInRegisters) {
          // The WGMMAs have read this stage and its scales are in registers: hand it back to the producers.
          pipeline.consumer_release(smem_pipe_read);
          if (group_ends) {
            CUTLASS_PRAGMA_UNROLL
            for (int i = 0; i < size(accum); ++i) accum(i) += scaled_dot(dot(i), tCrS(i));
          }
        } else {
          if (group_ends) {
            Tensor tCsS_j = tCsS(_, _, _, make_coord(j, stage));
            CUTLASS_PRAGMA_UNROLL
            for (int i = 0; i < size(accum); ++i) accum(i) += scaled_dot(dot(i), tCsS_j(i));
          }
          if (j == GroupsPerTile - 1) pipeline.consumer_release(smem_pipe_read);
        }
      }
      tile_in_group = group_ends ? 0 : tile_in_group + 1;
      ++smem_pipe_read;
    }
    warpgroup_fence_operand(accum);
  }

  // Two int32 accumulators that take alternate groups (groups that are multiples of the 128-deep K tile). Per K
  // tile, in this order:
  //   1. consumer_wait(this tile's stage);
  //   2. issue its KBlocks WGMMAs into `cur`, the running group's accumulator (the group's first WGMMA with
  //      scale-D zero), as one batch: warpgroup_commit_batch;
  //   3. unless this is the very first K tile: warpgroup_wait<1>, i.e. every batch but the one just issued is
  //      complete, so the previous K tile's WGMMAs are done (the WGMMAs of the previous tile, whichever
  //      accumulator they wrote);
  //   4. if this tile starts a group (and is not the first): promote the previous group, complete in `prev`, into
  //      fp32 with the scales of the previous tile's stage, while this tile's WGMMAs run;
  //   5. consumer_release(the previous tile's stage): its WGMMAs completed in 3 and its scales were read in 4.
  // After the last K tile: warpgroup_wait<0>, promote the last group, release the last stage. So the release state
  // trails the read state by exactly one K tile, every stage read is released exactly once and in order, and at
  // most two WGMMA batches (two K tiles) are in flight. Each group's dot is still one int32 sum of its own
  // WGMMAs. Register budget per consumer thread: three accumulators of TileN / 2 (two int32, one fp32 or int32);
  // the scales are read from shared memory in the promotion.
  template <class FrgTensorC>
  CUTLASS_DEVICE void mma_ping_pong(MainloopPipeline pipeline, PipelineState smem_pipe_read, FrgTensorC& accum,
                                    int k_tile_count, int thread_idx, TensorStorage& shared_tensors,
                                    Params const& params) {
    using namespace cute;
    static_assert(is_same_v<typename FrgTensorC::value_type, Scale>);
    static_assert(GroupsPerTile == 1);
    Tensor sA = make_tensor(make_smem_ptr(shared_tensors.operands.smem_A.data()), SmemLayoutA{});  // (M,K,PIPE)
    Tensor sB = make_tensor(make_smem_ptr(shared_tensors.operands.smem_B.data()), SmemLayoutB{});  // (N,K,PIPE)
    // The scales as an (M, N, PIPE) tensor that is constant along M (as in mma_serial, one group per stage).
    Tensor sS = make_tensor(
        make_smem_ptr(shared_tensors.scales.data()),
        make_layout(make_shape(Int<TileM>{}, Int<TileN>{}, Int<Stages>{}), make_stride(_0{}, _1{}, Int<TileN>{})));

    MmaS32 mma_s32;
    const int warp_group_idx = __shfl_sync(0xffffffff, thread_idx / cutlass::NumThreadsPerWarpGroup, 0);
    auto wg_mma = mma_s32.get_slice(warp_group_idx * cutlass::NumThreadsPerWarpGroup);
    Tensor tCrA = wg_mma.make_fragment_A(wg_mma.partition_A(sA));  // (MMA,MMA_M,MMA_K,PIPE) smem descriptors
    Tensor tCrB = wg_mma.make_fragment_B(wg_mma.partition_B(sB));  // (MMA,MMA_N,MMA_K,PIPE)
    static_assert(decltype(size<2>(tCrA))::value == KBlocks);
    Tensor tCsS = mma_s32.get_slice(thread_idx).partition_C(sS);           // (MMA,MMA_M,MMA_N,PIPE)
    Tensor dot0 = partition_fragment_C(mma_s32, take<0, 2>(TileShape{}));  // int32, even groups
    Tensor dot1 = partition_fragment_C(mma_s32, take<0, 2>(TileShape{}));  // int32, odd groups
    CUTE_STATIC_ASSERT_V(size(dot0) == size(accum));

    clear(accum);
    if (k_tile_count <= 0) return;
    // group_ok(): a positive multiple of TileK (a zero here would never advance k_tile_count).
    const int tiles_per_group = cute::max(1, params.group / TileK);
    PipelineState smem_pipe_release = smem_pipe_read;  // the oldest stage not yet released
    bool group_pending = false;                        // a complete group waits in the other accumulator

    // accum += float(dot) * w_scale[n, g] (or dot * mult[n, g]) with the scales of `stage` (WGMMAs into `dot` must
    // be complete).
    auto promote = [&](auto& dot, int stage) {
      warpgroup_fence_operand(dot);
      Tensor tCsS_s = tCsS(_, _, _, stage);
      CUTLASS_PRAGMA_UNROLL
      for (int i = 0; i < size(accum); ++i) accum(i) += scaled_dot(dot(i), tCsS_s(i));
      warpgroup_fence_operand(dot);
    };
    // One group: its K tiles into `cur`; once its first tile's WGMMAs are issued, the previous group (complete in
    // `prev` after the wait) is promoted. `cur` and `prev` are distinct register tensors in each instantiation.
    auto run_group = [&](auto& cur, auto& prev) {
      const int tiles = cute::min(tiles_per_group, k_tile_count);
      CUTLASS_PRAGMA_NO_UNROLL
      for (int t = 0; t < tiles; ++t) {
        pipeline.consumer_wait(smem_pipe_read);
        const int stage = smem_pipe_read.index();
        warpgroup_fence_operand(cur);
        warpgroup_arrive();
        CUTLASS_PRAGMA_UNROLL
        for (int kb = 0; kb < KBlocks; ++kb) {
          mma_s32.accumulate_ = kb == 0 && t == 0 ? GMMA::ScaleOut::Zero : GMMA::ScaleOut::One;
          cute::gemm(mma_s32, tCrA(_, _, kb, stage), tCrB(_, _, kb, stage), cur);
        }
        warpgroup_commit_batch();
        warpgroup_fence_operand(cur);
        ++smem_pipe_read;
        if (t > 0 || group_pending) {
          warpgroup_wait<1>();  // the previous K tile's batch is complete; the one just issued may still run
          if (t == 0) promote(prev, smem_pipe_release.index());
          pipeline.consumer_release(smem_pipe_release);
          ++smem_pipe_release;
        }
      }
      k_tile_count -= tiles;
      group_pending = true;
    };
    auto finish = [&](auto& last) {
      warpgroup_wait<0>();
      promote(last, smem_pipe_release.index());
      pipeline.consumer_release(smem_pipe_release);
    };
    CUTLASS_PRAGMA_NO_UNROLL
    while (true) {
      run_group(dot0, dot1);
      if (k_tile_count <= 0) {
        finish(dot0);
        break;
      }
      run_group(dot1, dot0);
      if (k_tile_count <= 0) {
        finish(dot1);
        break;
      }
    }
    warpgroup_fence_operand(accum);
  }

  // mma() released every stage it read.
  CUTLASS_DEVICE void mma_tail(MainloopPipeline, PipelineState, int) {}
};

}  // namespace lowbit::s8s8g

// The kernel layer runs load_auxiliary on its MainloopAux producer warp only for policies that say so.
namespace cutlass::gemm::kernel::detail {
template <int Stages, int KBlocksPerGroup, bool PingPong, bool IntegerScales>
struct HasAuxiliaryLoad<lowbit::s8s8g::MainloopSm90GroupwiseS8<Stages, KBlocksPerGroup, PingPong, IntegerScales>>
    : cute::true_type {};
}  // namespace cutlass::gemm::kernel::detail
