// How fast a decode GEMV can read its (N, Kb) packed weight on this GPU, by access pattern: the ceiling for any
// kernel that streams it. benchmarks/probe_weight_read.py builds this file with nvcc and times it; the numbers and
// what they decided are in docs/measurements/h200_run38_w4a8_decode_limits.md. Each kernel XORs what it reads into
// one word per thread (stored, so no load is dead code); nothing is multiplied.
#include <cuda_runtime.h>

#include <cstdint>

#define API extern "C" __attribute__((visibility("default")))

__device__ __forceinline__ uint4 ldw(const uint8_t* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

// MODE 0 "frag": the GEMV's lanes (g, t): rows g and g + 8, 16 bytes at t * 16 + u * 64, u < 4 (256 bytes per row
// and step). MODE 1 "pair": the same 16 rows x 256 bytes per step, each load 2 rows x 256 contiguous bytes
// (lane l: row 2 i + l / 16, byte (l % 16) * 16). Warps: wn x wk, persistent tiles of 16 * wn rows, K split as the
// GEMV's (step s of warp wk at bytes (s * wk_count + wk) * 256).
template <int MODE>
__global__ void __launch_bounds__(512, 1) read_regs(const uint8_t* w, int N, int Kb, int wn_count, int wk_count,
                                                    uint32_t* sink) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, wn = warp % wn_count, wk = warp / wn_count;
  const int tiles = (N + 16 * wn_count - 1) / (16 * wn_count);
  const int steps = (Kb / 256 + wk_count - 1) / wk_count;
  uint32_t acc = 0;
  uint4 cur[8], nxt[8];
  auto load = [&](uint4 (&buf)[8], int tile, int s) {
    const int row0 = (tile * wn_count + wn) * 16;
    const int off = (s * wk_count + wk) * 256;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      int row, col;
      if (MODE == 0) {
        row = row0 + (lane >> 2) + (i & 1) * 8;
        col = off + (lane & 3) * 16 + (i >> 1) * 64;
      } else {
        row = row0 + 2 * i + (lane >> 4);
        col = off + (lane & 15) * 16;
      }
      row = min(row, N - 1);
      buf[i] = off < Kb ? ldw(w + static_cast<size_t>(row) * Kb + col) : make_uint4(0, 0, 0, 0);
    }
  };
  int tile = blockIdx.x, s = 0;
  if (tile < tiles) load(cur, tile, s);
  while (tile < tiles) {
    int t2 = tile, s2 = s + 1;
    if (s2 == steps) s2 = 0, t2 += gridDim.x;
    if (t2 < tiles) load(nxt, t2, s2);
#pragma unroll
    for (int i = 0; i < 8; ++i) acc ^= cur[i].x ^ cur[i].y ^ cur[i].z ^ cur[i].w;
#pragma unroll
    for (int i = 0; i < 8; ++i) cur[i] = nxt[i];
    tile = t2, s = s2;
  }
  sink[blockIdx.x * blockDim.x + threadIdx.x] = acc;
}

__device__ __forceinline__ void wait_parity(uint32_t bar, uint32_t parity) {
  uint32_t done = 0;
  do {
    asm volatile("{ .reg .pred p; mbarrier.try_wait.parity.shared.b64 p, [%1], %2; selp.u32 %0, 1, 0, p; }"
                 : "=r"(done)
                 : "r"(bar), "r"(parity)
                 : "memory");
  } while (!done);
}

// TMA (1D bulk copies) into a ring of STAGES stages of 16 * wn rows x 256 * wk bytes, one copy per row and stage
// issued by thread 0; all warps read their part from shared memory (as the GEMV would) and free the stage.
template <int STAGES>
__global__ void __launch_bounds__(512, 1) read_tma(const uint8_t* w, int N, int Kb, int wn_count, int wk_count,
                                                   uint32_t* sink) {
  extern __shared__ __align__(128) uint8_t smem[];
  __shared__ __align__(8) uint64_t full[STAGES], empty[STAGES];
  const int rows = 16 * wn_count, run = 256 * wk_count, stage_bytes = rows * run;
  const int tiles = (N + rows - 1) / rows, ksteps = (Kb + run - 1) / run;
  const int my_tiles = (tiles - blockIdx.x + gridDim.x - 1) / gridDim.x, items = my_tiles * ksteps;
  const int nwarps = blockDim.x / 32;
  if (threadIdx.x == 0) {
    for (int i = 0; i < STAGES; ++i) {
      asm volatile("mbarrier.init.shared.b64 [%0], 1;" ::"r"(static_cast<uint32_t>(__cvta_generic_to_shared(&full[i]))));
      asm volatile("mbarrier.init.shared.b64 [%0], %1;" ::"r"(static_cast<uint32_t>(__cvta_generic_to_shared(&empty[i]))),
                   "r"(nwarps));
    }
    asm volatile("fence.mbarrier_init.release.cluster;");
  }
  __syncthreads();
  auto issue = [&](int item) {
    const int st = item % STAGES, tile = blockIdx.x + (item / ksteps) * gridDim.x, k0 = (item % ksteps) * run;
    const int bytes = min(run, Kb - k0);
    const uint32_t bar = static_cast<uint32_t>(__cvta_generic_to_shared(&full[st]));
    int nrows = min(rows, N - tile * rows);
    asm volatile("mbarrier.arrive.expect_tx.shared.b64 _, [%0], %1;" ::"r"(bar), "r"(nrows * bytes));
    for (int r = 0; r < nrows; ++r) {
      const uint32_t dst = static_cast<uint32_t>(__cvta_generic_to_shared(smem + st * stage_bytes + r * run));
      asm volatile(
          "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(dst),
          "l"(w + static_cast<size_t>(tile * rows + r) * Kb + k0), "r"(bytes), "r"(bar)
          : "memory");
    }
  };
  if (threadIdx.x == 0)
    for (int i = 0; i < STAGES && i < items; ++i) issue(i);
  uint32_t acc = 0;
  const int lane = threadIdx.x & 31;
  for (int item = 0; item < items; ++item) {
    const int st = item % STAGES;
    const uint32_t parity = (item / STAGES) & 1;
    const uint32_t bar = static_cast<uint32_t>(__cvta_generic_to_shared(&full[st]));
    wait_parity(bar, parity);
    const uint4* s = reinterpret_cast<const uint4*>(smem + st * stage_bytes);
    for (int i = threadIdx.x; i < stage_bytes / 16; i += blockDim.x) {
      const uint4 v = s[i];
      acc ^= v.x ^ v.y ^ v.z ^ v.w;
    }
    __syncwarp();
    if (lane == 0)
      asm volatile("mbarrier.arrive.shared.b64 _, [%0];" ::"r"(
                       static_cast<uint32_t>(__cvta_generic_to_shared(&empty[st])))
                   : "memory");
    if (threadIdx.x == 0 && item + STAGES < items) {
      const uint32_t e = static_cast<uint32_t>(__cvta_generic_to_shared(&empty[st]));
      wait_parity(e, parity);
      issue(item + STAGES);
    }
  }
  sink[blockIdx.x * blockDim.x + threadIdx.x] = acc;
}

API int read_bench(int mode, const void* w, int N, int Kb, int wn, int wk, int ctas_per_sm, void* sink,
                   cudaStream_t stream) {
  int sms = 0, dev = 0;
  cudaGetDevice(&dev);
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
  const int threads = 32 * wn * wk;
  const int tiles = (N + 16 * wn - 1) / (16 * wn);
  const int grid = tiles < sms * ctas_per_sm ? tiles : sms * ctas_per_sm;
  auto* wp = static_cast<const uint8_t*>(w);
  auto* sp = static_cast<uint32_t*>(sink);
  if (mode == 0) read_regs<0><<<grid, threads, 0, stream>>>(wp, N, Kb, wn, wk, sp);
  if (mode == 1) read_regs<1><<<grid, threads, 0, stream>>>(wp, N, Kb, wn, wk, sp);
  if (mode >= 2) {  // TMA, mode = number of stages
    const int smem = mode * 16 * wn * 256 * wk;
    auto k = mode == 2 ? read_tma<2> : mode == 3 ? read_tma<3> : read_tma<4>;
    cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    k<<<grid, threads, smem, stream>>>(wp, N, Kb, wn, wk, sp);
  }
  return static_cast<int>(cudaGetLastError());
}
