"""Symmetric int4 weights: packing two int4 values per byte, and per-channel / group-wise weight quantization.

Packing format (the one ``lowbit::s8s4_linear`` reads): a row of ``K`` int4 values in ``[-8, 7]`` becomes ``K // 2``
bytes; byte ``j`` holds element ``2j`` in its low nibble and element ``2j + 1`` in its high nibble, each as a 4-bit
two's-complement value::

    byte[j] = (v[2j] & 0xF) | (v[2j + 1] << 4)          # stored as int8 (torch has no uint4 we can rely on)

Unpacking sign-extends with shifts: ``low = (byte << 4) >> 4`` and ``high = byte >> 4`` with arithmetic shifts on
int8. The CUDA kernels use the same bit order (CUTLASS ``int4b_t`` arrays are little-nibble-first as well).

Quantization is symmetric with no zero-point: ``scale = amax / 7`` and ``q = clamp(round_half_even(w / scale), -8, 7)``.
Dividing by 7 (not 8) maps ``±amax`` to ``±7`` exactly, so the largest weight of every row/group is represented
without clipping; the code ``-8`` stays unused by the quantizer (the clamp only guards the rounding of values a hair
above ``amax / scale``) but any packed weight in ``[-8, 7]`` is valid input to the op. Dividing by 8 would give one
more level to negative values but would clip ``+amax`` to ``7/8`` of its value.

Group-wise scales as integer multiples of a channel scale (:func:`quantize_int4_weight_group_mult`):
``scale[n, g] = channel_scale[n] * group_mult[n, g]`` with ``group_mult`` a small positive integer. A GEMM can then
sum each group's exact int32 dot times its multiplier in int32 and apply one float scale per channel at the end,
instead of converting and scaling every group's dot in float (QServe's progressive group quantization makes the
same trade). The channel scale is rounded up to 17 significant bits, so every product with a multiplier up to 127
is exact in float32: :func:`group_mult_scales` gives float group scales that every group-wise kernel reads, with
the same value. With multipliers up to :data:`GROUP_MULT_INT8_MAX` (16) a kernel can instead multiply each int4
code by its multiplier on the way to the int8 MMA (``|code * mult| <= 128`` is an int8) and run the per-channel
GEMM unchanged: the Hopper W4A8 GEMM's ``_mult`` configs.
"""

from __future__ import annotations

import torch

from lowbit_flex._checks import has_values

INT4_MIN, INT4_MAX = -8, 7
# Integer group multipliers: int8 storage, at most 127. A kernel's int32 sum of K products |x * w * mult| <=
# 128 * 8 * 128 then stays exact for K < 2**14; deeper layers get smaller multipliers (group_mult_max).
GROUP_MULT_MAX = 127
# The largest multiplier whose product with every int4 code is an int8 (-8 * 16 = -128, 7 * 16 = 112).
GROUP_MULT_INT8_MAX = 16
_GROUP_MULT_SUM_BITS = 31 - 7 - 3  # log2 of int32's range over |x| <= 2**7 and |w| <= 2**3
# Significant bits of the channel scale: 24 - 7, so that channel_scale * group_mult (<= 127) is exact in float32.
_CHANNEL_SCALE_BITS = 17


def pack_int4(values: torch.Tensor) -> torch.Tensor:
    """Pack int4 ``values`` (int8 tensor ``(..., K)``, entries in ``[-8, 7]``, ``K`` even) into int8 ``(..., K // 2)``:
    element ``2j`` in the low nibble of byte ``j``, element ``2j + 1`` in the high nibble."""
    if not isinstance(values, torch.Tensor):
        raise TypeError(f"values: expected a torch.Tensor, got {type(values).__name__}")
    if values.dtype != torch.int8:
        raise TypeError(f"values: expected dtype int8, got {values.dtype}")
    if values.dim() < 1 or values.shape[-1] % 2:
        raise ValueError(f"values: expected a last dimension of even length, got shape {tuple(values.shape)}")
    if has_values(values) and (values.min() < INT4_MIN or values.max() > INT4_MAX):
        raise ValueError(f"values: expected entries in [{INT4_MIN}, {INT4_MAX}]")
    low, high = values[..., 0::2], values[..., 1::2]
    # int8 arithmetic wraps: (high << 4) keeps the low 4 bits of `high` as the top nibble, and `low & 0xF` is
    # non-negative and < 16, so OR-ing them gives the byte's two's-complement int8 value.
    return ((high << 4) | (low & 0xF)).contiguous()


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pack_int4`: int8 ``(..., K // 2)`` -> int8 ``(..., K)`` with entries in ``[-8, 7]``."""
    if not isinstance(packed, torch.Tensor):
        raise TypeError(f"packed: expected a torch.Tensor, got {type(packed).__name__}")
    if packed.dtype != torch.int8:
        raise TypeError(f"packed: expected dtype int8, got {packed.dtype}")
    if packed.dim() < 1:
        raise ValueError(f"packed: expected at least 1 dimensions, got shape {tuple(packed.shape)}")
    low = (packed << 4) >> 4  # arithmetic shift on int8: sign-extends the low nibble
    high = packed >> 4
    return torch.stack((low, high), dim=-1).reshape(*packed.shape[:-1], packed.shape[-1] * 2)


def _check_weight(w: object, group_size: object, allow_none: bool) -> None:
    """The weight quantizers' argument checks: a float (N, K) tensor with K even, a group size dividing K."""
    if not isinstance(w, torch.Tensor):
        raise TypeError(f"w: expected a torch.Tensor, got {type(w).__name__}")
    if not w.is_floating_point():
        raise TypeError(f"w: expected a floating-point dtype, got {w.dtype}")
    if w.dim() != 2 or w.shape[1] % 2 or w.shape[1] == 0:
        raise ValueError(f"w: expected shape (N, K) with K even and positive, got {tuple(w.shape)}")
    if group_size is None and allow_none:
        return
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size <= 0:
        expected = "a positive int or None" if allow_none else "a positive int"
        raise ValueError(f"group_size: expected {expected}, got {group_size!r}")
    K = w.shape[1]
    if K % group_size or group_size % 2:
        raise ValueError(f"group_size: expected an even divisor of K={K}, got {group_size}")


def quantize_int4_weight(w: torch.Tensor, group_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int4 quantization of a weight ``w`` (float ``(N, K)``, ``K`` even).

    Returns ``(packed, scale)``: ``packed`` int8 ``(N, K // 2)`` (see the module docstring for the nibble order)
    and ``scale`` float32, ``(N,)`` per output channel when ``group_size`` is None, else ``(N, K // group_size)``
    with one scale per ``group_size`` consecutive input channels. ``scale = amax / 7`` (1.0 where ``amax == 0``) and
    ``w ≈ unpack_int4(packed) * scale`` with ``|error| <= scale / 2``. Inputs must be finite.
    """
    _check_weight(w, group_size, allow_none=True)
    N, K = w.shape
    g = K if group_size is None else group_size
    wg = w.float().reshape(N, K // g, g)
    scale = wg.abs().amax(dim=-1, keepdim=True) / 7.0
    scale = torch.where(scale == 0, torch.ones_like(scale), scale)
    q = torch.round(wg / scale).clamp_(INT4_MIN, INT4_MAX).to(torch.int8).reshape(N, K)
    scale = scale.reshape(N) if group_size is None else scale.reshape(N, K // g)
    return pack_int4(q), scale.contiguous()


def group_mult_max(K: int) -> int:
    """The largest group multiplier :func:`quantize_int4_weight_group_mult` uses for a reduction of length ``K``:
    127, or less where ``K * 128 * 8 * max`` would leave int32 (K >= 2**14)."""
    return max(1, min(GROUP_MULT_MAX, (2**_GROUP_MULT_SUM_BITS - 1) // K))


def quantize_int4_weight_group_mult(
    w: torch.Tensor, group_size: int, max_mult: int = GROUP_MULT_MAX
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Group-wise symmetric int4 quantization whose group scales are integer multiples of a per-channel scale.

    Returns ``(packed, channel_scale, group_mult)``: ``packed`` int8 ``(N, K // 2)`` as :func:`quantize_int4_weight`;
    ``channel_scale`` float32 ``(N,)``; ``group_mult`` int8 ``(N, K // group_size)`` in
    ``[1, min(max_mult, group_mult_max(K))]`` (``max_mult`` in 1..127; :data:`GROUP_MULT_INT8_MAX` for the kernels
    that multiply the codes in int8).
    ``w ≈ unpack_int4(packed) * group_mult_scales(channel_scale, group_mult)`` expanded over the groups.

    ``channel_scale = amax_row / (7 M)`` with ``M`` the largest multiplier, rounded up to 17 significant bits.
    Every group, the row's largest included, gets ``floor`` or ``ceil`` of ``amax_group / (7 channel_scale)`` (within
    ``[1, M]``), whichever reconstructs the group with the smaller squared error (ties: ``ceil``, which clips
    nothing): rounding the scale down clips the group's largest values by less than a multiplier step and refines
    every other value, which often pays (a row's largest group often takes ``M - 1``). On Gaussian weights at
    group 128 the weight error is ~3.5 % *below* float group scales at ``amax / 7`` (:func:`quantize_int4_weight`)
    with multipliers up to 16 (always rounding up: 4 % above), per-channel scales 34 % above. Inputs must be finite.
    """
    _check_weight(w, group_size, allow_none=False)
    if isinstance(max_mult, bool) or not isinstance(max_mult, int) or not 1 <= max_mult <= GROUP_MULT_MAX:
        raise ValueError(f"max_mult: expected an int in [1, {GROUP_MULT_MAX}], got {max_mult!r}")
    N, K = w.shape
    top = min(max_mult, group_mult_max(K))
    wg = w.double().reshape(N, K // group_size, group_size)
    amax = wg.abs().amax(dim=-1)  # (N, groups)
    row_max = amax.amax(dim=-1, keepdim=True)
    channel = torch.where(row_max == 0, torch.ones_like(row_max), row_max / (7.0 * top))
    # Round up to _CHANNEL_SCALE_BITS significant bits (a larger scale never clips), in float64, then store as
    # float32: exact, as is its product with any multiplier <= 127.
    mant, exp = torch.frexp(channel)
    steps = 2.0**_CHANNEL_SCALE_BITS
    channel = torch.ldexp(torch.ceil(mant * steps) / steps, exp).float().double()
    ratio = amax / (7.0 * channel)
    down, up = torch.floor(ratio).clamp_(1, top), torch.ceil(ratio).clamp_(1, top)
    mult = torch.where(_sq_error(wg, channel * down) < _sq_error(wg, channel * up), down, up)
    scale = channel * mult  # exact: 17 + 7 significant bits
    q = torch.round(wg / scale[..., None]).clamp_(INT4_MIN, INT4_MAX).to(torch.int8).reshape(N, K)
    return pack_int4(q), channel.reshape(N).float(), mult.to(torch.int8)


def _sq_error(wg: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Each group's squared reconstruction error (``wg`` (N, groups, group), ``scale`` (N, groups), float64) with
    codes rounded and clamped to int4."""
    q = torch.round(wg / scale[..., None]).clamp_(INT4_MIN, INT4_MAX)
    return (q * scale[..., None] - wg).square_().sum(dim=-1)


def check_group_mult_format(weight_scale: torch.Tensor, group_mult_t: torch.Tensor, channel: torch.Tensor) -> None:
    """Raise ``ValueError`` unless ``group_mult_t`` (int8 ``(groups, N)``) holds multipliers in
    ``[0, GROUP_MULT_INT8_MAX]`` and ``weight_scale == channel[:, None] * group_mult_t.T`` exactly: what the kernels
    that multiply codes in int8 rely on. One pass over the scales (a device sync on a GPU): for load time, not per
    call."""
    if bool((group_mult_t.min() < 0) | (group_mult_t.max() > GROUP_MULT_INT8_MAX)):
        raise ValueError(f"weight_group_mult: expected multipliers in [0, {GROUP_MULT_INT8_MAX}]")
    if not torch.equal(weight_scale.double(), channel.double()[:, None] * group_mult_t.t().double()):
        raise ValueError("weight_scale: expected weight_channel_scale[:, None] * weight_group_mult.T exactly")


def group_mult_scales(channel_scale: torch.Tensor, group_mult: torch.Tensor) -> torch.Tensor:
    """The float32 group scales ``channel_scale[:, None] * group_mult`` of :func:`quantize_int4_weight_group_mult`'s
    format (exact for its scales), ``(N, K // group)``: what the float group-wise kernels read."""
    return (channel_scale.float()[:, None] * group_mult.float()).contiguous()
