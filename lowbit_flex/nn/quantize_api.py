"""``quantize_(model, config)``: swap ``nn.Linear`` layers for quantized modules, in place.

Each config type registers one handler (``@register_quantize_handler(MyConfig)``) that turns an ``nn.Linear``
into its quantized module (with empty buffers for a layer on the meta device), or raises :class:`SkipLayer` with
the reason when the kernels cannot take its shape. Skipped layers stay in high precision and are listed in one
warning.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.modules.linear import NonDynamicallyQuantizableLinear

_log = logging.getLogger("lowbit_flex")
Handler = Callable[[nn.Linear, object], nn.Module]
_HANDLERS: dict[type, Handler] = {}


class SkipLayer(Exception):
    """Raised by a handler for a layer it cannot quantize; the message says why."""


def register_quantize_handler(config_type: type) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        if config_type in _HANDLERS:
            raise ValueError(f"config_type: a handler for {config_type.__name__} is already registered")
        _HANDLERS[config_type] = fn
        return fn

    return register


def quantize_(
    model: nn.Module,
    config: object,
    filter_fn: Callable[[nn.Module, str], bool] | None = None,
    device: torch.device | str | None = None,
) -> nn.Module:
    """Replace every ``nn.Linear`` of ``model`` (for which ``filter_fn(module, fqn)`` is true) with the quantized
    module ``config`` describes, in place; return ``model``.

    - ``device``: each layer is moved there just before it is quantized (layer by layer: a model on the CPU can be
      quantized on a GPU without ever holding all of it there in float). The quantized modules stay on it.
    - A model on the meta device gets quantized modules with empty (meta) buffers of the right shapes and dtypes,
      so ``quantize_(meta_model, config); meta_model.load_state_dict(quantized_state_dict, assign=True)`` restores a
      quantized checkpoint without materialising any float weight.
    - ``nn.MultiheadAttention``'s ``out_proj`` (a ``NonDynamicallyQuantizableLinear``, whose ``.weight`` the
      attention reads directly) is kept, as are layers the kernels cannot take: every kept layer is listed, with
      the reason, in one warning. ``nn.TransformerEncoderLayer``s whose feed-forward was quantized are kept off
      PyTorch's fused inference fast path, which would read the packed weights as floats.
    - Progress is shown when quantizing takes longer than a couple of seconds: a tqdm bar when tqdm is installed,
      else a ``logging`` line (logger ``lowbit_flex``) every tenth of the layers.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    handler = _handler(config)
    targets = []
    for parent_name, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            fqn = f"{parent_name}.{name}" if parent_name else name
            if isinstance(child, nn.Linear) and (filter_fn is None or filter_fn(child, fqn)):
                targets.append((parent, name, child, fqn))
    skipped: list[str] = []
    progress = _Progress(len(targets))
    for parent, name, child, fqn in targets:
        try:
            if isinstance(child, NonDynamicallyQuantizableLinear):
                raise SkipLayer("nn.MultiheadAttention's out_proj: the attention reads its float .weight directly")
            if device is not None and not child.weight.is_meta:
                child = child.to(device)
            setattr(parent, name, handler(child, config))
        except SkipLayer as why:
            skipped.append(f"{fqn} ({why})")
        progress.step(fqn)
    progress.close()
    for module in model.modules():
        if isinstance(module, nn.TransformerEncoderLayer):
            _keep_off_fast_path(module)
    if skipped:
        warnings.warn(
            f"quantize_: kept {len(skipped)} layer(s) unquantized: " + "; ".join(skipped), UserWarning, stacklevel=2
        )
    return model


def quantize_linear(linear: nn.Linear, config: object) -> nn.Module:
    """The quantized module ``config`` makes of one ``nn.Linear`` (what ``quantize_`` puts in its place); raises
    :class:`SkipLayer` when the kernels cannot take it."""
    return _handler(config)(linear, config)


def registered_configs() -> tuple[type, ...]:
    """The config types ``quantize_`` accepts (one registered handler each)."""
    return tuple(_HANDLERS)


def _handler(config: object) -> Handler:
    handler = _HANDLERS.get(type(config))
    if handler is None:
        known = ", ".join(sorted(t.__name__ for t in _HANDLERS)) or "none registered"
        raise TypeError(f"config: expected one of {known}, got {type(config).__name__}")
    return handler


def _keep_off_fast_path(layer: nn.TransformerEncoderLayer) -> None:
    """In eval mode without grad, ``nn.TransformerEncoderLayer`` runs a fused fast path that reads
    ``linear1.weight`` / ``linear2.weight`` as dense float matrices, which a quantized module's packed buffer is
    not. PyTorch skips that path for any layer with forward hooks, so a layer with a quantized feed-forward gets a
    no-op pre-hook (about a microsecond per call) instead of a global switch."""
    quantized = any(not isinstance(getattr(layer, n), nn.Linear) for n in ("linear1", "linear2"))
    if quantized and _no_op_hook not in layer._forward_pre_hooks.values():
        layer.register_forward_pre_hook(_no_op_hook)


def _no_op_hook(module: nn.Module, args: tuple) -> None:
    return None


# Quantizing shows progress only once it has taken this long (most models quantize in well under a second).
_PROGRESS_AFTER_S = 2.0


def _tqdm():
    """tqdm's progress bar class, or None when tqdm is not installed (it is optional)."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm


class _Progress:
    def __init__(self, total: int) -> None:
        self.total, self.done, self.start, self.bar = total, 0, time.monotonic(), None
        self.shown = False
        self.every = max(1, total // 10)

    def step(self, fqn: str) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
            return
        if not self.shown and time.monotonic() - self.start < _PROGRESS_AFTER_S:
            return
        if not self.shown:
            self.shown = True
            bar_cls = _tqdm()
            if bar_cls is not None:
                self.bar = bar_cls(total=self.total, initial=self.done, desc="quantize_", unit="layer")
                return
        if self.done % self.every == 0 or self.done == self.total:
            _log.info("quantize_: %d/%d layers (%s)", self.done, self.total, fqn)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
