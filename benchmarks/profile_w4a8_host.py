"""Where the host time of one eager W4A8 decode call goes (no CUDA graph), on a GPU machine:

    python3 -m benchmarks.profile_w4a8_host [--k 4096 --n 4096 --group 0 128]

Prints microseconds per call of the whole layer, the op, the op's Python body without the dispatcher, its pieces
(argument checks, dispatch rule, the decode launcher and its raw launch: ``ctypes`` for the CUDA GEMV, the cached
and JIT launches for the Triton GEMV) next to bf16
``nn.Linear``, one column per ``--group`` (timed in one process, alternating, so they share the machine's slow
spells), then a cProfile of each layer's call sorted by own time.
"""

from __future__ import annotations

import argparse
import statistics

import torch
from torch import nn

import lowbit_flex  # noqa: F401
from benchmarks.harness import host_us, print_profile
from lowbit_flex.nn import W4A8Linear


def _rows(lin: nn.Linear, group: int, k: int, n: int) -> tuple[str, W4A8Linear, torch.Tensor, dict]:
    """The timed callables for one W4A8 layer (``group`` 0: per-channel), and a title naming its kernel. The rows
    below the op body are the pieces of the decode path the dispatch table picks at M = 1 (the CUDA GEMV's
    ``ctypes`` launch, or the Triton GEMV's cached and JIT launches)."""
    from lowbit_flex.kernels.s8s4_dispatch import Backend, decode_launcher, rule_for
    from lowbit_flex.ops.w4a8_linear import _check_args, w4a8_linear

    layer = W4A8Linear.from_linear(lin, group or None)
    x = torch.randn(1, k, device="cuda", dtype=torch.bfloat16)
    w, ws, b = layer.weight, layer.weight_scale, layer.bias
    body = w4a8_linear._init_fn
    rule = rule_for(x.device, ws, 1, n, k)
    launch = decode_launcher(rule.backend, rule.config)
    out = torch.empty(1, n, dtype=torch.bfloat16, device="cuda")
    rows = {
        "bf16 nn.Linear": lambda: lin(x),
        "W4A8Linear": lambda: layer(x),
        "op (dispatcher)": lambda: torch.ops.lowbit.w4a8_linear(x, w, ws, b),
        "op body, no dispatcher": lambda: body(x, w, ws, b),
        "  _check_args": lambda: _check_args(x, w, ws, b, None, None, None),
        "  rule_for": lambda: rule_for(x.device, ws, 1, n, k),
        f"  {rule.backend.value} launcher": lambda: launch(x, None, w, ws, None, torch.bfloat16, out=out),
        "    torch.empty": lambda: torch.empty(1, n, dtype=torch.bfloat16, device="cuda"),
    }
    if rule.backend is Backend.CUDA_GEMV:
        from lowbit_flex.kernels.quantize_int8_rowwise import quantize_int8_rowwise_triton
        from lowbit_flex.kernels.w4a8_gemv_cuda import launch_gemv_cuda, quantize_then_gemv_cuda

        rows["    ctypes launch"] = lambda: launch_gemv_cuda(x, None, w, ws, None, torch.bfloat16, rule.config, out=out)
        # The quantizer first, in the same foreign call, the GEMV its programmatic dependent (quantize_then_gemv_cuda;
        # run 74's Triton quantizer and a second call took 85-90 us per eager call), on the legacy default stream
        # (the rows above) and on a side stream (where CUDA graphs capture); the Triton quantizer, which main's
        # M = 2..16 rows launch before the GEMV, and the int8 GEMV's launch alone.
        xq, xs = quantize_int8_rowwise_triton(x)
        side = torch.cuda.Stream()

        def on_side_stream(fn):
            def call():
                with torch.cuda.stream(side):
                    fn()

            return call

        programmatic = lambda: quantize_then_gemv_cuda(x, None, w, ws, None, torch.bfloat16, rule.config, out=out)
        rows["quantizer, then GEMV (one call)"] = programmatic
        rows["  on a side stream"] = on_side_stream(programmatic)
        rows["  Triton quantizer kernel"] = lambda: quantize_int8_rowwise_triton(x)
        rows["  GEMV launch alone (int8 x)"] = lambda: launch_gemv_cuda(
            xq, xs.view(-1), w, ws, None, torch.bfloat16, rule.config, out=out
        )
    elif rule.backend is Backend.TRITON_GEMV:
        from lowbit_flex.kernels.s8s4_gemv import GEMV_CONFIGS, _plan, _s8s4_gemv_kernel

        groups = ws.shape[1] if ws.dim() == 2 else 1
        plan = _plan(x.device, 1, n, k, groups, x.dtype, torch.bfloat16, False, GEMV_CONFIGS[rule.config])
        args = (x, ws, w.view(torch.int32), ws, ws, out, 1, n, k, k // 8, groups, k // groups, plan.per_split)
        rows["    cached launch"] = lambda: plan.launch(*args)
        rows["    Triton JIT launch"] = lambda: _s8s4_gemv_kernel[plan.launch.grid](*args, **plan.launch.meta)
    title = f"group {group}" if group else "per-channel"
    return f"{title} ({rule.backend.value} {rule.config})", layer, x, rows


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--k", type=int, default=4096)
    p.add_argument("--n", type=int, default=4096)
    p.add_argument("--group", type=int, nargs="+", default=[128], help="0: per-channel; several: compared")
    p.add_argument("--rounds", type=int, default=5, help="rounds over every layer and row (median reported)")
    a = p.parse_args()
    torch.set_grad_enabled(False)
    lin = nn.Linear(a.k, a.n, bias=False, device="cuda", dtype=torch.bfloat16)
    layers = [_rows(lin, g, a.k, a.n) for g in a.group]
    # Every layer's rows in turn, round after round: a slow spell of the machine (seen in runs 21 and 22, when two
    # layers ran in separate processes) then lands on all columns alike instead of on one.
    times = [{name: [] for name in rows} for _, _, _, rows in layers]
    for _ in range(a.rounds):
        for (_, _, _, rows), t in zip(layers, times):
            for name, fn in rows.items():
                t[name].append(host_us(fn, calls=1000))
    print(f"host us per call, K={a.k} N={a.n}, median of {a.rounds} rounds of 1000 calls")
    print(f"  {'':28s} " + " | ".join(title for title, *_ in layers))
    for name in dict.fromkeys(n for t in times for n in t):  # rows of every layer (their kernels may differ)
        print(f"  {name:28s} " + " | ".join(f"{statistics.median(t[name]):7.1f}" if name in t else "      —"
                                             for t in times))  # fmt: skip
    for title, layer, x, _ in layers:
        print(f"\ncProfile of the W4A8Linear call, {title}")
        print_profile(layer, x, top=25)


if __name__ == "__main__":
    main()
