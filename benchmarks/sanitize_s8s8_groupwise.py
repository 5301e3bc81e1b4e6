"""Run every config of the Hopper group-wise CUTLASS GEMM (``kernels/s8s8_groupwise_cutlass.py``) over ragged shapes
and check it against an exact reference, for compute-sanitizer.

    compute-sanitizer --tool memcheck python benchmarks/sanitize_s8s8_groupwise.py

Each ``GROUPWISE_CONFIGS`` entry × every group it takes × output dtype × ragged (M, N, K) (M and N that no tile
divides, K of one to several K tiles, groups spanning one or two tiles) runs once through the kernel's wrapper
after the op's int4 -> int8 unpack (the caching allocator is emptied first, so the output and the unpacked weight are
fresh allocations the sanitizer watches) and is compared with the exact definition (float64 dots of integers,
float64 scales) within the output dtype's rounding plus float32 scaling error. Exits 1 on any mismatch; exits 0
with a message on a GPU that is not compute 9.0 or without the CUDA library.
"""

from __future__ import annotations

import itertools
import sys

import torch

import lowbit_flex  # noqa: F401
from lowbit_flex.kernels.s8s4_cutlass import library_available
from lowbit_flex.kernels.s8s4_unpacked_gemm import unpack_int4_triton
from lowbit_flex.kernels.s8s8_groupwise_cutlass import (
    GROUP_MULT_CONFIGS,
    GROUPWISE_CONFIGS,
    s8s8_group_mult_cutlass,
    s8s8_groupwise_cutlass,
    supported,
)
from lowbit_flex.quant import pack_int4
from lowbit_flex.testing import w4a8_exact_f64, w4a8_rounding_misses

SHAPES = list(itertools.product((1, 77, 130, 300), (8, 136, 200), (256, 768)))


def main() -> int:
    if not supported(128, 128, 1024, 128) or not library_available():
        print("s8s8 group-wise sanitize: needs a compute 9.0 GPU and the CUDA library; nothing run")
        return 0
    gen = torch.Generator().manual_seed(0)
    bad = runs = 0
    configs = {**GROUPWISE_CONFIGS, **GROUP_MULT_CONFIGS}
    cases = itertools.product(SHAPES, configs.items(), (torch.bfloat16, torch.float16))
    for (M, N, K), (name, groups_taken), out_dtype in cases:
        for group in groups_taken:
            if K % group:
                continue
            groups = K // group
            xq = torch.randint(-128, 128, (M, K), dtype=torch.int8, generator=gen)
            xs = 10 ** (torch.rand(M, generator=gen) * 3 - 3)
            q = torch.randint(-8, 8, (N, K), dtype=torch.int8, generator=gen)
            ws = 10 ** (torch.rand(N, groups, generator=gen) * 3 - 3)
            bias = torch.randn(N, generator=gen)
            torch.cuda.empty_cache()
            if name in GROUP_MULT_CONFIGS:  # integer multipliers times a channel scale (exact in float64)
                mult = torch.randint(-128, 128, (N, groups), dtype=torch.int8, generator=gen)
                channel = 10 ** (torch.rand(N, generator=gen) * 3 - 5)
                ws = channel.double()[:, None] * mult.double()
                out = s8s8_group_mult_cutlass(
                    xq.cuda(), xs.cuda(), unpack_int4_triton(pack_int4(q).cuda()), mult.cuda(), channel.cuda(),
                    bias.cuda(), out_dtype, name,
                )  # fmt: skip
            else:  # the kernel itself: the op reads a single group (K == group) as per-channel scales
                out = s8s8_groupwise_cutlass(
                    xq.cuda(), xs.cuda(), unpack_int4_triton(pack_int4(q).cuda()), ws.cuda(), bias.cuda(), out_dtype,
                    name,
                )  # fmt: skip
            torch.cuda.synchronize()
            ref, mag = w4a8_exact_f64(xq, xs, q, ws, bias)
            runs += 1
            if w4a8_rounding_misses(out, ref, mag, groups + 4):
                bad += 1
                print(f"MISMATCH {name} group={group} {out_dtype} M={M} N={N} K={K}")
    print(f"s8s8 group-wise sanitize: {runs} runs, {bad} mismatches")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
