// Tile configurations of the Hopper group-wise int8 GEMM. The position in the list is the launcher's `config`
// index; the names are the keys of lowbit_flex.kernels.s8s8_groupwise_cutlass.GROUPWISE_CONFIGS (a CPU test checks
// that both agree). Names give the tile in the caller's (M, N, K).
//
// Every config is a cooperative kernel (two consumer warp groups of 64 rows each on one tile, TMA producer warp,
// scales by cp.async from an auxiliary producer warp). Each consumer keeps two accumulators, the int32 WGMMA
// result of the running group and the fp32 sum it is promoted into, so a warp group's tile N costs N/2 registers
// per thread twice: N = 192 is the widest that fits the 232 registers of the cooperative kernel's consumers.
// The promotion cadence is a template parameter (k-blocks of 32 per group within the 128-deep K tile):
// 4 takes every group that is a multiple of 128 (the cadence across K tiles is a runtime count), 2 takes group 64,
// 1 takes group 32. ping_pong = 1 (names ending in _pp; cadence 4 only): a third accumulator, a second int32 one,
// so that a warp group issues group g+1's WGMMAs before promoting group g (GroupwiseMainloop::mma_ping_pong);
// three accumulators of N/2 registers per thread leave room for N <= 128 only (128x192 would need 3 x 96).
// ~30-40 s of nvcc CPU time per row and dtype.
// int_mult = 1 (names ending in _int): integer group multipliers (int32 in memory) promoted with one IMAD into an
// int32 sum, and a per-channel float scale in the epilogue (GroupwiseMainloop's IntegerScales); the same register
// budget as the float configs. Unmeasured: forced only.
// X(index, name, tile_m, tile_n, k_blocks_per_group, ping_pong, int_mult)
#define LOWBIT_S8S8G_SM90_CONFIGS(X)                  \
  X(0, "128x128x128_g128", 128, 128, 4, 0, 0)         \
  X(1, "128x192x128_g128", 128, 192, 4, 0, 0)         \
  X(2, "128x128x128_g64", 128, 128, 2, 0, 0)          \
  X(3, "128x128x128_g32", 128, 128, 1, 0, 0)          \
  X(4, "128x128x128_g128_pp", 128, 128, 4, 1, 0)      \
  X(5, "128x96x128_g128_pp", 128, 96, 4, 1, 0)        \
  X(6, "128x128x128_g128_pp_int", 128, 128, 4, 1, 1)  \
  X(7, "128x192x128_g128_int", 128, 192, 4, 0, 1)
