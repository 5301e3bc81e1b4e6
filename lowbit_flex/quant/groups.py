"""Scale groups shared by the fp8 and int8 group quantizers (``quantize_fp8``, ``quantize_int8_blockwise``).

A *group* is the set of elements sharing one float32 scale. For attention tensors ``x`` of shape ``(B, H, L, D)``:

| granularity | group | scale shape |
|---|---|---|
| ``"tensor"`` | all of ``x`` (any shape) | ``()`` |
| ``"head"`` | one ``(b, h)`` slice, ``L * D`` elements | ``(B, H)`` |
| ``"token"`` | one token, ``D`` elements | ``(B, H, L)`` |
| ``"block"`` | ``block_size`` consecutive tokens of a head (last may be shorter) | ``(B, H, ceil(L/block_size))`` |

Every group is a contiguous run of a contiguous ``x``, which is what lets one kernel serve all four.
``scale = amax(|x - shift|) / qmax`` over the group's *finite* values (1.0 for a group without a finite non-zero
value), where ``shift`` is an optional ``(B, H, 1, D)`` float32 tensor subtracted before quantizing (smooth-K:
``shift = k.mean(dim=-2, keepdim=True)``).

Non-finite values: the amax ignores them, so a NaN or inf leaves the other elements of its group (in attention,
the other 127 tokens of a 128-token block) quantized exactly as without it. The value itself becomes NaN in fp8
(NaN and ±inf alike: e4m3fn has no inf, and NaN is what carries the signal on through attention) and, in int8,
which has neither, 0 for NaN and ±qmax for ±inf.
"""

from __future__ import annotations

import torch

from lowbit_flex._checks import FLOAT_DTYPES, check_shape, check_tensor

GRANULARITIES = ("tensor", "head", "token", "block")


def check_group_args(x: torch.Tensor, granularity: str, block_size: int, shift: torch.Tensor | None) -> None:
    check_tensor("x", x, dtypes=FLOAT_DTYPES, min_ndim=1)
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity: expected one of {GRANULARITIES}, got {granularity!r}")
    if x.numel() == 0:
        raise ValueError(f"x: expected a non-empty tensor, got shape {tuple(x.shape)}")
    needs_4d = granularity != "tensor" or shift is not None
    if needs_4d and x.dim() != 4:
        why = f"granularity={granularity!r}" if granularity != "tensor" else "a shift"
        raise ValueError(f"x: expected 4 dimensions (B, H, L, D) for {why}, got shape {tuple(x.shape)}")
    if granularity == "block" and block_size < 1:  # an int (or SymInt): the op schema says so
        raise ValueError(f"block_size: expected a positive number of tokens, got {block_size}")
    if shift is not None:
        check_tensor("shift", shift, dtypes=(torch.float32,), ndim=4)
        B, H, _, D = x.shape
        check_shape("shift", shift, (B, H, 1, D), "one value per (batch, head, channel)")
        if shift.device != x.device:
            raise ValueError(f"shift: expected a tensor on {x.device} (the device of x), got {shift.device}")


def scale_shape(shape: torch.Size, granularity: str, block_size: int) -> tuple[int, ...]:
    if granularity == "tensor":
        return ()
    B, H, L, _ = shape
    if granularity == "head":
        return (B, H)
    if granularity == "token":
        return (B, H, L)
    return (B, H, -(-L // block_size))


def expand_scale(scale: torch.Tensor, shape: torch.Size, granularity: str, block_size: int) -> torch.Tensor:
    """Broadcast a group scale to ``shape`` (the quantized tensor's), e.g. to dequantize: ``xq * expand_scale(...)``."""
    if granularity == "tensor":
        return scale
    if granularity == "head":
        return scale[:, :, None, None]
    if granularity == "token":
        return scale[..., None]
    # A block longer than L is one block: clamping keeps a huge block_size from allocating its padding.
    return scale.repeat_interleave(min(block_size, shape[2]), dim=2)[:, :, : shape[2], None]


def group_amax(xf: torch.Tensor, granularity: str, block_size: int) -> torch.Tensor:
    """The amax of ``|xf|`` over each group, ignoring non-finite values (0 for a group of none)."""
    a = xf.abs()
    a = torch.where(torch.isfinite(a), a, torch.zeros_like(a))
    if granularity == "tensor":
        return a.amax()
    if granularity == "head":
        return a.amax(dim=(2, 3))
    if granularity == "token":
        return a.amax(dim=3)
    B, H, L, D = a.shape
    block_size = min(block_size, L)  # one block either way; no padding to a huge block_size
    nblk = -(-L // block_size)
    padded = torch.nn.functional.pad(a, (0, 0, 0, nblk * block_size - L))  # zeros never raise an amax
    return padded.view(B, H, nblk, block_size * D).amax(dim=3)


def reference_scaled(
    x: torch.Tensor,
    granularity: str,
    block_size: int,
    shift: torch.Tensor | None,
    qmax: float,
    *,
    nonfinite_to_nan: bool,
    reciprocal: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(y, scale)`` with ``y = clamp((x - shift) / scale, -qmax, qmax)`` in float32, before the final rounding.
    Non-finite ``x - shift`` gives NaN with ``nonfinite_to_nan`` (fp8), else 0 for NaN and ±qmax for ±inf (int8).
    ``reciprocal``: ``(x - shift) * (1 / scale)`` instead (the attention kernels' form: a multiply per element
    where an IEEE divide would make the quantization compute-bound).

    The same float32 operations the kernel performs (subtract, amax, IEEE divide), so both round identically.
    Contiguous results whatever ``x``'s strides, as the kernels and the ops' fake impls give."""
    xf = x.float().contiguous()
    if shift is not None:
        xf = xf - shift
    scale = group_amax(xf, granularity, block_size) / qmax
    scale = torch.where(scale == 0, torch.ones_like(scale), scale)
    expanded = expand_scale(scale, x.shape, granularity, block_size)
    y = xf * (1.0 / expanded) if reciprocal else xf / expanded
    y = y.clamp_(-qmax, qmax)  # NaN stays NaN
    if nonfinite_to_nan:
        y = torch.where(torch.isfinite(xf), y, torch.nan)  # ±inf was clamped to ±qmax
    else:
        y = torch.nan_to_num_(y, nan=0.0)
    return y, scale
