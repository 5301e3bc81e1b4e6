// Tile configurations of the W4A8 GEMMs, one X-macro list per kernel family. The position in the list is the
// `config` index of the launchers; the names are the keys of lowbit_flex.kernels.s8s4_cutlass.CUTLASS_CONFIGS
// (tests/kernels/test_s8s4_cutlass.py checks that both agree). Names give the tile in the caller's (M, N, K).
#pragma once

// Ampere mixed-input kernel (mma.sync m16n8k32 s8, int4 upcast in registers), stream-K scheduled.
// X(index, name, tile_m, tile_n, tile_k, warp_m, warp_n, warp_k, stages)
// Small-M tiles put all warps along N so that a decode-sized M wastes no warp; stream-K spreads their few output
// tiles over every SM along K. Few configs on purpose: each costs ~13 s of nvcc CPU time per dtype and arch.
#define LOWBIT_S8S4_SM80_CONFIGS(X)                     \
  X(0, "16x128x128_s4", 16, 128, 128, 16, 32, 128, 4)   \
  X(1, "32x128x128_s4", 32, 128, 128, 32, 32, 128, 4)   \
  X(2, "128x128x64_s4", 128, 128, 64, 64, 64, 64, 4)    \
  X(3, "128x256x64_s3", 128, 256, 64, 64, 64, 64, 3)

// Hopper kernel (TMA + int8 WGMMA; the int4 weight is the register-sourced operand, upcast to int8). It computes
// out^T = W x^T, so its CUTLASS tile is (tile_n, tile_m, tile_k): tile_n is the WGMMA M (a multiple of 64 per
// consumer warp group), tile_m the WGMMA N (any multiple of 8, hence the small-M tile). ~28 s of nvcc CPU time
// per config and dtype.
// X(index, name, tile_m, tile_n, tile_k, kernel schedule, epilogue schedule)
#define LOWBIT_S8S4_SM90_CONFIGS(X)                                                                                \
  X(0, "16x128x128_ws", 16, 128, 128, KernelTmaWarpSpecialized, TmaWarpSpecialized)                               \
  X(1, "128x128x128_coop", 128, 128, 128, KernelTmaWarpSpecializedCooperative, TmaWarpSpecializedCooperative)     \
  X(2, "256x128x128_coop", 256, 128, 128, KernelTmaWarpSpecializedCooperative, TmaWarpSpecializedCooperative)

// The same Hopper kernel with integer group multipliers on the weight (QServe-style progressive group
// quantization, lowbit_flex.quant.quantize_int4_weight_group_mult with max_mult <= 16): the mixed-input collective's
// ConvertAndScale mode multiplies each int4 code by its group's multiplier on the int4 -> int8 upcast (exact:
// |code * mult| <= 8 * 16 = 128 stays in int8; four codes per multiply-add, s8s4_group_mult_upcast.cuh), so the MMA and its single int32 accumulator are the per-channel
// kernel's and the epilogue applies the per-channel float scale. The group is a multiple of tile_k (CUTLASS loads
// one multiplier column per K tile). The 16-row warp-specialized tile is the per-channel family's decode tile (M = 9..16
// on wide layers), for group-wise weights where the decode kernels' float group scales run slower. Same X(...) fields
// as LOWBIT_S8S4_SM90_CONFIGS.
#define LOWBIT_S8S4_SM90_MULT_CONFIGS(X)                                                                           \
  X(0, "128x128x128_coop_mult", 128, 128, 128, KernelTmaWarpSpecializedCooperative, TmaWarpSpecializedCooperative) \
  X(1, "256x128x128_coop_mult", 256, 128, 128, KernelTmaWarpSpecializedCooperative, TmaWarpSpecializedCooperative) \
  X(2, "16x128x128_ws_mult", 16, 128, 128, KernelTmaWarpSpecialized, TmaWarpSpecialized)
