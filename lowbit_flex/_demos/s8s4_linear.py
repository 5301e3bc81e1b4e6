"""Demo: W4A8 linear (fused int8 activation quantization + ``lowbit::s8s4_linear``) vs bf16."""

from __future__ import annotations

import torch

from lowbit_flex._demos import Row, time_ms
from lowbit_flex.quant import quantize_int4_weight, unpack_int4


def _w4a8(x, w4, ws):
    xq, xs = torch.ops.lowbit.quantize_int8_rowwise(x)
    return torch.ops.lowbit.s8s4_linear(xq, xs, w4, ws, None, torch.bfloat16)


def _dequantized_f64(x, w4, ws):
    """The W4A8 definition in float64: dequantized int8 activations × dequantized int4 weights."""
    xq, xs = torch.ops.lowbit.quantize_int8_rowwise(x)
    N = w4.shape[0]
    w = unpack_int4(w4).double().view(N, ws.numel() // N, -1) * ws.double().view(N, -1, 1)
    return (xq.double() * xs.double()) @ w.view(N, -1).t()


def run(device: str) -> list[Row]:
    K = N = 4096 if device == "cuda" else 512
    rows = []
    for M, group in [(1, None), (4096 if device == "cuda" else 16, None), (1, 128)]:
        x = torch.randn(M, K, device=device, dtype=torch.bfloat16)
        w = torch.randn(N, K, device=device, dtype=torch.bfloat16)
        w4, ws = quantize_int4_weight(w, group)
        err = (_w4a8(x, w4, ws).double() - _dequantized_f64(x, w4, ws)).norm() / (x.double() @ w.double().t()).norm()
        path = "dispatched kernel" if device == "cuda" else "CPU reference"
        row = Row(f"s8s4_linear M={M} {'g' + str(group) if group else 'per-channel'}", path, err.item())
        if device == "cuda":
            row.ms = time_ms(_w4a8, x, w4, ws)
            row.baseline, row.baseline_ms = "bf16 x @ w.T", time_ms(lambda a, b: a @ b.t(), x, w)
        rows.append(row)
    return rows
