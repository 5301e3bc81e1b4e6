// Weight-only decode GEMV (float_weight_gemv.h): fp8 / fp6 / fp4 weights streamed once through fp16 / bf16 tensor
// cores.
//
// At M <= 16 a weight-only linear is a read of the packed weight; x and out are a few KB. The kernel keeps many of
// the weight bytes in flight without holding registers for them, and spends few instructions on each code:
//
// - Swap-AB mma.sync m16n8k16 (x's dtype, fp32 accumulators): 16 weight rows are the MMA's M side, up to 8 tokens
//   its N side (two MMAs per A fragment for M = 9..16), so M = 1 pads 8 columns instead of 16 rows.
// - Loads: every warp runs its own cp.async ring in shared memory (kStages tiles of 16 rows x 128 codes in flight;
//   16-byte copies that skip L1, zero-filled past K). A ring slot costs no registers while its bytes travel, so an
//   SM keeps ~50 KB of weight in flight, which register loads (the W4A8 GEMV's design) could not: there the
//   global-load scoreboard was the top stall.
// - Decode in registers with bit operations, two codes per 32-bit register: the fp4 / fp6 tile layout
//   (quant/fpx_tiles.py) puts codes p and p + 4 of a word 16 bits apart, so one shift and mask moves both into the
//   fields of an fp16 / bf16 pair, which is one MMA A register; its k order is (16p + w, 16p + 64 + w), and x's B
//   register is assembled in the same order with one byte permute. The codes' exponent bias is fixed up exactly:
//   for fp16 by a power of two in the epilogue, for bf16 (whose exponent is too wide for that: the sums would
//   leave fp32's range) by one bf16x2 multiply-add per register. fp8 on fp16 x uses the hardware e4m3x2 -> f16x2
//   conversion; on bf16 x the same bit decode.
// - Work: persistent CTAs (grid = resident CTAs, so no tail wave), each taking tiles of 16 * warps_n rows; its
//   warps split those rows (warps_n) and K (warps_k, interleaved 128-code tiles). The K-split sums meet in shared
//   memory in warp order (deterministic).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <algorithm>
#include <type_traits>

#include "common/fpx_decode.cuh"
#include "common/gemv_epilogue.cuh"
#include "common/resident_ctas.h"
#include "float_weight_gemv/float_weight_gemv.h"

namespace lowbit::float_weight_gemv {
namespace {

constexpr int kTileCodes = kFpxTileCodes;
constexpr int kMaxWarps = 8;  // per CTA (the configs of float_weight_gemv.h)

// CTAs per SM the register budget is set for: at M <= 8 three CTAs of 8 warps (80 registers a thread, no spills;
// ncu, run 37: two CTAs left the schedulers with 1.2 eligible warps and 42 % of issue slots idle); at M = 9..16
// (two 8-token tiles: more accumulators and x operands) two, which spills nothing.
template <int MT>
constexpr int kMinCtasPerSm = MT == 1 ? 3 : 2;

// Per format: the field widths and a row's K tile bytes (fpx_format.h), and the ring depth (tiles in flight per
// warp; ~8 KB of ring per warp).
template <int FMT>
struct FormatTraits : FpxTraits<FMT> {
  static constexpr int kStages = FMT == kE4M3 ? 4 : FMT == kE2M1 ? 8 : 6;
  static constexpr int kStageBytes = 16 * FpxTraits<FMT>::kTileBytes;
  static constexpr int kRingBytes = kStages * kStageBytes;
};

struct Params {
  const void* x;
  const uint8_t* w;
  const float* w_scale;
  const void* bias;
  void* out;
  int M, N, K, tiles, warps_n, warps_k;
  float post_scale;  // the decode's power of two (fp16 fp4 / fp6), else 1
};

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16 bytes global -> shared, past L1 (each weight byte is read once); src_bytes < 16 zero-fills the rest.
__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global.L2::256B [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(src_bytes)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

__device__ __forceinline__ uint4 lds128(const uint8_t* p) { return *reinterpret_cast<const uint4*>(p); }

__device__ __forceinline__ uint32_t word(uint4 v, int j) { return j == 0 ? v.x : j == 1 ? v.y : j == 2 ? v.z : v.w; }

template <class T>
__device__ __forceinline__ void mma(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                    uint32_t b1) {
  if constexpr (std::is_same_v<T, __half>)
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  else
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// Two e4m3 codes (16-bit half HALF of `w`) -> an x-dtype pair.
template <class T, int HALF>
__device__ __forceinline__ uint32_t decode_fp8_pair(uint32_t w) {
  if constexpr (std::is_same_v<T, __half>)
    return decode_fp8_bytes<T>(w >> (16 * HALF));
  else
    return decode_fp8_bytes<T>(prmt(w, 0, fp8_pair_selector<T>(2 * HALF, 2 * HALF + 1)));
}

// x values [k, k + N) of one row as 32-bit words, zero where k >= K (whole runs: K % 8 == 0 and k % 4 == 0).
__device__ __forceinline__ uint2 load_x4(const uint16_t* row, int k, int K) {
  return k < K ? __ldg(reinterpret_cast<const uint2*>(row + k)) : make_uint2(0, 0);
}
__device__ __forceinline__ uint4 load_x8(const uint16_t* row, int k, int K) {
  return k < K ? __ldg(reinterpret_cast<const uint4*>(row + k)) : make_uint4(0, 0, 0, 0);
}

// A lane's x operands for one 128-code tile of MT 8-token tiles. fp8: columns 16t + 64h .. + 15 (h = 0, 1) as
// v[mt][2h], v[mt][2h + 1]. fp4 / fp6: for plane p, columns 16p + 4t .. + 3 (codes p of the lane's words) in
// v[mt][p] .x/.y and the 64 after them (codes p + 4) in v[mt][4 + p].
template <int FMT, int MT>
struct XTile {
  std::conditional_t<FMT == kE4M3, uint4, uint2> v[MT][FMT == kE4M3 ? 4 : 8];
};

// The lane's first x column of a tile (fp8 16t, fp4 / fp6 4t): every load of the tile is at a constant offset from it.
template <int FMT>
__device__ __forceinline__ int x_lane_column(int t) {
  return FMT == kE4M3 ? 16 * t : 4 * t;
}
// Offset of load i (of 4; fp4 / fp6 plus 64 for v[mt][4 + i]) from the lane's first column.
template <int FMT>
__device__ __forceinline__ constexpr int x_offset(int i) {
  return FMT == kE4M3 ? 64 * (i >> 1) + 8 * (i & 1) : 16 * i;
}

// x_item[mt]: row mt * 8 + g of x (clamped to M - 1) at the lane's first column of the tile starting at k0. A whole
// tile (k0 + 128 <= K: all but a ragged last one) loads at constant offsets from it, without bounds checks.
template <int FMT, int MT>
__device__ __forceinline__ void load_x_tile(XTile<FMT, MT>& x, const uint16_t* const (&x_item)[MT], int k0, int K,
                                            int t) {
  if (k0 + kTileCodes <= K) {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        if constexpr (FMT == kE4M3) {
          x.v[mt][i] = __ldg(reinterpret_cast<const uint4*>(x_item[mt] + x_offset<FMT>(i)));
        } else {
          x.v[mt][i] = __ldg(reinterpret_cast<const uint2*>(x_item[mt] + x_offset<FMT>(i)));
          x.v[mt][4 + i] = __ldg(reinterpret_cast<const uint2*>(x_item[mt] + x_offset<FMT>(i) + 64));
        }
      }
    return;
  }
  const int k = k0 + x_lane_column<FMT>(t);
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    const uint16_t* row = x_item[mt] - k;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      if constexpr (FMT == kE4M3) {
        x.v[mt][i] = load_x8(row, k + x_offset<FMT>(i), K);
      } else {
        x.v[mt][i] = load_x4(row, k + x_offset<FMT>(i), K);
        x.v[mt][4 + i] = load_x4(row, k + x_offset<FMT>(i) + 64, K);
      }
    }
  }
}

// Accumulator chains: MMAs of one chain wait on each other only. Four at M <= 8; at M = 9..16 two (registers).
template <int MT>
constexpr int kChains = MT == 1 ? 4 : 2;

// One tile of one warp: 16 rows x 128 codes from its ring slot, times the tile's x operands.
template <int FMT, class T, int MT>
__device__ __forceinline__ void tile_mma(float (&acc)[kChains<MT>][MT][4], const uint8_t* slot, const XTile<FMT, MT>& x,
                                         int g, int t) {
  using F = FormatTraits<FMT>;
  constexpr int C = kChains<MT>;
  if constexpr (FMT == kE4M3) {
    // Row r's 16-byte chunk c sits at chunk c ^ (4 * (r & 1)): lanes of rows g and g + 1 read distinct banks.
    const int sw = (g & 1) << 2;
    const uint8_t* ra = slot + g * F::kTileBytes;
    const uint8_t* rb = ra + 8 * F::kTileBytes;
    const uint4 wa[2] = {lds128(ra + 16 * (t ^ sw)), lds128(ra + 16 * ((t + 4) ^ sw))};
    const uint4 wb[2] = {lds128(rb + 16 * (t ^ sw)), lds128(rb + 16 * ((t + 4) ^ sw))};
#pragma unroll
    for (int h = 0; h < 2; ++h)  // chunk t, then t + 4: codes 16t + 64h .. + 15
#pragma unroll
      for (int j = 0; j < 4; ++j) {  // word j: codes 16t + 64h + 4j .. + 3
        const uint32_t a0 = decode_fp8_pair<T, 0>(word(wa[h], j)), a2 = decode_fp8_pair<T, 1>(word(wa[h], j));
        const uint32_t a1 = decode_fp8_pair<T, 0>(word(wb[h], j)), a3 = decode_fp8_pair<T, 1>(word(wb[h], j));
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          const uint4 xv = x.v[mt][2 * h + (j >> 1)];
          mma<T>(acc[(4 * h + j) % C][mt], a0, a1, a2, a3, word(xv, 2 * (j & 1)), word(xv, 2 * (j & 1) + 1));
        }
      }
  } else {
    const uint8_t* ra = slot + g * F::kTileBytes;
    const uint8_t* rb = ra + 8 * F::kTileBytes;
    const uint4 ha = lds128(ra + 16 * t), hb = lds128(rb + 16 * t);  // words 4t .. 4t + 3 of rows g, g + 8
    uint4 la = make_uint4(0, 0, 0, 0), lb = la;
    if constexpr (F::kBits == 6) {  // word 4t + i's low pairs: word 16 + (4t + i) % 8, at bit 8 * (t / 2)
      const int sh = 8 * (t >> 1);
      la = lds128(ra + 64 + 16 * (t & 1));
      lb = lds128(rb + 64 + 16 * (t & 1));
      la = make_uint4(la.x >> sh, la.y >> sh, la.z >> sh, la.w >> sh);
      lb = make_uint4(lb.x >> sh, lb.y >> sh, lb.z >> sh, lb.w >> sh);
    }
#pragma unroll
    for (int jj = 0; jj < 2; ++jj) {  // words 2jj and 2jj + 1 of the lane's four
#pragma unroll
      for (int half = 0; half < 2; ++half) {  // planes 0, 1, then 2, 3 (the words shifted down by one byte)
        const int hs = 8 * half, ls = 4 * half;
        const uint32_t wa0 = word(ha, 2 * jj) >> hs, wa1 = word(ha, 2 * jj + 1) >> hs;
        const uint32_t wb0 = word(hb, 2 * jj) >> hs, wb1 = word(hb, 2 * jj + 1) >> hs;
        const uint32_t la0 = word(la, 2 * jj) >> ls, la1 = word(la, 2 * jj + 1) >> ls;
        const uint32_t lb0 = word(lb, 2 * jj) >> ls, lb1 = word(lb, 2 * jj + 1) >> ls;
        auto plane = [&](auto pc) {
          constexpr int q = decltype(pc)::value;  // plane 2 * half + q
          const int p = 2 * half + q;
          const uint32_t a0 = decode_fpx_pair<FMT, T, q>(wa0, la0), a2 = decode_fpx_pair<FMT, T, q>(wa1, la1);
          const uint32_t a1 = decode_fpx_pair<FMT, T, q>(wb0, lb0), a3 = decode_fpx_pair<FMT, T, q>(wb1, lb1);
#pragma unroll
          for (int mt = 0; mt < MT; ++mt) {
            const uint2 xl = x.v[mt][p], xh = x.v[mt][4 + p];
            const uint32_t l = jj ? xl.y : xl.x, h = jj ? xh.y : xh.x;
            mma<T>(acc[p % C][mt], a0, a1, a2, a3, __byte_perm(l, h, 0x5410), __byte_perm(l, h, 0x7632));
          }
        };
        plane(std::integral_constant<int, 0>{});
        plane(std::integral_constant<int, 1>{});
      }
    }
  }
}

// A lane's share of the copies of one tile (16 rows x 128 codes) into a ring slot: 16-byte chunks lane, lane + 32,
// ... of the 16 row runs, with the addresses worked out once per row tile (rows past N clamped: their sums are
// never stored). fp8 rows end at K (chunks past it are zero-filled); fp4 / fp6 rows are whole tiles.
template <int FMT>
struct TileCopier {
  using F = FormatTraits<FMT>;
  static constexpr int kChunksPerRow = F::kTileBytes / 16;
  static constexpr int kCopies = kChunksPerRow / 2;  // 16 rows' chunks over 32 lanes
  const uint8_t* src[kCopies];                       // the chunk in K tile 0 of its row
  uint32_t dst[kCopies];                             // its offset in a slot
  int col[kCopies];

  __device__ __forceinline__ void rows(const Params& p, int row0, int lane) {
    const size_t row_bytes = FMT == kE4M3 ? static_cast<size_t>(p.K) : static_cast<size_t>(p.tiles) * F::kTileBytes;
#pragma unroll
    for (int i = 0; i < kCopies; ++i) {
      const int c = lane + 32 * i, r = c / kChunksPerRow;
      col[i] = c % kChunksPerRow;
      src[i] = p.w + min(row0 + r, p.N - 1) * row_bytes + 16 * col[i];
      dst[i] = r * F::kTileBytes + 16 * (FMT == kE4M3 ? col[i] ^ ((r & 1) << 2) : col[i]);
    }
  }

  // The tile `tile_byte` bytes into its rows (a multiple of kTileBytes, below the row's tile bytes) into `slot`.
  __device__ __forceinline__ void copy(uint32_t slot, const Params& p, uint32_t tile_byte) const {
#pragma unroll
    for (int i = 0; i < kCopies; ++i) {
      if constexpr (FMT == kE4M3) {
        const bool in_k = tile_byte + 16 * col[i] < static_cast<uint32_t>(p.K);
        cp_async16(slot + dst[i], in_k ? src[i] + tile_byte : p.w, in_k ? 16 : 0);  // p.w: valid, not read
      } else {
        cp_async16(slot + dst[i], src[i] + tile_byte, 16);
      }
    }
  }
};

// MT: 8-token tiles (1: M <= 8, 2: M <= 16). CTA b takes the row tiles b, b + gridDim.x, ...; each warp walks its
// (row tile, K step) items with its ring running across row-tile boundaries, so the pipeline never drains.
//
// The loop is issue-bound (ncu, run 37: ~58 % of issue slots busy, DRAM at a third of its bandwidth), so the
// addresses that change every item (the ring slots, the next tile's byte offset, x's columns) are carried from one
// item to the next by one add each rather than derived from the item index.
template <int FMT, class T, int MT>
__global__ void __launch_bounds__(kMaxWarps * 32, kMinCtasPerSm<MT>) float_weight_gemv_kernel(const Params p) {
  using F = FormatTraits<FMT>;
  constexpr int S = F::kStages;
  extern __shared__ __align__(128) uint8_t smem[];

  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int warp = threadIdx.x >> 5, wn = warp % p.warps_n, wk = warp / p.warps_n;
  const int row_tiles = (p.N + 16 * p.warps_n - 1) / (16 * p.warps_n);
  const int steps = (p.tiles + p.warps_k - 1) / p.warps_k;                         // K steps per row tile
  const int items = (row_tiles - blockIdx.x + gridDim.x - 1) / gridDim.x * steps;  // the same for every warp
  uint8_t* ring = smem + warp * F::kRingBytes;
  float* red = reinterpret_cast<float*>(smem + blockDim.x / 32 * F::kRingBytes);
  const uint32_t first_byte = wk * F::kTileBytes, step_bytes = p.warps_k * F::kTileBytes;
  const uint32_t row_tile_bytes = p.tiles * F::kTileBytes;  // a row's tiles (fp8: past K where K % 128 != 0)

  // The feed (`issue`): `issued` items so far; the next one is the tile `ahead_byte` into the rows of row tile
  // `ahead_tile`, for ring slot `fill`.
  int ahead_tile = blockIdx.x, ahead_step = 0, issued = 0;
  uint32_t ahead_byte = first_byte;
  const uint32_t ring_addr = smem_addr(ring), ring_end = ring_addr + F::kRingBytes;
  uint32_t fill = ring_addr;
  TileCopier<FMT> copier;
  copier.rows(p, (ahead_tile * p.warps_n + wn) * 16, lane);
  auto issue = [&]() {
    if (issued < items) {
      if (ahead_byte < row_tile_bytes) copier.copy(fill, p, ahead_byte);
      ahead_byte += step_bytes;
      if (++ahead_step == steps) {
        ahead_step = 0;
        ahead_byte = first_byte;
        ahead_tile += gridDim.x;
        copier.rows(p, (ahead_tile * p.warps_n + wn) * 16, lane);
      }
    }
    cp_async_commit();  // an empty group past the end keeps the wait count uniform
    ++issued;
    fill = fill + F::kStageBytes == ring_end ? ring_addr : fill + F::kStageBytes;
  };
#pragma unroll
  for (int s = 0; s < S - 1; ++s) issue();

  // x rows mt * 8 + g (clamped to M - 1) at the lane's first column of this item's tile.
  const uint16_t* x_item[MT];
  auto x_rows = [&]() {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
      x_item[mt] = static_cast<const uint16_t*>(p.x) + static_cast<size_t>(min(mt * 8 + g, p.M - 1)) * p.K +
                   x_lane_column<FMT>(t) + wk * kTileCodes;
  };
  x_rows();

  constexpr int C = kChains<MT>;
  float acc[C][MT][4];
#pragma unroll
  for (int c = 0; c < C; ++c)
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[c][mt][i] = 0.0f;

  int tile = blockIdx.x, step = 0, k0 = wk * kTileCodes;
  const uint8_t* slot = ring;
  for (int item = 0; item < items; ++item) {
    const bool live = k0 < p.K;  // this warp has a tile in this step (K tiles: ceil(K / 128))
    XTile<FMT, MT> xt;
    if (live) load_x_tile(xt, x_item, k0, p.K, t);  // (L1) in flight during the wait
    cp_async_wait<S - 2>();                         // this item's group has landed (for this lane's copies) ...
    __syncwarp();  // ... and every lane's; the slot refilled next was read by all lanes last item
    issue();
    if (live) tile_mma<FMT, T, MT>(acc, slot, xt, g, t);
    slot = slot + F::kStageBytes == ring + F::kRingBytes ? ring : slot + F::kStageBytes;
    k0 += p.warps_k * kTileCodes;
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) x_item[mt] += p.warps_k * kTileCodes;
    if (++step != steps) continue;

    // The row tile's last step: the K-split warps' sums meet in shared memory, added in warp order.
    const int row0 = (tile * p.warps_n + wn) * 16;
    float sum[MT][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        sum[mt][i] = acc[0][mt][i];
#pragma unroll
        for (int c = 1; c < C; ++c) sum[mt][i] += acc[c][mt][i];
      }
    if (p.warps_k > 1) reduce_k_split<MT>(sum, red, warp, wn, wk, p.warps_n, p.warps_k, lane);
    if (wk == 0) {
      T* out = static_cast<T*>(p.out);
      const T* bias = static_cast<const T*>(p.bias);
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const int row = row0 + g + (i >= 2 ? 8 : 0), token = mt * 8 + 2 * t + (i & 1);
          if (row >= p.N || token >= p.M) continue;
          float v = sum[mt][i] * p.post_scale * __ldg(p.w_scale + row);
          if (bias) v += to_float(bias[row]);
          out[static_cast<size_t>(token) * p.N + row] = from_float<T>(v);
        }
    }
#pragma unroll
    for (int c = 0; c < C; ++c)
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int i = 0; i < 4; ++i) acc[c][mt][i] = 0.0f;
    step = 0;
    k0 = wk * kTileCodes;
    x_rows();
    tile += gridDim.x;
  }
  cp_async_wait<0>();  // no copy outlives the CTA's shared memory
}

struct Config {
  const char* name;
  int warps_n, warps_k;
};
#define LOWBIT_FLOAT_WEIGHT_GEMV_ROW(I, NAME, WN, WK) {NAME, WN, WK},
constexpr Config kConfigs[] = {LOWBIT_FLOAT_WEIGHT_GEMV_CONFIGS(LOWBIT_FLOAT_WEIGHT_GEMV_ROW)};
#undef LOWBIT_FLOAT_WEIGHT_GEMV_ROW
constexpr int kNumConfigs = sizeof(kConfigs) / sizeof(kConfigs[0]);
static_assert(kNumConfigs > 0);
constexpr bool configs_fit_launch_bounds() {
  for (const Config& c : kConfigs)
    if (c.warps_n * c.warps_k > kMaxWarps) return false;
  return true;
}
static_assert(configs_fit_launch_bounds(), "a config has more warps than the kernel's launch bounds allow");

template <int FMT, class T, int MT>
int launch(Problem const& q, const Config& c) {
  using F = FormatTraits<FMT>;
  // fp16: the decoded fields are the code's value times 2^(bias - 15) (fp8 converts in hardware, exactly).
  constexpr float post = fpx_post_scale<FMT, T>();
  const Params p{q.x, static_cast<const uint8_t*>(q.w),    q.w_scale, q.bias,    q.out, q.M, q.N,
                 q.K, (q.K + kTileCodes - 1) / kTileCodes, c.warps_n, c.warps_k, post};
  const int warps = c.warps_n * c.warps_k, threads = 32 * warps;
  const size_t red_bytes = c.warps_k > 1 ? static_cast<size_t>(threads) * MT * 4 * sizeof(float) : 0;
  const size_t smem = static_cast<size_t>(warps) * F::kRingBytes + red_bytes;
  auto kernel = float_weight_gemv_kernel<FMT, T, MT>;
  if (smem > 48 * 1024) {  // opt in above the default limit (on the current device)
    const cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    if (err != cudaSuccess) return from_cuda(err);
  }
  const int row_tiles = (q.N + 16 * c.warps_n - 1) / (16 * c.warps_n);
  const int ctas = std::min(row_tiles, resident_ctas(reinterpret_cast<const void*>(kernel), threads, smem));
  kernel<<<ctas, threads, smem, q.stream>>>(p);
  return last_launch_status();
}

template <int FMT, class T>
int launch_m(Problem const& p, const Config& c) {
  return p.M <= 8 ? launch<FMT, T, 1>(p, c) : launch<FMT, T, 2>(p, c);
}

template <class T>
int launch_format(Problem const& p, const Config& c) {
  switch (p.format) {
    case kE4M3:
      return launch_m<kE4M3, T>(p, c);
    case kE3M2:
      return launch_m<kE3M2, T>(p, c);
    case kE2M3:
      return launch_m<kE2M3, T>(p, c);
    case kE2M1:
      return launch_m<kE2M1, T>(p, c);
    default:
      return kInvalidArgument;
  }
}

}  // namespace
}  // namespace lowbit::float_weight_gemv

LOWBIT_API int lowbit_float_weight_gemv_num_configs() { return lowbit::float_weight_gemv::kNumConfigs; }

LOWBIT_API const char* lowbit_float_weight_gemv_config_name(int config) {
  using lowbit::float_weight_gemv::kConfigs;
  return config >= 0 && config < lowbit::float_weight_gemv::kNumConfigs ? kConfigs[config].name : nullptr;
}

LOWBIT_API int lowbit_float_weight_gemv(int config, int format, int dtype, const void* x, const void* w,
                                        const float* w_scale, const void* bias, void* out, int M, int N, int K,
                                        cudaStream_t stream) {
  namespace fw = lowbit::float_weight_gemv;
  const fw::Problem p{format, x, w, w_scale, bias, out, M, N, K, stream};
  if (config < 0 || config >= fw::kNumConfigs || !fw::problem_ok(p)) return lowbit::kInvalidArgument;
  const fw::Config& c = fw::kConfigs[config];
  if (dtype == lowbit::kF16) return fw::launch_format<__half>(p, c);
  if (dtype == lowbit::kBF16) return fw::launch_format<__nv_bfloat16>(p, c);
  return lowbit::kInvalidArgument;
}
