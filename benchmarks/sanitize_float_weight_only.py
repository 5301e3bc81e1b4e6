"""Run every backend and config of the fp8 / fp6 / fp4 weight-only dispatch over ragged shapes and check it against
float64, for compute-sanitizer.

    compute-sanitizer --tool memcheck python benchmarks/sanitize_float_weight_only.py [BACKEND ...]

BACKEND (``cuda_gemv``, ``gemv``, ``dot``, ``tma``, ``gluon``, ``dequant_mm``, ``cutlass_gemm``, ``cuda_gemm``)
limits the run to those backends (default: all; ``tma``, ``gluon``, ``cuda_gemv``, ``cutlass_gemm`` and ``cuda_gemm``
run on sm_90 only, ``cutlass_gemm`` on fp8, ``gluon`` on fp4 / fp6).

Each GEMV / tensor-core config and the dequantize-then-cuBLAS path × format × ragged (M, N, K) it takes runs once
into a NaN-poisoned output and is compared with the float64 product of the decoded weight (the dequantize path:
of the weight rounded to bf16) within bf16 rounding plus float32 summation error. Exits 1 on any mismatch.
"""

from __future__ import annotations

import itertools
import sys

import torch

import lowbit_flex  # noqa: F401
from lowbit_flex.kernels.float_weight_dispatch import Backend, dequantize_weight, float_weight_only_linear_cuda
from lowbit_flex.kernels.float_weight_gemm_cuda import GEMM_CUDA_CONFIGS
from lowbit_flex.kernels.float_weight_gemv import GEMV_CONFIGS, GEMV_MAX_M
from lowbit_flex.kernels.float_weight_gemv_cuda import GEMV_CUDA_CONFIGS, MAX_M
from lowbit_flex.kernels.float_weight_only_linear import DOT_CONFIGS
from lowbit_flex.kernels.float_weight_sm90 import GLUON_CONFIGS
from lowbit_flex.kernels.float_weight_tma import TMA_CONFIGS
from lowbit_flex.kernels.fp8_weight_gemm_cutlass import CONFIGS as CUTLASS_CONFIGS
from lowbit_flex.quant import E2M1_FN, E2M3_FN, E3M2_FN, E4M3FN, from_fpx_bits, pack_fpx_tiles

SHAPES = list(itertools.product((1, 3, 12, 77), (40,), (96, 1000)))
SHAPES += [(3, 13000, 264)]  # the persistent CUDA GEMV: more row tiles than resident CTAs
SHAPES += [(300, 264, 2000)]  # prefill tiles: ragged in M, N and K, several K steps (stream-K splits)
PLANS = [(Backend.GEMV, c, GEMV_MAX_M) for c in GEMV_CONFIGS]
PLANS += [(Backend.DOT, c, 10**9) for c in DOT_CONFIGS] + [(Backend.DEQUANT_MM, "", 10**9)]
PLANS += [(Backend.TMA, c, 10**9) for c in TMA_CONFIGS] + [(Backend.CUDA_GEMV, c, MAX_M) for c in GEMV_CUDA_CONFIGS]
PLANS += [(Backend.CUTLASS_GEMM, c, 10**9) for c in CUTLASS_CONFIGS]
PLANS += [(Backend.GLUON, c, 10**9) for c in GLUON_CONFIGS]
PLANS += [(Backend.CUDA_GEMM, c, 10**9) for c in GEMM_CUDA_CONFIGS]


_EMPTY = torch.empty


def _poisoned(*args, **kwargs):
    t = _EMPTY(*args, **kwargs)
    return t.fill_(float("nan")) if t.is_floating_point() else t  # not the int8 scratch of TMA descriptors


def main(backends: list[str]) -> int:
    gen = torch.Generator().manual_seed(0)
    bad = runs = 0
    formats = (E4M3FN, E3M2_FN, E2M3_FN, E2M1_FN)
    for (M, N, K), (backend, config, max_m), fmt in itertools.product(SHAPES, PLANS, formats):
        if max_m < M or (backends and backend.value not in backends):
            continue
        if N > 1000 and backend is not Backend.CUDA_GEMV:
            continue
        if (backend is Backend.CUTLASS_GEMM and fmt.bits != 8) or (backend is Backend.GLUON and fmt.bits == 8):
            continue
        if backend in (Backend.TMA, Backend.GLUON, Backend.CUDA_GEMV, Backend.CUTLASS_GEMM, Backend.CUDA_GEMM):
            if torch.cuda.get_device_capability() < (9, 0):
                continue
            if backend is not Backend.CUDA_GEMV or fmt.bits == 8:  # TMA rows, fp8 GEMV rows: 16-byte multiples
                K += -K % 16  # (1008 is still a ragged 128-code tile)
        codes = torch.randint(0, 2**fmt.bits, (N, K), dtype=torch.uint8, generator=gen)
        if fmt.bits == 8:
            codes = torch.where((codes & 0x7F) == 0x7F, codes ^ 1, codes)  # no NaN codes
            w, w64 = codes.view(torch.float8_e4m3fn), codes.view(torch.float8_e4m3fn).double()
        else:
            w, w64 = pack_fpx_tiles(codes, fmt.bits), from_fpx_bits(codes, fmt, torch.float64)
        x = torch.randn(M, K, generator=gen).bfloat16()
        s = torch.rand(N, generator=gen) + 0.25
        b = torch.randn(N, generator=gen).bfloat16()
        wc, sc = w.cuda(), s.cuda()
        ref_w = w64 * s.double()[:, None]
        if backend is Backend.DEQUANT_MM:
            ref_w = dequantize_weight(wc, sc, K, fmt.ebits, fmt.mbits, torch.bfloat16).cpu().double()
        torch.empty = _poisoned  # every buffer the launcher allocates starts as NaN
        try:
            out = float_weight_only_linear_cuda(x.cuda(), wc, sc, b.cuda(), fmt.ebits, fmt.mbits, backend=backend,
                                                config=config).cpu()  # fmt: skip
        finally:
            torch.empty = _EMPTY
        exact = x.double() @ ref_w.T + b.double()
        bound = exact.abs() * 2.0**-8 + K * 2.0**-22 * (x.double().abs() @ ref_w.abs().T) + 1e-30
        runs += 1
        if torch.isnan(out).any() or bool(((out.double() - exact).abs() > bound).any()):
            bad += 1
            print(f"MISMATCH {backend.value} {config} {fmt} M={M} N={N} K={K}", flush=True)
        if runs % 20 == 0:
            print(f"{runs} runs, {bad} mismatches so far", flush=True)
    print(f"{runs} runs, {bad} mismatches")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
