"""Which kernel runs ``lowbit::s8s4_linear`` on CUDA: one data table, first available match wins.

Each row of :data:`DISPATCH_TABLE` names a backend and one of its tile configs, and the GPU architecture family,
M bucket (rows of the input), scale kind and shape class it applies to. A row is taken when all its given fields
match and its backend can run the shape: CUTLASS rows need per-channel scales, a supported arch and alignment
(``cutlass_s8s4_supported``) and a library that builds and loads (``library_available``: when it cannot, one
warning per process and the CUTLASS rows are skipped). The Triton rows at the end take every shape the op accepts,
so some row always matches. ``docs/w4a8.md`` shows this table with the measurements behind it.

For benchmarking, ``_backend=`` (or the environment variable ``LOWBIT_S8S4_BACKEND``) forces one backend, and
``_config=`` one tile config of it; a forced backend that cannot take the shape raises instead of falling back.

Traced calls (``torch.compile``, ``torch.export``, AOTInductor): the Triton backends launch through ``wrap_triton``
and the CUTLASS ones become ``lowbit::s8s4_gemm_cutlass`` / ``lowbit::s8s4_group_mult_gemm_cutlass`` /
``lowbit::s8s8_groupwise_gemm_cutlass`` nodes (``lowbit_flex/ops/cutlass_gemm.py``), which a process without
lowbit_flex's Python can serve. With a symbolic row count (a dynamic batch) the table is walked with the example's
M (its size hint) over the rows whose kernel takes any M (:func:`takes_any_m`), so the graph holds no guard on M:
the decode-only kernels need a static M.
"""

from __future__ import annotations

import enum
import functools
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch

from lowbit_flex._checks import dtype_name
from lowbit_flex.kernels.arch import rows_hint, traced


class Arch(enum.Enum):
    SM80 = "sm80"  # Ampere and Ada (sm_80, sm_86, sm_89): mma.sync
    SM90 = "sm90"  # Hopper: WGMMA
    OTHER = "other"


class ScaleKind(enum.Enum):
    PER_CHANNEL = "per_channel"
    GROUPWISE = "groupwise"


class Backend(enum.Enum):
    # kernels/s8s4_gemv.py: M <= 4, both scale kinds, dp4a on CUDA cores; can quantize a float x itself
    TRITON_GEMV = "triton_gemv"
    # kernels/s8s4_decode.py: M <= 16, both scale kinds; it can also quantize a float x itself (Rule.fuse_quant)
    TRITON_DECODE = "triton_decode"
    # kernels/w4a8_gemv_cuda.py (csrc/w4a8_gemv): M <= 16, per channel or groups of 128s, int8 tensor cores from
    # registers; quantizes a float x itself where it fits in shared memory (M <= 8)
    CUDA_GEMV = "cuda_gemv"
    TRITON = "triton"  # kernels/s8s4_linear.py: every shape, both scale kinds
    # kernels/s8s4_unpacked_gemm.py: every shape, both scale kinds; unpacks the weight to int8 per call (large M)
    TRITON_UNPACKED = "triton_unpacked"
    # the same, for group-wise scales given also as multipliers (<= 16) of a channel scale: the unpack multiplies
    # each code by its multiplier (exact in int8), then the per-channel main loop runs
    TRITON_UNPACKED_MULT = "triton_unpacked_mult"
    CUTLASS_SM80 = "cutlass_sm80"  # the CUTLASS 2.x mixed-input family (runs on sm_80 and sm_90)
    CUTLASS_SM90 = "cutlass_sm90"  # the CUTLASS 3.x WGMMA family (sm_90a only)
    # kernels/s8s8_groupwise_cutlass.py: group-wise scales only, sm_90a only; unpacks the weight to int8 per call,
    # then a CUTLASS WGMMA kernel promoting each group's int32 dot into fp32 (a config takes some group sizes).
    CUTLASS_SM90_GROUPWISE = "cutlass_sm90_groupwise"
    # kernels/s8s4_cutlass.py s8s4_group_mult_cutlass: group-wise scales given also as int8 multipliers (<= 16) of a
    # channel scale (the op's weight_group_mult / weight_channel_scale), sm_90a only: the per-channel WGMMA kernel
    # multiplying each int4 code by its multiplier on the upcast; groups of 128s.
    CUTLASS_SM90_MULT = "cutlass_sm90_mult"


_CUTLASS_FAMILY = {Backend.CUTLASS_SM80: "sm80", Backend.CUTLASS_SM90: "sm90"}
# The backends that read the group scales' integer multipliers (the call must pass them).
_NEEDS_MULT = (Backend.TRITON_UNPACKED_MULT, Backend.CUTLASS_SM90_MULT)


@dataclass(frozen=True)
class Rule:
    backend: Backend
    config: str  # a config name of that backend (DECODE_CONFIGS / TRITON_CONFIGS / CUTLASS_CONFIGS[family])
    arch: Arch | None = None  # None: any
    scale: ScaleKind | None = None
    max_m: int | None = None  # rule applies when M <= max_m
    # True: only when N > K (many output channels, short reduction); False: only when K > N (a deep reduction).
    wide: bool | None = None
    min_mn: int | None = None  # rule applies when M * N >= min_mn (enough output tiles for a wider tile)
    max_nk: int | None = None  # rule applies when N * K <= max_nk (a layer too small to fill the next row's grid)
    min_k: int | None = None  # rule applies when K >= min_k (a reduction deep enough to split)
    # lowbit::w4a8_linear only (float input): quantize x inside the decode kernel (True) or with the quantizer
    # kernel first (False, measured faster everywhere): fusing saves a launch but every program re-reads its full
    # x rows for the amax.
    fuse_quant: bool = False
    # lowbit::w4a8_linear only (float input), the CUDA GEMV: quantize first at any M, and launch the GEMV as the
    # quantizer kernel's programmatic dependent (sm_90): its launch overlaps the quantization instead of following it.
    programmatic: bool = False
    # only when the call passes the group scales' integer multipliers too (weight_group_mult, weight_channel_scale)
    needs_mult: bool = False


_PC, _GW, _SM80, _SM90 = ScaleKind.PER_CHANNEL, ScaleKind.GROUPWISE, Arch.SM80, Arch.SM90
_MULT = Backend.CUTLASS_SM90_MULT

# Measured on an H200 (benchmarks/bench_s8s4_linear.py, 2026-11-22; docs/w4a8.md and
# docs/measurements/h200_run5_s8s4_all_configs.md time every backend and tile). CUTLASS takes per-channel scales
# only. Decode-sized M: the sm90 warp-specialised 16-row tile wins when N > K (2.1x bf16 at K=4096, N=14336), the
# sm80 16-row tile when K >= N (1.3-1.4x). M <= 64: 128-row cooperative WGMMA tiles for wide layers, the sm80
# 32-row tile otherwise. Larger M: sm90 cooperative WGMMA, 256x128 from M > 512 (1.7-1.9x bf16, 1.4-1.5x
# torch._int_mm at M >= 1024). Ampere (sm_80) is unmeasured: its large-M rows are the CUTLASS defaults
# (128x128 up to M = 2048, then 128x256). Triton (group-wise scales, and every shape when CUTLASS is unavailable):
# a split-K GEMV tile for decode; on Hopper the swap-AB mid tile (its unpacked weight feeds WGMMA from registers) up
# to M = 128; from there the kernel that unpacks the weight to int8 first (s8s4_unpacked_gemm.py). H200 runs of
# 2026-12-01 (benchmarks/drive_large_m.py in docs/measurements/h200_run12_w4a8_unpacked.md), kernel alone x bf16
# torch.mm: group 128 at M = 256-4096 0.46-0.80x with the 64x128 4-warp 3-stage tile (two programs per SM overlap
# one's MMA with the other's per-group rescale), against 0.26-0.35x for the in-register kernel's mid/large tiles;
# per channel (Triton only where CUTLASS is unavailable) 0.74-1.73x with the 128x128 8-warp 3-stage tile against
# 0.21-0.58x. Below M = 256 unmeasured: the mid tiles keep M <= 128. A 32x128x128 split-K tile was removed after
# wrong results at M = 77 on the GPU.
DISPATCH_TABLE: tuple[Rule, ...] = (
    # Decode on Hopper, M <= 8: the CUDA tensor-core GEMV (csrc/w4a8_gemv; K % 128, groups of 128s), quantizing x
    # itself at M = 1 and after the quantizer kernel above (quantizing in every CTA lost there: 1.1-1.9x vs
    # 1.7-2.2x at M = 4). H200, 2026-12-02 (docs/measurements/h200_run23_w4a8_cuda_gemv.md), CUDA graphs, x bf16,
    # geometric mean over the shapes of each class: M = 1 wide (N > K) 2n x 4k warps 2.43x, deep and square 2n x 8k
    # 2.24x / 2.10x; M = 4 wide 4n x 2k with L2 prefetch 1.99x, otherwise 1n x 8k 1.85x. Against the Triton rows
    # below, same shapes, same day: M = 1 1.80-2.63x vs 1.83-2.59x (wins on 4 of 5), M = 4 1.67-2.23x vs
    # 1.18-1.99x. At M = 16 it lost on 3 of 5 shapes (1.54-1.81x vs 1.18-2.04x): the Triton rows kept M = 9..16.
    # Since each CTA stages x in shared memory (H200, 2026-12-04, docs/measurements/h200_run46_w4a8_stage_x.md,
    # whole layers after the quantizer): M = 2..8 2n x 4k warps, the best or within 3 % of it on every shape at M = 4
    # and 8 (1.55-2.40x); M = 9..16 on layers of N * K <= 2**25 (4096²) 1n x 8k warps, 1.47x / 1.43x g128 against
    # the Triton row's 1.16x / 1.05x, while on larger layers the Triton row still won or tied (1.70-2.00x vs
    # 1.60-1.98x). Unmeasured on Ampere: sm_80 keeps the Triton rows.
    # Decode, either scale kind. M = 1: the dp4a GEMV quantizing x itself, one launch per layer. H200 runs of
    # 2026-12-01 (CUDA graphs, weights rotated past L2; docs/measurements/h200_run10_w4a8_gemv.md): 4x16x1024 was
    # best or within noise of the best on 4096², 4096×14336 and 8192² (per channel 1.80-2.00 / 2.30-2.50 /
    # 2.54-2.72x bf16, g128 1.78 / 2.00 / 2.20x), the 8-row 2048-step tile on the deep 14336×4096 (2.14 vs 1.91x
    # per channel, 1.73 vs 1.65x g128); quantizing first (a second launch) lost to fusing at M = 1 on 7 of 8 rows.
    # At M = 4 the dp4a GEMV lost to the tensor-core GEMV on 3 of 4 shapes (per channel 1.44-1.56 vs 1.69-1.98x)
    # and its fused form to both (0.5-1.0x): M = 2..16 takes the tensor-core GEMV after the quantizer, whose
    # fused form lost everywhere (0.56-0.93x vs 1.01-1.93x at M = 1 in the first run). The 64-wide tile beat the
    # 128-wide one at M = 16 per-channel on 3 of 4 shapes (1.70-1.99x vs 1.46-1.63x bf16; 4096²: 1.17 vs 1.19)
    # and was even for g128. docs/w4a8.md has the tables.
    # H100, session 62 (docs/measurements/h100_run62_w4a8_decode_rows.md): every CUDA config and both Triton decode
    # tiles timed as whole layers in one call (CUDA graphs) picked these rows; a second call timed them against the
    # rows they replace, in one process. The configs with an L2 prefetch two steps ahead (pf2) or more warps along N
    # won where the grid is small, and at M = 9..16 the CUDA GEMV (x staged in shared memory since run 46) now beats
    # the Triton decode tile on most larger layers. New rows against the old, per channel / g128:
    # - M = 1: wide 4n x 4k 3.10 / 2.90x against 2.94 / 2.86x; 4096² 2n x 4k pf2 2.43 / 2.40x against 2.22 / 2.30x;
    #   8192² per channel 4n x 4k pf2 3.25x against 2.96x (g128 kept, 3.09x); deep kept (2.91 / 3.05x).
    # - M = 2..8: 2n x 4k pf2 on 4096² (M = 4: 2.01 / 1.94x against 1.93 / 1.85x) and per channel on deep layers
    #   (M = 4: 2.50x against 2.38x); elsewhere kept.
    # - M = 9..16: per channel 2n x 4k pf2 on 4096² (1.84x against 1.72x) and 4n x 2k pf2 on 8192² (2.53x against the
    #   Triton tile's 2.28x; on wide and deep layers the Triton tile kept: 2.51 vs 2.43x, 2.05 vs 2.02x in the first
    #   call); g128 on larger layers 2.05 / 1.82 / 2.19x (wide 2n x 4k, deep 1n x 8k, square 4n x 4k) against the
    #   Triton tile's 1.86 / 1.70 / 1.78x (the wide layer's integer-multiplier row stays ahead of it, 2.14x).
    # - M = 1, H200 session 74 (docs/measurements/h200_run74_w4a8_quantizer_pdl.md), whole layers in one process:
    #   quantizing first, with the GEMV as the quantizer's programmatic dependent, beat the GEMV quantizing x itself
    #   on deep layers (1n x 8k: 2.64 / 2.59x per channel / g128 against 2.27 / 2.28x) and on 8192² (2n x 4k:
    #   2.80 / 2.75x against 2.60 / 2.66x), and lost or tied on 4096² and wide layers, which keep their fused rows.
    #   Without the programmatic launch, quantizing first was 3-6 % slower than with it on every layer. H100 run 77
    #   (docs/measurements/h100_run77_w4a8_one_call_quantizer.md), both launches from one foreign call: 2.7-5.5 %
    #   faster than the fused rows per channel, 8192² g128 2.2 % slower (1 % faster in run 74: one rule kept).
    Rule(Backend.CUDA_GEMV, "mma_n4k4_pf0", arch=_SM90, max_m=1, wide=True, fuse_quant=True),
    Rule(Backend.CUDA_GEMV, "mma_n1k8_pf0", arch=_SM90, max_m=1, wide=False, programmatic=True),
    Rule(Backend.CUDA_GEMV, "mma_n2k4_pf2", arch=_SM90, max_m=1, max_nk=2**25, fuse_quant=True),
    Rule(Backend.CUDA_GEMV, "mma_n2k4_pf0", arch=_SM90, max_m=1, programmatic=True),
    Rule(Backend.CUDA_GEMV, "mma_n2k4_pf2", arch=_SM90, max_m=8, max_nk=2**25),
    Rule(Backend.CUDA_GEMV, "mma_n2k4_pf2", arch=_SM90, scale=_PC, max_m=8, wide=False),
    Rule(Backend.CUDA_GEMV, "mma_n2k4_pf0", arch=_SM90, max_m=8),
    Rule(Backend.CUDA_GEMV, "mma_n2k4_pf2", arch=_SM90, scale=_PC, max_m=16, max_nk=2**25),
    Rule(Backend.CUDA_GEMV, "mma_n1k8_pf0", arch=_SM90, max_m=16, max_nk=2**25),
    # M = 9..16 on deep layers (K > N), either scale kind: 4n x 2k warps with K split across a cluster of two CTAs
    # (csrc/w4a8_gemv: 64-row tiles fill the GPU, each CTA stages its half of x's columns). H100, session 71
    # (docs/measurements/h100_run71_w4a8_split_k_cluster.md), whole layers at 14336 x 4096: per channel 2.14x against
    # the Triton tile's 2.06x and the best unsplit config's 2.03x; g128 1.94x against 1n x 8k's 1.88x.
    Rule(Backend.CUDA_GEMV, "mma_n4k2_s2_pf2", arch=_SM90, max_m=16, wide=False),
    Rule(Backend.TRITON_GEMV, "dp4a_4x8x2048", max_m=1, wide=False, fuse_quant=True),
    Rule(Backend.TRITON_GEMV, "dp4a_4x16x1024", max_m=1, fuse_quant=True),
    Rule(Backend.TRITON_DECODE, "dot_16x64x256", scale=_PC, max_m=16, wide=True),
    Rule(Backend.TRITON_DECODE, "dot_16x64x256", scale=_PC, max_m=16, wide=False),
    Rule(Backend.CUDA_GEMV, "mma_n4k2_pf2", arch=_SM90, scale=_PC, max_m=16),
    Rule(Backend.TRITON_DECODE, "dot_16x64x256", scale=_PC, max_m=16),
    # Group-wise scales that come with their integer multipliers (<= 16) on Hopper: the per-channel WGMMA kernels
    # multiplying each int4 code by its group's multiplier on the upcast (s8s4_group_mult_cutlass). H100, run 54
    # (docs/measurements/h100_run54_w4a8_group_mult_cutlass.md), kernel alone x bf16 torch.mm: each mult tile runs
    # 0.92-1.03x the per-channel kernel of the same tile, and beats every other group-wise kernel from M = 17: at
    # M = 32 1.01-1.87x (16-row tile) against 0.06-0.20x for the Triton mid tile; M = 64 1.01-2.05x vs 0.26-0.99x;
    # M = 256 0.95-1.80x vs 0.56-0.73x (Triton's multiplying unpack); M = 1024 / 4096 1.59-1.81x vs 1.22-1.51x.
    # M = 9..16: the 16-row tile where N > K (2.63-2.75x vs 2.33-2.35x for the Triton decode tile; on the other
    # shapes 1.08-1.86x vs 2.22-2.37x) until session 68, whose CUDA GEMV rows (next) beat it. M = 17..64: the
    # 128-row tile on wide layers (2.05x vs 0.81x at M = 64; 1.90x vs 1.56x at M = 32, in a second call) and where
    # M * N >= 2**19 (8192² at M = 64: 1.31x vs 0.97x), else the 16-row tile (1.01-1.12x vs 0.72-0.77x). M = 65..512:
    # the 128-row tile (M = 128: 0.76-2.11x vs 0.59-1.48x), the 256-row one on wide layers from M * N >= 2**21
    # (M = 256, N = 14336: 1.80x vs 1.30x); from M = 513 the 256-row tile (M = 1024: 1.59-1.81x vs 1.26-1.40x).
    # Group-wise at M = 9..16 (H100, session 68, docs/measurements/h100_run68_w4a8_groupwise_scales.md, whole layers,
    # two processes): since the GEMV's group scales take one load per lane and step, wide and larger square layers
    # run 2n x 4k (wide 2.38-2.40x, ahead of the multiplier row's 2.20x, which therefore no longer precedes it;
    # 8192² 2.46x against 4n x 4k's 2.34x); deep layers took 1n x 8k (1.93x) until session 71's split rows above.
    Rule(Backend.CUDA_GEMV, "mma_n2k4_pf0", arch=_SM90, scale=_GW, max_m=16),
    Rule(Backend.TRITON_DECODE, "dot_16x128x256", max_m=16),
    Rule(_MULT, "128x128x128_coop_mult", arch=_SM90, scale=_GW, max_m=64, wide=True, needs_mult=True),
    Rule(_MULT, "128x128x128_coop_mult", arch=_SM90, scale=_GW, max_m=64, min_mn=2**19, needs_mult=True),
    Rule(_MULT, "16x128x128_ws_mult", arch=_SM90, scale=_GW, max_m=64, needs_mult=True),
    Rule(_MULT, "256x128x128_coop_mult", arch=_SM90, scale=_GW, max_m=512, wide=True, min_mn=2**21, needs_mult=True),
    Rule(_MULT, "128x128x128_coop_mult", arch=_SM90, scale=_GW, max_m=512, needs_mult=True),
    Rule(_MULT, "256x128x128_coop_mult", arch=_SM90, scale=_GW, needs_mult=True),
    Rule(Backend.CUTLASS_SM90, "16x128x128_ws", arch=_SM90, scale=_PC, max_m=16, wide=True),
    Rule(Backend.CUTLASS_SM80, "16x128x128_s4", scale=_PC, max_m=16),
    Rule(Backend.CUTLASS_SM90, "128x128x128_coop", arch=_SM90, scale=_PC, max_m=64, wide=True),
    Rule(Backend.CUTLASS_SM80, "32x128x128_s4", scale=_PC, max_m=64),
    Rule(Backend.CUTLASS_SM90, "128x128x128_coop", arch=_SM90, scale=_PC, max_m=512),
    Rule(Backend.CUTLASS_SM90, "256x128x128_coop", arch=_SM90, scale=_PC),
    Rule(Backend.CUTLASS_SM80, "128x128x64_s4", arch=_SM80, scale=_PC, max_m=2048),
    Rule(Backend.CUTLASS_SM80, "128x256x64_s3", arch=_SM80, scale=_PC),
    Rule(Backend.TRITON, "gemv_16x64x256_splitk", max_m=16),
    # Float group scales at M = 17..128 on Hopper (H100, run 54, kernel alone x bf16 torch.mm;
    # docs/measurements/h100_run54_w4a8_group_mult_cutlass.md): both in-register Triton tiles collapse with group
    # scales (mid_swap 0.06-0.35x at M = 32-128 on three of four shapes, mid 0.06-0.29x: likely a starved grid, as
    # these tiles do not split K: cdiv(M, 64) * N / 128 programs, 32 on N = 4096, for 132 SMs), while
    # the unpack-first 64x64 tile runs 0.53-0.75x, nearly flat in M (the unpack dominates). The swap tile keeps
    # wide layers from M * N >= 2**19 (4096 x 14336 at M = 64: 1.00x vs 0.75x; M = 128: 0.62x vs 0.57x). The
    # multiplier rows above run 0.75-2.13x there. H100, run 55: most of the collapse below M = 64 was x read in
    # stride 2 (now de-interleaved from M = 17, kernels/s8s4_linear.py), and the tile's split-K form runs 0.82x /
    # 0.87x at M = 64 on the deep layers (K >= 8192: 14336 x 4096, 8192²) against 0.54x / 0.65x for the unpack-first
    # tile (it lost on 4096² and to the swap tile on wide layers, and at M = 128 tied or lost): it takes M <= 64
    # there (M = 17..63 run the same grid and work as M = 64 now that x is de-interleaved; not timed apart).
    # H100, run 56, with x de-interleaved: the swap tile runs 0.98-1.01x on 4096 x 14336 at M = 17, 32 and 48
    # (the unpack-first tile 0.74-0.76x), so wide layers take it from M * N >= 2**17 (was 2**19: M >= 17 on
    # N = 14336; a dynamic batch traced at a decode-sized hint keeps the unpack-first tile, as measured in run 54);
    # on 4096² the split-K form and the unpack-first tile tie (0.56-0.60x vs 0.58-0.60x at M = 17..64), which keeps
    # the latter.
    Rule(Backend.TRITON, "mid_swap_64x128x128", arch=_SM90, scale=_GW, max_m=128, wide=True, min_mn=2**17),
    Rule(Backend.TRITON, "mid_swap_64x128x128_splitk", arch=_SM90, scale=_GW, max_m=64, min_k=8192),
    Rule(Backend.TRITON_UNPACKED, "s8s8_64x64x128_w4", arch=_SM90, scale=_GW, max_m=128),
    Rule(Backend.TRITON, "mid_swap_64x128x128", arch=_SM90, max_m=128),
    Rule(Backend.TRITON, "mid_64x128x128", max_m=128),
    # Group-wise from M = 513 on Hopper: the CUTLASS kernel that promotes each group's int32 WGMMA result into fp32
    # (weight unpacked per call, as for the Triton rows). H200, 2026-12-01, whole GEMM with the unpack x bf16
    # torch.mm (docs/measurements/h200_run14_w4a8_groupwise_cutlass.md): the ping-pong 128x128 tile (two int32
    # accumulators: group g+1's WGMMAs run while group g is promoted) 0.95-0.99x at M = 1024 and 1.05-1.07x at
    # M = 4096, against 0.82-0.97x / 0.91-1.03x for the first two tiles and 0.73-0.83x for the Triton tile; the
    # 128x192 tile stays ahead on the widest problem (4096 x 14336 at M = 4096: 1.11 vs 1.07x), so it takes
    # M * N >= 2**25. At M = 256 the CUTLASS kernel lost on 4096² (0.50 vs 0.69x): Triton keeps M <= 512.
    # Configs for groups 32 and 64 exist (forced, exact) but are unmeasured: those groups stay on Triton.
    # Group-wise scales that come with their integer multipliers (<= 16), from M = 129 where the CUTLASS rows above
    # cannot run (Ampere, no library): the unpack pass multiplies each code by its multiplier, then the per-channel
    # main loop (no per-group rescale). H100, run 54: 1.22-1.51x bf16 at M = 1024 / 4096 against 0.91-1.05x for
    # the float group scales' rows below.
    Rule(Backend.TRITON_UNPACKED_MULT, "s8s8_128x128x128_w8_s3", scale=_GW, needs_mult=True),
    Rule(Backend.TRITON_UNPACKED, "s8s8_64x128x128_w4_s3", scale=_GW, max_m=512),
    Rule(Backend.CUTLASS_SM90_GROUPWISE, "128x192x128_g128", arch=_SM90, scale=_GW, min_mn=2**25),
    Rule(Backend.CUTLASS_SM90_GROUPWISE, "128x128x128_g128_pp", arch=_SM90, scale=_GW),
    Rule(Backend.TRITON_UNPACKED, "s8s8_64x128x128_w4_s3", scale=_GW),
    Rule(Backend.TRITON_UNPACKED, "s8s8_128x128x128_w8_s3"),
)

_ENV_BACKEND = "LOWBIT_S8S4_BACKEND"


@functools.cache
def _cuda_arch(index: int) -> Arch:
    return {8: Arch.SM80, 9: Arch.SM90}.get(torch.cuda.get_device_capability(index)[0], Arch.OTHER)


def arch_of(device: torch.device) -> Arch:
    if device.type != "cuda":
        return Arch.OTHER
    return _cuda_arch(device.index if device.index is not None else torch.cuda.current_device())


def scale_kind_of(weight_scale: torch.Tensor) -> ScaleKind:
    # (N, 1) is one group spanning K: the same math as per-channel.
    return ScaleKind.GROUPWISE if weight_scale.dim() == 2 and weight_scale.shape[1] > 1 else ScaleKind.PER_CHANNEL


def available(
    backend: Backend, arch: Arch, scale: ScaleKind, M: int, N: int, K: int, group: int | None = None,
    config: str | None = None,
) -> bool:  # fmt: skip
    """Whether ``backend`` (with ``config``, where given) can run this problem here (CUTLASS: also whether its
    library builds and loads). ``group``: the scale group size, which only the group-wise CUTLASS backend needs (and
    requires): each of its configs takes some group sizes."""
    if backend is Backend.TRITON_GEMV:
        from lowbit_flex.kernels.s8s4_gemv import gemv_supports

        return gemv_supports(M, K, scale is ScaleKind.GROUPWISE)
    if backend is Backend.TRITON_DECODE:
        from lowbit_flex.kernels.s8s4_decode import DECODE_MAX_M

        return 1 <= M <= DECODE_MAX_M
    if backend in (Backend.TRITON, Backend.TRITON_UNPACKED):
        return True
    if backend is Backend.TRITON_UNPACKED_MULT:
        return scale is ScaleKind.GROUPWISE and group is not None
    if backend is Backend.CUDA_GEMV:
        if arch is Arch.OTHER:
            return False
        from lowbit_flex.kernels.s8s4_cutlass import library_available
        from lowbit_flex.kernels.w4a8_gemv_cuda import gemv_cuda_supports

        return gemv_cuda_supports(M, K, group if scale is ScaleKind.GROUPWISE else None) and library_available()
    if backend is Backend.CUTLASS_SM90_MULT:
        if scale is not ScaleKind.GROUPWISE or arch is not Arch.SM90 or group is None:
            return False
        from lowbit_flex.kernels.s8s4_cutlass import group_mult_supported, library_available

        return group_mult_supported(M, N, K, group) and library_available()
    if backend is Backend.CUTLASS_SM90_GROUPWISE:
        if scale is not ScaleKind.GROUPWISE or arch is not Arch.SM90 or group is None:
            return False
        from lowbit_flex.kernels.s8s4_cutlass import library_available
        from lowbit_flex.kernels.s8s8_groupwise_cutlass import GROUPWISE_CONFIGS, supported

        takes_group = config is None or group in GROUPWISE_CONFIGS[config]
        return takes_group and supported(M, N, K, group) and library_available()
    if scale is not ScaleKind.PER_CHANNEL or arch is Arch.OTHER:
        return False
    from lowbit_flex.kernels.s8s4_cutlass import cutlass_s8s4_supported, library_available

    return cutlass_s8s4_supported(_CUTLASS_FAMILY[backend], M, N, K) and library_available()


def takes_any_m(backend: Backend, config: object) -> bool:
    """Whether ``backend`` with ``config`` launches the same plan for every M (the grid aside), so a symbolic M can
    run it: the decode kernels take M <= 16 and size their split-K by M, as does the split-K Triton tile."""
    if backend in (Backend.TRITON_GEMV, Backend.TRITON_DECODE, Backend.CUDA_GEMV):
        return False
    if backend is Backend.TRITON:
        from lowbit_flex.kernels.s8s4_linear import TRITON_CONFIGS

        return not (TRITON_CONFIGS[config] if isinstance(config, str) else config).split_k
    return True


@functools.lru_cache(maxsize=4096)
def choose(
    arch: Arch, scale: ScaleKind, M: int, N: int, K: int, group: int | None = None, any_m: bool = False,
    has_mult: bool = False,
) -> Rule:  # fmt: skip
    """The first rule of :data:`DISPATCH_TABLE` that matches and whose backend is available (``group``: the scale
    group size of group-wise scales; ``any_m``: only rows whose kernel takes every M, for a symbolic M whose
    example value is ``M``; ``has_mult``: the call passes the group scales' integer multipliers too). Memoised per
    shape: the table walk (with an import and a library check) would otherwise run in front of every decode GEMM."""
    for rule in DISPATCH_TABLE:
        if (
            (not any_m or takes_any_m(rule.backend, rule.config))
            and (has_mult or not rule.needs_mult)
            and (rule.arch is None or rule.arch is arch)
            and (rule.scale is None or rule.scale is scale)
            and (rule.max_m is None or rule.max_m >= M)
            and (rule.wide is None or (N > K if rule.wide else K > N))
            and (rule.min_mn is None or rule.min_mn <= M * N)
            and (rule.max_nk is None or rule.max_nk >= N * K)
            and (rule.min_k is None or rule.min_k <= K)
            and available(rule.backend, arch, scale, M, N, K, group, rule.config)
        ):
            return rule
    raise AssertionError("DISPATCH_TABLE must end with rules every shape matches")


def group_of(weight_scale: torch.Tensor, K: int) -> int | None:
    """The scale group size of group-wise scales ``(N, K // group)``; None for per-channel scales."""
    return K // int(weight_scale.shape[1]) if scale_kind_of(weight_scale) is ScaleKind.GROUPWISE else None


def rule_for(
    device: torch.device, weight_scale: torch.Tensor, M: int | torch.SymInt, N: int, K: int, has_mult: bool = False
) -> Rule:
    """:func:`choose` for a problem on ``device`` with these weight scales (what the ops call); a symbolic ``M``
    picks by its example value among the kernels that take any M (:func:`rows_hint`)."""
    m, any_m = rows_hint(M)
    return choose(arch_of(device), scale_kind_of(weight_scale), m, N, K, group_of(weight_scale, K), any_m, has_mult)


def decode_launcher(backend: Backend, config: object) -> Callable | None:
    """The launcher of a decode-sized backend (``x, x_scale or None, w, w_scale, bias, out_dtype -> out``) with its
    tile config bound (a name or a config object); None for the GEMM backends. Shared by ``s8s4_linear`` and
    ``w4a8_linear``, which also passes a float x for the kernel to quantize."""
    if backend is Backend.TRITON_GEMV:
        from lowbit_flex.kernels.s8s4_gemv import GEMV_CONFIGS, s8s4_gemv_triton

        return functools.partial(s8s4_gemv_triton, config=GEMV_CONFIGS[config] if isinstance(config, str) else config)
    if backend is Backend.TRITON_DECODE:
        from lowbit_flex.kernels.s8s4_decode import DECODE_CONFIGS, s8s4_decode_triton

        return functools.partial(
            s8s4_decode_triton, config=DECODE_CONFIGS[config] if isinstance(config, str) else config
        )
    if backend is Backend.CUDA_GEMV:
        from lowbit_flex.kernels.w4a8_gemv_cuda import s8s4_gemv_cuda

        return functools.partial(s8s4_gemv_cuda, config=config)
    return None


def _default_config(backend: Backend, group: int | None) -> object:
    """The config a forced backend runs when ``_config`` is not given: its first row in the table, or (for the
    group-wise CUTLASS backend, whose rows take groups 128 and 256) its first config that takes the group."""
    if backend is Backend.CUTLASS_SM90_GROUPWISE:
        from lowbit_flex.kernels.s8s8_groupwise_cutlass import configs_for_group

        return configs_for_group(group)[0]
    return next(r.config for r in DISPATCH_TABLE if r.backend is backend)


def s8s4_linear_cuda(
    input: torch.Tensor,
    input_scale: torch.Tensor,
    weight: torch.Tensor,
    weight_scale: torch.Tensor,
    bias: torch.Tensor | None,
    out_dtype: torch.dtype,
    weight_group_mult: torch.Tensor | None = None,
    weight_channel_scale: torch.Tensor | None = None,
    *,
    _backend: Backend | str | None = None,
    _config: object = None,
) -> torch.Tensor:
    """Run the chosen backend on validated arguments (the op's checks ran). ``weight_group_mult`` (int8
    ``(K // group, N)``) and ``weight_channel_scale`` (``(N,)``), both or neither: group-wise ``weight_scale`` in the
    integer-multiplier format too, which the ``CUTLASS_SM90_MULT`` rows read. ``_backend`` / ``_config`` force a
    backend / tile config (a :class:`~lowbit_flex.kernels.s8s4_linear.TritonConfig` or a name in
    ``TRITON_CONFIGS``; a name in ``CUTLASS_CONFIGS[family]`` for CUTLASS) for benchmarks and tests."""
    # N and K come from the weight, static in any model: int() guards on them when dynamic shapes made them symbolic.
    K, N = int(input.shape[-1]), int(weight.shape[0])
    x = input.reshape(-1, K)
    M = x.shape[0]
    # The kernels read float32 scales and bias; these casts are no-ops for the usual float32 scales.
    xs = input_scale.reshape(M).float()
    ws = weight_scale.float()
    b = bias.float() if bias is not None else None
    arch, scale = arch_of(x.device), scale_kind_of(weight_scale)
    group = group_of(weight_scale, K)
    m, any_m = rows_hint(M)  # a symbolic M: its example value, and only kernels that take any M
    has_mult = weight_group_mult is not None
    forced = _backend or os.environ.get(_ENV_BACKEND)
    if forced:
        backend = Backend(forced)
        ok = available(backend, arch, scale, m, N, K, group) and (has_mult or backend not in _NEEDS_MULT)
        config = _config if _config is not None or not ok else _default_config(backend, group)
        if not ok or (any_m and not takes_any_m(backend, config)):
            shape = f"M={M}, N={N}, K={K}, group={group}"
            raise ValueError(f"_backend: {backend.value} cannot take {shape} ({scale.value}, {arch.value})")
    else:
        rule = choose(arch, scale, m, N, K, group, any_m, has_mult)
        backend, config = rule.backend, rule.config

    decode = decode_launcher(backend, config)
    if decode is not None:
        out = decode(x, xs, weight, ws, b, out_dtype)
    elif backend is Backend.TRITON:
        from lowbit_flex.kernels.s8s4_linear import TRITON_CONFIGS, s8s4_linear_triton

        cfg = TRITON_CONFIGS[config] if isinstance(config, str) else config
        out = s8s4_linear_triton(x, xs, weight, ws, b, out_dtype, cfg)
    elif backend is Backend.TRITON_UNPACKED:
        from lowbit_flex.kernels.s8s4_unpacked_gemm import UNPACKED_CONFIGS, s8s4_unpacked_gemm_triton

        cfg = UNPACKED_CONFIGS[config] if isinstance(config, str) else config
        out = s8s4_unpacked_gemm_triton(x, xs, weight, ws, b, out_dtype, cfg)
    elif backend is Backend.TRITON_UNPACKED_MULT:
        from lowbit_flex.kernels.s8s4_unpacked_gemm import UNPACKED_CONFIGS, s8s4_unpacked_gemm_triton

        cfg = UNPACKED_CONFIGS[config] if isinstance(config, str) else config
        channel = weight_channel_scale.float()
        out = s8s4_unpacked_gemm_triton(x, xs, weight, channel, b, out_dtype, cfg, w_group_mult=weight_group_mult)
    elif backend is Backend.CUTLASS_SM90_MULT:
        channel = weight_channel_scale.float()
        if traced(x):  # the op, which a process without lowbit_flex's Python can serve (ops/cutlass_gemm.py)
            name = dtype_name(out_dtype)
            out = torch.ops.lowbit.s8s4_group_mult_gemm_cutlass(
                x, xs, weight, channel, weight_group_mult, b, name, config
            )
        else:
            from lowbit_flex.kernels.s8s4_cutlass import s8s4_group_mult_cutlass

            out = s8s4_group_mult_cutlass(x, xs, weight, channel, weight_group_mult, b, out_dtype, config)
    elif backend is Backend.CUTLASS_SM90_GROUPWISE:
        from lowbit_flex.kernels.s8s4_unpacked_gemm import unpack_int4_triton

        w8 = unpack_int4_triton(weight)
        if traced(x):  # the op, which a process without lowbit_flex's Python can serve (ops/cutlass_gemm.py)
            out = torch.ops.lowbit.s8s8_groupwise_gemm_cutlass(x, xs, w8, ws, b, dtype_name(out_dtype), config)
        else:
            from lowbit_flex.kernels.s8s8_groupwise_cutlass import s8s8_groupwise_cutlass

            out = s8s8_groupwise_cutlass(x, xs, w8, ws, b, out_dtype, config)
    else:
        family = _CUTLASS_FAMILY[backend]
        if traced(x):
            out = torch.ops.lowbit.s8s4_gemm_cutlass(
                x, xs, weight, ws.reshape(N), b, dtype_name(out_dtype), family, config
            )
        else:
            from lowbit_flex.kernels.s8s4_cutlass import s8s4_linear_cutlass

            out = s8s4_linear_cutlass(x, xs, weight, ws.reshape(N), b, out_dtype, family, config)
    return out.view(*input.shape[:-1], N)
