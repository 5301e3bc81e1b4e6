"""Shared helpers of the fp8 / FPx weight-only linear tests."""

from __future__ import annotations

import torch


def exact_linear(x, w64, scale, bias):
    """float64 ``x @ w64.T * scale + bias`` and a bound on the kernel's error against it: one rounding to the
    output dtype (a full ulp: the Triton 3.9 interpreter truncates fp32 -> bf16 where GPUs round to nearest)
    plus float32 accumulation over K (K * 2^-23 * sum |x w s|)."""
    s = scale.double()
    out = x.double() @ w64.T * s
    if bias is not None:
        out = out + bias.double()
    k = x.shape[-1]
    acc_bound = k * 2.0**-23 * (x.double().abs() @ w64.abs().T * s)
    ulp = 2.0 ** torch.floor(torch.log2(out.abs().clamp_min(1e-30))) * torch.finfo(x.dtype).eps
    return out, ulp + 2 * acc_bound


def assert_within(out, exact, bound, name="out"):
    assert out.shape == exact.shape and out.dtype in (torch.bfloat16, torch.float16)
    err = (out.double().cpu() - exact).abs()
    bad = ~(err <= bound)
    assert not bool(bad.any()), (
        f"{name}: {int(bad.sum())} elements beyond the bound, worst {float((err / bound).max())}"
    )
