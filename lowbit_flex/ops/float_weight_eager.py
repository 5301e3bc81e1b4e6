"""The eager fast path of the fp8 / fp6 / fp4 weight-only linears: checks and launches planned once per metadata key.

A decode loop calls a module with the same shapes thousands of times, at batch 1, without CUDA graphs. There the
op's body re-checks every argument, looks its route up with a 13-value key and binds Triton's arguments on each
call: 53-92 us of host time per call on the H200 machine (run 19), against 23-32 us for bf16 ``nn.Linear``. Here a
call builds one key from its tensors' metadata, and a known key allocates the output and launches the kernels bound
to everything but the tensors (:class:`~lowbit_flex.kernels.float_weight_dispatch.EagerLinear`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from lowbit_flex.ops.eager import PlanCache, current_device_index

_PLANS = PlanCache()  # EagerLinear, or _BODY, by float_weight_only_eager's key
_BODY = False  # the key's calls take the op's body


def float_weight_only_eager(
    x: torch.Tensor,
    w: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None,
    ebits: int,
    mbits: int,
    check: Callable[..., object],
    body: Callable[..., torch.Tensor],
) -> torch.Tensor:
    """One eager call of a weight-only op whose dispatcher the caller skipped (``needs_dispatcher(x)`` is False):
    ``check(x, w, w_scale, bias, ebits, mbits)`` runs once per key (raising on bad input, so nothing is cached for
    it); ``body(x, w, w_scale, bias, ebits, mbits)`` runs calls that the bound launches do not take (non-contiguous
    or misaligned operands, no rows, dequantize + cuBLAS, Triton launch hooks)."""
    try:
        key = (
            ebits, mbits, current_device_index(),
            x.dtype, x.shape, x.stride(), x.get_device(), x.data_ptr() % 16,
            type(w), w.dtype, w.shape, w.stride(), w.get_device(), w.data_ptr() % 16,
            type(w_scale), w_scale.dtype, w_scale.shape, w_scale.stride(), w_scale.get_device(),
            w_scale.data_ptr() % 16,
            None if bias is None else
            (type(bias), bias.dtype, bias.shape, bias.stride(), bias.get_device(), bias.data_ptr() % 16),
        )  # fmt: skip
        plan = _PLANS.get(key)
    except (AttributeError, TypeError):  # not a tensor, or an unhashable format: the body raises the right error
        return body(x, w, w_scale, bias, ebits, mbits)
    if plan is None:
        check(x, w, w_scale, bias, ebits, mbits)
        plan = _PLANS.remember(key, _plan(x, w, w_scale, bias, ebits, mbits))
    if plan is _BODY or plan.hooked():
        return body(x, w, w_scale, bias, ebits, mbits)
    return plan(x, w, w_scale, bias)


def _plan(x, w, w_scale, bias, ebits, mbits):
    """The bound launches for checked arguments, or ``_BODY``."""
    tensors = (w, w_scale) if bias is None else (w, w_scale, bias)
    if not x.is_cuda or not x.is_contiguous():
        return _BODY
    if any(type(t) is not torch.Tensor or not t.is_contiguous() for t in tensors):
        return _BODY
    from lowbit_flex.kernels.float_weight_dispatch import eager_linear

    plan = eager_linear(x, w, w_scale, bias, int(ebits), int(mbits))
    return _BODY if plan is None else plan
