"""Where the host time of one eager W4A8 decode call goes (no CUDA graph), on a GPU machine:

    python3 -m benchmarks.profile_w4a8_host [--k 4096 --n 4096 --group 128]

Prints microseconds per call of the whole layer, the op, the op's Python body without the dispatcher, its pieces
(argument checks, dispatch rule, kernel launcher, one cached launch, Triton's own JIT launch) next to bf16
``nn.Linear``, then a cProfile of the layer call sorted by own time.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

import lowbit_flex  # noqa: F401
from benchmarks.harness import host_us, print_profile
from lowbit_flex.nn import W4A8Linear


def main() -> None:
    from lowbit_flex.kernels.s8s4_dispatch import rule_for
    from lowbit_flex.kernels.s8s4_gemv import GEMV_CONFIGS, _plan, _s8s4_gemv_kernel, s8s4_gemv_triton
    from lowbit_flex.ops.w4a8_linear import _check_args, w4a8_linear

    p = argparse.ArgumentParser()
    p.add_argument("--k", type=int, default=4096)
    p.add_argument("--n", type=int, default=4096)
    p.add_argument("--group", type=int, default=128)
    a = p.parse_args()
    torch.set_grad_enabled(False)
    lin = nn.Linear(a.k, a.n, bias=False, device="cuda", dtype=torch.bfloat16)
    layer = W4A8Linear.from_linear(lin, a.group or None)
    x = torch.randn(1, a.k, device="cuda", dtype=torch.bfloat16)
    w, ws, b = layer.weight, layer.weight_scale, layer.bias
    body = w4a8_linear._init_fn
    rule = rule_for(x.device, ws, 1, a.n, a.k)
    cfg = GEMV_CONFIGS[rule.config]
    out = torch.empty(1, a.n, dtype=torch.bfloat16, device="cuda")
    groups = ws.shape[1] if ws.dim() == 2 else 1
    plan = _plan(x.device, 1, a.n, a.k, groups, x.dtype, torch.bfloat16, False, cfg)
    args = (x, ws, w.view(torch.int32), ws, ws, out, 1, a.n, a.k, a.k // 8, groups, a.k // groups, plan.per_split)
    rows = {
        "bf16 nn.Linear": lambda: lin(x),
        "W4A8Linear": lambda: layer(x),
        "op (dispatcher)": lambda: torch.ops.lowbit.w4a8_linear(x, w, ws, b),
        "op body, no dispatcher": lambda: body(x, w, ws, b),
        "  _check_args": lambda: _check_args(x, w, ws, b, None),
        "  rule_for": lambda: rule_for(x.device, ws, 1, a.n, a.k),
        "  s8s4_gemv_triton": lambda: s8s4_gemv_triton(x, None, w, ws, None, torch.bfloat16, cfg, out=out),
        "    cached launch": lambda: plan.launch(*args),
        "    Triton JIT launch": lambda: _s8s4_gemv_kernel[plan.launch.grid](*args, **plan.launch.meta),
        "    torch.empty": lambda: torch.empty(1, a.n, dtype=torch.bfloat16, device="cuda"),
    }
    print(f"host us per call, K={a.k} N={a.n} group={a.group} ({rule.backend.value} {rule.config})")
    for name, fn in rows.items():
        print(f"  {name:28s} {host_us(fn, calls=2000):7.1f}")
    print_profile(layer, x, top=25)


if __name__ == "__main__":
    main()
