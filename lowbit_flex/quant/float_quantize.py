"""``float_quantize``: exact fake quantization of a float tensor to any FPx format (fp8/fp6/fp4/custom).

The rounding works on the integer bit pattern of the compute dtype (float32 for fp16/bf16/fp32 inputs, float64
for float64 inputs), so it is exact by construction rather than by floating-point luck:

1. ``|x|`` is split into an integer significand ``sig`` (implicit bit included) and an exponent ``E`` such that
   ``|x| = sig * 2^(E - W)`` (``W`` = the compute dtype's mantissa width). Subnormal inputs are first multiplied by
   ``2^32`` (``2^64`` in float64), which is exact, so every nonzero input has a full-width significand.
2. The format's quantum at ``|x|`` is ``2^qe`` with ``qe = max(E, emin) - mbits`` (the ``max`` gives the
   subnormal range its fixed spacing). Dropping ``shift = qe - (E - W)`` low bits of ``sig`` with
   round-to-nearest-even is the integer identity
   ``r = (sig + 2^(shift-1) - 1 + ((sig >> shift) & 1)) >> shift``; a carry out of the top is the next binade.
   Stochastic rounding adds uniform random bits instead: ``r = (sig + U[0, 2^shift)) >> shift``, whose
   expectation is exactly ``sig / 2^shift``.
3. ``r * 2^qe`` is rebuilt with two exact power-of-two multiplies (each factor a normal number), then the
   overflow policy of the format applies (see :class:`~lowbit_flex.quant.fpx_format.FPxFormat`), the sign is
   copied back (``-0`` stays ``-0``) and NaN passes through.

Everything is elementwise (bitcasts, integer shifts, ``where``), so ``torch.compile(fullgraph=True)`` emits one
fused kernel for ``rounding="nearest"``. Stochastic rounding draws its bits with ``torch.randint`` from the
given generator: reproducible and unbiased, but a generator object cannot be traced by dynamo, so that mode is
eager-only (the random bits are one extra int32 tensor in memory).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from lowbit_flex.quant.fpx_format import E2M1_FN, E2M3_FN, E3M2_FN, E4M3FN, E5M2, FPxFormat, Specials

_ROUNDINGS = ("nearest", "stochastic")
_INPUT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


@dataclass(frozen=True)
class _Binary:
    """Bit layout of the dtype the rounding is computed in."""

    float_dtype: torch.dtype
    int_dtype: torch.dtype
    mant_bits: int  # W
    exp_bias: int  # B
    normalize_exp: int  # subnormal inputs are scaled by 2^normalize_exp before splitting
    shift_cap: int  # largest shift used: sig + 2^cap must fit the signed int type

    def pow2(self, k: torch.Tensor) -> torch.Tensor:
        """``2.0 ** k`` for integer ``k`` in ``[1 - B, B]``, exactly, by writing the exponent field."""
        return ((k + self.exp_bias) << self.mant_bits).view(self.float_dtype)


F32 = _Binary(torch.float32, torch.int32, 23, 127, 32, 30)
F64 = _Binary(torch.float64, torch.int64, 52, 1023, 64, 62)


def resolve_format(
    ebits: int | FPxFormat,
    mbits: int | None = None,
    *,
    specials: Specials | None = None,
    bias: int | None = None,
) -> FPxFormat:
    """An :class:`FPxFormat` from either a format or ``(ebits, mbits[, specials, bias])``: a bare OCP pair
    (:data:`OCP_PAIRS`) is that preset, any other pair an IEEE-style format unless ``specials`` says otherwise."""
    if isinstance(ebits, FPxFormat):
        for name, v in (("mbits", mbits), ("specials", specials), ("bias", bias)):
            if v is not None:
                raise ValueError(f"{name}: must be None when a FPxFormat is given (it already says {name})")
        return ebits
    if isinstance(ebits, bool) or not isinstance(ebits, int):
        raise ValueError(
            f"ebits: expected an int (with mbits) or an FPxFormat preset such as lowbit_flex.quant.E4M3FN, "
            f"got {type(ebits).__name__} {ebits!r}"
        )
    if mbits is None:
        raise ValueError("mbits: required when ebits is an int")
    if specials is None and bias is None and (ebits, mbits) in OCP_PAIRS:
        return OCP_PAIRS[ebits, mbits]
    return FPxFormat(ebits, mbits, bias, Specials.IEEE if specials is None else specials)


# (ebits, mbits) pairs that name an OCP / MX format everywhere else (ml_dtypes, torchao, the OCP spec): a bare pair
# means that format, not the IEEE-style one with the top exponent reserved (which would give e2m1 a max of 3, e3m2
# 14, e4m3 240). Any other pair, or an explicit specials= / bias=, keeps the IEEE convention.
OCP_PAIRS: dict[tuple[int, int], FPxFormat] = {(f.ebits, f.mbits): f for f in (E4M3FN, E5M2, E3M2_FN, E2M3_FN, E2M1_FN)}


def check_float_input(name: str, x: object) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in _INPUT_DTYPES:
        raise ValueError(f"{name}: expected a float16, bfloat16, float32 or float64 tensor, got {x.dtype}")
    return x


def float_quantize(
    x: torch.Tensor,
    ebits: int | FPxFormat,
    mbits: int | None = None,
    *,
    rounding: str = "nearest",
    saturate: bool | None = None,
    specials: Specials | None = None,
    bias: int | None = None,
    generator: torch.Generator | None = None,
    seed: int | None = None,
) -> torch.Tensor:
    """Round ``x`` to the nearest value of an FPx format and return it in ``x``'s dtype (fake quantization).

    The format is a preset (``float_quantize(x, E4M3FN)``) or ``ebits, mbits`` (``ebits >= 1``, ``mbits >= 0``,
    ``1 + ebits + mbits <= 16``) with optional ``specials`` (default ``Specials.IEEE``) and ``bias`` (default
    ``2^(ebits-1) - 1``). ``rounding="nearest"`` rounds half to even, with subnormals; ``"stochastic"`` rounds up
    with probability equal to the remainder (unbiased), using ``generator`` or a fresh one seeded with ``seed``.
    ``saturate`` (default: the format's, ``True`` for ``ebits, mbits``) clamps values beyond ``±max_normal``
    (``±inf`` included) to ``±max_normal``; ``saturate=False`` overflows to ``±inf`` or NaN as the format defines.
    NaN stays NaN, even for formats without a NaN code (the float result can hold it; encoding it cannot, see
    :func:`~lowbit_flex.quant.fpx_bits.to_fpx_bits`).

    Computed in float32 (float64 for float64 input), which holds every fp16/bf16/fp32 input exactly; for formats
    whose range exceeds the compute dtype's, results that round beyond it become ``±inf``. When the format has
    more significand bits than ``x``'s dtype (e.g. e5m10 on bf16 input) its saturation value may not be
    representable in that dtype and is rounded once more by the final cast.
    """
    check_float_input("x", x)
    fmt = resolve_format(ebits, mbits, specials=specials, bias=bias)
    if rounding not in _ROUNDINGS:
        raise ValueError(f"rounding: expected one of {_ROUNDINGS}, got {rounding!r}")
    if saturate is None:
        saturate = fmt.saturate
    elif not isinstance(saturate, bool):
        raise ValueError(f"saturate: expected a bool or None, got {type(saturate).__name__}")
    elif not saturate and fmt.specials is Specials.NONE:  # (IEEE always has inf)
        raise ValueError("saturate: a format without inf or NaN (specials=NONE) can only saturate on overflow")
    noise = None
    if rounding == "stochastic":
        noise = _random_bits(x, generator, seed)
    elif generator is not None or seed is not None:
        raise ValueError("generator, seed: only used with rounding='stochastic'")
    return _quantize(x, fmt, saturate, noise)


def _random_bits(x: torch.Tensor, generator: torch.Generator | None, seed: int | None) -> torch.Tensor:
    if generator is not None and seed is not None:
        raise ValueError("seed: give a generator or a seed, not both")
    if seed is not None:
        generator = torch.Generator(device=x.device).manual_seed(seed)
    binary = F64 if x.dtype == torch.float64 else F32
    return torch.randint(0, 2**binary.shift_cap, x.shape, generator=generator, device=x.device, dtype=binary.int_dtype)


def split_abs(a: torch.Tensor, b: _Binary) -> tuple[torch.Tensor, torch.Tensor]:
    """``a = sig * 2^(e - W)`` for ``a >= 0`` with ``2^W <= sig < 2^(W+1)`` (``sig = 0`` for zero); subnormal
    inputs are scaled into the normal range first, which is exact. inf/NaN give meaningless values."""
    tiny = a < 2.0 ** (1 - b.exp_bias)
    a = torch.where(tiny, a * 2.0**b.normalize_exp, a)
    bits = a.view(b.int_dtype)
    exp_field = bits >> b.mant_bits
    e = exp_field - b.exp_bias - tiny.to(b.int_dtype) * b.normalize_exp
    sig = torch.where(exp_field == 0, 0, (bits & (2**b.mant_bits - 1)) | 2**b.mant_bits)
    return sig, e


def scale_by_pow2(r: torch.Tensor, k: torch.Tensor, b: _Binary) -> torch.Tensor:
    """``r * 2^k`` (``r`` integer-valued, ``k`` integer) with two normal power-of-two factors: exact whenever the
    result is representable. ``k`` is clamped to ``[2(1-B), 2B]``, which only matters for results that underflow
    to 0 or overflow to inf anyway."""
    k = torch.clamp(k, 2 * (1 - b.exp_bias), 2 * b.exp_bias)
    half = k >> 1
    return r.to(b.float_dtype) * b.pow2(half) * b.pow2(k - half)


def _quantize(x: torch.Tensor, fmt: FPxFormat, saturate: bool, noise: torch.Tensor | None) -> torch.Tensor:
    b = F64 if x.dtype == torch.float64 else F32
    xc = x.to(b.float_dtype)
    sig, e = split_abs(xc.abs(), b)
    # 2. Quantum 2^qe of the format at |x|, and the number of significand bits that falls below it.
    qe = torch.clamp_min(e, fmt.emin) - fmt.mbits
    shift = (b.mant_bits - fmt.mbits) + torch.clamp_min(fmt.emin - e, 0)  # >= W - 14 > 0
    capped = torch.clamp_max(shift, b.shift_cap)
    if noise is None:
        # sig < 2^(W+1) <= 2^(cap-1): a shift at the cap already rounds every larger shift's input to 0, correctly.
        r = (sig + (1 << (capped - 1)) - 1 + ((sig >> capped) & 1)) >> capped
    else:
        # Beyond the cap, pre-drop the excess bits: the probability of rounding up is then off by < 2^-cap.
        sig = sig >> torch.clamp(shift - b.shift_cap, 0, b.mant_bits + 1)
        r = (sig + (noise & ((1 << capped) - 1))) >> capped
    # 3. r * 2^qe, exactly; then the format's overflow policy, the sign and NaN.
    y = scale_by_pow2(r, qe, b)
    # A format whose max exceeds the compute dtype's range cannot overflow it: such results are already inf.
    limit = fmt.max_normal if fmt.max_normal <= torch.finfo(b.float_dtype).max else math.inf
    over = y > limit
    if saturate:
        y = torch.where(over, limit, y)
    else:
        y = torch.where(over, float("inf") if fmt.has_inf else float("nan"), y)
    y = torch.where(torch.isnan(xc), xc, torch.copysign(y, xc))
    return y.to(x.dtype)
