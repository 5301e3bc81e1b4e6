"""Whole fp8 / fp6 / fp4 weight-only layers (``FP8WeightOnlyLinear`` / ``FPxWeightOnlyLinear``: one op call each) vs
bf16 ``nn.Linear``, from decode (M = 1) to prefill (M = 4096).

Per row: the CUDA-graph time of each module (median of replays, inputs and weights rotated beyond L2), its ratio to
bf16 in the same run, the backend the dispatch table picked, and every backend / config forced
(``<fmt> <backend> <config>`` columns) so one run decides the dispatch table; where the table picks the CUDA GEMV,
``<fmt> triton`` times what it would pick without it. Before timing, each method is checked
against float64 (``check``: the worst error over ``2^-7 * max|exact|``, "ok" when <= 1). ``floor frac`` (M <= 16):
the packed weight's bytes at the copy bandwidth measured now, over the module's time (1.0 = the memory floor).
A second table: host microseconds per eager module call (no CUDA graph) at M = 1, next to bf16 ``nn.Linear``.

``LOWBIT_BENCH_WO_M=1,16`` limits the M list; ``LOWBIT_BENCH_WO_CANDIDATES=0`` times only the modules (what the
dispatch table picks), not every backend and config; ``=cuda`` times the CUDA GEMV's configs only (``cuda <config>``,
M <= 16 on sm_90 with the CUDA library); ``=cutlass`` times the fp8 CUTLASS GEMM's configs (``cutlass <config>``,
M >= 16 on sm_90 with the CUDA library) and dequantize + cuBLAS; ``=gluon`` the fp4 / fp6 Gluon kernel's configs
(``gluon <config>``, M >= 16 on sm_90) and dequantize + cuBLAS; ``=wgmma`` the CUDA register-A WGMMA GEMM's configs
(``wgmma <config>``, every format, sm_90 with the CUDA library), the Gluon kernel's and dequantize + cuBLAS.
"""

from __future__ import annotations

import math
import os

import torch
from torch import nn

import lowbit_flex  # noqa: F401
from benchmarks.bench_s8s4_linear import SHAPES_KN, copy_bandwidth_gbps
from benchmarks.harness import Bench, host_us
from lowbit_flex.nn import FP8WeightOnlyLinear, FPxWeightOnlyLinear
from lowbit_flex.quant import E2M1_FN, E3M2_FN, from_fpx_bits, unpack_fpx_tiles

MS = [1, 2, 4, 16, 64, 256, 1024, 4096]
_ENV_MS = "LOWBIT_BENCH_WO_M"
_ENV_CANDIDATES = "LOWBIT_BENCH_WO_CANDIDATES"
_ROTATE_BYTES = 256 << 20
# name -> (ebits, mbits, bytes per weight value)
FORMATS = {"fp8": (4, 3, 1.0), "fp6": (3, 2, 0.75), "fp4": (2, 1, 0.5)}


def _module(lin: nn.Linear, fmt: str) -> nn.Module:
    if fmt == "fp8":
        return FP8WeightOnlyLinear.from_linear(lin)
    e, m, _ = FORMATS[fmt]
    return FPxWeightOnlyLinear.from_linear(lin, e, m)


def _decoded64(mod: nn.Module) -> torch.Tensor:
    """The module's exact weight, float64 on the GPU (the checks multiply there: M = 4096 is too slow on CPU)."""
    if isinstance(mod, FP8WeightOnlyLinear):
        w = mod.weight.double()
    else:
        f = {(3, 2): E3M2_FN, (2, 1): E2M1_FN}[(mod.ebits, mod.mbits)]
        w = from_fpx_bits(unpack_fpx_tiles(mod.weight, f.bits, mod.in_features), f, torch.float64)
    return w * mod.weight_scale.double()[:, None]


def _check(out: torch.Tensor, x: torch.Tensor, w64: torch.Tensor) -> str:
    exact = x.double() @ w64.T
    ratio = float((out.double() - exact).abs().max() / (exact.abs().max() * 2.0**-7))
    return "ok" if ratio <= 1.0 else f"FAIL {ratio:.3g}"


def _call(backend, config):
    """``f(x, module)``: the module's op with ``backend`` / ``config`` forced."""
    from lowbit_flex.kernels.float_weight_dispatch import float_weight_only_linear_cuda

    def f(x, m):
        e, mb = (4, 3) if isinstance(m, FP8WeightOnlyLinear) else (m.ebits, m.mbits)
        return float_weight_only_linear_cuda(x, m.weight, m.weight_scale, m.bias, e, mb, backend=backend,
                                             config=config)  # fmt: skip

    return f


def _candidates(M: int, N: int, K: int, which: str) -> dict:
    """Every backend / config the dispatch could pick for M rows, as ``f(x, module)`` (``which``: ``"cuda"`` the
    CUDA GEMV's only, ``"cutlass"`` the CUTLASS GEMM's and dequantize + cuBLAS only, ``"gluon"`` the Gluon
    kernel's and dequantize + cuBLAS only, ``"wgmma"`` the CUDA WGMMA GEMM's, the Gluon kernel's and dequantize +
    cuBLAS)."""
    from lowbit_flex.kernels.float_weight_dispatch import Backend, cuda_gemv_supported, cutlass_gemm_supported
    from lowbit_flex.kernels.float_weight_gemv import GEMV_CONFIGS, GEMV_MAX_M
    from lowbit_flex.kernels.float_weight_gemv_cuda import GEMV_CUDA_CONFIGS
    from lowbit_flex.kernels.float_weight_only_linear import DOT_CONFIGS
    from lowbit_flex.kernels.float_weight_sm90 import GLUON_CONFIGS
    from lowbit_flex.kernels.float_weight_tma import TMA_CONFIGS
    from lowbit_flex.kernels.fp8_weight_gemm_cutlass import CONFIGS as CUTLASS_CONFIGS

    call = _call

    out = {}
    if which == "wgmma":
        from lowbit_flex.kernels.float_weight_dispatch import cuda_gemm_supported
        from lowbit_flex.kernels.float_weight_gemm_cuda import GEMM_CUDA_CONFIGS

        # (K % 16 == 0: every format) row tiles near M (at most twice M, 64+ from 64)
        if cuda_gemm_supported(torch.device("cuda"), M, K, 8):
            tiles = {c: bm for c, bm in GEMM_CUDA_CONFIGS.items() if bm <= max(16, 2 * M) and (M < 64 or bm >= 64)}
            out = {f"wgmma {c}": call(Backend.CUDA_GEMM, c) for c in tiles}
        which = "gluon"
    if which == "gluon":
        out |= {f"gluon {c}": call(Backend.GLUON, c) for c in GLUON_CONFIGS} if M >= 16 else {}
        return out | {"dequant_mm": call(Backend.DEQUANT_MM, "")}
    if M >= 16 and which != "cuda" and cutlass_gemm_supported(torch.device("cuda"), N, K, 8):  # fp8 only
        out |= {f"cutlass {c}": call(Backend.CUTLASS_GEMM, c) for c in CUTLASS_CONFIGS}
    if M >= 16 and which == "cutlass":
        out["dequant_mm"] = call(Backend.DEQUANT_MM, "")
    if which == "cutlass":
        return out
    if cuda_gemv_supported(torch.device("cuda"), M, K, 8):  # (K % 16 == 0: every format)
        out |= {f"cuda {c}": call(Backend.CUDA_GEMV, c) for c in GEMV_CUDA_CONFIGS}
    if which == "cuda":
        return out
    if M <= GEMV_MAX_M:
        out |= {f"gemv {c}": call(Backend.GEMV, c) for c in GEMV_CONFIGS}
    for c, cfg in DOT_CONFIGS.items():
        if (cfg.block_m == 16) == (M <= 16) or M == 64:
            out[f"dot {c}"] = call(Backend.DOT, c)
    for c, cfg in TMA_CONFIGS.items():  # sm_90; 16-row tiles for decode sizes, the others from M = 64
        if (cfg.block_m == 16) == (M <= 16) or M == 16:
            out[f"tma {c}"] = call(Backend.TMA, c)
    if M >= 16:
        out["dequant_mm"] = call(Backend.DEQUANT_MM, "")
    return out


def run(bench: Bench) -> None:
    from lowbit_flex.kernels.arch import register_a_wgmma_pipelines, sm_count
    from lowbit_flex.kernels.float_weight_dispatch import (
        choose,
        cuda_gemm_supported,
        cuda_gemv_supported,
        cutlass_gemm_supported,
        gluon_supported,
    )
    from lowbit_flex.kernels.float_weight_gemv_cuda import gemv_cuda_config

    bw = copy_bandwidth_gbps()
    pipelined = register_a_wgmma_pipelines(torch.device("cuda"), True)
    print(f"  copy bandwidth {bw:.0f} GB/s; verified configs pipeline their WGMMAs: {pipelined}")
    table = bench.table("weight-only linear, whole module (bf16 in/out)", baseline="bf16 nn.Linear")
    host = bench.table("host us per eager call (no CUDA graph), M = 1", baseline="bf16 nn.Linear")
    torch.set_grad_enabled(False)
    ms = [int(m) for m in os.environ[_ENV_MS].split(",")] if os.environ.get(_ENV_MS) else MS
    for K, N in SHAPES_KN[:1] if bench.quick else SHAPES_KN:
        n_sets = max(1, min(8, math.ceil(_ROTATE_BYTES / (N * K * 2))))
        lins = [nn.Linear(K, N, bias=False, device="cuda", dtype=torch.bfloat16) for _ in range(n_sets)]
        mods = {f: [_module(lin, f) for lin in lins] for f in FORMATS}
        w64 = {f: _decoded64(mods[f][0]) for f in FORMATS}
        for M in [1, 16] if bench.quick else ms:
            n_x = max(1, min(n_sets, math.ceil(_ROTATE_BYTES / (M * K * 2))))
            xs = [torch.randn(M, K, device="cuda", dtype=torch.bfloat16) for _ in range(n_x)]
            sets = lambda ms_, xs=xs: [(xs[i % len(xs)], m) for i, m in enumerate(ms_)]
            times = {"bf16 nn.Linear": bench.time(lambda x, m: m(x), *sets(lins))}
            extra: dict = {}
            which = os.environ.get(_ENV_CANDIDATES, "1")
            candidates = _candidates(M, N, K, which) if which != "0" else {}
            for f, (_, _, nbytes) in FORMATS.items():
                mod = mods[f][0]
                extra[f"check {f}"] = _check(mod(xs[0]), xs[0], w64[f])
                times[f] = bench.time(lambda x, m: m(x), *sets(mods[f]))
                bits = 1 + FORMATS[f][0] + FORMATS[f][1]
                dev = torch.device("cuda")
                gemv, cutlass = cuda_gemv_supported(dev, M, K, bits), cutlass_gemm_supported(dev, N, K, bits)
                gemm = cuda_gemm_supported(dev, M, K, bits)
                rule = choose(bits, M, True, pipelined, gemv, cutlass, gluon_supported(dev), gemm, N, K)
                config = rule.config or gemv_cuda_config(N, sm_count(torch.device("cuda")))  # CUDA GEMV: by N
                extra[f"backend {f}"] = f"{rule.backend.value} {config}".strip()
                triton = choose(bits, M, True, pipelined, False, n=N, k=K)  # the table without the CUDA GEMV
                if triton != rule:
                    extra[f"triton {f}"] = f"{triton.backend.value} {triton.config}".strip()
                    times[f"{f} triton"] = bench.time(_call(triton.backend, triton.config), *sets(mods[f]))
                if M <= 16:
                    extra[f"floor frac {f}"] = (N * K * nbytes) / (bw * 1e9) * 1e3 / times[f]
                for label, fn in candidates.items():
                    if (label.startswith("cutlass") and bits != 8) or (label.startswith("gluon") and bits == 8):
                        continue
                    extra[f"check {f} {label}"] = _check(fn(xs[0], mod), xs[0], w64[f])
                    times[f"{f} {label}"] = bench.time(fn, *sets(mods[f]))
            table.add({"K": K, "N": N, "M": M}, times, **extra)
            base = times["bf16 nn.Linear"]
            # every method's ratio, so a run cut short still leaves its measurements in the log
            print(f"  K={K} N={N} M={M}: " + " ".join(f"{k}={base / v:.2f}" for k, v in times.items()), flush=True)
            if M == 1:
                x = xs[0]
                us = {"bf16 nn.Linear": host_us(lins[0], x)} | {f: host_us(mods[f][0], x) for f in FORMATS}
                us_ms = {k: v * 1e-3 for k, v in us.items()}
                host.add({"K": K, "N": N}, us_ms, **{f"{k} us": v for k, v in us.items()})
        del lins, mods
        torch.cuda.empty_cache()
