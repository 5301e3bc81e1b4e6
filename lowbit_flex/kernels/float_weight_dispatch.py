"""Which kernel runs a fp8 / fp6 / fp4 weight-only linear on CUDA, and its cached launch: one table by M and width.

:data:`DISPATCH_TABLE` rows name a backend and a config; the first row whose ``max_m`` and ``bits`` match wins
(the last row takes everything). ``docs/float_quantization.md`` shows the table with the measurements behind it.
The choice and the launch plan (grid, constexprs, split) are made once per (device, shape, dtypes) and cached, so
an eager decode step pays a dictionary lookup and one direct kernel launch (:class:`PlanLaunch`).

For benchmarks, ``backend=`` / ``config=`` force one path.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass
from typing import NamedTuple

import torch
import triton

from lowbit_flex.kernels.arch import (
    capability,
    has_fp8_mma,
    register_a_wgmma_pipelines,
    sm_count,
    triton_interpreting,
)
from lowbit_flex.kernels.common import (
    PlanLaunch,
    cached_plan,
    ensure_triton_allocator,
    reduce_split_k,
    split_k_blocks,
    split_k_reduce_plan,
    tma_base_aligned,
)
from lowbit_flex.kernels.float_weight_decode import dec_scale, planes_asm
from lowbit_flex.kernels.float_weight_dequant import (
    DEQUANT_BLOCK_N,
    DEQUANT_STEP_TILES,
    DEQUANT_WARPS,
    _float_weight_dequant_kernel,
)
from lowbit_flex.kernels.float_weight_gemv import GEMV_CONFIGS, GEMV_MAX_M, _float_weight_gemv_kernel
from lowbit_flex.kernels.float_weight_only_linear import DOT_CONFIGS, DotConfig, _float_weight_dot_kernel
from lowbit_flex.kernels.float_weight_tma import TMA_CONFIGS, TmaConfig, _float_weight_tma_kernel


class Backend(enum.Enum):
    CUDA_GEMV = "cuda_gemv"  # kernels/float_weight_gemv_cuda.py (csrc/float_weight_gemv): M <= 16, sm_90, mma.sync
    GEMV = "gemv"  # kernels/float_weight_gemv.py: M <= GEMV_MAX_M, CUDA-core FMA
    DOT = "dot"  # kernels/float_weight_only_linear.py: any M, tensor cores, decode fused
    TMA = "tma"  # kernels/float_weight_tma.py: sm_90, TMA-fed tensor-core tiles, decode fused
    GLUON = "gluon"  # kernels/float_weight_sm90.py: sm_90, fp4 / fp6, decoded tile in shared memory, async WGMMAs
    DEQUANT_MM = "dequant_mm"  # kernels/float_weight_dequant.py, then cuBLAS (torch.addmm)
    CUTLASS_GEMM = "cutlass_gemm"  # kernels/fp8_weight_gemm_cutlass.py (csrc/fp8_weight_gemm): fp8, sm_90, any M
    # kernels/float_weight_gemm_cuda.py (csrc/float_weight_gemm): every format, sm_90, any M, the decoded weight as
    # WGMMA's register operand
    CUDA_GEMM = "cuda_gemm"


@dataclass(frozen=True)
class Rule:
    backend: Backend
    # a GEMV_CONFIGS / DOT_CONFIGS / TMA_CONFIGS / float_weight_sm90.GLUON_CONFIGS / fp8_weight_gemm_cutlass.CONFIGS
    # name; "" for DEQUANT_MM, and for CUDA_GEMV, whose config goes by N (float_weight_gemv_cuda.gemv_cuda_config)
    config: str = ""
    max_m: int | None = None  # rule applies when M <= max_m (None: any M)
    bits: tuple[int, ...] = (4, 6, 8)  # weight widths it applies to
    min_mn: int | None = None  # rule applies when M * N >= min_mn (enough output tiles for its tile)
    max_mn: int | None = None  # rule applies when M * N <= max_mn (few output tiles: its split-K fills the SMs)
    min_nk: int | None = None  # rule applies when N * K >= min_nk (a layer large enough for its fixed costs)
    pipelined: bool = False  # only where its config's WGMMAs may pipeline (arch.register_a_wgmma_pipelines)


# Measured on an H200 (benchmarks/bench_float_weight_only_linear.py, CUDA graphs, weights rotated past L2; geometric
# mean over 4096², 4096×14336, 14336×4096, 8192² of bf16 nn.Linear time / module time; the full tables are in
# docs/measurements/h200_run11_weight_only.md (2026-12-01), h200_run18_weight_only_tma.md,
# h200_run19_weight_only_ptxas.md (2026-12-02), h200_run24_cuda_weight_gemv.md and
# h200_run37_weight_only_host_gemv.md (2026-12-03)):
# - M <= 16 on sm_90 with the CUDA library (run 37, the CUDA GEMV with its config by N): fp8 up to M = 2 (1.40x /
#   1.41x at M = 1 / 2; the swap-AB 16x128 tile 1.20x at M = 1, the 16x64 tile 1.28x at M = 2), fp4 up to M = 8
#   (1.73x at M = 1 against the Triton GEMV's 1.65x; 1.47x at M = 8 against the swap-AB tile's 1.34x), fp6 at M = 2-16
#   (1.30x at M = 2 against the TMA 16-row tile's 0.96x; 0.98x against 0.95x at M = 16; where the WGMMA GEMM runs,
#   run 51 below keeps fp6 at M = 2-4). fp6 at M = 1 keeps the
#   Triton GEMV (1.40x; the CUDA GEMV 1.30x), fp8 at M = 4-16 and fp4 at M = 16 the Triton tiles (fp8 1.41x / 1.40x
#   at M = 4, 1.46x / 1.38x at M = 8; fp4 1.35x / 1.10x at M = 16): the CUDA GEMV's bf16 decode costs ~4
#   instructions per code pair, and M = 9..16 decodes once for two 8-token MMAs only.
# - M = 1 without it: the 4-row, 1024-code-step GEMV for fp4 (1.65x) and fp6; fp8 the swap-AB 16x128 tile (1.24x).
# - M <= 16 otherwise: fp8 the 16x64 tile (1.47x at M = 16), fp4 the swap-AB 16x128 tile (1.35x), fp6 the TMA 16-row
#   tile (0.96x; the swap-AB pointer tile 0.91x).
# - M = 17-64, fp4 / fp6 (run 45, docs/measurements/h200_run45_gluon_weight_only.md): the TMA 64x128 tile where its
#   WGMMAs pipeline (run 19: 1.18x / 1.01x at M = 64), else the Gluon kernel (decoded tile in shared memory, async
#   WGMMAs): fp4 64x128 at M <= 32 (0.97-1.11x against the serialized TMA tile's 0.81-0.92x), 64x64 at M = 64
#   (0.83-1.21x against 0.71-0.97x); fp6 64x128 (M = 32: 0.80-0.92x against 0.69-0.81x; M = 64: 0.70-0.97x against
#   0.64-0.87x). From M = 256 on it lost to every rule below (0.26-0.78x).
# - M <= 64 otherwise: fp4 / fp6 the TMA 64x128 tile (0.86x / 0.76x serialized); fp8 at M = 33-64
#   the same tile where its WGMMAs pipeline (0.86x), else the 16x64 tile (0.63x; the TMA tile serialized 0.61x).
#   fp8 at M = 17-32 takes the 16x64 tile on every toolchain (run 41: 1.00-1.10x at M = 32, serialized toolchain).
# - M <= 256: the TMA 256x128 tile for every format (0.71x / 0.76x / 0.83x, against dequantize + cuBLAS 0.52-0.57x).
# - M <= 1024: fp4 the same tile (0.87x; dequantize + cuBLAS 0.84x); fp8 / fp6 dequantize + cuBLAS (0.84x / 0.81x;
#   the tile 0.74x / 0.79x). The 256-row tile's WGMMAs stay serialized: pipelined, it returned wrong sums (run 19).
# - Larger M: dequantize + cuBLAS for every format (M = 4096: 0.93-0.96x; the TMA tile serialized 0.77-0.85x).
# - fp8 at M = 33-4096 on sm_90 with the CUDA library (run 41, docs/measurements/h200_run41_fp8_weight_gemm.md, module
#   times): the CUTLASS mixed-input GEMM, which reads the e4m3 weight once. M <= 64 its 64-token stream-K tile
#   (M = 64: 1.39x / 1.16x / 1.15x on 4096x14336 / 14336x4096 / 8192^2, 0.64x on 4096^2; the Triton rules 0.59-0.69x),
#   M <= 256 the 128-token stream-K tile (0.73-0.93x; Triton 0.60-0.80x) unless, from M = 193 (a 256-row tile at
#   least three quarters full), the output fills the SMs with the 256-token persistent tile (M * N >= 3 * 2**20,
#   ~96 tiles of 256 x 128: at M = 256 that tile ran 1.03x on 4096 x 14336, 112 tiles, against the stream-K tile's
#   0.85x, and 0.41-0.72x with 32-64 tiles), M <= 4096 the 256-token persistent tile
#   (M = 1024: 0.97-1.05x against dequantize + cuBLAS's 0.82-0.83x; M = 4096: 0.96-0.98x against 0.94-0.95x, and no
#   bf16 copy of the weight). M = 17-32 keeps the 16x64 Triton tile (M = 32: 1.00-1.10x, the CUTLASS tile 0.72-1.23x).
#   fp6 / fp4 codes converted to e4m3 per call and run through it measured 0.18-0.85x (dequantize + cuBLAS
#   0.49-0.93x): not a rule.
# - sm_90 with the CUDA library, the CUDA WGMMA GEMM (run 51, docs/measurements/h200_run51_weight_only_wgmma.md,
#   module times against the rules before): its row tile nearest M. M = 16: fp6 1.23-1.64x (the CUDA GEMV
#   0.91-1.04x), fp4 1.37-2.00x (the swap-AB tile 1.10-1.49x); fp8 keeps the 16x64 tile (1.23-1.56x against
#   1.19-1.52x). Its time hardly moves below 16 rows (one 16-row tile reads the whole weight), so fp6 takes it from
#   M = 5 and fp4 from M = 9, past the CUDA GEMV's run-37 ratios there (fp6 1.18-1.32x at M = 8, fp4 1.41-1.57x at
#   M = 8 against the 16-row tile's 1.23-1.64x / 1.37-2.00x). M = 17-32: the 32-row tile for every format (1.11-1.83x
#   at M = 16). M = 64: every format, 64x128 (fp8 0.95-1.39x against CUTLASS's 0.64-1.28x, fp6 0.99-1.48x against
#   Gluon's 0.71-0.96x, fp4 1.09-1.79x against 0.85-1.21x). fp6 / fp4 at M = 65-256: 128x128 (M = 256: fp6
#   0.80-0.95x, fp4 0.87-1.07x, against the TMA tile's 0.63-0.86x / 0.67-0.95x), or 256x128 with enough output
#   tiles (M * N >= 3 * 2**20: 4096 x 14336 at M = 256, fp6 0.88x / fp4 1.04x against 128x128's 0.81x / 0.96x);
#   M = 257-1024: 256x128 (fp6 0.79-0.95x against dequantize + cuBLAS 0.80-0.82x, fp4 0.93-1.09x against the TMA
#   tile's 0.79-0.90x); fp4 to M = 4096 (0.98-1.05x against dequantize + cuBLAS 0.96-0.97x). fp6 at M = 4096 keeps
#   dequantize + cuBLAS (0.95-0.97x against 0.85-0.93x) and fp8 from M = 65 the CUTLASS GEMM (at M = 256 0.73-1.05x
#   against the WGMMA GEMM's 0.76-0.94x).
# - M = 1-8, fp4 / fp6 on layers of N * K >= 2**25 (H100, run 54, docs/measurements/h100_run54_weight_only_small_m.md,
#   module times): the WGMMA GEMM's 16-row tile, whose time does not move below 16 rows, ahead of the GEMVs. fp4
#   2.61-2.65x bf16 at every M = 1, 2, 4, 8 against the rows before's 1.89-2.39x; fp6 1.84-2.01x against 1.57-1.95x
#   (M = 1 on the deep 14336 x 4096: 1.89x against the Triton GEMV's 1.95x, the one loss). On 4096² (2**24) the GEMVs
#   stay: the tile ran 1.37-1.75x against 1.47-1.90x. fp8 keeps its rows (the tile 1.56-1.66x against 1.64-1.78x).
# - Since H100 run 64 (docs/measurements/h100_run64_weight_only_rings_clusters.md, forced paths and modules): the
#   256-row fp6 tile with separate x and code rings takes fp6 to M = 4096 (0.92-1.02x against dequantize + cuBLAS's
#   0.91-0.94x; 0.83-0.97x at M = 1024), and where a tile's K splits form a cluster (sums through distributed shared
#   memory, no reduce kernel) fp8 at M = 193-256 with few output tiles (M * N <= 2**20, two splits of the 128-row
#   tile) takes the 128-row WGMMA tile (4096²: 0.90x against the CUTLASS stream-K tile's 0.79x; 14336 x 4096 1.00x
#   against 0.99x; 8192² keeps CUTLASS, 0.95x against 0.89x). fp4 at M = 1 below the 16-row tile's layers
#   (N * K < 2**25) takes the Triton GEMV ahead of the CUDA GEMV: 4096² 2.13x against 1.82x (run 64; run 54 on
#   another H100: 2.14x against 1.84x). H200 run 37 had the CUDA GEMV ahead over its four shapes (1.73x / 1.65x).
# - fp8 at M = 3-8 on layers of M * N <= 2**15 (N = 4096 at M = 8; H100 session 72,
#   docs/measurements/h100_run72_weight_only_fp8_decode.md, forced paths in two processes): the CUDA GEMV, since its
#   bf16 decode takes two ALU slots a code pair, ahead of the 16x64 Triton tile. M = 8: 4096² 10.6 us against
#   11.5 us, 14336 x 4096 24.7 against 25.6; 8192² even (27.6 / 27.8), and the Triton tile 8-9 % faster on
#   N = 11008 / 14336, so wider layers keep it, as does M = 9-16 (the GEMV 2 % faster on N = 4096 only).
# TMA rules need sm_90 and TMA-aligned operands (tma_supported); ``pipelined`` rules also need the toolchain their
# config's pipelined WGMMAs were verified with (arch.register_a_wgmma_pipelines: ptxas >= 13.3, Triton 3.6);
# otherwise the next matching rule applies. "Pipelined" numbers are with ptxas 13.5 (run 19), the others with Triton
# 3.6's 12.8 (serialized, run 18).
DISPATCH_TABLE: tuple[Rule, ...] = (
    Rule(Backend.CUDA_GEMM, "wgmma_16x128", max_m=8, bits=(4, 6), min_nk=2**25),
    Rule(Backend.GEMV, "gemv_4x4x8", max_m=1, bits=(6,)),
    Rule(Backend.CUDA_GEMV, max_m=2, bits=(8,)),
    Rule(Backend.CUDA_GEMV, max_m=8, bits=(8,), max_mn=2**15),
    Rule(Backend.GEMV, "gemv_4x4x8", max_m=1, bits=(4,)),
    Rule(Backend.CUDA_GEMV, max_m=8, bits=(4,)),
    Rule(Backend.CUDA_GEMV, max_m=4, bits=(6,)),
    Rule(Backend.DOT, "dot_16x128x1_swap", max_m=1, bits=(8,)),
    Rule(Backend.CUDA_GEMM, "wgmma_16x128", max_m=16, bits=(4, 6)),
    Rule(Backend.CUDA_GEMV, max_m=16, bits=(6,)),
    Rule(Backend.TMA, "tma_16x128x1_swap", max_m=16, bits=(6,)),
    Rule(Backend.DOT, "dot_16x64x2", max_m=16, bits=(8,)),
    Rule(Backend.DOT, "dot_16x128x1_swap", max_m=16, bits=(4, 6)),
    Rule(Backend.CUDA_GEMM, "wgmma_32x128", max_m=32),
    Rule(Backend.CUDA_GEMM, "wgmma_64x128", max_m=64),
    Rule(Backend.TMA, "tma_64x128x1_swap", max_m=64, bits=(4, 6), pipelined=True),
    Rule(Backend.GLUON, "gluon_64x128", max_m=32, bits=(4, 6)),
    Rule(Backend.GLUON, "gluon_64x64", max_m=64, bits=(4,)),
    Rule(Backend.GLUON, "gluon_64x128", max_m=64, bits=(6,)),
    Rule(Backend.TMA, "tma_64x128x1_swap", max_m=64, bits=(4, 6)),
    Rule(Backend.DOT, "dot_16x64x2", max_m=32, bits=(8,)),
    Rule(Backend.CUTLASS_GEMM, "64x128x64_coop_sk", max_m=64, bits=(8,)),
    Rule(Backend.CUTLASS_GEMM, "128x128x64_coop_sk", max_m=192, bits=(8,)),
    Rule(Backend.CUDA_GEMM, "wgmma_128x128", max_m=256, bits=(8,), max_mn=2**20),
    Rule(Backend.CUTLASS_GEMM, "256x128x64_coop", max_m=256, bits=(8,), min_mn=3 * 2**20),
    Rule(Backend.CUTLASS_GEMM, "128x128x64_coop_sk", max_m=256, bits=(8,)),
    Rule(Backend.CUTLASS_GEMM, "256x128x64_coop", max_m=4096, bits=(8,)),
    Rule(Backend.CUDA_GEMM, "wgmma_256x128", max_m=256, bits=(4, 6), min_mn=3 * 2**20),
    Rule(Backend.CUDA_GEMM, "wgmma_128x128", max_m=256, bits=(4, 6)),
    Rule(Backend.CUDA_GEMM, "wgmma_256x128", max_m=1024, bits=(4, 6)),
    Rule(Backend.CUDA_GEMM, "wgmma_256x128", max_m=4096, bits=(4, 6)),
    Rule(Backend.TMA, "tma_64x128x1_swap", max_m=64, bits=(8,), pipelined=True),
    Rule(Backend.DOT, "dot_16x64x2", max_m=64, bits=(8,)),
    Rule(Backend.DOT, "dot_16x128x1_swap", max_m=64, bits=(4,)),
    Rule(Backend.TMA, "tma_256x128x1_swap", max_m=256),
    Rule(Backend.TMA, "tma_256x128x1_swap", max_m=1024, bits=(4,)),
    Rule(Backend.DEQUANT_MM),
)


@functools.lru_cache(maxsize=256)
def choose(
    bits: int,
    M: int,
    tma: bool = True,
    pipelined: bool = True,
    cuda_gemv: bool = False,
    cutlass: bool = False,
    gluon: bool = False,
    cuda_gemm: bool = False,
    n: int = 0,
    k: int = 0,
) -> Rule:
    """The first rule of :data:`DISPATCH_TABLE` for this width and M; ``tma``: whether the call can take the TMA
    kernel (:func:`tma_supported`), ``pipelined``: whether WGMMAs with register operands pipeline
    (:func:`~lowbit_flex.kernels.arch.register_a_wgmma_pipelines`), ``cuda_gemv``: whether the CUDA GEMV can run
    (:func:`cuda_gemv_supported`), ``cutlass``: whether the CUTLASS GEMM can (:func:`cutlass_gemm_supported`),
    ``gluon``: whether the Gluon kernel can (:func:`gluon_supported`, and ``tma``), ``cuda_gemm``: whether the CUDA
    WGMMA GEMM can (:func:`cuda_gemm_supported`); rules needing what is missing are passed over. ``n``, ``k``: the
    output and input channels, for the rules that need enough output tiles (``min_mn``), few of them (``max_mn``) or
    a large enough layer (``min_nk``; 0 passes them over)."""
    missing = {
        Backend.TMA: not tma,
        Backend.GLUON: not (tma and gluon),
        Backend.CUDA_GEMV: not cuda_gemv,
        Backend.CUTLASS_GEMM: not cutlass,
        Backend.CUDA_GEMM: not cuda_gemm,
        Backend.GEMV: GEMV_MAX_M < M,
    }
    for rule in DISPATCH_TABLE:
        if missing.get(rule.backend, False) or (rule.pipelined and not pipelined):
            continue
        if rule.min_mn is not None and M * n < rule.min_mn:
            continue
        if rule.max_mn is not None and not 0 < M * n <= rule.max_mn:
            continue
        if rule.min_nk is not None and n * k < rule.min_nk:
            continue
        if (rule.max_m is None or rule.max_m >= M) and bits in rule.bits:
            return rule
    raise AssertionError("the last rule takes every shape")


def tma_supported(device: torch.device, bits: int, stride_xm: int, x_size: int, stride_wn: int, bases: bool) -> bool:
    """Whether the TMA kernel can read ``x`` and ``w``: sm_90+ (or the interpreter), 16-byte aligned row strides
    (``x``'s of ``x_size``-byte values; ``w``'s of bytes for fp8, int32 words for fp4 / fp6) and bases (``bases``,
    checked per call); unit last strides are the caller's."""
    if device.type == "cuda":
        arch_ok = capability(device) >= (9, 0)
    else:  # the interpreter, or lowbit_flex.triton_aot's CPU stand-ins (it patches get_device_capability)
        arch_ok = triton_interpreting() or torch.cuda.get_device_capability() >= (9, 0)
    w_size = 1 if bits == 8 else 4
    return arch_ok and bases and stride_xm * x_size % 16 == 0 and stride_wn * w_size % 16 == 0


def gluon_supported(device: torch.device) -> bool:
    """Whether the Gluon kernel (:mod:`~lowbit_flex.kernels.float_weight_sm90`) runs on ``device``: sm_90 exactly
    (WGMMA; later GPUs take the next rule). CPU stand-ins and the interpreter may plan it: there its launch runs the
    Triton tile it falls back to where only ``wrap_triton`` may launch."""
    if device.type == "cuda":
        return capability(device) == (9, 0)
    return triton_interpreting() or torch.cuda.get_device_capability() == (9, 0)


def _cuda_library_takes(device: torch.device, shape_ok: bool, exactly_sm90: bool = True) -> bool:
    """Whether a kernel of the CUDA library runs a call whose shape it takes (``shape_ok``): a CUDA device of compute
    capability 9.0 (sm_90a SASS; ``exactly_sm90=False``: 9.0 or later) and a library that builds and loads
    (:func:`~lowbit_flex.kernels.s8s4_cutlass.library_available`). Nothing is loaded for a shape it does not take."""
    if not shape_ok or device.type != "cuda":
        return False
    cap = capability(device)
    if (cap != (9, 0)) if exactly_sm90 else (cap < (9, 0)):
        return False
    from lowbit_flex.kernels.s8s4_cutlass import library_available

    return library_available()


def cuda_gemv_supported(device: torch.device, M: int, K: int, bits: int) -> bool:
    """Whether the CUDA GEMV takes the call: sm_90 or later (where its rules were measured; it also compiles for
    sm_80), the shape (:func:`~lowbit_flex.kernels.float_weight_gemv_cuda.gemv_cuda_supports`) and the library."""
    from lowbit_flex.kernels.float_weight_gemv_cuda import gemv_cuda_supports

    return _cuda_library_takes(device, gemv_cuda_supports(M, K, bits), exactly_sm90=False)


def cutlass_gemm_supported(device: torch.device, N: int, K: int, bits: int) -> bool:
    """Whether the CUTLASS fp8 weight GEMM takes the call: an fp8 weight on sm_90, the shape
    (:func:`~lowbit_flex.kernels.fp8_weight_gemm_cutlass.fp8_weight_gemm_supports`) and the library."""
    from lowbit_flex.kernels.fp8_weight_gemm_cutlass import fp8_weight_gemm_supports

    return _cuda_library_takes(device, bits == 8 and fp8_weight_gemm_supports(N, K))


def cuda_gemm_supported(device: torch.device, M: int, K: int, bits: int) -> bool:
    """Whether the CUDA WGMMA weight GEMM takes the call: sm_90, the shape
    (:func:`~lowbit_flex.kernels.float_weight_gemm_cuda.gemm_cuda_supports`) and the library."""
    from lowbit_flex.kernels.float_weight_gemm_cuda import gemm_cuda_supports

    return _cuda_library_takes(device, gemm_cuda_supports(M, K, bits))


def fp8_native_supported(device: torch.device) -> bool:
    """Hardware e4m3 -> fp16 conversion: sm_89+ (and the interpreter, which emulates it)."""
    return device.type != "cuda" or has_fp8_mma(device)


class _Plan(NamedTuple):
    splits: int
    tiles_per_split: int
    dec_scale: float
    launch: PlanLaunch


def _asm(bits: int, mbits: int, to_f32: bool) -> tuple[str, str]:
    if bits == 8 or triton_interpreting():
        return "", ""
    return planes_asm(bits, mbits, to_f32)


@functools.lru_cache(maxsize=1024)
def _plan(
    device: torch.device, backend: Backend, config: DotConfig, M: int, N: int, K: int, ebits: int, mbits: int,
    native_fp8: bool, stride_xm: int, stride_wn: int, stride_om: int, has_bias: bool,
) -> _Plan:  # fmt: skip
    """Everything about a GEMV / tensor-core launch that depends only on the shape key (strides included: the
    kernel is specialised on its integer arguments)."""
    bits = 1 + ebits + mbits
    block_m = min(config.block_m, triton.next_power_of_2(M)) if backend is Backend.GEMV else config.block_m
    n_tiles = triton.cdiv(K, 128)
    k_blocks = triton.cdiv(n_tiles, config.block_k)
    out_tiles = triton.cdiv(N, config.block_n) * triton.cdiv(M, block_m)
    splits, per_split = split_k_blocks(k_blocks, out_tiles, config.split_k, config.programs_per_sm, sm_count(device))
    asm, cons = _asm(bits, mbits, backend is Backend.GEMV)
    scale = dec_scale(ebits, native_fp8 and bits == 8)
    meta = dict(
        BITS=bits, MBITS=mbits, NATIVE_FP8=native_fp8, DEC_SCALE=scale, ASM=asm, CONS=cons, BLOCK_M=block_m,
        BLOCK_N=config.block_n, STEP_TILES=config.block_k, EVEN_K=K % 128 == 0, SPLIT_PARTIALS=splits > 1,
        HAS_BIAS=has_bias, num_warps=config.num_warps, num_stages=config.num_stages,
    )  # fmt: skip
    kernel = _float_weight_gemv_kernel
    if backend is Backend.DOT:
        kernel = _float_weight_dot_kernel
        meta["UPCAST_DOT"] = triton_interpreting()
        meta["SWAP_AB"] = config.swap_ab
        meta["NONEMPTY_K"] = register_a_wgmma_pipelines(device, config.wgmma_pipelined)
    grid = (triton.cdiv(N, config.block_n), triton.cdiv(M, block_m), splits)
    return _Plan(splits, per_split * config.block_k, scale, PlanLaunch(kernel, grid, meta))


def _tma_launch(
    device: torch.device, config: TmaConfig, M: int, N: int, K: int, ebits: int, mbits: int, splits: int,
    has_bias: bool,
) -> PlanLaunch:  # fmt: skip
    """The TMA kernel's launch of ``config`` over ``splits`` K splits (fp8 only with the hardware conversion)."""
    bits = 1 + ebits + mbits
    asm, cons = _asm(bits, mbits, False)
    meta = dict(
        BITS=bits, MBITS=mbits, DEC_SCALE=dec_scale(ebits, bits == 8), ASM=asm, CONS=cons, BLOCK_M=config.block_m,
        BLOCK_N=config.block_n, STEP_TILES=config.block_k if bits == 8 else 1, GROUP_M=config.group_m,
        SPLIT_PARTIALS=splits > 1, HAS_BIAS=has_bias, UPCAST_DOT=triton_interpreting(),
        NONEMPTY_K=register_a_wgmma_pipelines(device, config.wgmma_pipelined), num_warps=config.num_warps,
        num_stages=config.num_stages,
    )  # fmt: skip
    out_tiles = triton.cdiv(N, config.block_n) * triton.cdiv(M, config.block_m)
    return PlanLaunch(_float_weight_tma_kernel, (out_tiles, splits), meta)


def _tma_splits(device: torch.device, config: TmaConfig, M: int, N: int, K: int, bits: int) -> tuple[int, int]:
    """``(splits, 128-code tiles per split)`` of a TMA-fed tile (fp8 steps ``block_k`` tiles, fp4 / fp6 one)."""
    step = config.block_k if bits == 8 else 1
    k_blocks = triton.cdiv(triton.cdiv(K, 128), step)
    out_tiles = triton.cdiv(N, config.block_n) * triton.cdiv(M, config.block_m)
    splits, per_split = split_k_blocks(k_blocks, out_tiles, config.split_k, config.programs_per_sm, sm_count(device))
    return splits, per_split * step


@functools.lru_cache(maxsize=1024)
def _tma_plan(
    device: torch.device, config: TmaConfig, M: int, N: int, K: int, ebits: int, mbits: int, stride_xm: int,
    stride_wn: int, has_bias: bool,
) -> _Plan:  # fmt: skip
    """The TMA kernel's launch for one shape key (fp8 only with the hardware conversion: ``DEC_SCALE`` 1)."""
    bits = 1 + ebits + mbits
    splits, per_split = _tma_splits(device, config, M, N, K, bits)
    launch = _tma_launch(device, config, M, N, K, ebits, mbits, splits, has_bias)
    return _Plan(splits, per_split, dec_scale(ebits, bits == 8), launch)


@functools.lru_cache(maxsize=1024)
def _gluon_plan(
    device: torch.device, config: TmaConfig, M: int, N: int, K: int, ebits: int, mbits: int, x_dtype: torch.dtype,
    stride_xm: int, stride_wn: int, has_bias: bool,
) -> _Plan:  # fmt: skip
    """The Gluon kernel's launch for one shape key (fp4 / fp6), with the Triton TMA tile of the same output tile and
    split as its ``traced`` plan (the same arguments: ``_launch_args``'s TMA form)."""
    from lowbit_flex.kernels.float_weight_sm90 import _float_weight_gemm_sm90, traced_config

    bits = 1 + ebits + mbits
    splits, per_split = _tma_splits(device, config, M, N, K, bits)
    traced = _tma_launch(device, traced_config(config), M, N, K, ebits, mbits, splits, has_bias)
    asm, cons = ("", "") if triton_interpreting() else planes_asm(bits, mbits, False, x_dtype == torch.bfloat16)
    meta = dict(
        BITS=bits, DEC_SCALE=dec_scale(ebits), ASM=asm, CONS=cons, BLOCK_M=config.block_m, BLOCK_N=config.block_n,
        STAGES=config.num_stages, GROUP_M=config.group_m, SPLIT_PARTIALS=splits > 1, HAS_BIAS=has_bias,
        num_warps=config.num_warps,
    )  # fmt: skip
    grid = (triton.cdiv(N, config.block_n) * triton.cdiv(M, config.block_m), splits)
    launch = PlanLaunch(_float_weight_gemm_sm90, grid, meta, tensors=6, traced=traced)
    return _Plan(splits, per_split, dec_scale(ebits), launch)


@functools.lru_cache(maxsize=256)
def _dequant_plan(N: int, K: int, ebits: int, mbits: int, native_fp8: bool, stride_wn: int) -> PlanLaunch:
    bits = 1 + ebits + mbits
    asm, cons = _asm(bits, mbits, True)
    meta = dict(
        BITS=bits, MBITS=mbits, NATIVE_FP8=native_fp8, DEC_SCALE=dec_scale(ebits, native_fp8 and bits == 8), ASM=asm,
        CONS=cons, BLOCK_N=DEQUANT_BLOCK_N, STEP_TILES=DEQUANT_STEP_TILES, num_warps=DEQUANT_WARPS,
    )  # fmt: skip
    grid = (triton.cdiv(N, DEQUANT_BLOCK_N), triton.cdiv(triton.cdiv(K, 128), DEQUANT_STEP_TILES))
    return PlanLaunch(_float_weight_dequant_kernel, grid, meta)


def dequantize_weight(w: torch.Tensor, w_scale: torch.Tensor, K: int, ebits: int, mbits: int, dtype: torch.dtype):
    """``decode(w) * w_scale[:, None]`` as a contiguous ``(N, K)`` tensor of ``dtype`` (rounded once). ``w`` as
    :func:`float_weight_only_linear_cuda` takes it."""
    native = 1 + ebits + mbits == 8 and fp8_native_supported(w.device)
    return _dequantize(_kernel_weight(w, ebits, mbits, native), w_scale, K, ebits, mbits, dtype)


def _dequantize(w: torch.Tensor, w_scale: torch.Tensor, K: int, ebits: int, mbits: int, dtype: torch.dtype):
    """:func:`dequantize_weight` of a weight already in the kernel's form (:func:`_kernel_weight`: fp8 as
    float8_e4m3fn for the hardware conversion, as uint8 for the bit decode), so the decode form is its dtype."""
    native = w.dtype == torch.float8_e4m3fn
    out = torch.empty((w.shape[0], K), dtype=dtype, device=w.device)
    if out.numel():
        cached_plan(_dequant_plan, int(w.shape[0]), int(K), ebits, mbits, native, int(w.stride(0)))(
            w, w_scale, out, w.shape[0], K, w.stride(0)
        )
    return out


def _kernel_weight(w: torch.Tensor, ebits: int, mbits: int, native_fp8: bool) -> torch.Tensor:
    if 1 + ebits + mbits == 8 and not native_fp8:
        return w.view(torch.uint8)  # bit decode on sm_80
    return w if w.stride(-1) == 1 else w.contiguous()


class _Route(NamedTuple):
    backend: Backend
    native_fp8: bool
    plan: _Plan | None  # None for DEQUANT_MM and the CUDA library's kernels
    cuda_config: str = ""  # CUDA_GEMV / CUTLASS_GEMM / CUDA_GEMM: the CUDA library's config name


def table_rule(device: torch.device, bits: int, M: int, N: int, K: int, tma: bool) -> Rule:
    """The table's rule for a call on ``device`` (:func:`choose` with what this device, shape and the CUDA library
    can run; ``tma``: whether the call can take the TMA kernel). A call without rows takes the DOT kernel (it
    launches nothing)."""
    if not M:
        return Rule(Backend.DOT, "dot_16x64x2")
    pipelined = register_a_wgmma_pipelines(device, True)  # the pipelined rules name verified configs
    gemv = cuda_gemv_supported(device, M, K, bits)
    cutlass = cutlass_gemm_supported(device, N, K, bits)
    gemm = cuda_gemm_supported(device, M, K, bits)
    return choose(bits, M, tma, pipelined, gemv, cutlass, gluon_supported(device), gemm, N, K)


@functools.lru_cache(maxsize=1024)
def _route(
    device: torch.device, M: int, N: int, K: int, ebits: int, mbits: int, stride_xm: int, x_dtype: torch.dtype,
    stride_wn: int, bases_aligned: bool, has_bias: bool, backend: Backend | None, config: str | DotConfig | None,
) -> _Route:  # fmt: skip
    """Every decision of a call, made once per shape key: the backend and config (the table's, unless forced), the
    fp8 decode form, the launch plan. An eager decode step then pays one cache lookup.
    ``bases_aligned``: whether ``x`` and ``w`` start at 16-byte aligned addresses (TMA)."""
    bits = 1 + ebits + mbits
    native = bits == 8 and fp8_native_supported(device)
    tma = native or bits != 8  # the TMA kernel converts fp8 in hardware only
    tma = tma and tma_supported(device, bits, stride_xm, x_dtype.itemsize, stride_wn, bases_aligned)
    if backend is None:
        rule = table_rule(device, bits, M, N, K, tma)
        backend, config = rule.backend, rule.config
    if backend is Backend.DEQUANT_MM:
        return _Route(backend, native, None)
    if backend is Backend.CUTLASS_GEMM:
        from lowbit_flex.kernels.fp8_weight_gemm_cutlass import CONFIGS

        if not cutlass_gemm_supported(device, N, K, bits):
            raise ValueError(f"backend: the CUTLASS GEMM needs an fp8 weight, sm_90, the CUDA library, N % 8 == 0 "
                             f"and K % 16 == 0; got {bits}-bit codes, N={N}, K={K}")  # fmt: skip
        if config not in CONFIGS:
            raise ValueError(f"config: expected one of {list(CONFIGS)}, got {config!r}")
        return _Route(backend, native, None, config)
    if backend is Backend.CUDA_GEMM:
        from lowbit_flex.kernels.float_weight_gemm_cuda import GEMM_CUDA_CONFIGS

        if M and not cuda_gemm_supported(device, M, K, bits):
            raise ValueError(f"backend: the CUDA WGMMA GEMM needs sm_90, the CUDA library and K % "
                             f"{16 if bits == 8 else 8} == 0; got {bits}-bit codes, K={K}")  # fmt: skip
        if config not in GEMM_CUDA_CONFIGS:
            raise ValueError(f"config: expected one of {list(GEMM_CUDA_CONFIGS)}, got {config!r}")
        return _Route(backend, native, None, config)
    if backend is Backend.CUDA_GEMV:
        from lowbit_flex.kernels.float_weight_gemv_cuda import GEMV_CUDA_CONFIGS, gemv_cuda_config

        if M and not cuda_gemv_supported(device, M, K, bits):
            raise ValueError(f"backend: the CUDA GEMV needs sm_90, the CUDA library, 1 <= M <= 16 and K % "
                             f"{16 if bits == 8 else 8} == 0; got M={M}, K={K}")  # fmt: skip
        if not config:  # the table's rows: by N
            config = gemv_cuda_config(N, sm_count(device))
        if config not in GEMV_CUDA_CONFIGS:
            raise ValueError(f"config: expected one of {list(GEMV_CUDA_CONFIGS)}, got {config!r}")
        return _Route(backend, native, None, config)
    if backend is Backend.GEMV and GEMV_MAX_M < M:
        raise ValueError(f"backend: the GEMV takes at most {GEMV_MAX_M} rows, got M={M}")
    if backend in (Backend.TMA, Backend.GLUON) and not tma:
        name = "TMA" if backend is Backend.TMA else "Gluon"
        raise ValueError(f"backend: the {name} kernel needs sm_90 and 16-byte aligned rows and bases of x and w")
    if backend is Backend.GLUON and (bits == 8 or not gluon_supported(device)):
        raise ValueError(f"backend: the Gluon kernel needs fp4 / fp6 codes and sm_90; got {bits}-bit codes")
    if backend is Backend.GLUON:
        from lowbit_flex.kernels.float_weight_sm90 import GLUON_CONFIGS

        configs = GLUON_CONFIGS
    else:
        configs = {Backend.GEMV: GEMV_CONFIGS, Backend.DOT: DOT_CONFIGS, Backend.TMA: TMA_CONFIGS}[backend]
    if isinstance(config, str) and config not in configs:
        raise ValueError(f"config: expected one of {list(configs)}, got {config!r}")
    cfg = configs[config] if isinstance(config, str) else config
    if not M:
        return _Route(backend, native, None)
    if backend is Backend.TMA:
        return _Route(backend, native, _tma_plan(device, cfg, M, N, K, ebits, mbits, stride_xm, stride_wn, has_bias))
    if backend is Backend.GLUON:
        plan = _gluon_plan(device, cfg, M, N, K, ebits, mbits, x_dtype, stride_xm, stride_wn, has_bias)
        return _Route(backend, native, plan)
    return _Route(backend, native, _plan(device, backend, cfg, M, N, K, ebits, mbits, native, stride_xm, stride_wn, N,
                                         has_bias))  # fmt: skip


def _route_for(x2, w, bias, ebits, mbits, backend=None, config=None) -> _Route:
    """The cached route of a call with 2-D ``x2`` (rows contiguous)."""
    # int(): under torch.compile with dynamic shapes these are SymInts; the route is per concrete shape (a guard).
    M, K = x2.shape
    return cached_plan(
        _route, x2.device, int(M), int(w.shape[0]), int(K), ebits, mbits, int(x2.stride(0)), x2.dtype,
        int(w.stride(0)), tma_base_aligned(x2, w), bias is not None, backend, config,
    )  # fmt: skip


def _launch_args(route: _Route, x2, w, w_scale, bias, out, part) -> tuple:
    """The Triton kernel's arguments (its tensors first: x, w, w_scale, bias, out, partials) for ``route``; ``w``
    already in the kernel's form (:func:`_kernel_weight`)."""
    M, K = x2.shape
    N = w.shape[0]
    b = w_scale if bias is None else bias  # a valid pointer for an operand a constexpr switch leaves unread
    per_split = route.plan.tiles_per_split
    if route.backend in (Backend.TMA, Backend.GLUON):
        return (x2, w, w_scale, b, out, part, M, N, K, w.shape[1], x2.stride(0), w.stride(0), N, per_split)
    return (x2, w, w_scale, b, out, part, M, N, K, x2.stride(0), w.stride(0), N, per_split)


def float_weight_only_linear_cuda(
    x: torch.Tensor,
    w: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None,
    ebits: int,
    mbits: int,
    *,
    backend: Backend | None = None,
    config: str | DotConfig | None = None,
) -> torch.Tensor:
    """``x @ (decode(w) * w_scale[:, None]).T + bias`` on CUDA (or the interpreter), arguments validated by the op.

    ``w``: float8_e4m3fn ``(N, K)``, or int32 tile-layout words of fp4 / fp6 codes
    (:func:`lowbit_flex.quant.pack_fpx_tiles`). ``backend`` / ``config`` force a path (benchmarks, tests)."""
    K, N = x.shape[-1], w.shape[0]
    x2 = x.reshape(-1, K)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    # every kernel reads the per-channel vectors with unit stride (views such as s[::2] pass the op's checks)
    w_scale = w_scale if w_scale.is_contiguous() else w_scale.contiguous()
    bias = bias if bias is None or bias.is_contiguous() else bias.contiguous()
    M = x2.shape[0]
    route = _route_for(x2, w, bias, ebits, mbits, backend, config)
    if route.backend in (Backend.CUDA_GEMV, Backend.CUTLASS_GEMM, Backend.CUDA_GEMM) and M:  # CUDA library kernels
        from lowbit_flex.kernels.float_weight_gemm_cuda import float_weight_gemm_cuda
        from lowbit_flex.kernels.float_weight_gemv_cuda import float_weight_gemv_cuda
        from lowbit_flex.kernels.fp8_weight_gemm_cutlass import fp8_weight_gemm_cutlass

        x2 = x2 if x2.is_contiguous() else x2.contiguous()  # they read rows K apart
        w = w if w.is_contiguous() else w.contiguous()
        if route.backend is Backend.CUDA_GEMV:
            out = float_weight_gemv_cuda(x2, w, w_scale, bias, ebits, mbits, route.cuda_config)
        elif route.backend is Backend.CUDA_GEMM:
            out = float_weight_gemm_cuda(x2, w, w_scale, bias, ebits, mbits, route.cuda_config)
        else:
            out = fp8_weight_gemm_cutlass(x2, w, w_scale, bias, route.cuda_config)
        return out.view(*x.shape[:-1], N)
    w = _kernel_weight(w, ebits, mbits, route.native_fp8)
    if route.backend is Backend.DEQUANT_MM:
        wd = _dequantize(w, w_scale, K, ebits, mbits, x.dtype)  # the route already chose the decode form
        out = torch.mm(x2, wd.T) if bias is None else torch.addmm(bias, x2, wd.T)
        return out.view(*x.shape[:-1], N)
    out = torch.empty((M, N), dtype=x.dtype, device=x.device)
    plan = route.plan
    if plan is None or N == 0:
        return out.view(*x.shape[:-1], N)
    part = torch.empty((plan.splits, M, N), dtype=torch.float32, device=x.device) if plan.splits > 1 else out
    if route.backend in (Backend.TMA, Backend.GLUON):
        ensure_triton_allocator()  # device-side descriptors live in a per-launch global scratch buffer
    plan.launch(*_launch_args(route, x2, w, w_scale, bias, out, part))
    if plan.splits > 1:
        reduce_split_k(part, out, w_scale, bias, post_scale=plan.dec_scale)
    return out.view(*x.shape[:-1], N)


class EagerLinear:
    """One eager call's launches for a metadata key (:func:`eager_linear`): the compiled kernels bound to everything
    but the tensors, so a call allocates its output (and split-K partials) and launches, with no route lookup, no
    Triton argument binding and no pointer checks."""

    __slots__ = ("_cuda", "_main", "_out_shape", "_parts", "_reduce", "_tma", "_w_bytes", "device", "dtype")

    def __init__(self, out_shape, dtype, device, main=None, reduce=None, parts=None, tma=False, w_bytes=False,
                 cuda=None) -> None:  # fmt: skip
        self._out_shape, self.dtype, self.device = out_shape, dtype, device
        self._main, self._reduce, self._parts, self._tma, self._w_bytes = main, reduce, parts, tma, w_bytes
        self._cuda = cuda  # a CUDA-library kernel's bound launch: cuda(x, w, w_scale, bias, out)

    def hooked(self) -> bool:
        """Whether Triton launch hooks (profilers) are set: the caller then takes the op's body, whose launches
        they see."""
        return self._main is not None and self._main.hooked()

    def __call__(self, x, w, w_scale, bias) -> torch.Tensor:
        out = torch.empty(self._out_shape, dtype=self.dtype, device=self.device)
        if self._cuda is not None:
            self._cuda(x, w, w_scale, bias, out)
            return out
        if self._w_bytes:
            w = w.view(torch.uint8)  # fp8 bit decode (no hardware conversion)
        if self._tma:
            ensure_triton_allocator()
        b = w_scale if bias is None else bias
        if self._reduce is None:
            self._main(x, w, w_scale, b, out, out)
            return out
        part = torch.empty(self._parts, dtype=torch.float32, device=self.device)
        self._main(x, w, w_scale, b, out, part)
        self._reduce(part, w_scale, part if bias is None else bias, out)
        return out


def eager_linear(x, w, w_scale, bias, ebits: int, mbits: int) -> EagerLinear | None:
    """The bound launches of a validated eager CUDA call whose tensors are contiguous (their metadata fixed by the
    caller's cache key), or None where the call must take the general path (:func:`float_weight_only_linear_cuda`):
    no rows, dequantize + cuBLAS or the CUTLASS GEMM (prefill sizes: the GPU time dwarfs the host path's), a
    misaligned operand of a CUDA-library kernel, or a kernel that only ``wrap_triton`` may launch
    (:meth:`PlanLaunch.bind`)."""
    K, N = x.shape[-1], w.shape[0]
    x2 = x.view(-1, K)
    M = x2.shape[0]
    if M == 0:
        return None
    out_shape = (*x.shape[:-1], N)
    route = _route_for(x2, w, bias, ebits, mbits)
    if route.backend in (Backend.CUDA_GEMV, Backend.CUDA_GEMM):
        from lowbit_flex.kernels.float_weight_gemm_cuda import bound_gemm_cuda
        from lowbit_flex.kernels.float_weight_gemv_cuda import bound_gemv_cuda

        bind = bound_gemv_cuda if route.backend is Backend.CUDA_GEMV else bound_gemm_cuda
        launch = bind(x2, w, ebits, mbits, route.cuda_config)
        return None if launch is None else EagerLinear(out_shape, x.dtype, x.device, cuda=launch)
    if route.plan is None:
        return None
    plan = route.plan
    kw = _kernel_weight(w, ebits, mbits, route.native_fp8)
    out = torch.empty((M, N), dtype=x.dtype, device=x.device)
    parts = (plan.splits, M, N)
    part = torch.empty(parts, dtype=torch.float32, device=x.device) if plan.splits > 1 else out
    tma = route.backend in (Backend.TMA, Backend.GLUON)
    if tma:
        ensure_triton_allocator()
    main = plan.launch.bind(*_launch_args(route, x2, kw, w_scale, bias, out, part))
    if main is None:
        return None
    reduce = None
    if plan.splits > 1:
        b = part if bias is None else bias
        reduce = cached_plan(split_k_reduce_plan, M, N, N, plan.splits, plan.dec_scale, True, bias is not None)
        reduce = reduce.bind(part, w_scale, b, out, M, N, N, plan.splits)
        if reduce is None:
            return None
    return EagerLinear(out_shape, x.dtype, x.device, main, reduce, parts, tma, kw.dtype == torch.uint8)
