"""Quantized modules keep their storage formats through module casts (``.to(dtype)``, ``.half()``, ``.float()``).

``nn.Module.to(torch.bfloat16)`` casts every floating-point buffer, which for a quantized module means the float8
codes and the float32 scales. A :class:`QuantizedModule` names the buffers whose dtype the kernels fix rather than
the model (``storage_buffers``: codes, packed words, scales, whatever their dtypes, and a bias the kernels read in
float32) and lets a module cast move them between devices only. Everything else (a bias in the activation dtype)
follows the cast like any float tensor.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
from torch import nn

from lowbit_flex._checks import HALF_DTYPES


class QuantizedModule(nn.Module):
    """Base of the quantized modules: the buffers named in ``storage_buffers`` keep their dtypes through
    ``_apply`` (which ``.to``, ``.half()``, ``.bfloat16()``, ``.float()``, ``.cuda()``, ``.to_empty()`` all go
    through); a device move, pinning or sharing still applies to them. Subclasses have ``in_features`` and
    ``out_features``, and all their state is in buffers (``lowbit_flex.hf`` fills them while loading)."""

    storage_buffers: ClassVar[tuple[str, ...]] = ("weight", "weight_scale")

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> QuantizedModule:
        kept = {name: self._buffers[name] for name in self.storage_buffers if self._buffers.get(name) is not None}
        for name in kept:  # hidden from nn.Module._apply, which would cast them
            self._buffers[name] = None
        try:
            super()._apply(fn, recurse)
        finally:
            self._buffers.update(kept)
        for name, t in kept.items():
            self._buffers[name] = _keep_dtype(fn, t)
        return self


def _keep_dtype(fn: Callable[[torch.Tensor], torch.Tensor], t: torch.Tensor) -> torch.Tensor:
    """``fn(t)`` when ``fn`` keeps ``t``'s dtype; else ``t`` moved to the device ``fn`` would put it on. ``fn`` is
    an opaque closure, so it is first tried on an empty tensor of ``t``'s dtype: no full-size cast is ever made."""
    probe = fn(t.new_empty(0))
    if probe.dtype == t.dtype:
        return fn(t)
    return t.to(probe.device)


def half_compute(x: torch.Tensor, bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(x, bias)`` in the dtype the weight-only ops compute in: ``x``'s when it is fp16/bf16, else bfloat16 (a
    float32 model). Casts only what differs, so a bf16 model pays nothing."""
    dtype = x.dtype if x.dtype in HALF_DTYPES else torch.bfloat16
    if x.dtype != dtype:
        x = x.to(dtype)
    if bias is not None and bias.dtype != dtype:
        bias = bias.to(dtype)
    return x, bias


def output_as(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``out`` in ``x``'s dtype (a float32 input computed in bfloat16 gets a float32 output)."""
    return out if out.dtype == x.dtype else out.to(x.dtype)
