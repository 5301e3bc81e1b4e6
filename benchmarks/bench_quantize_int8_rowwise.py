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
    if not bench.quick:
        _sweep_long_rows(bench)


# Launch configs against the rule (kernels/quantize_int8_rowwise.pick_config) on the rows W4A8 layers quantize: 4096
# to 14336 values (Llama-2-7B's 11008, 14336 of Llama-3-8B's MLP), at decode and prefill M.
_SWEEP_CONFIGS = {
    "w8 one pass": (8, True),
    "w16 one pass": (16, True),
    "w32 one pass": (32, True),
    "w4 4096-steps": (4, False, 4096),
    "w8 4096-steps": (8, False, 4096),
    "w4 2048-steps": (4, False, 2048),
    "w8 8192-steps": (8, False, 8192),
}


def _sweep_long_rows(bench: Bench) -> None:
    from lowbit_flex.kernels.quantize_int8_rowwise import RowConfig, pick_config, quantize_int8_rowwise_triton

    table = bench.table("quantize_int8_rowwise launch configs (bf16 in), × the rule", baseline="rule")
    for m, k in [(16, 14336), (1024, 14336), (2048, 14336), (4096, 14336), (1024, 11008), (2048, 11008), (4096, 11008),
                 (4096, 8192), (4096, 4096)]:  # fmt: skip
        n_sets = max(1, min(8, (200 << 20) // (m * k * 2)))
        xs = [(torch.randn(m, k, device="cuda", dtype=torch.bfloat16),) for _ in range(n_sets)]
        ref = quantize_int8_rowwise_triton(*xs[0])
        times = {"rule": bench.time(quantize_int8_rowwise_triton, *xs), "clone x": bench.time(torch.clone, *xs)}
        extra = {"rule config": str(tuple(pick_config(m, k)))}
        for label, (warps, one_pass, *step) in _SWEEP_CONFIGS.items():
            block_k = 1 << (k - 1).bit_length() if one_pass else step[0]
            if one_pass and block_k > 16384:
                continue
            cfg = RowConfig(block_k, warps, single_pass=one_pass)
            out = quantize_int8_rowwise_triton(xs[0][0], cfg)
            extra[f"exact {label}"] = bool(torch.equal(out[0], ref[0]) and torch.equal(out[1], ref[1]))
            times[label] = bench.time(lambda x, cfg=cfg: quantize_int8_rowwise_triton(x, cfg), *xs)
        extra["rule GBps"] = m * k * 3 / 1e9 / (times["rule"] * 1e-3)
        table.add({"M": m, "K": k}, times, **extra)
