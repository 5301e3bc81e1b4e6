"""Demo: exact FPx fake quantization and the fp8 / fp6 / fp4 weight-only linears."""

from __future__ import annotations

import torch

from lowbit_flex._demos import Row, time_ms
from lowbit_flex.quant import E2M1_FN, E3M2_FN, E4M3FN, float_quantize, pack_fpx_tiles, quantize_fpx_weight


def _rel(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.double() - ref.double()).norm() / ref.double().norm()).item()


def run(device: str) -> list[Row]:
    rows = []
    x = torch.randn(1 << 20, device=device)
    for fmt in (E4M3FN, E3M2_FN, E2M1_FN):  # the quantization error of each format on Gaussian data
        rows.append(
            Row(f"float_quantize {fmt}", "torch ops (one fused kernel compiled)", _rel(float_quantize(x, fmt), x))
        )
    m, k, n = (1, 4096, 4096) if device == "cuda" else (2, 512, 256)
    w = torch.randn(n, k, device=device, dtype=torch.bfloat16) * 0.02
    xa = torch.randn(m, k, device=device, dtype=torch.bfloat16)
    ref = xa.double() @ w.double().T
    c8, s8 = quantize_fpx_weight(w, E4M3FN)
    w8 = c8.view(torch.float8_e4m3fn)
    c6, s6 = quantize_fpx_weight(w, E3M2_FN)
    w6 = pack_fpx_tiles(c6, 6)
    path = "triton kernel" if device == "cuda" else "CPU reference"
    fp8 = lambda: torch.ops.lowbit.fp8_weight_only_linear(xa, w8, s8)
    fp6 = lambda: torch.ops.lowbit.fpx_weight_only_linear(xa, w6, s6, 3, 2)
    r8 = Row(f"fp8_weight_only_linear M={m} K={k} N={n}", path, _rel(fp8(), ref))
    r6 = Row(f"fpx_weight_only_linear e3m2 M={m} K={k} N={n}", path, _rel(fp6(), ref))
    if device == "cuda":
        for r, fn in ((r8, fp8), (r6, fp6)):
            r.ms = time_ms(fn)
            r.baseline, r.baseline_ms = "bf16 torch.mm", time_ms(torch.mm, xa, w.T)
    return [*rows, r8, r6]
