"""Run every config of the CUDA tensor-core W4A8 GEMV over ragged shapes and check it against an exact reference,
for compute-sanitizer.

    compute-sanitizer --tool memcheck python benchmarks/sanitize_w4a8_gemv_cuda.py [int8] [fused] [quantizer]

Each ``GEMV_CUDA_CONFIGS`` entry × (int8 input with scales | float input quantized in the kernel | float input
quantized by the quantizer kernel first, the GEMV its programmatic dependent: ``quantize_then_gemv_cuda``; all three
unless some are named) × (per channel | groups of 128 / 256) × ragged (M, N, K) runs once into a NaN-poisoned output
and is compared with the exact
definition (int64 dots, float64 scales) within bf16 rounding plus float32 scaling error (the bound of
tests/kernels/test_w4a8_gemv_cuda.py's fp32_terms). Exits 1 on any mismatch.
"""

from __future__ import annotations

import itertools
import sys

import torch

import lowbit_flex  # noqa: F401
from lowbit_flex.kernels.w4a8_gemv_cuda import GEMV_CUDA_CONFIGS, quantize_then_gemv_cuda, s8s4_gemv_cuda
from lowbit_flex.quant import pack_int4
from lowbit_flex.testing import w4a8_exact_f64, w4a8_rounding_misses

# M: one 8-token tile, a ragged one, two tiles; N: a partial 16-row tile; K: one chunk, steps past K.
SHAPES = list(itertools.product((1, 3, 16), (40, 136), (256, 1536)))


MODES = ("int8", "fused", "quantizer")


def main(modes: tuple[str, ...] = MODES) -> int:
    gen = torch.Generator().manual_seed(0)
    bad = runs = 0
    for (M, N, K), cfg, mode, group in itertools.product(SHAPES, GEMV_CUDA_CONFIGS, modes, (0, 128, 256)):
        groups = K // group if group else 1
        xf = torch.randn(M, K, generator=gen).bfloat16()
        xq, xs = torch.ops.lowbit.quantize_int8_rowwise(xf)  # CPU reference quantizer (the kernel matches it)
        q = torch.randint(-8, 8, (N, K), dtype=torch.int8, generator=gen)
        ws = 10 ** (torch.rand(N, groups, generator=gen) * 3 - 3)
        ws = ws.squeeze(1) if groups == 1 else ws
        bias = torch.randn(N, generator=gen)
        out = torch.full((M, N), float("nan"), dtype=torch.bfloat16, device="cuda")
        w, wsd, bd = pack_int4(q).cuda(), ws.cuda(), bias.cuda()
        if mode == "fused":
            s8s4_gemv_cuda(xf.cuda(), None, w, wsd, bd, torch.bfloat16, cfg, out=out)
        elif mode == "quantizer":
            quantize_then_gemv_cuda(xf.cuda(), None, w, wsd, bd, torch.bfloat16, cfg, out=out)
        else:
            s8s4_gemv_cuda(xq.cuda(), xs.view(M).cuda(), w, wsd, bd, torch.bfloat16, cfg, out=out)
        torch.cuda.synchronize()
        ref, mag = w4a8_exact_f64(xq, xs.view(M), q, ws, bias)
        runs += 1
        if w4a8_rounding_misses(out, ref, mag, 2 * groups + 20):
            bad += 1
            print(f"MISMATCH {cfg} {mode} group={group} M={M} N={N} K={K}")
    print(f"w4a8 CUDA GEMV sanitize: {runs} runs, {bad} mismatches")
    return 1 if bad else 0


if __name__ == "__main__":
    unknown = set(sys.argv[1:]) - set(MODES)
    if unknown:
        sys.exit(f"unknown modes {sorted(unknown)}: expected some of {MODES}")
    sys.exit(main(tuple(sys.argv[1:]) or MODES))
