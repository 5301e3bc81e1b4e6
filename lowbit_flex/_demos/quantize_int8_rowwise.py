"""Demo: fused row-wise int8 quantization."""

from __future__ import annotations

import torch

from lowbit_flex._demos import Row, time_ms


def run(device: str) -> list[Row]:
    x = torch.randn(4096, 4096, device=device, dtype=torch.bfloat16)
    xq, scale = torch.ops.lowbit.quantize_int8_rowwise(x)
    err = ((xq.double() * scale.double() - x.double()).norm() / x.double().norm()).item()
    row = Row("quantize_int8_rowwise", "triton kernel" if device == "cuda" else "CPU reference", err)
    if device == "cuda":

        def eager(x):
            s = x.float().abs().amax(-1, keepdim=True) / 127
            return torch.round(x.float() / s).clamp(-127, 127).to(torch.int8), s

        row.ms = time_ms(torch.ops.lowbit.quantize_int8_rowwise, x)
        row.baseline, row.baseline_ms = "unfused torch ops", time_ms(eager, x)
    return [row]
