// Hopper fp8 / fp6 / fp4 weight-only GEMM (float_weight_gemm.h): the decoded weight is WGMMA's register-sourced A
// operand, x the shared-memory B operand, so the weight never goes back to shared memory once decoded.
//
// Why this shape (docs/measurements/h200_run45_gluon_weight_only.md): the Gluon kernel that stores the decoded
// tile to shared memory for an all-shared-memory WGMMA moved ~164 bytes per clock through shared memory at the
// tensor cores' rate (TMA writes, the decoded tile's stores, both operands' reads), over the 128 an SM delivers, and
// ran at 0.49-0.78x bf16 from M = 256. Here a 128 x BM x 128 step moves the x tile in (TMA), reads it once per
// consumer warpgroup (WGMMA) and reads the 8 / 12 KB of packed codes once (LDS): ~100 bytes per clock at BM >= 128.
// Triton cannot emit this: with its bundled ptxas, register-A WGMMAs are serialized or, pipelined, wrong
// (triton-lang/triton#9433); nvcc's ptxas pipelines them.
//
// - Out^T = W x^T: the 128 weight rows of a CTA are two consumer warpgroups' 64-row A operands; BM x rows are the
//   WGMMA's N (16 .. 256). One producer warp issues TMA loads of each 128-code K tile into two rings (Layout): the
//   codes as (16-word, 128-row) boxes of hi words with the 64-byte swizzle (fp6: plus 8-word lo boxes, 32-byte
//   swizzle), so the consumers' 8-byte LDS of two words hit distinct banks, and x as two (64-column, BM-row) boxes
//   with the 128-byte swizzle WGMMA reads. Zero fill past M, N and K makes every tail exact (zero codes, zero x).
// - A lane's A registers for K block b (16 codes) are rows g and g + 8 at columns 2t, 2t + 1, 2t + 8, 2t + 9: in the
//   tile layout (code 16p + w in nibble p of word w) those are nibble b of words 2t, 2t + 1, 2t + 8, 2t + 9. One
//   byte permute joins words 2t and 2t + 1 so that nibbles q and q + 4 are their codes q (the decode's pair), so
//   each register costs the GEMV's decode plus a quarter permute.
// - WGMMAs run in groups of four K blocks (one x box) with two register sets, so a group's decode overlaps the
//   previous group's WGMMAs (wait_group 1); a slot is handed back once every group that read it is complete.
// - Epilogue: fp32 sums times the decode's power of two, w_scale and bias, rounded once to x's dtype (the CUDA GEMV's
//   order). Split-K (where the output tiles leave SMs idle): up to 8 splits of a tile as one cluster, adding their
//   sums through distributed shared memory (cluster_sum); else raw sums into the split's fp32 partials in the
//   workspace, then reduce_kernel adds them. Both add in split order and apply the same epilogue. reduce_kernel is
//   the GEMM's programmatic dependent (common/pdl.cuh): scheduled while the GEMM runs, it waits for it before its
//   first load, so its launch no longer follows the GEMM's tail (H100 run 69: 3-7 % off the split layers' time at
//   M = 1-64; it was ~2 us of a 9-25 us layer at M = 1, run 64).
#pragma once

#include <cuda.h>
#include <cudaTypedefs.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <type_traits>
#include <utility>

#include "common/cluster.cuh"
#include "common/fpx_decode.cuh"
#include "common/gemv_epilogue.cuh"
#include "common/pdl.cuh"
#include "common/resident_ctas.h"
#include "common/sm90_arch.h"
#include "cute/arch/copy_sm90_desc.hpp"
#include "cute/arch/copy_sm90_tma.hpp"
#include "cute/arch/mma_sm90_gmma.hpp"
#include "cutlass/arch/barrier.h"
#include "cutlass/arch/reg_reconfig.h"
#include "float_weight_gemm/float_weight_gemm.h"

namespace lowbit::float_weight_gemm::sm90 {

constexpr int kConsumers = 2;                           // warpgroups of 64 weight rows
constexpr int kBlockN = 64 * kConsumers;                // weight rows per CTA
constexpr int kThreads = 128 * (1 + kConsumers);        // a producer warpgroup (one warp issues TMA) + the consumers
constexpr int kSmemBudget = 227 * 1024;                 // the sm_90 per-block opt-in limit (232448 bytes)
constexpr int kProducerRegs = 40, kConsumerRegs = 232;  // setmaxnreg: 128 * 40 + 256 * 232 <= 64K
constexpr int kMaxClusterSplits = 8;                    // the portable cluster size (cluster_sum)

// Shared memory: rings of slots, each with a `full` (TMA bytes landed) and an `empty` (both consumers done) barrier.
// - Where MAX_STAGES whole K tiles fit (every config but the 256-row fp6 / fp8 tiles): one ring, a slot holding the
//   tile's two x boxes and its codes behind one barrier pair, handed back once the next tile's first group has
//   waited for the tile's last one. Three barrier waits per K tile instead of one cost 11-15 % at M = 1 (H100 run 63).
// - Else (kSplit) two rings. x: one (64-column, BM-row) box per slot, two per K tile, each handed back when its own
//   WGMMAs are done; codes: the K tile's hi (+ fp6 lo) box or its e4m3 rows, fp4 / fp6 codes going to registers at
//   the tile's start so their slot is free once the tile's first group is done (fp8 reads its slot in both groups).
//   In one ring of whole tiles the 256-row fp6 tile held two K tiles in flight and waited on TMA in a quarter of its
//   samples (ncu, H100 run 63: 68 % tensor-pipe use against fp4's 79 % with three tiles); split, it keeps three K
//   tiles of x (up to 2 * MAX_STAGES boxes, at least two code slots).
template <int FMT, int BM, int MAX_STAGES>
struct Layout {
  static constexpr bool kFp8 = FMT == kE4M3, kFp6 = FpxTraits<FMT>::kBits == 6;
  static constexpr int kWordsPerTile = kFp6 ? 24 : 16;          // fp4 / fp6 tile words (fp8 rows are bytes)
  static constexpr int kXBoxBytes = BM * 128;                   // 64 x columns (2-byte values) of BM rows
  static constexpr int kHiBytes = kBlockN * (kFp8 ? 128 : 64);  // 128 rows of 16 hi words, or of 128 e4m3 bytes
  static constexpr int kLoBytes = kFp6 ? kBlockN * 32 : 0;      // 8 lo words
  static constexpr int kCodeBytes = kHiBytes + kLoBytes;        // a code slot (and its TMA bytes)
  static constexpr int kReserve = 1024 + 1024;                  // aligning the base, and the barriers
  static constexpr int kRings = kSmemBudget - kReserve;
  static constexpr int kTileBytes = 2 * kXBoxBytes + kCodeBytes;  // a whole K tile: x box 0, x box 1, codes
  static constexpr bool kSplit = MAX_STAGES * kTileBytes > kRings;
  static constexpr int kXSlots = !kSplit ? 0
                                 : 2 * MAX_STAGES * kXBoxBytes + 2 * kCodeBytes <= kRings
                                     ? 2 * MAX_STAGES
                                     : (kRings - 2 * kCodeBytes) / kXBoxBytes;
  static constexpr int kCodeSlots = !kSplit ? MAX_STAGES
                                    : MAX_STAGES * kCodeBytes + kXSlots * kXBoxBytes <= kRings
                                        ? MAX_STAGES
                                        : (kRings - kXSlots * kXBoxBytes) / kCodeBytes;
  // The code ring's slots (whole tiles unless split), where the codes sit in one, and where the ring starts; every
  // box 1024-byte aligned (the swizzles).
  static constexpr int kCodeSlotBytes = kSplit ? kCodeBytes : kTileBytes;
  static constexpr int kCodeOffset = kSplit ? 0 : 2 * kXBoxBytes;
  static constexpr int kCodeBase = kXSlots * kXBoxBytes;
  static constexpr int kCodeTxBytes = kSplit ? kCodeBytes : kTileBytes;  // what a code slot's `full` barrier counts
  static constexpr int kBarrierBase = kCodeBase + kCodeSlots * kCodeSlotBytes;
  static constexpr int kSmemBytes = kBarrierBase + kReserve;
  static_assert((!kSplit || kXSlots >= 2) && kCodeSlots >= 2, "a config's K tile does not fit shared memory twice");
  static_assert(2 * (kXSlots + kCodeSlots) * 8 <= 1024, "the barriers outgrow their reserve");
  static_assert(kXBoxBytes % 1024 == 0 && kHiBytes % 1024 == 0 && kLoBytes % 1024 == 0);
  static_assert(kSmemBytes <= kSmemBudget);
};

struct Params {
  const float* w_scale;
  const void* bias;
  void* out;
  float* partials;                   // (splits, M, N) when gridDim.z > 1 and the splits are not one cluster
  int M, N, tiles, tiles_per_split;  // tiles: 128-code K tiles
  int cluster_reduce;                // the gridDim.z splits are one cluster: sums added through DSMEM (cluster_sum)
};

__device__ __forceinline__ uint2 lds64(uint32_t addr) {
  uint2 v;
  asm volatile("ld.shared.v2.u32 {%0, %1}, [%2];" : "=r"(v.x), "=r"(v.y) : "r"(addr));
  return v;
}

__device__ __forceinline__ uint4 lds128(uint32_t addr) {
  uint4 v;
  asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "r"(addr));
  return v;
}

// WGMMA descriptor of a K-major operand in the 128-byte swizzle (rows of 64 two-byte values, 8-row groups 1024
// bytes apart), starting `addr` bytes into shared memory (a 1024-aligned box plus 32 bytes per 16-column block).
__device__ __forceinline__ uint64_t sw128_desc(uint32_t addr) {
  return static_cast<uint64_t>((addr & 0x3FFFF) >> 4) | (static_cast<uint64_t>(1) << 16) |
         (static_cast<uint64_t>(1024 >> 4) << 32) | (static_cast<uint64_t>(1) << 62);
}

// The RS WGMMA of x's dtype and BM columns: acc (BM / 2 fp32 per lane) += A (4 registers) * B (descriptor).
template <class T, int BM>
struct Wgmma;
#define LOWBIT_FWG_WGMMA(BM)                                                                                       \
  template <>                                                                                                      \
  struct Wgmma<__nv_bfloat16, BM> {                                                                                \
    using Op =                                                                                                     \
        cute::SM90::GMMA::MMA_64x##BM##x16_F32BF16BF16_RS<cute::SM90::GMMA::Major::K, cute::SM90::GMMA::Major::K>; \
  };                                                                                                               \
  template <>                                                                                                      \
  struct Wgmma<__half, BM> {                                                                                       \
    using Op =                                                                                                     \
        cute::SM90::GMMA::MMA_64x##BM##x16_F32F16F16_RS<cute::SM90::GMMA::Major::K, cute::SM90::GMMA::Major::K>;   \
  };
LOWBIT_FWG_WGMMA(16)
LOWBIT_FWG_WGMMA(32)
LOWBIT_FWG_WGMMA(64)
LOWBIT_FWG_WGMMA(128)
LOWBIT_FWG_WGMMA(256)
#undef LOWBIT_FWG_WGMMA

template <class Op, size_t... I>
__device__ __forceinline__ void wgmma_call(float* acc, const uint32_t (&a)[4], uint64_t desc,
                                           std::index_sequence<I...>) {
  Op::fma(a[0], a[1], a[2], a[3], desc, acc[I]..., cute::SM90::GMMA::ScaleOut::One);
}

// One lane's packed codes of a K tile, joined for the decode: for its rows g and g + 8 (r = 0, 1), j[r][0] / j[r][1]
// hold words 2t and 2t + 1 (K blocks 0-3 / 4-7), j[r][2] / j[r][3] words 2t + 8 and 2t + 9; fp6: l[r][*] the
// matching lo bits. In each, nibble q (bits 2q of lo) is word 2t's (2t + 8's) code and nibble q + 4 (bits 2q + 16)
// word 2t + 1's (2t + 9's), as decode_fpx_pair takes its pair.
struct JoinedCodes {
  uint32_t j[2][4];
  uint32_t l[2][4];
};

template <int FMT>
__device__ __forceinline__ JoinedCodes load_codes(uint32_t hi_box, uint32_t lo_box, int row_a, int t) {
  JoinedCodes c;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = row_a + 8 * r;
    // 64-byte swizzle: 16-byte chunk i of row `row` sits at chunk i ^ ((row >> 1) & 3).
    const uint32_t hrow = hi_box + row * 64 + 8 * (t & 1);
    const int hs = (row >> 1) & 3;
    const uint2 w01 = lds64(hrow + (((t >> 1) ^ hs) << 4));        // words 2t, 2t + 1
    const uint2 w89 = lds64(hrow + ((((t >> 1) + 2) ^ hs) << 4));  // words 2t + 8, 2t + 9
    c.j[r][0] = __byte_perm(w01.x, w01.y, 0x5410);
    c.j[r][1] = __byte_perm(w01.x, w01.y, 0x7632);
    c.j[r][2] = __byte_perm(w89.x, w89.y, 0x5410);
    c.j[r][3] = __byte_perm(w89.x, w89.y, 0x7632);
    if constexpr (FpxTraits<FMT>::kBits == 6) {
      // Lo word w % 8 holds code p of hi word w at bit 8 (w / 8) + 2 (p % 4) + 16 (p / 4); 32-byte swizzle: chunk i
      // of row `row` at chunk i ^ ((row >> 2) & 1).
      const uint2 l01 = lds64(lo_box + row * 32 + ((((t >> 1) ^ ((row >> 2) & 1))) << 4) + 8 * (t & 1));
      c.l[r][0] = __byte_perm(l01.x, l01.y, 0x5410);
      c.l[r][1] = __byte_perm(l01.x, l01.y, 0x7632);
      c.l[r][2] = c.l[r][0] >> 8;  // words 2t + 8, 2t + 9: the byte above
      c.l[r][3] = c.l[r][1] >> 8;
    } else {
#pragma unroll
      for (int i = 0; i < 4; ++i) c.l[r][i] = 0;
    }
  }
  return c;
}

// The four A registers of K block B (16 codes): (row g, cols 2t, 2t + 1), (row g + 8, ...), (row g, cols 2t + 8,
// 2t + 9), (row g + 8, ...).
template <int FMT, class T, int B>
__device__ __forceinline__ void decode_block(uint32_t (&a)[4], const JoinedCodes& c) {
  constexpr int kHalf = B / 4, kQ = B % 4, kP = kQ % 2, kHiShift = 8 * (kQ / 2), kLoShift = 4 * (kQ / 2);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int r = i % 2, cols = i / 2;  // cols 0: words 2t, 2t + 1; 1: words 2t + 8, 2t + 9
    a[i] = decode_fpx_pair<FMT, T, kP>(c.j[r][2 * cols + kHalf] >> kHiShift, c.l[r][2 * cols + kHalf] >> kLoShift);
  }
}

// fp8: the four A registers of K block B straight from the (128 rows, 128 bytes) box in the 128-byte swizzle (16-byte
// chunk i of row `row` at chunk i ^ (row & 7)). One 16-byte load per row holds the block's codes; the lane's pairs
// are bytes 2t, 2t + 1 and 2t + 8, 2t + 9, which one byte permute with a per-lane selector (fp8_pair_selector) puts
// where decode_fp8_bytes takes them.
template <class T, int B>
__device__ __forceinline__ void decode_fp8_block(uint32_t (&a)[4], uint32_t box, int row_a, uint32_t sel) {
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = row_a + 8 * r;
    const uint4 v = lds128(box + row * 128 + ((B ^ (row & 7)) << 4));
    a[r] = decode_fp8_bytes<T>(prmt(v.x, v.y, sel));      // cols 2t, 2t + 1
    a[2 + r] = decode_fp8_bytes<T>(prmt(v.z, v.w, sel));  // cols 2t + 8, 2t + 9
  }
}

// Output channel n's epilogue: the fp32 sum times the decode's power of two and w_scale[n], plus bias[n], rounded
// once to T (n < N).
template <int FMT, class T>
struct Epilogue {
  float scale = 0.0f, bias = 0.0f;
  __device__ __forceinline__ Epilogue(const Params& p, int n) {
    if (n < p.N) {
      scale = __ldg(p.w_scale + n);
      if (p.bias) bias = to_float(static_cast<const T*>(p.bias)[n]);
    }
  }
  __device__ __forceinline__ T operator()(float sum) const {
    return from_float<T>(sum * fpx_post_scale<FMT, T>() * scale + bias);
  }
};

// Split-K through distributed shared memory, where the gridDim.z splits of an output tile are one cluster (launch):
// each CTA's consumers put their fp32 sums in its shared memory (the rings are drained by then), and after a cluster
// barrier CTA z adds, for its z-th share of the tile's valid x rows, every split's sums in split order (what
// reduce_kernel adds, bit for bit) and stores them through the epilogue. No workspace round trip, no second kernel.
// Called by the 256 consumer threads; the producer warpgroup meets the two cluster barriers (cluster_sum_idle).
constexpr int kSumStride = kBlockN + 4;  // floats per x row of the sums: +4 puts lanes t = 0..3 on distinct banks
template <int FMT, class T, int BM>
__device__ __forceinline__ void cluster_sum(const Params& p, const float* acc, uint8_t* smem, int n0, int m0, int row_a,
                                            int t) {
  asm volatile("bar.sync 1, 256;" ::: "memory");  // both consumer warpgroups' WGMMAs are done with the rings
  float* sums = reinterpret_cast<float*>(smem);   // [x row][weight row]
#pragma unroll
  for (int j = 0; j < BM / 8; ++j)
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      sums[(8 * j + 2 * t + e) * kSumStride + row_a] = acc[4 * j + e];
      sums[(8 * j + 2 * t + e) * kSumStride + row_a + 8] = acc[4 * j + 2 + e];
    }
  cute::cluster_arrive();  // release: this CTA's sums are visible to the cluster
  cute::cluster_wait();
  const int splits = static_cast<int>(gridDim.z), rank = static_cast<int>(blockIdx.z);
  const int items = min(BM, p.M - m0) * (kBlockN / 4);  // 4 weight rows of a valid x row each
  const int end = (rank + 1) * items / splits;
  const uint32_t base = cute::cast_smem_ptr_to_uint(sums);
  for (int it = rank * items / splits + static_cast<int>(threadIdx.x) - 128; it < end; it += 256) {
    const int m = it / (kBlockN / 4), n = 4 * (it % (kBlockN / 4));
    const uint32_t addr = base + static_cast<uint32_t>(m * kSumStride + n) * 4;
    float4 sum = ld_cluster_f4(addr, 0);
    for (int z = 1; z < splits; ++z) {
      const float4 v = ld_cluster_f4(addr, z);
      sum.x += v.x;
      sum.y += v.y;
      sum.z += v.z;
      sum.w += v.w;
    }
    const float s4[4] = {sum.x, sum.y, sum.z, sum.w};
    T* out = static_cast<T*>(p.out) + static_cast<size_t>(m0 + m) * p.N;
#pragma unroll
    for (int q = 0; q < 4; ++q)
      if (n0 + n + q < p.N) out[n0 + n + q] = Epilogue<FMT, T>(p, n0 + n + q)(s4[q]);
  }
  cute::cluster_arrive_relaxed();  // no CTA leaves while another still reads its shared memory
  cute::cluster_wait();
}

// The producer warpgroup's part in cluster_sum: both cluster barriers (every thread of the cluster arrives).
__device__ __forceinline__ void cluster_sum_idle() {
  __syncwarp();
  cute::cluster_arrive();
  cute::cluster_wait();
  cute::cluster_arrive_relaxed();
  cute::cluster_wait();
}

template <int FMT, class T, int BM, int MAX_STAGES>
__global__ void __launch_bounds__(kThreads, 1)
    float_weight_gemm_kernel(const __grid_constant__ CUtensorMap tm_x, const __grid_constant__ CUtensorMap tm_hi,
                             const __grid_constant__ CUtensorMap tm_lo, const Params p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using L = Layout<FMT, BM, MAX_STAGES>;
  static_assert(BM * kSumStride * 4 <= L::kBarrierBase, "cluster_sum's sums outgrow the rings");
  constexpr int SX = L::kXSlots, SC = L::kCodeSlots;
  using Barrier = cutlass::arch::ClusterTransactionBarrier;
  extern __shared__ uint8_t smem_raw[];
  uint8_t* smem = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t(1023));
  uint64_t* full_x = reinterpret_cast<uint64_t*>(smem + L::kBarrierBase);
  uint64_t* empty_x = full_x + SX;
  uint64_t* full_c = empty_x + SX;
  uint64_t* empty_c = full_c + SC;

  const int warpgroup = threadIdx.x / 128, lane = threadIdx.x % 32;
  const int n0 = blockIdx.x * kBlockN, m0 = blockIdx.y * BM;
  const int tile0 = blockIdx.z * p.tiles_per_split;
  const int count = min(p.tiles, tile0 + p.tiles_per_split) - tile0;  // >= 1 (no empty split: problem_ok)

  if (threadIdx.x == 0) {
    cute::prefetch_tma_descriptor(&tm_x);
    cute::prefetch_tma_descriptor(&tm_hi);
    if constexpr (L::kFp6) cute::prefetch_tma_descriptor(&tm_lo);
#pragma unroll
    for (int s = 0; s < SX; ++s) {
      Barrier::init(&full_x[s], 1);
      Barrier::init(&empty_x[s], kConsumers);
    }
#pragma unroll
    for (int s = 0; s < SC; ++s) {
      Barrier::init(&full_c[s], 1);
      Barrier::init(&empty_c[s], kConsumers);
    }
    cutlass::arch::fence_barrier_init();
  }
  __syncthreads();
  pdl_launch_dependents();  // the reduce kernel (if any) may be scheduled now; it waits for this grid to complete

  if (warpgroup == 0) {  // producer
    cutlass::arch::warpgroup_reg_dealloc<kProducerRegs>();
    if (threadIdx.x == 0) {
      constexpr uint64_t kHint = static_cast<uint64_t>(cute::TMA::CacheHintSm90::EVICT_NORMAL);
      for (int i = 0; i < count; ++i) {  // K tile i: its codes, then its two x boxes
        const int c = i % SC, kt = tile0 + i;
        Barrier::wait(&empty_c[c], ((i / SC) & 1) ^ 1);
        Barrier::arrive_and_expect_tx(&full_c[c], L::kCodeTxBytes);
        uint8_t* slot = smem + L::kCodeBase + c * L::kCodeSlotBytes;
        uint8_t* codes = slot + L::kCodeOffset;
        if constexpr (L::kFp8)
          cute::SM90_TMA_LOAD_2D::copy(&tm_hi, &full_c[c], kHint, codes, kt * 128, n0);
        else
          cute::SM90_TMA_LOAD_3D::copy(&tm_hi, &full_c[c], kHint, codes, 0, kt, n0);
        if constexpr (L::kFp6) cute::SM90_TMA_LOAD_3D::copy(&tm_lo, &full_c[c], kHint, codes + L::kHiBytes, 16, kt, n0);
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          if constexpr (L::kSplit) {
            const int h = 2 * i + half, s = h % SX;
            Barrier::wait(&empty_x[s], ((h / SX) & 1) ^ 1);
            Barrier::arrive_and_expect_tx(&full_x[s], L::kXBoxBytes);
            cute::SM90_TMA_LOAD_2D::copy(&tm_x, &full_x[s], kHint, smem + s * L::kXBoxBytes, kt * 128 + 64 * half, m0);
          } else {  // the tile's slot, behind its code barrier
            cute::SM90_TMA_LOAD_2D::copy(&tm_x, &full_c[c], kHint, slot + half * L::kXBoxBytes, kt * 128 + 64 * half,
                                         m0);
          }
        }
      }
    }
    if (p.cluster_reduce) cluster_sum_idle();
    return;
  }

  // consumers
  cutlass::arch::warpgroup_reg_alloc<kConsumerRegs>();
  using Op = typename Wgmma<T, BM>::Op;
  constexpr int kAcc = BM / 2;
  const int c = warpgroup - 1, warp = (threadIdx.x / 32) % 4, g = lane / 4, t = lane % 4;
  const int row_a = 64 * c + 16 * warp + g;  // the lane's first weight row in the CTA's 128
  float acc[kAcc];
#pragma unroll
  for (int i = 0; i < kAcc; ++i) acc[i] = 0.0f;
  const uint32_t smem_base = cute::cast_smem_ptr_to_uint(smem);
  // fp8: the byte permute that picks the lane's pair of a block's 16 bytes (see decode_fp8_block)
  const uint32_t fp8_sel = fp8_pair_selector<T>(2 * t, 2 * t + 1);

  // Slots are handed back by one thread per consumer warpgroup once a WGMMA group that every warp of it issued after
  // its reads of the slot is complete (a warpgroup's WGMMA runs only once all four warps have issued it).
  const bool hands_back = threadIdx.x % 128 == 0;
  for (int i = 0; i < count; ++i) {
    const int c = i % SC;
    Barrier::wait(&full_c[c], (i / SC) & 1);
    const uint32_t slot = smem_base + L::kCodeBase + c * L::kCodeSlotBytes, code_box = slot + L::kCodeOffset;
    const uint64_t slot_desc = sw128_desc(slot);  // whole tiles: x box 0 starts the slot
    JoinedCodes codes;
    if constexpr (!L::kFp8) codes = load_codes<FMT>(code_box, code_box + L::kHiBytes, row_a, t);
    uint32_t a[2][4][4];  // two groups of four K blocks: group 1 decodes while group 0's WGMMAs run
    auto group = [&](auto half_c) {
      constexpr int H = decltype(half_c)::value;
      // This group's x box (K blocks 4H .. 4H + 3): the slot's box H, or box h of the x ring. (The descriptor's
      // address field is bits 0-13 of addr / 16, and every slot address is below 2^18: adding an offset there is
      // the descriptor of the address that far on, without rebuilding the fields.)
      uint64_t x_desc = slot_desc + H * L::kXBoxBytes / 16;
      if constexpr (L::kSplit) {
        const int h = 2 * i + H;
        Barrier::wait(&full_x[h % SX], (h / SX) & 1);
        x_desc = sw128_desc(smem_base + h % SX * L::kXBoxBytes);
      }
      if constexpr (L::kFp8) {
        decode_fp8_block<T, 4 * H + 0>(a[H][0], code_box, row_a, fp8_sel);
        decode_fp8_block<T, 4 * H + 1>(a[H][1], code_box, row_a, fp8_sel);
        decode_fp8_block<T, 4 * H + 2>(a[H][2], code_box, row_a, fp8_sel);
        decode_fp8_block<T, 4 * H + 3>(a[H][3], code_box, row_a, fp8_sel);
      } else {
        decode_block<FMT, T, 4 * H + 0>(a[H][0], codes);
        decode_block<FMT, T, 4 * H + 1>(a[H][1], codes);
        decode_block<FMT, T, 4 * H + 2>(a[H][2], codes);
        decode_block<FMT, T, 4 * H + 3>(a[H][3], codes);
      }
#pragma unroll
      for (int b = 0; b < 4; ++b)
#pragma unroll
        for (int r = 0; r < 4; ++r) cute::warpgroup_fence_operand(a[H][b][r]);
#pragma unroll
      for (int k = 0; k < kAcc; ++k) cute::warpgroup_fence_operand(acc[k]);
      cute::warpgroup_arrive();
#pragma unroll
      for (int b = 0; b < 4; ++b) {
        // K block 4H + b: 16 columns (32 bytes) per block within the box's swizzled 128-byte rows
        const uint64_t desc = x_desc + 32 * b / 16;
        wgmma_call<Op>(acc, a[H][b], desc, std::make_index_sequence<kAcc>{});
      }
      cute::warpgroup_commit_batch();
#pragma unroll
      for (int k = 0; k < kAcc; ++k) cute::warpgroup_fence_operand(acc[k]);
      cute::warpgroup_wait<1>();  // the previous group (and its registers) is done
#pragma unroll
      for (int b = 0; b < 4; ++b)
#pragma unroll
        for (int r = 0; r < 4; ++r) cute::warpgroup_fence_operand(a[H][b][r]);
      if (hands_back) {
        if constexpr (L::kSplit)
          if (i > 0 || H > 0) Barrier::arrive(&empty_x[(2 * i + H - 1) % SX]);  // the previous group's x box
        if constexpr (L::kFp8 || !L::kSplit) {  // whole tiles, and fp8 rows: read by both groups of their tile
          if (H == 0 && i > 0) Barrier::arrive(&empty_c[(i - 1) % SC]);  // the previous tile's slot
        } else {
          if (H == 1) Barrier::arrive(&empty_c[c]);  // this tile's codes: in registers since group 0
        }
      }
    };
    group(std::integral_constant<int, 0>{});
    group(std::integral_constant<int, 1>{});
  }
  cute::warpgroup_wait<0>();
#pragma unroll
  for (int k = 0; k < kAcc; ++k) cute::warpgroup_fence_operand(acc[k]);

  // acc[4j + e] is (row g, col 8j + 2t + e), acc[4j + 2 + e] (row g + 8, ...): rows are weight rows (out's n),
  // cols x rows (out's m). `store(i, n, v)` writes v to element i = m * N + n of an (M, N) output.
  const int n_a = n0 + row_a, n_b = n_a + 8;
  auto each = [&](auto&& store) {
#pragma unroll
    for (int j = 0; j < BM / 8; ++j)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int m = m0 + 8 * j + 2 * t + e;
        if (m >= p.M) continue;
        if (n_a < p.N) store(static_cast<size_t>(m) * p.N + n_a, 0, acc[4 * j + e]);
        if (n_b < p.N) store(static_cast<size_t>(m) * p.N + n_b, 1, acc[4 * j + 2 + e]);
      }
  };
  if (p.cluster_reduce) {
    cluster_sum<FMT, T, BM>(p, acc, smem, n0, m0, row_a, t);
  } else if (gridDim.z > 1) {  // this split's raw sums
    float* part = p.partials + static_cast<size_t>(blockIdx.z) * p.M * p.N;
    each([&](size_t i, int, float v) { part[i] = v; });
  } else {
    const Epilogue<FMT, T> ep[2] = {Epilogue<FMT, T>(p, n_a), Epilogue<FMT, T>(p, n_b)};
    T* out = static_cast<T*>(p.out);
    each([&](size_t i, int row, float v) { out[i] = ep[row](v); });
  }
#endif
}

// out[m, n] from the splits' partials, added in split order (deterministic), with the kernel's epilogue. Launched as
// the GEMM's programmatic dependent: it waits for the GEMM's partials first.
template <int FMT, class T>
__global__ void reduce_kernel(const Params p, int splits) {
  pdl_wait();
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x, mn = static_cast<int64_t>(p.M) * p.N;
  if (i >= mn) return;
  float sum = p.partials[i];
  for (int z = 1; z < splits; ++z) sum += p.partials[z * mn + i];
  static_cast<T*>(p.out)[i] = Epilogue<FMT, T>(p, static_cast<int>(i % p.N))(sum);
}

// cuTensorMapEncodeTiled from the driver, looked up once (the runtime links no driver symbols).
inline PFN_cuTensorMapEncodeTiled_v12000 encode_tiled() {
  static const PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult found{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault, &found) !=
            cudaSuccess ||
        found != cudaDriverEntryPointSuccess)
      f = nullptr;
    cudaGetLastError();
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(f);
  }();
  return fn;
}

// A tensor map of `rank` dims (innermost first; strides in bytes of dims 1..rank-1), zero fill out of bounds.
inline bool encode(CUtensorMap* map, CUtensorMapDataType type, int rank, const void* base, const uint64_t* dims,
                   const uint64_t* strides, const uint32_t* box, CUtensorMapSwizzle swizzle) {
  const auto fn = encode_tiled();
  if (fn == nullptr) return false;
  const uint32_t unit[3] = {1, 1, 1};
  return fn(map, type, rank, const_cast<void*>(base), dims, strides, box, unit, CU_TENSOR_MAP_INTERLEAVE_NONE, swizzle,
            CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

template <int FMT, class T, int BM, int MAX_STAGES>
int launch(Problem const& q, size_t* query_workspace) {
  using L = Layout<FMT, BM, MAX_STAGES>;
  const int tiles = k_tiles(q.K);
  const dim3 grid((q.N + kBlockN - 1) / kBlockN, (q.M + BM - 1) / BM);
  if (grid.y > 65535) return kInvalidArgument;  // a grid's y limit (M > 65535 * BM rows)
  const SplitPlan split = split_plan(static_cast<int64_t>(grid.x) * grid.y, tiles, multiprocessors());
  auto kernel = float_weight_gemm_kernel<FMT, T, BM, MAX_STAGES>;
  const cudaError_t attr = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, L::kSmemBytes);
  if (attr != cudaSuccess) return from_cuda(attr);
  // The splits of an output tile as one cluster (cluster_sum) where they are few enough for a portable cluster and
  // every tile's cluster is resident at once (GPCs hold whole clusters: else the workspace and reduce_kernel).
  const bool cluster = split.splits > 1 && split.splits <= kMaxClusterSplits &&
                       resident_clusters(reinterpret_cast<const void*>(kernel), kThreads, L::kSmemBytes,
                                         split.splits) >= static_cast<int64_t>(grid.x) * grid.y;
  const size_t part_bytes =
      split.splits > 1 && !cluster ? static_cast<size_t>(split.splits) * q.M * q.N * sizeof(float) : 0;
  if (query_workspace) {
    *query_workspace = part_bytes;
    return kOk;
  }
  if (q.workspace_bytes < part_bytes) return kInvalidArgument;
  CUtensorMap tm_x{}, tm_hi{}, tm_lo{};
  // x: (M, K) 2-byte values, boxes of 64 columns x BM rows in the 128-byte swizzle
  const uint64_t x_dims[2] = {static_cast<uint64_t>(q.K), static_cast<uint64_t>(q.M)};
  const uint64_t x_strides[1] = {static_cast<uint64_t>(q.K) * 2};
  const uint32_t x_box[2] = {64, BM};
  // codes: (N, tiles, words per tile) int32 words; hi boxes 16 words x 128 rows (64-byte swizzle), fp6 lo boxes
  // 8 words from word 16 (32-byte swizzle)
  const uint64_t w_dims[3] = {static_cast<uint64_t>(L::kWordsPerTile), static_cast<uint64_t>(tiles),
                              static_cast<uint64_t>(q.N)};
  const uint64_t w_strides[2] = {static_cast<uint64_t>(L::kWordsPerTile) * 4,
                                 static_cast<uint64_t>(L::kWordsPerTile) * 4 * tiles};
  const uint32_t hi_box[3] = {16, 1, kBlockN}, lo_box[3] = {8, 1, kBlockN};
  // fp8: (N, K) e4m3 bytes, boxes of 128 bytes x 128 rows in the 128-byte swizzle
  const uint64_t b_dims[2] = {static_cast<uint64_t>(q.K), static_cast<uint64_t>(q.N)};
  const uint64_t b_strides[1] = {static_cast<uint64_t>(q.K)};
  const uint32_t b_box[2] = {128, kBlockN};
  if (!encode(&tm_x, CU_TENSOR_MAP_DATA_TYPE_UINT16, 2, q.x, x_dims, x_strides, x_box, CU_TENSOR_MAP_SWIZZLE_128B))
    return kInvalidArgument;
  if (L::kFp8
          ? !encode(&tm_hi, CU_TENSOR_MAP_DATA_TYPE_UINT8, 2, q.w, b_dims, b_strides, b_box, CU_TENSOR_MAP_SWIZZLE_128B)
          : !encode(&tm_hi, CU_TENSOR_MAP_DATA_TYPE_UINT32, 3, q.w, w_dims, w_strides, hi_box,
                    CU_TENSOR_MAP_SWIZZLE_64B))
    return kInvalidArgument;
  if (L::kFp6 &&
      !encode(&tm_lo, CU_TENSOR_MAP_DATA_TYPE_UINT32, 3, q.w, w_dims, w_strides, lo_box, CU_TENSOR_MAP_SWIZZLE_32B))
    return kInvalidArgument;
  const Params p{
      q.w_scale,      q.bias, q.out, static_cast<float*>(q.workspace), q.M, q.N, tiles, split.tiles_per_split,
      cluster ? 1 : 0};
  // The cluster of the splits where cluster_sum adds them.
  cudaLaunchAttribute cluster_dims{};
  cluster_dims.id = cudaLaunchAttributeClusterDimension;
  cluster_dims.val.clusterDim.x = 1;
  cluster_dims.val.clusterDim.y = 1;
  cluster_dims.val.clusterDim.z = static_cast<unsigned>(split.splits);
  cudaLaunchConfig_t config{};
  config.gridDim = dim3(grid.x, grid.y, split.splits);
  config.blockDim = dim3(kThreads);
  config.dynamicSmemBytes = L::kSmemBytes;
  config.stream = q.stream;
  config.attrs = &cluster_dims;
  config.numAttrs = cluster ? 1 : 0;
  const cudaError_t launched = cudaLaunchKernelEx(&config, kernel, tm_x, tm_hi, tm_lo, p);
  if (launched != cudaSuccess) return from_cuda(launched);
  if (split.splits > 1 && !cluster) {
    const int64_t mn = static_cast<int64_t>(q.M) * q.N;
    constexpr int kReduceThreads = 256;
    return launch_with_pdl(reduce_pdl(), reduce_kernel<FMT, T>,
                           static_cast<int>((mn + kReduceThreads - 1) / kReduceThreads), kReduceThreads, 0, q.stream, p,
                           split.splits);
  }
  return last_launch_status();
}

template <int FMT, class T>
int launch_config(int config, Problem const& p, size_t* query_workspace) {
  switch (config) {
#define LOWBIT_FLOAT_WEIGHT_GEMM_CASE(I, NAME, BM, STAGES) \
  case I:                                                  \
    return launch<FMT, T, BM, STAGES>(p, query_workspace);
    LOWBIT_FLOAT_WEIGHT_GEMM_CONFIGS(LOWBIT_FLOAT_WEIGHT_GEMM_CASE)
#undef LOWBIT_FLOAT_WEIGHT_GEMM_CASE
    default:
      return kInvalidArgument;
  }
}

template <class T>
int dispatch(int config, Problem const& p, size_t* query_workspace) {
  if constexpr (!built_for_sm90()) {
    return kInvalidArgument;
  } else {
    if (!problem_ok(p) || !device_is_sm90()) return kInvalidArgument;
    switch (p.format) {
      case kE4M3:
        return launch_config<kE4M3, T>(config, p, query_workspace);
      case kE3M2:
        return launch_config<kE3M2, T>(config, p, query_workspace);
      case kE2M3:
        return launch_config<kE2M3, T>(config, p, query_workspace);
      case kE2M1:
        return launch_config<kE2M1, T>(config, p, query_workspace);
      default:
        return kInvalidArgument;
    }
  }
}

}  // namespace lowbit::float_weight_gemm::sm90
