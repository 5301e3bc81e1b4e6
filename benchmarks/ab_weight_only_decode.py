"""Decode-size fp8 / fp6 / fp4 weight-only layers for an A/B of two CUDA libraries: run once per library (one
process each, alternated; ``LOWBIT_FLEX_LIBRARY=<.so>`` picks a build) and compare the lines.

    python3 -m benchmarks.ab_weight_only_decode LABEL [M,...] [KxN,...] [fp8,fp6,fp4]

Per (shape, M): the CUDA-graph time of bf16 ``nn.Linear``, of each module (the dispatch table's pick) and of forced
paths (M <= 16: the WGMMA GEMM's 16-row tile for every format; the CUDA GEMV for fp8, and for fp6 / fp4 at M <= 8;
above 16: the WGMMA GEMM's row tiles near M for fp8),
inputs and weights rotated past L2, each method checked against float64 first (``_check``: "ok" or "FAIL"). One line
each: ``LABEL K= N= M= <method>: <µs>us x<bf16 time / time> <check> bits=<digest>``; the digest (of the checked
output's bytes, same seeds in every process) tells whether two builds give the same bits. Defaults: M = 1, 16, 64;
the issue's four shapes and Llama-2-7B's 4096 x 11008. docs/measurements/h100_run69_weight_only_stream_k_pdl.md
used it.
"""

from __future__ import annotations

import hashlib
import math
import os
import sys

import torch
from torch import nn

import lowbit_flex  # noqa: F401
from benchmarks.bench_float_weight_only_linear import FORMATS, _call, _check, _decoded64, _module
from benchmarks.harness import time_ms
from lowbit_flex.kernels.float_weight_dispatch import Backend

SHAPES_KN = [(4096, 4096), (4096, 14336), (14336, 4096), (8192, 8192), (4096, 11008)]
_ROTATE_BYTES = 256 << 20
_ROW_TILES = (32, 64, 128, 256)  # the WGMMA GEMM's x-row tiles forced for fp8 above M = 16 (those near M)


def main(label: str, ms: list[int], shapes: list[tuple[int, int]], formats: tuple[str, ...] = tuple(FORMATS)) -> None:
    torch.manual_seed(0)
    torch.set_grad_enabled(False)
    props = torch.cuda.get_device_properties(0)
    print(label, props.name, props.uuid, "LOWBIT_FLEX_LIBRARY", os.environ.get("LOWBIT_FLEX_LIBRARY", "-"), flush=True)
    for K, N in shapes:
        n_sets = max(1, min(8, math.ceil(_ROTATE_BYTES / (N * K * 2))))
        lins = [nn.Linear(K, N, bias=False, device="cuda", dtype=torch.bfloat16) for _ in range(n_sets)]
        mods = {f: [_module(lin, f) for lin in lins] for f in formats}
        w64 = {f: _decoded64(mods[f][0]) for f in formats}
        for M in ms:
            xs = [torch.randn(M, K, device="cuda", dtype=torch.bfloat16) for _ in range(n_sets)]
            variants = [("bf16", "bf16", lambda x, m: m(x), lins)]
            for f in formats:
                variants.append((f, f"{f} module", lambda x, m: m(x), mods[f]))
                if M > 16:
                    near_m = [bm for bm in _ROW_TILES if M <= 4 * bm <= 8 * M] if f == "fp8" else []
                    for cfg in (f"wgmma_{bm}x128" for bm in near_m):
                        variants.append((f, f"{f} {cfg}", _call(Backend.CUDA_GEMM, cfg), mods[f]))
                    continue
                variants.append((f, f"{f} wgmma_16x128", _call(Backend.CUDA_GEMM, "wgmma_16x128"), mods[f]))
                if f == "fp8" or M <= 8:
                    variants.append((f, f"{f} cuda_gemv", _call(Backend.CUDA_GEMV, None), mods[f]))
            base = None
            for f, name, fn, ms_ in variants:
                out = fn(xs[0], ms_[0])
                check = "ok" if f == "bf16" else _check(out, xs[0], w64[f])
                digest = hashlib.sha1(out.view(torch.int16).cpu().numpy().tobytes()).hexdigest()[:12]
                t = time_ms(fn, *[(xs[i], m) for i, m in enumerate(ms_)])
                base = base or t
                print(f"{label} K={K} N={N} M={M} {name}: {t * 1e3:.2f}us x{base / t:.3f} {check} bits={digest}",
                      flush=True)  # fmt: skip
        del lins, mods, w64
        torch.cuda.empty_cache()


if __name__ == "__main__":
    args = sys.argv[1:] or ["run"]
    ms = [int(m) for m in args[1].split(",")] if len(args) > 1 else [1, 16, 64]
    shapes = [tuple(int(v) for v in s.split("x")) for s in args[2].split(",")] if len(args) > 2 else SHAPES_KN
    main(args[0], ms, shapes, tuple(args[3].split(",")) if len(args) > 3 else tuple(FORMATS))
