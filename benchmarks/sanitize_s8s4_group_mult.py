"""Run every config of the Hopper W4A8 GEMM with int8 group multipliers (``s8s4_group_mult_cutlass``) over ragged
shapes and check it against an exact reference, for compute-sanitizer.

    compute-sanitizer --tool memcheck python benchmarks/sanitize_s8s4_group_mult.py

Each ``GROUP_MULT_CONFIGS`` entry × group (128, 256) × output dtype × (M, N, K) (M and N that no tile divides, K of
one to many K tiles) runs once on fresh random codes, multipliers in [1, 16] (both extremes present), scales and
bias, into a NaN-poisoned output (the caching allocator is emptied first, so the output is a fresh allocation the
sanitizer watches), and is compared with the exact definition (float64 dots of integers, float64 scales) within
the output dtype's rounding plus float32 scaling error. Exits 1 on any mismatch; exits 0 with a message on a GPU
that is not compute 9.0 or without the CUDA library.
"""

from __future__ import annotations

import itertools
import sys

import torch

import lowbit_flex  # noqa: F401
from lowbit_flex.kernels.s8s4_cutlass import (
    GROUP_MULT_CONFIGS,
    group_mult_supported,
    library_available,
    s8s4_group_mult_cutlass,
)
from lowbit_flex.quant import pack_int4
from lowbit_flex.quant.int4 import GROUP_MULT_INT8_MAX
from lowbit_flex.testing import w4a8_exact_f64, w4a8_rounding_misses

SHAPES = list(itertools.product((1, 77, 130, 300), (16, 144, 272), (256, 768, 4096)))
_EMPTY = torch.empty


def _poisoned(*args, **kwargs):
    t = _EMPTY(*args, **kwargs)
    return t.fill_(float("nan")) if t.is_floating_point() else t


def main() -> int:
    if not group_mult_supported(128, 128, 1024, 128) or not library_available():
        print("s8s4 group-multiplier sanitize: needs a compute 9.0 GPU and the CUDA library; nothing run")
        return 0
    gen = torch.Generator().manual_seed(0)
    bad = runs = 0
    for (M, N, K), name, group, out_dtype in itertools.product(
        SHAPES, GROUP_MULT_CONFIGS, (128, 256), (torch.bfloat16, torch.float16)
    ):
        if K % group:
            continue
        groups = K // group
        xq = torch.randint(-128, 128, (M, K), dtype=torch.int8, generator=gen)
        q = torch.randint(-8, 8, (N, K), dtype=torch.int8, generator=gen)
        mult = torch.randint(1, GROUP_MULT_INT8_MAX + 1, (N, groups), dtype=torch.int8, generator=gen)
        q.view(-1)[0], mult.view(-1)[0] = -8, GROUP_MULT_INT8_MAX  # the product -128 at least once
        xs = 10 ** (torch.rand(M, generator=gen) * 3 - 3)
        channel = 10 ** (torch.rand(N, generator=gen) * 3 - 5)
        bias = torch.randn(N, generator=gen)
        torch.cuda.empty_cache()
        torch.empty = _poisoned  # the wrapper's output starts as NaN
        try:
            out = s8s4_group_mult_cutlass(
                xq.cuda(), xs.cuda(), pack_int4(q).cuda(), channel.cuda(), mult.t().contiguous().cuda(), bias.cuda(),
                out_dtype, name,
            )  # fmt: skip
        finally:
            torch.empty = _EMPTY
        torch.cuda.synchronize()
        ref, mag = w4a8_exact_f64(xq, xs, q, channel.double()[:, None] * mult.double(), bias)
        # float32 roundings: acc -> float, two scale products and the bias add
        runs += 1
        if w4a8_rounding_misses(out, ref, mag, 5):
            bad += 1
            print(f"MISMATCH {name} group={group} {out_dtype} M={M} N={N} K={K}")
    print(f"s8s4 group-multiplier sanitize: {runs} runs, {bad} mismatches")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
