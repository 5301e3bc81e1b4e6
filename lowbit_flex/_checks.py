"""Argument checks shared by every op's real impl and fake impl.

Each op validates its arguments with the same function in eager, fake (meta) and compiled paths, so bad input
raises the same ``TypeError``/``ValueError`` everywhere, naming the argument and what was expected.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
HALF_DTYPES = (torch.float16, torch.bfloat16)


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``"bfloat16"``: how an op whose schema takes a dtype as a ``str`` receives it."""
    return str(dtype).removeprefix("torch.")


def _dtype_names(dtypes: Sequence[torch.dtype]) -> str:
    return " or ".join(map(dtype_name, dtypes))


def dtype_from_name(name: str, value: object, allowed: Sequence[torch.dtype]) -> torch.dtype:
    """The dtype that an op's ``str`` dtype argument ``name`` names: ``TypeError`` unless a ``str``, ``ValueError``
    unless the name of one of ``allowed``."""
    if not isinstance(value, str):
        raise TypeError(f"{name}: expected the name of a dtype, {_dtype_names(allowed)}, got {type(value).__name__}")
    by_name = {dtype_name(d): d for d in allowed}
    if value not in by_name:
        raise ValueError(f"{name}: expected {' or '.join(map(repr, by_name))}, got {value!r}")
    return by_name[value]


def check_tensor(
    name: str,
    t: object,
    *,
    dtypes: Sequence[torch.dtype] | None = None,
    ndim: int | None = None,
    min_ndim: int | None = None,
    contiguous: bool = False,
) -> torch.Tensor:
    """Check one tensor argument; raise ``TypeError`` (not a tensor, wrong dtype) or ``ValueError`` (shape)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if dtypes is not None and t.dtype not in dtypes:
        raise TypeError(f"{name}: expected dtype {_dtype_names(dtypes)}, got {t.dtype}")
    if ndim is not None and t.dim() != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions, got shape {tuple(t.shape)}")
    if min_ndim is not None and t.dim() < min_ndim:
        raise ValueError(f"{name}: expected at least {min_ndim} dimensions, got shape {tuple(t.shape)}")
    if contiguous and not t.is_contiguous():
        raise ValueError(f"{name}: expected a contiguous tensor (call .contiguous()), got strides {t.stride()}")
    return t


def has_values(t: torch.Tensor) -> bool:
    """Whether checks that read ``t``'s values can run: not on the meta device (shapes only, e.g. a model built on
    meta to load a checkpoint into) and not empty."""
    return t.device.type != "meta" and t.numel() > 0


def check_shape(name: str, t: torch.Tensor, expected: Sequence[int], what: str = "") -> None:
    """Raise ``ValueError`` unless ``t.shape == expected``; ``what`` says where the expectation comes from."""
    if tuple(t.shape) != tuple(expected):
        hint = f" ({what})" if what else ""
        raise ValueError(f"{name}: expected shape {tuple(expected)}{hint}, got {tuple(t.shape)}")


def check_same_device(**tensors: torch.Tensor | None) -> None:
    """Raise ``ValueError`` naming the first tensor that is not on the device of the first one given."""
    items = [(n, t) for n, t in tensors.items() if t is not None]
    if not items:
        return
    first_name, first = items[0]
    for n, t in items[1:]:
        if t.device != first.device:
            raise ValueError(f"{n}: expected a tensor on {first.device} (the device of {first_name}), got {t.device}")


def check_softmax_scale(name: str, scale: float | None) -> None:
    """An attention op's optional softmax scale: ``None`` (1/sqrt(D)) or a positive finite Python number. A tensor
    is a ``TypeError``: an eager call that skips the dispatcher (whose ``float?`` schema refuses it) would pass it
    to a Triton kernel as a pointer."""
    if scale is None:
        return
    if isinstance(scale, bool) or not isinstance(scale, (int, float, torch.SymFloat)):
        raise TypeError(f"{name}: expected a float or None, got {type(scale).__name__}")
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"{name}: expected a positive finite float or None, got {scale}")


def check_flags(**flags: object) -> None:
    """Python bools (an op's schema enforces them through the dispatcher; eager fast paths that skip it must too:
    a tensor would become a Triton constexpr)."""
    for name, value in flags.items():
        if not isinstance(value, (bool, torch.SymBool)):
            raise TypeError(f"{name}: expected a bool, got {type(value).__name__}")


def check_out_dtype(name: str, dtype: torch.dtype | None, allowed: Sequence[torch.dtype]) -> None:
    if dtype is not None and dtype not in allowed:
        raise TypeError(f"{name}: expected {_dtype_names(allowed)} or None, got {dtype}")


def check_weight_only_epilogue(x: torch.Tensor, w_name: str, n: int, k: int, w_scale: object, bias: object) -> None:
    """Shared checks of the weight-only linears: ``x (..., K)`` bf16/fp16 matches the weight's ``K``, ``w_scale``
    is float32 ``(N,)``, ``bias`` is ``None`` or ``(N,)`` in ``x``'s dtype, all on one device."""
    check_tensor("x", x, dtypes=HALF_DTYPES, min_ndim=1)
    if n == 0 or k == 0:
        raise ValueError(f"{w_name}: expected a non-empty weight, got N={n}, K={k}")
    if x.shape[-1] != k:
        raise ValueError(f"x: expected last dimension {k} (the K of {w_name}), got shape {tuple(x.shape)}")
    check_tensor("w_scale", w_scale, dtypes=(torch.float32,), ndim=1)
    check_shape("w_scale", w_scale, (n,), f"one scale per output channel of {w_name}")
    if bias is not None:
        check_tensor("bias", bias, dtypes=(x.dtype,), ndim=1)
        check_shape("bias", bias, (n,), f"one per output channel of {w_name}")
    check_same_device(x=x, w_scale=w_scale, bias=bias)
