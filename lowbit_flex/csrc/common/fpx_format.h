// The weight-format codes the float weight-only launchers take (lowbit_flex/kernels/float_weight_gemv_cuda.py
// FORMAT_CODE) and each format's field widths. Host- and device-usable, torch- and CUTLASS-free.
#pragma once

namespace lowbit {

enum FpxFormat : int { kE4M3 = 0, kE3M2 = 1, kE2M3 = 2, kE2M1 = 3 };

constexpr int kFpxTileCodes = 128;  // codes per row of a K tile (lowbit_flex/quant/fpx_tiles.py TILE_CODES)

template <int FMT>
struct FpxTraits {
  static constexpr int kEbits = FMT == kE4M3 ? 4 : FMT == kE3M2 ? 3 : 2;
  static constexpr int kMbits = FMT == kE4M3 || FMT == kE2M3 ? 3 : FMT == kE3M2 ? 2 : 1;
  static constexpr int kBits = 1 + kEbits + kMbits;
  static constexpr int kBias = (1 << (kEbits - 1)) - 1;
  static constexpr int kTileBytes = kFpxTileCodes * kBits / 8;  // one row's K tile (fp6: 16 hi words, 8 lo words)
};

}  // namespace lowbit
