"""Where the host time of one eager fp8 / fp6 / fp4 weight-only decode call goes (no CUDA graph), on a GPU machine:

    python3 -m benchmarks.profile_weight_only_host [--k 4096 --n 4096] [--m 1]

Prints microseconds per call of bf16 ``nn.Linear``, each module (the eager fast path,
``ops/float_weight_eager.py``), each op through the dispatcher and its body without the fast path, then the
fast path's pieces, and a cProfile of the fp4 module call sorted by own time. Calls are back to back with the GPU
kept busy by the same calls, as in :func:`benchmarks.harness.host_us`.
"""

from __future__ import annotations

import argparse
import importlib

import torch
from torch import nn

import lowbit_flex  # noqa: F401
from benchmarks.harness import host_us, print_profile
from lowbit_flex.nn import FP8WeightOnlyLinear, FPxWeightOnlyLinear


def main() -> None:
    from lowbit_flex.ops.eager import needs_dispatcher

    fp8_op = importlib.import_module("lowbit_flex.ops.fp8_weight_only_linear")
    fpx_op = importlib.import_module("lowbit_flex.ops.fpx_weight_only_linear")
    p = argparse.ArgumentParser()
    p.add_argument("--k", type=int, default=4096)
    p.add_argument("--n", type=int, default=4096)
    p.add_argument("--m", type=int, default=1)
    a = p.parse_args()
    torch.set_grad_enabled(False)
    lin = nn.Linear(a.k, a.n, bias=False, device="cuda", dtype=torch.bfloat16)
    mods = {
        "fp8": FP8WeightOnlyLinear.from_linear(lin),
        "fp6": FPxWeightOnlyLinear.from_linear(lin, 3, 2),
        "fp4": FPxWeightOnlyLinear.from_linear(lin, 2, 1),
    }
    x = torch.randn(a.m, a.k, device="cuda", dtype=torch.bfloat16)
    rows = {"bf16 nn.Linear": lambda: lin(x)}
    for name, mod in mods.items():
        w, ws = mod.weight, mod.weight_scale
        rows[f"{name} module"] = mod.__call__
        if name == "fp8":
            rows[f"{name} op (dispatcher)"] = lambda w=w, ws=ws: torch.ops.lowbit.fp8_weight_only_linear(x, w, ws)
            rows[f"{name} op body"] = lambda w=w, ws=ws: fp8_op._fp8_weight_only_linear(x, w, ws)
        else:
            e, m = mod.ebits, mod.mbits
            rows[f"{name} op (dispatcher)"] = lambda w=w, ws=ws, e=e, m=m: torch.ops.lowbit.fpx_weight_only_linear(
                x, w, ws, e, m
            )
            rows[f"{name} op body"] = lambda w=w, ws=ws, e=e, m=m: fpx_op._fpx_weight_only_linear(x, w, ws, e, m)
    rows["  needs_dispatcher"] = lambda: needs_dispatcher(x)
    rows["  torch.empty"] = lambda: torch.empty(a.m, a.n, dtype=torch.bfloat16, device="cuda")
    print(f"host us per call, K={a.k} N={a.n}, M={a.m}")
    for name, fn in rows.items():
        args = (x,) if name.endswith("module") else ()
        print(f"  {name:28s} {host_us(fn, *args, calls=2000):7.1f}")
    print_profile(mods["fp4"], x, top=20)


if __name__ == "__main__":
    main()
