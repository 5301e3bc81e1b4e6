"""Run every config of the large-M W4A8 kernel that unpacks the weight first (``kernels/s8s4_unpacked_gemm.py``) over
ragged shapes and check it against an exact reference, for compute-sanitizer.

    compute-sanitizer --tool memcheck python benchmarks/sanitize_s8s4_unpacked.py

Each ``UNPACKED_CONFIGS`` entry × (per channel | groups of 32 | groups of 128 where K allows | groups of 32 given as
integer multipliers in [0, 16] of a channel scale: the multiplying unpack) × ragged (M, N, K) runs once (the
caching allocator is emptied first, so the output and the unpacked weight are fresh allocations the sanitizer
watches) and is compared with the exact definition (float64 dots of integers, float64 scales) within bf16 rounding
plus float32 scaling error. Exits 1 on any mismatch.
"""

from __future__ import annotations

import itertools
import sys

import torch

import lowbit_flex  # noqa: F401
from lowbit_flex.kernels.s8s4_unpacked_gemm import UNPACKED_CONFIGS, s8s4_unpacked_gemm_triton
from lowbit_flex.quant import pack_int4
from lowbit_flex.testing import w4a8_exact_f64, w4a8_rounding_misses

SHAPES = list(itertools.product((1, 77, 130, 300), (40, 136), (96, 384)))


def main() -> int:
    gen = torch.Generator().manual_seed(0)
    bad = runs = 0
    kinds = (None, 32, 128, "mult32")
    for (M, N, K), (name, cfg), kind in itertools.product(SHAPES, UNPACKED_CONFIGS.items(), kinds):
        group = 32 if kind == "mult32" else kind
        if group is not None and K % group:
            continue
        groups = 1 if group is None else K // group
        xq = torch.randint(-128, 128, (M, K), dtype=torch.int8, generator=gen)
        xs = 10 ** (torch.rand(M, generator=gen) * 3 - 3)
        q = torch.randint(-8, 8, (N, K), dtype=torch.int8, generator=gen)
        ws = 10 ** (torch.rand(N, groups, generator=gen) * 3 - 3)
        ws = ws.squeeze(1) if group is None else ws
        bias = torch.randn(N, generator=gen)
        mult = None
        if kind == "mult32":  # the kernel gets the channel scale and (groups, N) multipliers; the reference both
            ws = ws[:, 0].contiguous()
            mult = torch.randint(0, 17, (groups, N), dtype=torch.int8, generator=gen)
        torch.cuda.empty_cache()
        out = s8s4_unpacked_gemm_triton(
            xq.cuda(), xs.cuda(), pack_int4(q).cuda(), ws.cuda(), bias.cuda(), torch.bfloat16, cfg,
            w_group_mult=None if mult is None else mult.cuda(),
        )  # fmt: skip
        torch.cuda.synchronize()
        ref_ws = ws if mult is None else ws.double()[:, None] * mult.t().double()
        ref, mag = w4a8_exact_f64(xq, xs.view(M), q, ref_ws, bias)
        runs += 1
        if w4a8_rounding_misses(out, ref, mag, 2 * K // 32 + 4):
            bad += 1
            print(f"MISMATCH {name} {kind} M={M} N={N} K={K}")
    print(f"s8s4 unpacked sanitize: {runs} runs, {bad} mismatches")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
