"""Run every W4A8 decode-kernel config over ragged shapes and check it against an exact reference, for
compute-sanitizer.

    compute-sanitizer --tool memcheck python benchmarks/sanitize_s8s4_decode.py

Each ``DECODE_CONFIGS`` entry × (int8 input with scales | float input quantized in the kernel) × (per channel |
group-wise) × ragged (M, N, K) runs once into a NaN-poisoned output and is compared with the exact definition
(int64 dots, float64 scales) within bf16 rounding plus float32 scaling error. Exits 1 on any mismatch.
"""

from __future__ import annotations

import itertools
import sys

import torch

import lowbit_flex  # noqa: F401
from lowbit_flex.kernels.s8s4_decode import DECODE_CONFIGS, s8s4_decode_triton
from lowbit_flex.quant import pack_int4

SHAPES = list(itertools.product((1, 3, 16), (40, 136), (96, 512)))


def main() -> int:
    gen = torch.Generator().manual_seed(0)
    bad = runs = 0
    for (M, N, K), (name, cfg), fused, groups in itertools.product(SHAPES, DECODE_CONFIGS.items(), (0, 1), (1, 0)):
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
            s8s4_decode_triton(xf.cuda(), None, w, wsd, bd, torch.bfloat16, cfg, out=out)
        else:
            s8s4_decode_triton(xq.cuda(), xs.view(M).cuda(), w, wsd, bd, torch.bfloat16, cfg, out=out)
        torch.cuda.synchronize()
        g = K // groups
        xg, qg = xq.double().view(M, groups, g), q.double().view(N, groups, g)
        dots = torch.einsum("mgk,ngk->mng", xg, qg)
        abs_dots = torch.einsum("mgk,ngk->mng", xg.abs(), qg.abs())  # sum |products|: what float32 sums round
        scales = ws.double().view(1, N, groups) * xs.double().view(M, 1, 1)
        ref = (dots * scales).sum(-1) + bias.double()
        mag = (abs_dots * scales).sum(-1) + bias.double().abs()
        tol = ref.abs() * 2.0**-8 + (groups + 4) * 2.0**-24 * mag + 1e-30
        runs += 1
        if not bool(((out.double().cpu() - ref).abs() <= tol).all()):
            bad += 1
            print(f"MISMATCH {name} fused={fused} groups={groups} M={M} N={N} K={K}")
    print(f"s8s4 decode sanitize: {runs} runs, {bad} mismatches")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
