"""Demo: fp8 / int8 attention (``lowbit_attention``) against bf16 SDPA."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lowbit_flex._demos import Row, time_ms
from lowbit_flex.attention import lowbit_attention
from lowbit_flex.testing import rel_error


def run(device: str) -> list[Row]:
    B, H, L, D = (4, 16, 4096, 128) if device == "cuda" else (1, 2, 256, 64)
    q, k, v = (torch.randn(B, H, L, D, device=device, dtype=torch.bfloat16) for _ in range(3))
    ref = F.scaled_dot_product_attention(q[:1, :2].double(), k[:1, :2].double(), v[:1, :2].double(), is_causal=True)
    sdpa = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)
    rows = []
    for qk, pv in (("fp8", "fp8"), ("int8", "fp8"), ("int8", "fp16")):  # int8/fp16: the accurate mode
        fn = lambda q, k, v, qk=qk, pv=pv: lowbit_attention(q, k, v, qk=qk, pv=pv, causal=True)
        path = "triton kernel (quantization included)" if device == "cuda" else "CPU float64 reference"
        row = Row(f"lowbit_attention {qk}/{pv}", path, rel_error(fn(q, k, v)[:1, :2], ref))
        if device == "cuda":
            row.ms = time_ms(fn, q, k, v)
            row.baseline, row.baseline_ms = "SDPA bf16", time_ms(sdpa, q, k, v)
        rows.append(row)
    return rows
