// Copies a GEMV's activation rows (a small block of global memory, or runs of it) into shared memory without holding
// the load/store unit: stage_rows_begin() starts the copy, stage_wait() returns once every byte has landed and is
// visible to every thread of the CTA.
//
// Why not plain loads: a decode GEMV issues its first weight loads (several KB per warp, all DRAM misses) at the
// top of the kernel, and loads of x issued after them wait behind those misses in the SM's load path: a float x's
// quantization prologue cost 1.4 us of a 6.3 us layer at 4096 x 4096 (run 25). On sm_90 a bulk copy (the TMA
// engine, one instruction per 32 KiB) is issued first and travels outside that path: with it the W4A8 GEMV that
// quantizes x itself ran as fast as the one given int8 x at 4096 x 4096 (7.53 us both; 3-7 % faster than plain
// loads at M = 1, H200 run 46). Other architectures take 16-byte cp.async per thread (holding no registers).
//
// Requirements: dst and src 16-byte aligned, the bytes a positive multiple of 16 (and below 2^20, the transaction
// count of one mbarrier phase); every thread of the CTA calls both functions, stage_rows_begin before
// stage_wait, once per kernel (the barrier's phase 0 only).
#pragma once

#include <cstdint>

namespace lowbit {

constexpr int kStageBarrierBytes = 16;  // the mbarrier (8 bytes), keeping what follows 16-byte aligned
constexpr int kStageMaxBytes = (1 << 20) - 16;

__device__ __forceinline__ uint32_t shared_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// `rows` runs of `row_bytes` bytes, `src_stride` bytes apart in global memory and `dst_stride` apart in shared
// memory (a K split's columns of x); rows * row_bytes must be below 2^20, every size and stride a multiple of 16.
__device__ __forceinline__ void stage_rows_begin(void* dst, const void* src, int rows, int row_bytes, int src_stride,
                                                 int dst_stride, uint64_t* bar) {
  if (row_bytes == src_stride && row_bytes == dst_stride) {  // one contiguous block: fewest copies
    row_bytes *= rows;
    rows = 1;
  }
  const uint8_t* from = static_cast<const uint8_t*>(src);
  uint8_t* to = static_cast<uint8_t*>(dst);
#if __CUDA_ARCH__ >= 900
  if (threadIdx.x == 0) {
    constexpr int kPiece = 32 * 1024;
    const uint32_t b = shared_address(bar);
    asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(b));
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");  // the init, visible to the TMA engine
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(b), "r"(rows * row_bytes) : "memory");
    for (int r = 0; r < rows; ++r)
      for (int off = 0; off < row_bytes; off += kPiece) {
        const int n = row_bytes - off < kPiece ? row_bytes - off : kPiece;
        asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(
                         shared_address(to + static_cast<size_t>(r) * dst_stride + off)),
                     "l"(from + static_cast<size_t>(r) * src_stride + off), "r"(n), "r"(b)
                     : "memory");
      }
  }
#else
  (void)bar;
  const int per_row = row_bytes / 16;
  for (int i = threadIdx.x; i < rows * per_row; i += blockDim.x) {
    const int r = i / per_row, off = (i % per_row) * 16;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(
                     shared_address(to + static_cast<size_t>(r) * dst_stride + off)),
                 "l"(from + static_cast<size_t>(r) * src_stride + off)
                 : "memory");
  }
  asm volatile("cp.async.commit_group;" ::: "memory");
#endif
}

__device__ __forceinline__ void stage_wait(uint64_t* bar) {
#if __CUDA_ARCH__ >= 900
  __syncthreads();  // the barrier's init (thread 0) before anyone waits on it
  const uint32_t b = shared_address(bar);
  uint32_t done = 0;
  while (!done)
    asm volatile("{ .reg .pred p; mbarrier.try_wait.parity.shared::cta.b64 p, [%1], 0; selp.u32 %0, 1, 0, p; }"
                 : "=r"(done)
                 : "r"(b)
                 : "memory");
#else
  (void)bar;
  asm volatile("cp.async.wait_group 0;" ::: "memory");
  __syncthreads();  // every thread's copies, visible to all
#endif
}

}  // namespace lowbit
