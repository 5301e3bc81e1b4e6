"""Per-output-channel quantization of a linear weight to an FPx format (weight-only inference)."""

from __future__ import annotations

import torch

from lowbit_flex._checks import has_values
from lowbit_flex.quant.fpx_bits import check_format, to_fpx_bits
from lowbit_flex.quant.fpx_format import E4M3FN, E5M2, FPxFormat


def quantize_fpx_weight(w: torch.Tensor, fmt: FPxFormat) -> tuple[torch.Tensor, torch.Tensor]:
    """``(codes, scale)`` with ``w ≈ decode(codes) * scale[:, None]``: ``scale = amax(|w|, dim=1) / max_normal``
    (1 for an all-zero row) in float32, and ``codes`` the round-to-nearest-even ``fmt`` codes of ``w / scale``
    (uint8, unpacked). The row maximum maps exactly onto ``±max_normal``."""
    if not isinstance(w, torch.Tensor) or w.dim() != 2:
        raise ValueError(f"w: expected a 2-D weight tensor, got {getattr(w, 'shape', type(w).__name__)}")
    if not w.is_floating_point():  # complex too: .float() would drop the imaginary part
        raise TypeError(f"w: expected a real floating-point dtype, got {w.dtype}")
    fmt = check_format(fmt)
    w = w.detach()
    amax = w.abs().amax(dim=1)
    # amax propagates NaN and |inf| is inf, so a row's amax is finite exactly when the row is: the check reads N
    # values instead of every element (isfinite(w).all() took longer than the fp8 cast itself).
    if has_values(w) and not bool(torch.isfinite(amax).all()):
        raise ValueError("w: contains NaN or inf; a weight's scale and codes need finite values")
    scale = amax.float() / fmt.max_normal
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    if w.shape[0] == 0 or not has_values(w):  # meta / empty: shapes only
        return _codes_of(w.float() / scale[:, None], fmt), scale
    # Row blocks bound the float32 / int32 temporaries (~30 bytes per element at once): a 7B model's MLP weight
    # would otherwise need ~1.4 GB of scratch on top of itself. Rows are independent, so blocks give the same codes
    # (tested).
    codes = torch.empty(w.shape, dtype=torch.uint8, device=w.device)
    rows = max(1, _BLOCK_ELEMS // max(1, w.shape[1]))
    for r in range(0, w.shape[0], rows):
        codes[r : r + rows] = _codes_of(w[r : r + rows].float() / scale[r : r + rows, None], fmt)
    return codes, scale


def _codes_of(y: torch.Tensor, fmt: FPxFormat) -> torch.Tensor:
    """Round-to-nearest-even codes of ``y`` (float32 rows already divided by their scales)."""
    torch_fp8 = _TORCH_FP8.get(fmt)
    if torch_fp8 is not None:
        # torch's float32 -> fp8 cast rounds to nearest even, subnormals included, like to_fpx_bits; y is finite and
        # within ±max_normal (the row max lands on it up to a rounding that RNE maps back), so the codes are the
        # same (tested against to_fpx_bits), ~50x faster than the float64 bit arithmetic.
        return y.to(torch_fp8).view(torch.uint8)
    if _float32_grid(fmt):
        return _nearest_codes(y, fmt)
    return to_fpx_bits(y, fmt)


# Elements per row block of quantize_fpx_weight (4 Mi: ~120 MB of float32 / int32 temporaries).
_BLOCK_ELEMS = 1 << 22


def _float32_grid(fmt: FPxFormat) -> bool:
    """Whether :func:`_nearest_codes` rounds to ``fmt`` exactly: at most 8 bits, a mantissa bit (so the even code is
    the even multiple of the quantum), and a smallest quantum that float32 holds as a normal number (a float32 y's
    own exponent never passes 127, whatever the format's range)."""
    return fmt.bits <= 8 and fmt.mbits >= 1 and -126 <= fmt.emin - fmt.mbits <= 127


def _nearest_codes(y: torch.Tensor, fmt: FPxFormat) -> torch.Tensor:
    """Round-to-nearest-even codes of finite float32 ``y`` (``|y| <= max_normal``) in a format that
    :func:`_float32_grid` accepts, in int32 / float32 arithmetic: the format's quantum at ``|y|`` is
    ``2^(max(e, emin) - mbits)`` (``e``: ``|y|``'s exponent), ``n = round_half_even(|y| / quantum)`` (a division by a
    power of two: exact), and the magnitude code is ``((max(e, emin) - emin) << mbits) + n``: the exponent and
    mantissa fields at once, a round up into the next binade included (``n = 2^(mbits + 1)``), subnormals too
    (``e < emin``). Equal to :func:`to_fpx_bits` on such inputs (tested on every midpoint); ~1.9x faster on a
    block than the ``bucketize`` table lookup it replaced, which also held int64 indices."""
    m, emin = fmt.mbits, fmt.emin
    a = y.abs()
    e = torch.clamp((a.view(torch.int32) >> 23) - 127, min=emin)  # a's exponent (0 and subnormals: emin)
    quantum = ((e + (127 - m)) << 23).view(torch.float32)  # 2^(e - m), built from its bits
    n = torch.round(a / quantum).to(torch.int32)  # half to even
    e_field, m_field = fmt._max_code_fields()
    code = torch.clamp(((e - emin) << m) + n, max=(e_field << m) | m_field)  # beyond max_normal: saturate
    return ((torch.signbit(y).to(torch.int32) << (fmt.bits - 1)) | code).to(torch.uint8)


_TORCH_FP8 = {E4M3FN: torch.float8_e4m3fn, E5M2: torch.float8_e5m2}
