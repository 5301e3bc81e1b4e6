"""Run every CUTLASS W4A8 kernel over ragged shapes and check it against an exact reference, for compute-sanitizer.

    compute-sanitizer --tool memcheck python benchmarks/sanitize_s8s4.py [--quick]

Every kernel family ("sm80", "sm90") × tile config × output dtype × (M, N, K) that ``cutlass_s8s4_supported`` admits on
this GPU runs once, with its output poisoned (NaN) beforehand; so does ``torch.ops.lowbit.s8s4_linear`` when it is
registered (the dispatching op: Triton or CUTLASS). Each result is compared with an exact CPU reference (int64 dot
products, scales in float64) within the output dtype's rounding. Exits 1 on any mismatch or error; the last line
is a summary. Self-contained on purpose: it must run as is under the sanitizer on a bare GPU machine.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time

import torch

from lowbit_flex.testing import w4a8_rounding_misses

# Ragged M and N (no tile divides them), M = 1, K below, at and far above every K tile.
MS = (1, 3, 17, 129)
NS = (8, 24, 136)
KS = (32, 96, 4096)
QUICK = ((1, 8, 32), (17, 136, 96), (129, 24, 4096))


def _pack_int4(w: torch.Tensor) -> torch.Tensor:
    lo, hi = w[:, 0::2].to(torch.int16) & 0xF, w[:, 1::2].to(torch.int16) & 0xF
    return (lo | (hi << 4)).to(torch.uint8).view(torch.int8)  # element 2j in the low nibble of byte j


def _problem(M: int, N: int, K: int, gen: torch.Generator):
    x = torch.randint(-128, 128, (M, K), dtype=torch.int8, generator=gen)
    w = torch.randint(-8, 8, (N, K), dtype=torch.int8, generator=gen)
    xs = (10 ** (torch.rand(M, generator=gen, dtype=torch.float64) * 2 - 3)).float()
    ws = (10 ** (torch.rand(N, generator=gen, dtype=torch.float64) * 2 - 3)).float()
    bias = (torch.randn(N, generator=gen, dtype=torch.float64) * 4).float()
    acc = x.long() @ w.long().t()  # exact
    ref = acc.double() * xs.double()[:, None] * ws.double()[None, :] + bias.double()
    prod = (ref - bias.double()).abs()
    return (x, xs, _pack_int4(w), ws, bias), ref, prod + bias.double().abs()


def _cases(quick: bool):
    return QUICK if quick else itertools.product(MS, NS, KS)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="three shapes instead of the full grid")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("sanitize_s8s4: no CUDA GPU", file=sys.stderr)
        return 2
    import lowbit_flex  # noqa: F401  (registers torch.ops.lowbit)
    from lowbit_flex.kernels import s8s4_cutlass as cut

    real_empty = torch.empty

    def poisoned_empty(*a, **k):
        t = real_empty(*a, **k)
        return t.fill_(float("nan")) if t.is_floating_point() else t

    runners = [(f"cutlass {v} {n}", v, n) for v, names in cut.CUTLASS_CONFIGS.items() for n in names]
    op = getattr(torch.ops.lowbit, "s8s4_linear", None) if hasattr(torch.ops, "lowbit") else None

    gen = torch.Generator().manual_seed(int(time.time()))  # fresh inputs each run; the seed is printed
    print(f"seed {gen.initial_seed()} on {torch.cuda.get_device_name()}")
    ran = failed = skipped = 0
    for M, N, K in _cases(args.quick):
        host, ref, mag = _problem(M, N, K, gen)
        dev = [t.cuda() for t in host]
        for dtype in (torch.float16, torch.bfloat16):
            calls = []
            for label, family, name in runners:
                if not cut.cutlass_s8s4_supported(family, M, N, K):
                    skipped += 1
                    continue
                calls.append((label, cut.s8s4_linear_cutlass, (*dev, dtype, family, name)))
            if op is not None:
                calls.append(("torch.ops.lowbit.s8s4_linear", op, (*dev, dtype)))
            for label, fn, fn_args in calls:
                ran += 1
                try:
                    torch.empty = poisoned_empty  # every output/workspace the call allocates starts as NaN
                    try:
                        out = fn(*fn_args)
                    finally:
                        torch.empty = real_empty
                    torch.cuda.synchronize()
                    bad = w4a8_rounding_misses(out, ref, mag, 4)  # fp32: acc -> float, 2 scales, bias
                except Exception as e:  # report every failing kernel, not just the first
                    print(f"ERROR {label} M={M} N={N} K={K} {dtype}: {type(e).__name__}: {e}")
                    failed += 1
                    continue
                if bad:
                    print(f"MISMATCH {label} M={M} N={N} K={K} {dtype}: {bad} of {M * N} elements")
                    failed += 1
    status = "FAILED" if failed else "OK"
    print(f"sanitize_s8s4: {status}: {ran} runs, {failed} failed, {skipped} skipped (unsupported here)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
