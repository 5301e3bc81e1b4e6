"""Every CUDA W4A8 GEMV config alone at M = 1 (CUDA-graph medians, weights rotated past L2) against bf16
``F.linear``: with a bf16 x the kernel quantizes (``fused``, what ``W4A8Linear`` runs) and with an int8 x quantized
beforehand (``int8``: the GEMV without its quantization prologue). Where the fixed cost of a layer goes.

    python3 -m benchmarks.probe_w4a8_gemv                      # the default launch
    LOWBIT_FLEX_PDL=1 python3 -m benchmarks.probe_w4a8_gemv    # programmatic dependent launch (sm_90): the A/B
    PROBE_CONFIGS=mma_n2k8_pf0,mma_n2k4_pf0 python3 -m ...     # a subset of configs
    PROBE_CHAIN=1 python3 -m ...                                # each call after an elementwise kernel writing x
    PROBE_SHAPES=4096x12288,11008x4096 python3 -m ...           # other K x N shapes
    LOWBIT_W4A8_GEMV_STAGE_X=0 python3 -m ...                   # x read from global memory, not staged (the A/B)

``PROBE_CHAIN=1`` times what a decoder layer runs: the GEMV right after the kernel that produced its input (here an
elementwise multiply, as a norm would be; bf16 ``F.linear`` gets the same multiply), instead of back-to-back GEMVs,
whose predecessor is the same GEMV (the most favourable case for programmatic launch).

Prints per shape every method in µs and × bf16, fastest first (the H200 numbers: docs/measurements/
h200_run25_w4a8_pdl.md, and with ``PROBE_CHAIN=1`` h200_run38_w4a8_decode_limits.md).
"""

from __future__ import annotations

import os

import torch

import lowbit_flex  # noqa: F401
from benchmarks.harness import time_ms
from lowbit_flex.kernels.w4a8_gemv_cuda import GEMV_CUDA_CONFIGS, s8s4_gemv_cuda

SHAPES_KN = [(4096, 4096), (8192, 8192), (4096, 14336), (14336, 4096)]
_ROTATE_BYTES = 256 << 20  # weight copies beyond the 50 MB L2


def _after_elementwise(fn):
    """``fn`` called on x rewritten by an elementwise kernel just before it (``PROBE_CHAIN=1``)."""
    if os.environ.get("PROBE_CHAIN") != "1":
        return fn
    return lambda x, *rest: fn(x * 1.0009765625 if x.is_floating_point() else x.neg().neg(), *rest)


def main() -> None:
    torch.manual_seed(0)
    keep = os.environ.get("PROBE_CONFIGS")
    shapes = os.environ.get("PROBE_SHAPES")
    shapes_kn = [tuple(int(v) for v in s.split("x")) for s in shapes.split(",")] if shapes else SHAPES_KN
    configs = [c for c in GEMV_CUDA_CONFIGS if not keep or c in keep.split(",")]
    print(f"LOWBIT_FLEX_PDL={os.environ.get('LOWBIT_FLEX_PDL', '0')} PROBE_CHAIN={os.environ.get('PROBE_CHAIN', '0')}")
    for K, N in shapes_kn:
        n = max(2, min(16, _ROTATE_BYTES // (N * K // 2)))
        ws = [torch.randint(-128, 128, (N, K // 2), dtype=torch.int8, device="cuda") for _ in range(n)]
        sc = [torch.rand(N, device="cuda") * 1e-2 + 1e-3 for _ in range(n)]
        xs = [torch.randn(1, K, device="cuda", dtype=torch.bfloat16) for _ in range(n)]
        xq = [torch.randint(-127, 128, (1, K), dtype=torch.int8, device="cuda") for _ in range(n)]
        xsc = [torch.rand(1, device="cuda") for _ in range(n)]
        wb = [torch.randn(N, K, device="cuda", dtype=torch.bfloat16) for _ in range(max(2, n // 4))]
        linear = _after_elementwise(torch.nn.functional.linear)
        row = {"bf16 F.linear": 1e3 * time_ms(linear, *[(xs[i % n], w) for i, w in enumerate(wb)])}
        for cfg in configs:
            fused = _after_elementwise(lambda x, w, s, c=cfg: s8s4_gemv_cuda(x, None, w, s, None, torch.bfloat16, c))
            row[f"{cfg} fused"] = 1e3 * time_ms(fused, *[(xs[i], ws[i], sc[i]) for i in range(n)])
            given = _after_elementwise(
                lambda x, s_x, w, s, c=cfg: s8s4_gemv_cuda(x, s_x, w, s, None, torch.bfloat16, c)
            )
            row[f"{cfg} int8"] = 1e3 * time_ms(given, *[(xq[i], xsc[i], ws[i], sc[i]) for i in range(n)])
        print(f"K={K} N={N}: int4 weight {N * K / 2e6:.1f} MB")
        for k, v in sorted(row.items(), key=lambda kv: kv[1]):
            print(f"   {k:24s} {v:7.2f} us  x{row['bf16 F.linear'] / v:.2f}", flush=True)


if __name__ == "__main__":
    main()
