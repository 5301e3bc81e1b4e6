"""Run every config of both decode-sized W4A8 kernels (the tensor-core GEMV and the dp4a GEMV) over ragged shapes
and check it against an exact reference, for compute-sanitizer.

    compute-sanitizer --tool memcheck python benchmarks/sanitize_s8s4_decode.py

Each ``DECODE_CONFIGS`` / ``GEMV_CONFIGS`` entry × (int8 input with scales | float input quantized in the kernel) ×
(per channel | group-wise) × ragged (M, N, K) it takes runs once into a NaN-poisoned output and is compared with the
exact definition (int64 dots, float64 scales) within bf16 rounding plus float32 scaling error. Exits 1 on any mismatch.
"""

from __future__ import annotations

import itertools
import sys

import torch

import lowbit_flex  # noqa: F401
from lowbit_flex.kernels.s8s4_decode import DECODE_CONFIGS, s8s4_decode_triton
from lowbit_flex.kernels.s8s4_gemv import GEMV_CONFIGS, GEMV_MAX_M, s8s4_gemv_triton
from lowbit_flex.quant import pack_int4
from lowbit_flex.testing import w4a8_exact_f64, w4a8_rounding_misses

SHAPES = list(itertools.product((1, 3, 16), (40, 136), (96, 1536)))
KERNELS = [(f"decode {n}", c, s8s4_decode_triton, 16) for n, c in DECODE_CONFIGS.items()]
KERNELS += [(f"gemv {n}", c, s8s4_gemv_triton, GEMV_MAX_M) for n, c in GEMV_CONFIGS.items()]


def main() -> int:
    gen = torch.Generator().manual_seed(0)
    bad = runs = 0
    for (M, N, K), (name, cfg, launch, max_m), fused, groups in itertools.product(SHAPES, KERNELS, (0, 1), (1, 0)):
        if max_m < M:
            continue
        groups = groups or K // 32  # 0: groups of 32 (the smallest the op takes)
        xf = torch.randn(M, K, generator=gen).bfloat16()
        xq, xs = torch.ops.lowbit.quantize_int8_rowwise(xf)  # CPU reference quantizer (the kernel matches it)
        q = torch.randint(-8, 8, (N, K), dtype=torch.int8, generator=gen)
        ws = 10 ** (torch.rand(N, groups, generator=gen) * 3 - 3)  # (N, 1) -> (N,): per channel
        ws = ws.squeeze(1) if groups == 1 else ws
        bias = torch.randn(N, generator=gen)
        out = torch.full((M, N), float("nan"), dtype=torch.bfloat16, device="cuda")
        w, wsd, bd = pack_int4(q).cuda(), ws.cuda(), bias.cuda()
        if fused:
            launch(xf.cuda(), None, w, wsd, bd, torch.bfloat16, cfg, out=out)
        else:
            launch(xq.cuda(), xs.view(M).cuda(), w, wsd, bd, torch.bfloat16, cfg, out=out)
        torch.cuda.synchronize()
        ref, mag = w4a8_exact_f64(xq, xs.view(M), q, ws, bias)
        runs += 1
        if w4a8_rounding_misses(out, ref, mag, groups + 4):
            bad += 1
            print(f"MISMATCH {name} fused={fused} groups={groups} M={M} N={N} K={K}")
    print(f"s8s4 decode sanitize: {runs} runs, {bad} mismatches")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
