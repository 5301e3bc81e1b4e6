"""Fused row-wise int8 quantization vs the same math as unfused PyTorch ops and under torch.compile."""

from __future__ import annotations

import torch

import lowbit_flex  # noqa: F401
from benchmarks.harness import Bench


def _eager(x):
    xf = x.float()
    scale = xf.abs().amax(dim=-1, keepdim=True) / 127.0
    scale = torch.where(scale == 0, torch.ones_like(scale), scale)
    return torch.round(xf / scale).clamp_(-127, 127).to(torch.int8), scale


def run(bench: Bench) -> None:
    from lowbit_flex.kernels.quantize_int8_rowwise import quantize_int8_rowwise_triton

    compiled = torch.compile(_eager, dynamic=False)
    table = bench.table("quantize_int8_rowwise (bf16 in; int8 + fp32 scale out)", baseline="eager torch")
    shapes = [(1, 4096), (16, 4096), (1024, 4096), (4096, 8192), (8192, 14336)]
    for m, k in shapes[:2] if bench.quick else shapes:
        n_sets = max(1, min(8, (200 << 20) // (m * k * 2)))  # rotate so the working set exceeds L2
        xs = [(torch.randn(m, k, device="cuda", dtype=torch.bfloat16),) for _ in range(n_sets)]
        q, s = quantize_int8_rowwise_triton(*xs[0])
        rq, rs = torch.ops.lowbit.quantize_int8_rowwise(xs[0][0].cpu())
        exact = bool(torch.equal(q.cpu(), rq) and torch.equal(s.cpu(), rs))
        times = {
            "eager torch": bench.time(_eager, *xs),
            "torch.compile": bench.time(compiled, *xs),
            "lowbit triton": bench.time(quantize_int8_rowwise_triton, *xs),
        }
        gbytes = m * k * (2 + 1) / 1e9
        table.add({"M": m, "K": k}, times, exact=exact, GBps=gbytes / (times["lowbit triton"] * 1e-3))
