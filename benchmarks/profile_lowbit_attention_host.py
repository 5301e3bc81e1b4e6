"""Where the host time of one eager ``lowbit_attention`` call goes (no CUDA graph), on a GPU machine:

    python3 -m benchmarks.profile_lowbit_attention_host [--L 128 --rounds 5]

Prints microseconds per call of SDPA, the public entry point, the op through the dispatcher, the op's body, and the
body's pieces (argument checks, the quantization launcher, the attention launcher, one allocation) at a shape whose
GPU time is small (1 x 16 x L x 128, bf16), then a cProfile of the entry point sorted by own time.
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F

import lowbit_flex  # noqa: F401
from benchmarks.harness import host_us, print_profile
from lowbit_flex.attention import lowbit_attention


def _rows(L: int, H: int = 16, D: int = 128) -> tuple[dict, tuple]:
    from lowbit_flex.kernels.fp8_attention import fp8_attention_triton
    from lowbit_flex.kernels.quantize_qkv import quantize_qkv_triton
    from lowbit_flex.ops.lowbit_attention import _lowbit_attention, check_inputs

    q, k, v = (torch.randn(1, H, L, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    q8, qs, k8, ks, v8, vs = quantize_qkv_triton(q, k, v, torch.float8_e4m3fn, True, True)
    rows = {
        "SDPA bf16": lambda: F.scaled_dot_product_attention(q, k, v),
        "lowbit_attention fp8": lambda: lowbit_attention(q, k, v),
        "lowbit_attention int8 pv16": lambda: lowbit_attention(q, k, v, qk="int8", pv="fp16"),
        "torch.ops.lowbit (dispatcher)": lambda: torch.ops.lowbit.lowbit_attention(q, k, v),
        "op body, no dispatcher": lambda: _lowbit_attention(q, k, v, False, None, "fp8", "fp8", True, False),
        "  check_inputs": lambda: check_inputs(q, k, v, "fp8", "fp8", False, None),
        "  quantize_qkv_triton": lambda: quantize_qkv_triton(q, k, v, torch.float8_e4m3fn, True, True),
        "  fp8_attention_triton": lambda: fp8_attention_triton(
            q8, k8, v8, qs, ks, vs, False, None, torch.bfloat16, False
        ),
        "    torch.empty": lambda: torch.empty((1, H, L, D), dtype=torch.bfloat16, device="cuda"),
    }
    return rows, (q, k, v)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--L", type=int, default=128)
    p.add_argument("--rounds", type=int, default=5, help="rounds over every row (median reported)")
    a = p.parse_args()
    torch.set_grad_enabled(False)
    rows, (q, k, v) = _rows(a.L)
    times = {name: [] for name in rows}
    for _ in range(a.rounds):  # rows in turn, round after round: a slow spell lands on all rows alike
        for name, fn in rows.items():
            times[name].append(host_us(fn, calls=1000))
    print(f"host us per call, 1x16x{a.L}x128 bf16, median of {a.rounds} rounds of 1000 calls")
    for name, t in times.items():
        print(f"  {name:32s} {statistics.median(t):7.1f}")
    print("\ncProfile of lowbit_attention (fp8)")
    print_profile(lambda: lowbit_attention(q, k, v), top=30)


if __name__ == "__main__":
    main()
