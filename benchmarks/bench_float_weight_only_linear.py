"""fp8 / fp6 / fp4 weight-only linear vs bf16 ``torch.mm`` and the unfused ``x @ w.to(bf16).T * s`` compiled.

Errors are relative to the float64 product with the *dequantized* weight (so they measure the kernel, not the
quantization). ``floor frac`` = the time to move the weight (+ x and out) bytes at the copy bandwidth measured in
this run, over the method's time: 1.0 is the memory floor. Weights rotate through enough copies to exceed L2.

The plain ``fp8/fp6/fp4 triton`` columns are the launcher's default; for M <= 16 the columns ``<format> <variant>``
force each kernel variant (``Variant``: ``words_dot``, ``words_fma``, ``bytes_dot``) so one run picks the winner.
"""

from __future__ import annotations

import torch

import lowbit_flex  # noqa: F401
from benchmarks.harness import Bench
from lowbit_flex.quant import E2M1_FN, E3M2_FN, E4M3FN, from_fpx_bits, pack_fpx, quantize_fpx_weight
from lowbit_flex.testing import rel_error

SHAPES = [(4096, 4096), (4096, 14336), (14336, 4096), (8192, 8192)]  # (K, N)
MS = [1, 4, 16, 128, 2048]


def _copy_bandwidth(bench: Bench) -> float:
    """Bytes read + written per second by a 1 GiB device-to-device copy, the best of two ways: a ``copy_``
    captured in a CUDA graph becomes a memcpy node, which measured only ~2.7 TB/s on an H200 (SM copy kernels
    reach ~4.2), so the copy is also timed eagerly and as an elementwise kernel."""
    x = torch.empty(1 << 28, dtype=torch.float32, device="cuda").normal_()
    out = torch.empty_like(x)
    ms = min(bench.time(lambda: out.copy_(x), graph=False), bench.time(lambda: torch.mul(x, 1.0, out=out)))
    return 2 * x.numel() * 4 / (ms * 1e-3)  # bytes / s


def _unfused(x, w8, s):
    return (x @ w8.to(torch.bfloat16).T * s).to(torch.bfloat16)


def run(bench: Bench) -> None:
    from lowbit_flex.kernels.float_weight_only_linear import (
        Variant,
        fp8_weight_only_linear_triton,
        fpx_weight_only_linear_triton,
    )

    torch._dynamo.config.recompile_limit = 256
    unfused = torch.compile(_unfused, dynamic=False)
    bw = _copy_bandwidth(bench)
    table = bench.table(f"weight-only linear, bf16 x (copy BW {bw / 1e12:.2f} TB/s)", baseline="bf16 mm")
    shapes = SHAPES[:1] if bench.quick else SHAPES
    for k, n in shapes:
        n_sets = max(2, min(16, -(-150 * 2**20 // (n * k // 2))))  # fp4 weights alone exceed L2 (50 MB)
        sets = []
        for _ in range(n_sets):
            w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * 0.02
            c8, s8 = quantize_fpx_weight(w, E4M3FN)
            c6, s6 = quantize_fpx_weight(w, E3M2_FN)
            c4, s4 = quantize_fpx_weight(w, E2M1_FN)
            sets.append((w, c8.view(torch.float8_e4m3fn), s8, pack_fpx(c6, 6), s6, pack_fpx(c4, 4), s4, (c6, c4)))
        for m in MS[:2] if bench.quick else MS:
            x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
            w, w8, s8, w6, s6, w4, s4, (c6, c4) = sets[0]
            x64 = x.double()
            errs = {
                "bf16 mm": rel_error(x @ w.T, x64 @ w.double().T),
                "unfused compiled": rel_error(unfused(x, w8, s8), x64 @ w8.double().T * s8.double()),
                "fp8 triton": rel_error(fp8_weight_only_linear_triton(x, w8, s8), x64 @ w8.double().T * s8.double()),
            }
            ref6 = x64 @ from_fpx_bits(c6, E3M2_FN, torch.float64).T * s6.double()
            ref4 = x64 @ from_fpx_bits(c4, E2M1_FN, torch.float64).T * s4.double()
            errs["fp6 e3m2 triton"] = rel_error(fpx_weight_only_linear_triton(x, w6, s6, 3, 2), ref6)
            errs["fp4 e2m1 triton"] = rel_error(fpx_weight_only_linear_triton(x, w4, s4, 2, 1), ref4)
            args = [(x, s) for s in sets]
            times = {
                "bf16 mm": bench.time(lambda x, s: torch.mm(x, s[0].T), *args),
                "unfused compiled": bench.time(lambda x, s: unfused(x, s[1], s[2]), *args),
                "fp8 triton": bench.time(lambda x, s: fp8_weight_only_linear_triton(x, s[1], s[2]), *args),
                "fp6 e3m2 triton": bench.time(lambda x, s: fpx_weight_only_linear_triton(x, s[3], s[4], 3, 2), *args),
                "fp4 e2m1 triton": bench.time(lambda x, s: fpx_weight_only_linear_triton(x, s[5], s[6], 2, 1), *args),
            }
            if m <= 16:  # forced variants: which kernel form wins at decode sizes
                for v in Variant:
                    times[f"fp8 {v.value}"] = bench.time(
                        lambda x, s, v=v: fp8_weight_only_linear_triton(x, s[1], s[2], variant=v), *args
                    )
                    for name, i, e, mb in (("fp6 e3m2", 3, 3, 2), ("fp4 e2m1", 5, 2, 1)):
                        times[f"{name} {v.value}"] = bench.time(
                            lambda x, s, i=i, e=e, mb=mb, v=v: fpx_weight_only_linear_triton(
                                x, s[i], s[i + 1], e, mb, variant=v
                            ),
                            *args,
                        )
                    errs[f"fp6 e3m2 {v.value}"] = rel_error(
                        fpx_weight_only_linear_triton(x, w6, s6, 3, 2, variant=v), ref6
                    )
            act = 2 * m * (k + n)
            floor = {"fp8": n * k + act, "fp6": n * k * 3 // 4 + act, "fp4": n * k // 2 + act}
            extra = {f"err {name}": e for name, e in errs.items()}
            extra |= {f"floor frac {f}": b / bw / (times[meth] * 1e-3) for f, b, meth in (
                ("fp8", floor["fp8"], "fp8 triton"), ("fp6", floor["fp6"], "fp6 e3m2 triton"),
                ("fp4", floor["fp4"], "fp4 e2m1 triton"))}  # fmt: skip
            extra["fp8 vs unfused ×"] = times["unfused compiled"] / times["fp8 triton"]
            table.add({"K": k, "N": n, "M": m}, times, **extra)
        del sets
        torch.cuda.empty_cache()
