// W4A8 decode GEMV (w4a8_gemv.h): the packed int4 weight streamed once through int8 tensor cores.
//
// At M <= 16 a W4A8 linear is a read of N * K / 2 weight bytes; everything else is a few KB. The kernel is built
// to keep many of those bytes in flight and to spend few instructions on each:
//
// - Swap-AB mma.sync m16n8k32 (s8 x s8 -> s32): 16 weight rows are the MMA's M side, up to 8 tokens its N side
//   (two MMAs per A fragment for M = 9..16), so M = 1 pads 8 columns instead of 16 rows.
// - The A fragment comes straight from the loaded weight registers. Lane (g, t) of a warp loads 16 bytes (32
//   values) of rows g and g + 8 per 128-value chunk. Per 32-bit word w of those, (w << 4) & 0xF0F0F0F0 and
//   w & 0xF0F0F0F0 are 16x its even and odd values as signed bytes: one MMA's a0..a3 with no sign extension. The
//   MMA's k order is therefore a permutation of K within the chunk; the B fragment (x) is permuted to match with two
//   byte permutes per word pair (even / odd values), so the sum is the same exact dot, 16x: the epilogue scales by
//   1/16 (exact). ~1 instruction per weight byte.
// - Loads: ld.global.nc with L1::no_allocate (each weight byte is read once), 2 rows x 4 chunks x 16 bytes per lane
//   per step, the next step's loads issued before this step's MMAs (register double buffering). A CTA's warps split
//   N (warps_n x 16 rows) and K (warps_k, interleaved steps); their sums meet in shared memory in a fixed order.
//   A per-warp cp.async ring in shared memory (the float weight GEMV's design: bytes in flight without registers)
//   was measured here with 2-8 chunks per slot and 2-8 slots (H200, run 25) and lost to these register loads at
//   M = 1, 4 and 16 on every shape class: it is not kept.
// - Launch: right after the quantizer kernel (the caller says so: Problem::after_quantizer), programmatic dependent
//   launch on sm_90 (common/pdl.cuh): the quantizer lets it start at once, and the CTAs wait for it before their
//   first load, so the GEMV's launch overlaps the quantization. With LOWBIT_FLEX_PDL=1, after any kernel, and each
//   CTA first asks L2 for its first row tile's weight bytes (common/pdl.cuh says why that is opt-in).
// - x: every CTA copies x's rows into shared memory once (common/stage_shared.cuh: a bulk copy issued before the
//   first weight loads, so it does not queue behind them), where they fit; otherwise int8 x is read from global
//   memory through L1 and a float x from L2 twice. A float x is then quantized into int8 rows in shared memory (the
//   per-row amax needs the whole row), with the quantizer's arithmetic, while the first weight step is in flight:
//   one launch per layer. An int8 x (quantized beforehand) staged once per CTA is read by every warp and tile from
//   shared memory instead of once per warp and tile through L1: at M = 16 those reads were twice the weight bytes.
// - Per channel the int32 sum is exact over all of K; group-wise each chunk's int32 dot is scaled by its group's
//   scale into an fp32 sum (groups are multiples of a chunk).
// - K split across CTAs (configs `_s2` / `_s4`, sm_90): the splits of a row tile are one thread-block cluster, CTA z
//   summing the z-th contiguous range of K's chunks; after a cluster barrier CTA z adds, for its z-th share of the
//   tile's outputs, every split's sums in split order (int32 per channel: the same exact sum) through distributed
//   shared memory and stores them through the epilogue. No workspace, no second kernel. Why: a deep layer (K >> N,
//   14336 x 4096) has few row tiles for 132 SMs once a tile is wide enough to share x's reads between its warps, and
//   at M = 16 its int8 x (229 KB) fits no CTA's shared memory, so every tile read all of x again through L2 (twice
//   the weight's bytes); a split's columns of x fit (115 KB at two splits) and are staged once per CTA.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdlib>
#include <type_traits>

#include "common/cluster.cuh"
#include "common/gemv_epilogue.cuh"
#include "common/magic_round.cuh"
#include "common/pdl.cuh"
#include "common/resident_ctas.h"
#include "common/sm90_arch.h"
#include "common/stage_shared.cuh"
#include "w4a8_gemv/w4a8_gemv.h"

namespace lowbit::w4a8_gemv {
namespace {

constexpr int kChunk = 128;  // K values per chunk: 4 lanes x 16 bytes x 2 values per byte, per row
constexpr int kChunkBytes = kChunk / 2;
constexpr int kStepChunks = 4;                                // chunks a warp loads per step
constexpr int kMaxWarps = 16;                                 // 512 threads per CTA at most
constexpr int kAmaxBytes = kMaxFusedM * (kMaxWarps + 1) * 4;  // per-warp amax partials and the row scales

struct Params {
  const void* x;
  const float* x_scale;
  const uint8_t* w;
  const float* w_scale;
  const float* bias;
  void* out;
  int M, N, K, chunks, group_chunks, groups, warps_n, warps_k, prefetch;
  int splits, split_chunks;  // K splits across CTAs (gridDim.z, one cluster per row tile) and chunks per split
  bool pdl;                  // launched programmatically: wait for the previous kernel before the first load
  bool pdl_prefetch;         // and first ask L2 for the first row tile's weight bytes (LOWBIT_FLEX_PDL=1)
  bool stage_x;              // x's rows are copied into shared memory first (where they fit; launch() decides)
};

// A weight load: read once, so it bypasses L1; L2 fetches the whole 256-byte run a step reads from each row.
__device__ __forceinline__ uint4 load_weight(const uint8_t* p) {
  uint4 v;
  asm("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(p));
  return v;
}

__device__ __forceinline__ void mma_s8(int (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                       uint32_t b1) {
  asm("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};"
      : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t word(uint4 v, int j) { return j == 0 ? v.x : j == 1 ? v.y : j == 2 ? v.z : v.w; }

// The quantizer's value: clamp(rint(x / scale), -127, 127) with an IEEE divide (lowbit::quantize_int8_rowwise),
// bit for bit, at the cost of a multiply: x * inv (inv = 1 / scale, correctly rounded) is within 2^-15 of the
// divide's result for |x / scale| <= 128, so where it is farther than that from a half-integer both round to the
// same integer; the rare rest takes the divide, as does a NaN q (x NaN or inf, or inv = inf for a subnormal scale).
// It rounds with common/magic_round.cuh's adds, not rintf and an int conversion: FRND and F2I run at a sixteenth of
// the FP32 rate on sm_90, and every CTA quantizes all of x (with the adds a layer at M = 1 ran 0.5-2.6 % faster,
// most on deep layers, with bit-identical outputs: H200 run 46, same process). A q past 2^22 (x inf, or a subnormal
// scale) rounds to another large value, which the clamp maps to +-127 all the same.
__device__ __forceinline__ int quantize_int8(float x, float scale, float inv) {
  const float q = __fmul_rn(x, inv);
  float r = round_small(q);
  if (!(fabsf(fabsf(__fsub_rn(q, r)) - 0.5f) > 3.1e-5f)) r = round_small(__fdiv_rn(x, scale));
  return small_float_to_int(fminf(fmaxf(r, -127.0f), 127.0f));  // an integer-valued clamp: NaN maps to -127
}

// The 4 chunks of one warp step: the weight words of rows g and g + 8, and (group-wise) the group scales of rows g
// and g + 8 for chunk t of the step (lane t's; the MMA loop takes chunk u's from lane u of its group of 4 with a
// shuffle: one load and one register per row instead of four).
template <bool GROUPWISE>
struct Step {
  uint4 a[kStepChunks], b[kStepChunks];
  float sa, sb;
};
static_assert(kStepChunks == 4, "a step's chunks are the 4 lanes t of a row's group");

// Where a warp's work item (a tile of this CTA and a K step of it) reads: the tile's first row and the step's
// first chunk.
struct Item {
  int row0, chunk0, step;
};

// A warp's walk over its CTA's items in order: the tiles blockIdx.x, blockIdx.x + gridDim.x, ..., each in steps
// 0 .. steps - 1 of this CTA's K split, which starts at chunk `begin` (incremental: no division per item).
struct Cursor {
  int tile, step, begin;
  __device__ __forceinline__ void advance(int steps) {
    if (++step == steps) {
      step = 0;
      tile += gridDim.x;
    }
  }
  __device__ __forceinline__ Item item(const Params& p, int wn, int wk) const {
    return {(tile * p.warps_n + wn) * 16, begin + (step * p.warps_k + wk) * kStepChunks, step};
  }
};

// Asks L2 for an item's weight bytes ahead of its register loads (no registers held while they travel): the
// loads in flight per SM are otherwise bounded by the register file. `end`: the CTA's split ends before this chunk.
__device__ __forceinline__ void prefetch_step(const Params& p, const Item& it, int end, int g, int t) {
  const int chunks = min(kStepChunks, end - it.chunk0);
  if (chunks <= 0) return;
  const size_t row_bytes = p.K / 2;
  const uint8_t* a = p.w + min(it.row0 + g, p.N - 1) * row_bytes + it.chunk0 * kChunkBytes;
  const uint8_t* b = p.w + min(it.row0 + g + 8, p.N - 1) * row_bytes + it.chunk0 * kChunkBytes;
#if __CUDA_ARCH__ >= 900
  if (t == 0) {  // one bulk request per row run
    asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(a), "r"(chunks * kChunkBytes) : "memory");
    asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(b), "r"(chunks * kChunkBytes) : "memory");
  }
#else
  if (t < chunks) {  // one line request per lane and chunk
    asm volatile("prefetch.global.L2 [%0];" ::"l"(a + t * kChunkBytes) : "memory");
    asm volatile("prefetch.global.L2 [%0];" ::"l"(b + t * kChunkBytes) : "memory");
  }
#endif
}

template <bool GROUPWISE>
__device__ __forceinline__ void load_step(Step<GROUPWISE>& st, const Params& p, const Item& it, int end, int g, int t) {
  // Rows past N are clamped for loads (their results are never stored).
  const int ra = min(it.row0 + g, p.N - 1), rb = min(it.row0 + g + 8, p.N - 1);
  const size_t row_bytes = p.K / 2;
  const uint8_t* wa = p.w + ra * row_bytes + t * 16;
  const uint8_t* wb = p.w + rb * row_bytes + t * 16;
#pragma unroll
  for (int u = 0; u < kStepChunks; ++u) {
    const int c = it.chunk0 + u;
    const bool in_k = c < end;  // past the split's K: zero words (zero products)
    st.a[u] = in_k ? load_weight(wa + c * kChunkBytes) : make_uint4(0, 0, 0, 0);
    st.b[u] = in_k ? load_weight(wb + c * kChunkBytes) : make_uint4(0, 0, 0, 0);
  }
  if constexpr (GROUPWISE) {
    const int c = it.chunk0 + t;
    const bool in_k = c < end;
    const int group = c / p.group_chunks;
    st.sa = in_k ? __ldg(p.w_scale + static_cast<size_t>(ra) * p.groups + group) : 0.0f;
    st.sb = in_k ? __ldg(p.w_scale + static_cast<size_t>(rb) * p.groups + group) : 0.0f;
  }
}

// 16 bytes of a float x row, as values.
template <class XT>
union XVec {
  uint4 u;
  XT e[16 / sizeof(XT)];
};

// FROM_SHARED: `row` points into the staged copy (shared memory), else into global memory.
template <class XT, bool FROM_SHARED>
__device__ __forceinline__ XVec<XT> load_x_vec(const XT* row, int v) {
  XVec<XT> in;
  if constexpr (FROM_SHARED)
    in.u = reinterpret_cast<const uint4*>(row)[v];
  else
    in.u = __ldg(reinterpret_cast<const uint4*>(row) + v);
  return in;
}

// The int8 scale of a row whose largest |x| is amax: amax / 127 (IEEE divide), 1 for an all-zero row.
__device__ __forceinline__ float int8_row_scale(float amax) {
  const float scale = __fdiv_rn(amax, 127.0f);
  return scale == 0.0f ? 1.0f : scale;
}

// Writes the int8 values of 16-byte vector v of a float row (`in`) into int8 row xq_row, at its v-th kVec bytes.
template <class XT>
__device__ __forceinline__ void quantize_vec_to(int8_t* xq_row, int v, const XVec<XT>& in, float scale, float inv) {
  constexpr int kVec = 16 / sizeof(XT);
  union {
    int8_t q[kVec];
    std::conditional_t<kVec == 8, uint2, uint32_t> packed;
  } out;
#pragma unroll
  for (int e = 0; e < kVec; ++e) out.q[e] = static_cast<int8_t>(quantize_int8(to_float(in.e[e]), scale, inv));
  reinterpret_cast<decltype(out.packed)*>(xq_row)[v] = out.packed;
}

// Quantizes the M rows of a float x (`x`: the staged copy in shared memory, or global memory) into int8 rows in
// shared memory (and their scales), with the same arithmetic as lowbit::quantize_int8_rowwise.
template <class XT, bool FROM_SHARED>
__device__ void quantize_rows_to_shared(const Params& p, const XT* x, int8_t* xq, float* amax_partial, float* x_scale) {
  constexpr int kVec = 16 / sizeof(XT);  // values per 16-byte load
  const int vecs = p.K / kVec, nthreads = blockDim.x, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  for (int m = 0; m < p.M; ++m) {
    float amax = 0.0f;
    for (int v = threadIdx.x; v < vecs; v += nthreads) {
      const XVec<XT> in = load_x_vec<XT, FROM_SHARED>(x + static_cast<size_t>(m) * p.K, v);
#pragma unroll
      for (int e = 0; e < kVec; ++e) amax = fmaxf(amax, fabsf(to_float(in.e[e])));
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, off));
    if (lane == 0) amax_partial[m * kMaxWarps + warp] = amax;
  }
  __syncthreads();
  if (threadIdx.x < p.M) {
    float amax = 0.0f;
    for (int w = 0; w < nthreads / 32; ++w) amax = fmaxf(amax, amax_partial[threadIdx.x * kMaxWarps + w]);
    x_scale[threadIdx.x] = int8_row_scale(amax);
  }
  __syncthreads();
  for (int m = 0; m < p.M; ++m) {
    const float scale = x_scale[m], inv = 1.0f / scale;
    for (int v = threadIdx.x; v < vecs; v += nthreads)
      quantize_vec_to<XT>(xq + static_cast<size_t>(m) * p.K, v,
                          load_x_vec<XT, FROM_SHARED>(x + static_cast<size_t>(m) * p.K, v), scale, inv);
  }
  __syncthreads();
}

// The quantizer of the quantize-first launch (lowbit_w4a8_quantize_then_gemv): CTA (c, m) takes row m's amax over
// the whole row (every CTA of the row reads it: from L2 after the first) and writes its scale (c = 0) and the int8
// values of its kQuantThreads 16-byte vectors, with quantize_rows_to_shared's arithmetic (bit-identical to
// lowbit::quantize_int8_rowwise). Split across CTAs as the Triton quantizer's decode rows are: one CTA per row left
// most SMs idle (H100 run 71). It lets its dependent, the GEMV, launch at its start (common/pdl.cuh).
constexpr int kQuantThreads = 256;

template <class XT>
__global__ void __launch_bounds__(kQuantThreads) quantize_rows_kernel(const XT* x, int8_t* xq, float* xq_scale, int K) {
  pdl_launch_dependents();
  constexpr int kVec = 16 / sizeof(XT);
  __shared__ float warp_amax[kQuantThreads / 32];
  const int m = blockIdx.y, vecs = K / kVec, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const XT* row = x + static_cast<size_t>(m) * K;
  float amax = 0.0f;
  for (int v = threadIdx.x; v < vecs; v += kQuantThreads) {
    const XVec<XT> in = load_x_vec<XT, false>(row, v);
#pragma unroll
    for (int e = 0; e < kVec; ++e) amax = fmaxf(amax, fabsf(to_float(in.e[e])));
  }
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, off));
  if (lane == 0) warp_amax[warp] = amax;
  __syncthreads();
  amax = warp_amax[0];
#pragma unroll
  for (int w = 1; w < kQuantThreads / 32; ++w) amax = fmaxf(amax, warp_amax[w]);
  const float scale = int8_row_scale(amax);
  if (blockIdx.x == 0 && threadIdx.x == 0) xq_scale[m] = scale;
  const int v = blockIdx.x * kQuantThreads + threadIdx.x;
  if (v < vecs)
    quantize_vec_to<XT>(xq + static_cast<size_t>(m) * K, v, load_x_vec<XT, false>(row, v), scale, 1.0f / scale);
}

// Before pdl_wait (common/pdl.cuh): asks L2 for the weight bytes of this warp's share of its CTA's first row tile
// (lane r < 16: row row0 + r, the wk-th of warps_k contiguous pieces of the `run` bytes from byte `from` of the row:
// the CTA's K split), so the launch and the DRAM ramp overlap the previous kernel's tail. A prefetch returns no data,
// so it is safe before the wait.
__device__ __forceinline__ void prefetch_first_tile(const Params& p, int row0, int from, int run, int wk, int lane) {
#if __CUDA_ARCH__ >= 900
  const int row = row0 + lane, row_bytes = p.K / 2;
  const int share = (run / p.warps_k + 15) & ~15, begin = wk * share, bytes = min(share, run - begin);
  if (lane < 16 && row < p.N && bytes > 0)
    asm volatile(
        "cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(p.w + static_cast<size_t>(row) * row_bytes + from + begin),
        "r"(bytes)
        : "memory");
#endif
}

// A CTA's shared memory, as byte offsets: [int8 x rows | amax partials and row scales (float x) | the staged float
// x rows | the staging barrier | the K-split warps' sums, then the cluster's exchange of a tile's sums]. Computed
// the same way by the launcher and the kernel. `cols`: the x columns kept per row (K; a staged int8 x split across
// CTAs: the split's chunks).
struct SmemLayout {
  size_t amax, raw, bar, red;
};

__host__ __device__ inline SmemLayout smem_layout(int M, int cols, int x_bytes, bool stage) {
  const bool fused = x_bytes > 1;  // a float x (2 or 4 bytes per value); int8 x: 1
  const size_t rows = static_cast<size_t>(M) * cols;
  SmemLayout l;
  l.amax = fused || stage ? rows : 0;  // the int8 rows (quantized here, or staged as given): 128-byte multiples
  l.raw = l.amax + (fused ? kAmaxBytes : 0);
  l.bar = l.raw + (fused && stage ? rows * x_bytes : 0);
  l.red = l.bar + (stage ? kStageBarrierBytes : 0);
  return l;
}

// A 32-bit sum as it travelled through ld_cluster_f4: an int32's bits, or the float.
template <class Acc>
__device__ __forceinline__ Acc as_acc(float bits) {
  if constexpr (std::is_same_v<Acc, int>)
    return __float_as_int(bits);
  else
    return bits;
}

// One output: the MMAs' sum (16x the dot: the 1/16 is exact), the scales and the bias, rounded once to OutT.
template <bool GROUPWISE, class OutT, class Acc>
__device__ __forceinline__ void store_output(const Params& p, const float* x_scale, int row, int token, Acc sum) {
  float v = static_cast<float>(sum) * 0.0625f;
  if constexpr (!GROUPWISE) v *= p.w_scale[row];
  v *= x_scale[token];
  if (p.bias) v += p.bias[row];
  static_cast<OutT*>(p.out)[static_cast<size_t>(token) * p.N + row] = from_float<OutT>(v);
}

// The exchange of a tile's sums between the CTAs of a cluster: [token][row of the tile], 32-bit sums; +4 per token
// puts lanes t = 0..3 (tokens 2t, 2t + 1) on distinct banks.
__host__ __device__ constexpr int exchange_stride(int warps_n) { return 16 * warps_n + 4; }

// K split across a cluster (p.splits > 1, sm_90; common/cluster.cuh): the wk == 0 warps put this split's sums of the
// tile in shared memory (`xchg`, free once reduce_k_split is done), and after a cluster barrier CTA z adds, for its
// z-th share of the tile's (token, 4 rows) items, every split's sums in split order (int32 per channel: exact, the
// unsplit sum) and stores them. A second barrier keeps each CTA's sums alive until the others have read them. Every
// thread of the cluster calls it, at every tile's end.
template <int MT, bool GROUPWISE, class OutT, class Acc>
__device__ __forceinline__ void cluster_sum(const Params& p, const Acc (&acc)[MT][4], Acc* xchg, const float* x_scale,
                                            int tile_row0, int wn, int wk, int g, int t) {
#if __CUDA_ARCH__ >= 900
  const int rows = 16 * p.warps_n, stride = exchange_stride(p.warps_n);
  if (wk == 0)
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int i = 0; i < 4; ++i)
        xchg[(mt * 8 + 2 * t + (i & 1)) * stride + wn * 16 + g + (i >= 2 ? 8 : 0)] = acc[mt][i];
  cluster_sync();  // release / acquire: every CTA's sums are visible to the cluster
  const int splits = static_cast<int>(gridDim.z), rank = static_cast<int>(blockIdx.z);
  const int items = min(MT * 8, p.M) * (rows / 4);
  const int end = (rank + 1) * items / splits;
  const uint32_t base = shared_address(xchg);
  for (int it = rank * items / splits + static_cast<int>(threadIdx.x); it < end; it += static_cast<int>(blockDim.x)) {
    const int token = it / (rows / 4), n = 4 * (it % (rows / 4));
    const uint32_t addr = base + static_cast<uint32_t>(token * stride + n) * 4;
    float4 v = ld_cluster_f4(addr, 0);
    Acc sum[4] = {as_acc<Acc>(v.x), as_acc<Acc>(v.y), as_acc<Acc>(v.z), as_acc<Acc>(v.w)};
    for (int z = 1; z < splits; ++z) {
      v = ld_cluster_f4(addr, z);
      sum[0] += as_acc<Acc>(v.x);
      sum[1] += as_acc<Acc>(v.y);
      sum[2] += as_acc<Acc>(v.z);
      sum[3] += as_acc<Acc>(v.w);
    }
#pragma unroll
    for (int q = 0; q < 4; ++q)
      if (tile_row0 + n + q < p.N) store_output<GROUPWISE, OutT>(p, x_scale, tile_row0 + n + q, token, sum[q]);
  }
  cluster_sync_relaxed();
#endif
}

// MT: 8-token tiles (1: M <= 8, 2: M <= 16). XT: x's dtype (int8: quantized beforehand). X_SHARED: the MMAs read
// the int8 x rows from shared memory (always for a float x, which is quantized there; for an int8 x when it is
// staged). Persistent: CTA b takes the 16 * warps_n-row tiles b, b + gridDim.x, ...; each warp walks its (tile,
// step) items with the next item's loads in flight across tile boundaries, so a CTA quantizes x once and its
// pipeline never drains between tiles.
template <int MT, bool GROUPWISE, class XT, class OutT, bool X_SHARED, bool SPLIT>
__global__ void __launch_bounds__(kMaxWarps * 32, 1) w4a8_gemv_kernel(const Params p) {
  extern __shared__ __align__(16) uint8_t smem[];
  constexpr bool kFused = !std::is_same_v<XT, int8_t>;
  static_assert(X_SHARED || !kFused, "a float x is quantized into shared memory");
  using Acc = std::conditional_t<GROUPWISE, float, int>;

  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int warp = threadIdx.x >> 5, wn = warp % p.warps_n, wk = warp / p.warps_n;
  const int tiles = (p.N + 16 * p.warps_n - 1) / (16 * p.warps_n);
  const int step_chunks = p.warps_k * kStepChunks;
  // This CTA's K split (SPLIT: K split across the CTAs of a cluster): chunks [first, end); the same steps in each.
  const int first = SPLIT ? static_cast<int>(blockIdx.z) * p.split_chunks : 0;
  const int end = SPLIT ? min(p.chunks, first + p.split_chunks) : p.chunks;
  const int steps = ((SPLIT ? p.split_chunks : p.chunks) + step_chunks - 1) / step_chunks;
  const int items = (tiles - blockIdx.x + gridDim.x - 1) / gridDim.x * steps;  // the same for every warp

  if (p.pdl) {
    pdl_launch_dependents();
    if (p.pdl_prefetch) {
      const int run = SPLIT ? (end - first) * kChunkBytes : p.K / 2;
      prefetch_first_tile(p, (blockIdx.x * p.warps_n + wn) * 16, first * kChunkBytes, run, wk, lane);
    }
    pdl_wait();  // every load and store below sees the previous kernel's writes
  }

  // x's copy into shared memory starts before the weight loads, so it does not wait behind them.
  const bool stage = kFused ? p.stage_x : X_SHARED;
  // x's columns the MMAs read: all of K, or (an int8 x staged) the split's, kept as rows of split_chunks chunks.
  const bool x_split = SPLIT && !kFused && X_SHARED;
  const int x_first = x_split ? first : 0, x_cols = x_split ? p.split_chunks * kChunk : p.K;
  const SmemLayout layout = smem_layout(p.M, x_cols, sizeof(XT), stage);
  uint64_t* stage_bar = reinterpret_cast<uint64_t*>(smem + layout.bar);
  if (stage) {
    const int x_bytes = static_cast<int>(sizeof(XT));
    stage_rows_begin(smem + (kFused ? layout.raw : 0), static_cast<const uint8_t*>(p.x) + x_first * kChunk * x_bytes,
                     p.M, (x_split ? (end - first) * kChunk : p.K) * x_bytes, p.K * x_bytes, x_cols * x_bytes,
                     stage_bar);
  }

  Cursor at{static_cast<int>(blockIdx.x), 0, first}, ahead = at;  // this item; the next one to prefetch
  Step<GROUPWISE> cur;
  load_step(cur, p, at.item(p, wn, wk), end, g, t);  // in flight during the quantization
  ahead.advance(steps);
  for (int i = 1; i <= p.prefetch && i < items; ++i, ahead.advance(steps))
    prefetch_step(p, ahead.item(p, wn, wk), end, g, t);
  if (stage) stage_wait(stage_bar);

  const int8_t* xq;
  const float* x_scale;
  uint8_t* tail = smem + layout.red;
  if constexpr (kFused) {
    int8_t* xs = reinterpret_cast<int8_t*>(smem);
    float* amax_partial = reinterpret_cast<float*>(smem + layout.amax);
    float* scales = amax_partial + kMaxFusedM * kMaxWarps;
    if (stage)
      quantize_rows_to_shared<XT, true>(p, reinterpret_cast<const XT*>(smem + layout.raw), xs, amax_partial, scales);
    else
      quantize_rows_to_shared<XT, false>(p, static_cast<const XT*>(p.x), xs, amax_partial, scales);
    xq = xs;
    x_scale = scales;
  } else {
    xq = X_SHARED ? reinterpret_cast<const int8_t*>(smem) : static_cast<const int8_t*>(p.x);
    x_scale = p.x_scale;
  }
  // Each lane's x rows: tokens g (and 8 + g), clamped to M - 1 (the padded columns are never stored); their first
  // column is chunk x_first's.
  const int8_t* xrow[MT];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) xrow[mt] = xq + static_cast<size_t>(min(mt * 8 + g, p.M - 1)) * x_cols + t * 32;

  Acc acc[MT][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int i = 0; i < 4; ++i) acc[mt][i] = 0;

  for (int item = 0; item < items; ++item) {
    const Item it = at.item(p, wn, wk);
    at.advance(steps);
    Step<GROUPWISE> next;
    if (item + 1 < items) load_step(next, p, at.item(p, wn, wk), end, g, t);
    if (p.prefetch && item + 1 + p.prefetch < items) {
      prefetch_step(p, ahead.item(p, wn, wk), end, g, t);
      ahead.advance(steps);
    }
#pragma unroll
    for (int u = 0; u < kStepChunks; ++u) {
      const int c = min(it.chunk0 + u, end - 1);  // past the split's K the weight words are 0
      const int xc = c - x_first;
      uint32_t xw[MT][8];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        uint4 lo, hi;
        if constexpr (X_SHARED) {
          lo = *reinterpret_cast<const uint4*>(xrow[mt] + xc * kChunk);
          hi = *reinterpret_cast<const uint4*>(xrow[mt] + xc * kChunk + 16);
        } else {
          lo = __ldg(reinterpret_cast<const uint4*>(xrow[mt] + xc * kChunk));
          hi = __ldg(reinterpret_cast<const uint4*>(xrow[mt] + xc * kChunk + 16));
        }
        const uint32_t words[8] = {lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w};
#pragma unroll
        for (int i = 0; i < 8; ++i) xw[mt][i] = words[i];
      }
      // Two accumulator chains (even / odd words): each MMA waits on the one before it in its chain only. Group-wise
      // at MT = 2 one chain per token tile (the two tiles are two chains): the second pair made that kernel spill at
      // the 128-register cap.
      constexpr int kChains = GROUPWISE && MT == 2 ? 1 : 2;
      int dot[2][MT][4];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          dot[1][mt][i] = 0;
          if constexpr (GROUPWISE)
            dot[0][mt][i] = 0;
          else
            dot[0][mt][i] = acc[mt][i];
        }
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const uint32_t va = word(cur.a[u], j), vb = word(cur.b[u], j);
        const uint32_t a0 = (va << 4) & 0xF0F0F0F0u, a1 = (vb << 4) & 0xF0F0F0F0u;
        const uint32_t a2 = va & 0xF0F0F0F0u, a3 = vb & 0xF0F0F0F0u;
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          const uint32_t b0 = __byte_perm(xw[mt][2 * j], xw[mt][2 * j + 1], 0x6420);  // values 8j + 0, 2, 4, 6
          const uint32_t b1 = __byte_perm(xw[mt][2 * j], xw[mt][2 * j + 1], 0x7531);  // values 8j + 1, 3, 5, 7
          mma_s8(dot[j % kChains][mt], a0, a1, a2, a3, b0, b1);
        }
      }
      float sa = 0.0f, sb = 0.0f;
      if constexpr (GROUPWISE) {
        sa = __shfl_sync(0xffffffffu, cur.sa, (lane & ~3) | u);
        sb = __shfl_sync(0xffffffffu, cur.sb, (lane & ~3) | u);
      }
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        if constexpr (GROUPWISE) {
          // A chunk's dot is 16x a sum of 128 products |w x| <= 8 x 127: |dot| < 2^21, converted exactly with
          // full-rate adds (common/magic_round.cuh) instead of an I2F per element.
          acc[mt][0] += small_int_to_float(dot[0][mt][0] + dot[1][mt][0]) * sa;
          acc[mt][1] += small_int_to_float(dot[0][mt][1] + dot[1][mt][1]) * sa;
          acc[mt][2] += small_int_to_float(dot[0][mt][2] + dot[1][mt][2]) * sb;
          acc[mt][3] += small_int_to_float(dot[0][mt][3] + dot[1][mt][3]) * sb;
        } else {
#pragma unroll
          for (int i = 0; i < 4; ++i) acc[mt][i] = dot[0][mt][i] + dot[1][mt][i];
        }
      }
    }
    cur = next;
    if (it.step != steps - 1) continue;

    // The tile's last step: the K-split warps' sums meet in shared memory, added in warp order (deterministic).
    if (p.warps_k > 1) reduce_k_split<MT>(acc, reinterpret_cast<Acc*>(tail), warp, wn, wk, p.warps_n, p.warps_k, lane);
    if constexpr (SPLIT) {
      cluster_sum<MT, GROUPWISE, OutT>(p, acc, reinterpret_cast<Acc*>(tail), x_scale, it.row0 - wn * 16, wn, wk, g, t);
    } else if (wk == 0) {
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const int row = it.row0 + g + (i >= 2 ? 8 : 0), token = mt * 8 + 2 * t + (i & 1);
          if (row >= p.N || token >= p.M) continue;
          store_output<GROUPWISE, OutT>(p, x_scale, row, token, acc[mt][i]);
        }
    }
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[mt][i] = 0;
  }
}

struct Config {
  const char* name;
  int warps_n, warps_k, prefetch, splits;
};
#define LOWBIT_W4A8_GEMV_ROW(I, NAME, WN, WK, PF, SPLITS) {NAME, WN, WK, PF, SPLITS},
constexpr Config kConfigs[] = {LOWBIT_W4A8_GEMV_CONFIGS(LOWBIT_W4A8_GEMV_ROW)};
#undef LOWBIT_W4A8_GEMV_ROW
constexpr int kNumConfigs = sizeof(kConfigs) / sizeof(kConfigs[0]);
static_assert(kNumConfigs > 0);

// Whether launches may stage x in shared memory: unless LOWBIT_W4A8_GEMV_STAGE_X=0 (read once; the switch the A/B
// measurement of docs/w4a8.md used, as LOWBIT_FLEX_PDL is for programmatic launch).
bool stage_x_allowed() {
  static const bool allowed = [] {
    const char* e = std::getenv("LOWBIT_W4A8_GEMV_STAGE_X");
    return !(e && e[0] == '0');
  }();
  return allowed;
}

// The shared memory after the staging barrier (SmemLayout's last region): the K-split warps' sums, reused for the
// cluster's exchange of a tile's sums where K is split across CTAs (cluster_sum); 32-bit sums either way.
template <int MT>
size_t tail_bytes(const Config& c, int splits) {
  const size_t red = c.warps_k > 1 ? static_cast<size_t>(32 * c.warps_n * c.warps_k) * MT * 4 * 4 : 0;
  const size_t xchg = splits > 1 ? static_cast<size_t>(MT * 8 * exchange_stride(c.warps_n)) * 4 : 0;
  return std::max(red, xchg);
}

// How a config runs a problem: its K splits (fewer where K has fewer chunks: none is empty) and chunks per split,
// whether x is staged in shared memory (where the copy, an int8 x's split columns, fits the device's per-CTA limit
// next to everything else) and the shared memory a CTA takes.
struct Plan {
  int splits, split_chunks;
  bool stage;
  size_t smem;
};

template <int MT, class XT>
Plan plan(Problem const& q, const Config& c, int splits) {
  const int chunks = q.K / kChunk, per = (chunks + splits - 1) / splits;
  Plan pl{(chunks + per - 1) / per, per, false, 0};
  const int x_cols = std::is_same_v<XT, int8_t> ? per * kChunk : q.K;
  const size_t tail = tail_bytes<MT>(c, pl.splits);
  const size_t staged = smem_layout(q.M, x_cols, sizeof(XT), true).red + tail;
  pl.stage = stage_x_allowed() && static_cast<size_t>(q.M) * x_cols * sizeof(XT) <= kStageMaxBytes &&
             staged <= max_shared_per_cta();
  pl.smem = pl.stage ? staged : smem_layout(q.M, x_cols, sizeof(XT), false).red + tail;
  return pl;
}

template <int MT, bool GROUPWISE, class XT, class OutT>
int launch(Problem const& q, const Config& c, int splits);

template <int MT, bool GROUPWISE, class XT, class OutT, bool X_SHARED, bool SPLIT>
int launch_kernel(Problem const& q, const Config& c, const Plan& pl) {
  // Programmatic after the quantizer (the caller's), or after any kernel with LOWBIT_FLEX_PDL=1 (common/pdl.cuh).
  const bool pdl = (q.after_quantizer || pdl_requested()) && device_has_pdl();
  const Params p{q.x,
                 q.x_scale,
                 static_cast<const uint8_t*>(q.w),
                 q.w_scale,
                 q.bias,
                 q.out,
                 q.M,
                 q.N,
                 q.K,
                 q.K / kChunk,
                 q.group / kChunk,
                 q.group ? q.K / q.group : 1,
                 c.warps_n,
                 c.warps_k,
                 c.prefetch,
                 pl.splits,
                 pl.split_chunks,
                 pdl,
                 pdl && pdl_requested(),
                 pl.stage};
  const int threads = 32 * c.warps_n * c.warps_k;
  auto kernel = w4a8_gemv_kernel<MT, GROUPWISE, XT, OutT, X_SHARED, SPLIT>;
  if (pl.smem > 48 * 1024) {  // opt in above the default limit (on the current device)
    const cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, pl.smem);
    if (err != cudaSuccess) return from_cuda(err);
  }
  const int tiles = (q.N + 16 * c.warps_n - 1) / (16 * c.warps_n);
  const void* fn = reinterpret_cast<const void*>(kernel);
  int grid = 0;
  if constexpr (SPLIT) {
    grid = std::min(tiles, resident_clusters(fn, threads, pl.smem, pl.splits));
    if (grid < 1) return launch<MT, GROUPWISE, XT, OutT>(q, c, 1);  // the GPU holds no such cluster: unsplit
  } else {
    grid = std::min(tiles, resident_ctas(fn, threads, pl.smem));
  }
  // Persistent CTAs (or clusters of a row tile's splits, along z), programmatic where enabled (common/pdl.cuh).
  cudaLaunchAttribute attrs[2];
  unsigned n_attrs = 0;
  if (pdl) {
    attrs[n_attrs].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attrs[n_attrs++].val.programmaticStreamSerializationAllowed = 1;
  }
  if (pl.splits > 1) {
    attrs[n_attrs].id = cudaLaunchAttributeClusterDimension;
    attrs[n_attrs++].val.clusterDim = {1, 1, static_cast<unsigned>(pl.splits)};
  }
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(grid, 1, pl.splits);
  config.blockDim = dim3(threads);
  config.dynamicSmemBytes = pl.smem;
  config.stream = q.stream;
  config.attrs = attrs;
  config.numAttrs = n_attrs;
  return from_cuda(cudaLaunchKernelEx(&config, kernel, p));
}

// The kernel that reads x from shared memory where it is staged (a float x always: it is quantized there).
template <int MT, bool GROUPWISE, class XT, class OutT, bool SPLIT>
int launch_shared(Problem const& q, const Config& c, const Plan& pl) {
  if constexpr (std::is_same_v<XT, int8_t>)
    return pl.stage ? launch_kernel<MT, GROUPWISE, XT, OutT, true, SPLIT>(q, c, pl)
                    : launch_kernel<MT, GROUPWISE, XT, OutT, false, SPLIT>(q, c, pl);
  else
    return launch_kernel<MT, GROUPWISE, XT, OutT, true, SPLIT>(q, c, pl);
}

// `splits`: the config's, or 1 (where the GPU holds no cluster of them). A library built without sm_90 runs every
// config unsplit and instantiates no split kernel (clusters are sm_90).
template <int MT, bool GROUPWISE, class XT, class OutT>
int launch(Problem const& q, const Config& c, int splits) {
  const Plan pl = plan<MT, XT>(q, c, built_for_sm90() ? splits : 1);
  if constexpr (built_for_sm90())
    if (pl.splits > 1) return launch_shared<MT, GROUPWISE, XT, OutT, true>(q, c, pl);
  return launch_shared<MT, GROUPWISE, XT, OutT, false>(q, c, pl);
}

template <bool GROUPWISE, class OutT>
int launch_x(Problem const& p, const Config& c) {
  switch (p.x_dtype) {
    case kXInt8:
      return p.M <= 8 ? launch<1, GROUPWISE, int8_t, OutT>(p, c, c.splits)
                      : launch<2, GROUPWISE, int8_t, OutT>(p, c, c.splits);
    case kXF16:
      return launch<1, GROUPWISE, __half, OutT>(p, c, c.splits);
    case kXBF16:
      return launch<1, GROUPWISE, __nv_bfloat16, OutT>(p, c, c.splits);
    case kXF32:
      return launch<1, GROUPWISE, float, OutT>(p, c, c.splits);
    default:
      return kInvalidArgument;
  }
}

template <class XT>
int launch_quantizer(const void* x, int8_t* xq, float* xq_scale, int M, int K, cudaStream_t stream) {
  constexpr int kVec = 16 / sizeof(XT);
  const dim3 grid((K / kVec + kQuantThreads - 1) / kQuantThreads, M);
  quantize_rows_kernel<XT><<<grid, kQuantThreads, 0, stream>>>(static_cast<const XT*>(x), xq, xq_scale, K);
  return last_launch_status();
}

template <class OutT>
int launch_out(Problem const& p, const Config& c) {
  return p.group ? launch_x<true, OutT>(p, c) : launch_x<false, OutT>(p, c);
}

}  // namespace
}  // namespace lowbit::w4a8_gemv

LOWBIT_API int lowbit_w4a8_gemv_num_configs() { return lowbit::w4a8_gemv::kNumConfigs; }

LOWBIT_API const char* lowbit_w4a8_gemv_config_name(int config) {
  using lowbit::w4a8_gemv::kConfigs;
  return config >= 0 && config < lowbit::w4a8_gemv::kNumConfigs ? kConfigs[config].name : nullptr;
}

LOWBIT_API int lowbit_w4a8_gemv(int config, int x_dtype, int out_dtype, const void* x, const float* x_scale,
                                const void* w, const float* w_scale, int group, const float* bias, void* out, int M,
                                int N, int K, cudaStream_t stream) {
  namespace g = lowbit::w4a8_gemv;
  const g::Problem p{x_dtype, x, x_scale, w, w_scale, group, bias, out, M, N, K, 0, stream};
  if (config < 0 || config >= g::kNumConfigs || !g::problem_ok(p)) return lowbit::kInvalidArgument;
  const g::Config& c = g::kConfigs[config];
  if (out_dtype == lowbit::kF16) return g::launch_out<__half>(p, c);
  if (out_dtype == lowbit::kBF16) return g::launch_out<__nv_bfloat16>(p, c);
  return lowbit::kInvalidArgument;
}

LOWBIT_API int lowbit_w4a8_quantize_then_gemv(int config, int x_dtype, int out_dtype, const void* x, void* xq,
                                              float* xq_scale, const void* w, const float* w_scale, int group,
                                              const float* bias, void* out, int M, int N, int K, int programmatic,
                                              cudaStream_t stream) {
  namespace g = lowbit::w4a8_gemv;
  // The GEMV's problem: the int8 rows the quantizer writes, launched as its programmatic dependent (programmatic 1).
  const g::Problem p{g::kXInt8, xq, xq_scale, w, w_scale, group, bias, out, M, N, K, programmatic, stream};
  const bool x_ok = x_dtype >= g::kXF16 && x_dtype <= g::kXF32 && x && (reinterpret_cast<uintptr_t>(x) & 15u) == 0;
  if (config < 0 || config >= g::kNumConfigs || !x_ok || !g::problem_ok(p) ||
      (out_dtype != lowbit::kF16 && out_dtype != lowbit::kBF16))
    return lowbit::kInvalidArgument;
  int8_t* q = static_cast<int8_t*>(xq);
  const int status = x_dtype == g::kXF16    ? g::launch_quantizer<__half>(x, q, xq_scale, M, K, stream)
                     : x_dtype == g::kXBF16 ? g::launch_quantizer<__nv_bfloat16>(x, q, xq_scale, M, K, stream)
                                            : g::launch_quantizer<float>(x, q, xq_scale, M, K, stream);
  if (status) return status;
  const g::Config& c = g::kConfigs[config];
  return out_dtype == lowbit::kF16 ? g::launch_out<__half>(p, c) : g::launch_out<__nv_bfloat16>(p, c);
}
