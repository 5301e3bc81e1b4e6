"""When an eager call may skip the custom-op dispatcher (the module fast paths of the linear ops)."""

from __future__ import annotations

import torch


def needs_dispatcher(x: torch.Tensor) -> bool:
    """Whether a call with input ``x`` must go through ``torch.ops``: compiling or exporting, a fake, functional or
    other subclass tensor, a non-CUDA tensor, autograd, or an active dispatch / function mode. Everywhere else the
    dispatcher (autograd and backend wrappers of a ``triton_op``) changes nothing, and it cost 22 us of host time
    per call on the H200 machine, more than bf16 ``nn.Linear``'s whole call (19 us)."""
    return (
        torch.compiler.is_compiling()
        or type(x) is not torch.Tensor
        or not x.is_cuda
        or (x.requires_grad and torch.is_grad_enabled())
        or bool(torch._C._len_torch_dispatch_stack())
        or torch._C._is_torch_function_mode_enabled()
    )


class PlanCache(dict):
    """Eager launch plans by the metadata key of a call's arguments (types, dtypes, shapes, strides, devices and
    the op's options; whatever the checks and the launch depend on). Only calls whose checks passed are kept.
    Bounded: a caller sweeping shapes would otherwise grow it forever; when full it starts over (a plan is cheap to
    rebuild, and the shapes of a decode loop come back within a step)."""

    def __init__(self, max_plans: int = 256) -> None:
        super().__init__()
        self.max_plans = max_plans

    def remember(self, key: tuple, plan):
        if len(self) >= self.max_plans:
            self.clear()
        self[key] = plan
        return plan


# The current CUDA device's index, without torch.cuda.current_device's lazy-init check (an eager CUDA call has
# initialised CUDA already); -1 in CPU-only builds of torch, which lack the getter (the interpreter's tests).
current_device_index = getattr(torch._C, "_cuda_getDevice", None) or (lambda: -1)
