"""``quantize_(model, config)``: swap ``nn.Linear`` layers for quantized modules, in place.

Each config type registers one handler (``@register_quantize_handler(MyConfig)``) that turns an ``nn.Linear``
into its quantized module, or raises :class:`SkipLayer` with the reason when the kernels cannot take its shape.
Skipped layers stay in high precision and are listed in one warning.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

from torch import nn

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
) -> nn.Module:
    """Replace every ``nn.Linear`` of ``model`` (for which ``filter_fn(module, fqn)`` is true) with the quantized
    module ``config`` describes, in place; return ``model``. Layers the kernels cannot take are kept and listed in
    a warning."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    handler = _HANDLERS.get(type(config))
    if handler is None:
        known = ", ".join(sorted(t.__name__ for t in _HANDLERS)) or "none registered"
        raise TypeError(f"config: expected one of {known}, got {type(config).__name__}")
    skipped: list[str] = []
    for parent_name, parent in list(model.named_modules()):
        for name, child in list(parent.named_children()):
            fqn = f"{parent_name}.{name}" if parent_name else name
            if not isinstance(child, nn.Linear) or (filter_fn is not None and not filter_fn(child, fqn)):
                continue
            try:
                setattr(parent, name, handler(child, config))
            except SkipLayer as why:
                skipped.append(f"{fqn} ({why})")
    if skipped:
        warnings.warn(
            f"quantize_: kept {len(skipped)} layer(s) unquantized: " + "; ".join(skipped), UserWarning, stacklevel=2
        )
    return model
