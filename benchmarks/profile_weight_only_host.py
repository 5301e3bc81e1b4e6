"""Where the host time of one eager fp8 / fp4 weight-only decode call goes (no CUDA graph), on a GPU machine:

    python3 -m benchmarks.profile_weight_only_host [--k 4096 --n 4096]

Prints microseconds per call of bf16 ``nn.Linear``, each module, the op through the dispatcher, the op body
without it, and the body's pieces (argument checks, the cached route, the launch, the split-K reduce, allocation),
then a cProfile of the fp8 module call sorted by own time. Calls are back to back with the GPU kept busy by the same
calls, as in :func:`benchmarks.harness.host_us`.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

import lowbit_flex  # noqa: F401
from benchmarks.harness import host_us, print_profile
from lowbit_flex.nn import FP8WeightOnlyLinear, FPxWeightOnlyLinear


def main() -> None:
    from lowbit_flex.kernels import float_weight_dispatch as d
    from lowbit_flex.kernels.common import reduce_split_k, tma_base_aligned
    from lowbit_flex.nn._storage import half_compute
    from lowbit_flex.ops.eager import needs_dispatcher
    from lowbit_flex.ops.fp8_weight_only_linear import _check_args, _fp8_weight_only_linear

    p = argparse.ArgumentParser()
    p.add_argument("--k", type=int, default=4096)
    p.add_argument("--n", type=int, default=4096)
    a = p.parse_args()
    torch.set_grad_enabled(False)
    lin = nn.Linear(a.k, a.n, bias=False, device="cuda", dtype=torch.bfloat16)
    fp8 = FP8WeightOnlyLinear.from_linear(lin)
    fp4 = FPxWeightOnlyLinear.from_linear(lin, 2, 1)
    x = torch.randn(1, a.k, device="cuda", dtype=torch.bfloat16)
    w, ws = fp8.weight, fp8.weight_scale
    key = (x.device, 1, a.n, a.k, 4, 3, a.k, 2, a.k, True, False, None, None)
    route = d._route(*key)
    plan = route.plan
    out = torch.empty(1, a.n, dtype=torch.bfloat16, device="cuda")
    part = torch.empty((max(plan.splits, 1), 1, a.n), dtype=torch.float32, device="cuda")
    launch_args = (x, w, ws, ws, out, part, 1, a.n, a.k, a.k, a.k, a.n, plan.tiles_per_split)
    rows = {
        "bf16 nn.Linear": lambda: lin(x),
        "FP8WeightOnlyLinear": lambda: fp8(x),
        "FPxWeightOnlyLinear fp4": lambda: fp4(x),
        "fp8 op (dispatcher)": lambda: torch.ops.lowbit.fp8_weight_only_linear(x, w, ws, None),
        "fp8 op body, no dispatcher": lambda: _fp8_weight_only_linear(x, w, ws, None),
        "  needs_dispatcher": lambda: needs_dispatcher(x),
        "  half_compute": lambda: half_compute(x, None),
        "  _check_args": lambda: _check_args(x, w, ws, None),
        "  float_weight_only_linear_cuda": lambda: d.float_weight_only_linear_cuda(x, w, ws, None, 4, 3),
        "    tma_base_aligned": lambda: tma_base_aligned(x, w),
        "    cached route": lambda: d._route(*key),
        "    torch.empty": lambda: torch.empty(1, a.n, dtype=torch.bfloat16, device="cuda"),
        "    cached launch": lambda: plan.launch(*launch_args),
        "    split-K reduce": lambda: reduce_split_k(part, out, ws, None, post_scale=plan.dec_scale),
    }
    print(f"host us per call, K={a.k} N={a.n}, M = 1 ({route.backend.value}, {plan.splits} splits)")
    for name, fn in rows.items():
        print(f"  {name:34s} {host_us(fn, calls=2000):7.1f}")
    print_profile(fp8, x, top=20)


if __name__ == "__main__":
    main()
