// Tile configurations of the Hopper fp8 weight-only GEMM. The position in the list is the `config` index of the
// launcher; the names are the keys of lowbit_flex.kernels.fp8_weight_gemm_cutlass.CONFIGS (a test checks both
// agree). Names give the tile in the caller's (M, N, K) and the tile scheduler.
//
// The kernel computes out^T = W x^T (the e4m3 weight must be WGMMA's register-sourced A operand, where the
// mixed-input collective converts it), so its CUTLASS tile is (tile_n, tile_m, tile_k): tile_n is the WGMMA M (64
// rows per consumer warpgroup: 128 with the cooperative schedule's two), tile_m the WGMMA N. tile_k 64: 128-byte
// rows of the 16-bit x, the widest TMA swizzle. Stream-K ("_sk") spreads the few output tiles of M = 64..256 over
// every SM along K (a 4096-wide layer has 32 tiles of 128 x 64 for 132 SMs).
// X(index, name, tile_m, tile_n, tile_k, kernel schedule, epilogue schedule, tile scheduler)
#pragma once

#define LOWBIT_FP8_WEIGHT_GEMM_SM90_CONFIGS(X)                                                                 \
  X(0, "64x128x64_coop_sk", 64, 128, 64, KernelTmaWarpSpecializedCooperative, TmaWarpSpecializedCooperative,   \
    StreamKScheduler)                                                                                          \
  X(1, "128x128x64_coop_sk", 128, 128, 64, KernelTmaWarpSpecializedCooperative, TmaWarpSpecializedCooperative, \
    StreamKScheduler)                                                                                          \
  X(2, "128x256x64_coop", 128, 256, 64, KernelTmaWarpSpecializedCooperative, TmaWarpSpecializedCooperative,    \
    PersistentScheduler)                                                                                       \
  X(3, "256x128x64_coop", 256, 128, 64, KernelTmaWarpSpecializedCooperative, TmaWarpSpecializedCooperative,    \
    PersistentScheduler)
