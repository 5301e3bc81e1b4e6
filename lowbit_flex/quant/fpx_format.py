"""``FPxFormat``: a sign + ``ebits`` exponent + ``mbits`` mantissa floating-point format, and the named presets.

A code ``s | e | m`` (``e`` the biased exponent field, ``m`` the mantissa field) means
``(-1)^s * 2^(1 - bias) * m / 2^mbits`` when ``e == 0`` (subnormal) and ``(-1)^s * 2^(e - bias) * (1 + m / 2^mbits)``
otherwise, except for the codes the format reserves (:class:`Specials`):

* ``IEEE`` — the top exponent field holds ``±inf`` (``m == 0``) and NaN (``m != 0``), as in IEEE 754 (``float8_e5m2``);
* ``NAN_ONLY`` — only ``S.11…1.11…1`` is NaN, there is no inf, and the rest of the top exponent holds normal
  numbers (OCP ``float8_e4m3fn``: max 448 instead of IEEE-style 240);
* ``NONE`` — every code is a finite number (OCP MX fp6/fp4: ``float6_e3m2fn``, ``float6_e2m3fn``, ``float4_e2m1fn``).

``saturate`` is the overflow policy used when converting to the format (see :func:`float_quantize`): ``True`` clamps
every value beyond ``±max_normal`` (``±inf`` included) to ``±max_normal``; ``False`` overflows to ``±inf`` (``IEEE``)
or NaN (``NAN_ONLY``), which is what ``ml_dtypes``/``torch`` casts to ``float8_e4m3fn``/``float8_e5m2`` do. A
``NONE`` format has nothing to overflow to, so it must saturate (which is what ``ml_dtypes`` does for MX formats).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

MAX_TOTAL_BITS = 16


class Specials(enum.Enum):
    """Which codes of a format are not finite numbers."""

    IEEE = "ieee"
    NAN_ONLY = "nan_only"
    NONE = "none"


@dataclass(frozen=True)
class FPxFormat:
    """A binary floating-point format with ``1 + ebits + mbits <= 16`` bits; ``bias`` defaults to
    ``2^(ebits-1) - 1``. Immutable and hashable, so it can be a ``torch.compile`` constant."""

    ebits: int
    mbits: int
    bias: int | None = None
    specials: Specials = Specials.IEEE
    saturate: bool = True
    name: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        for arg in ("ebits", "mbits"):
            v = getattr(self, arg)
            if not isinstance(v, int) or isinstance(v, bool):
                raise ValueError(f"{arg}: expected an int, got {type(v).__name__}")
        if self.ebits < 1:
            raise ValueError(f"ebits: expected >= 1, got {self.ebits}")
        if self.mbits < 0:
            raise ValueError(f"mbits: expected >= 0, got {self.mbits}")
        if 1 + self.ebits + self.mbits > MAX_TOTAL_BITS:
            raise ValueError(
                f"ebits, mbits: expected 1 + ebits + mbits <= {MAX_TOTAL_BITS}, got 1 + {self.ebits} + {self.mbits}"
            )
        if self.bias is None:
            object.__setattr__(self, "bias", 2 ** (self.ebits - 1) - 1)
        elif not isinstance(self.bias, int) or isinstance(self.bias, bool):
            raise ValueError(f"bias: expected an int or None, got {type(self.bias).__name__}")
        if not isinstance(self.specials, Specials):
            raise ValueError(f"specials: expected a Specials member, got {self.specials!r}")
        if not isinstance(self.saturate, bool):
            raise ValueError(f"saturate: expected a bool, got {type(self.saturate).__name__}")
        if not (self.has_inf or self.has_nan) and not self.saturate:
            raise ValueError("saturate: a format without inf or NaN (specials=NONE) can only saturate on overflow")
        if self._max_code_fields()[0] < 1:
            raise ValueError(
                f"ebits: {self.ebits} exponent bit(s) with specials={self.specials.name} leave no normal numbers"
            )

    # --- derived facts -------------------------------------------------------------------------------------------
    @property
    def bits(self) -> int:
        return 1 + self.ebits + self.mbits

    @property
    def has_inf(self) -> bool:
        return self.specials is Specials.IEEE

    @property
    def has_nan(self) -> bool:
        """IEEE formats need a mantissa bit for NaN (with ``mbits == 0`` the top exponent is only ``±inf``)."""
        return self.specials is Specials.NAN_ONLY or (self.specials is Specials.IEEE and self.mbits > 0)

    @property
    def emin(self) -> int:
        """Unbiased exponent of the smallest normal number (subnormals share it)."""
        return 1 - self.bias

    def _max_code_fields(self) -> tuple[int, int]:
        """(exponent field, mantissa field) of the largest finite code."""
        top_e, top_m = 2**self.ebits - 1, 2**self.mbits - 1
        if self.specials is Specials.IEEE:
            return top_e - 1, top_m
        if self.specials is Specials.NAN_ONLY:
            return (top_e, top_m - 1) if self.mbits > 0 else (top_e - 1, 0)
        return top_e, top_m

    @property
    def emax(self) -> int:
        """Unbiased exponent of the largest finite number."""
        return self._max_code_fields()[0] - self.bias

    @property
    def max_normal(self) -> float:
        """Largest finite value (``inf`` if it is beyond the float64 range, as for ``ebits >= 11``)."""
        e, m = self._max_code_fields()
        return _ldexp((2**self.mbits + m), e - self.bias - self.mbits)

    @property
    def min_normal(self) -> float:
        return _ldexp(1, self.emin)

    @property
    def min_subnormal(self) -> float:
        """Smallest positive value: ``2^(emin - mbits)`` (equal to ``min_normal`` when ``mbits == 0``)."""
        return _ldexp(1, self.emin - self.mbits)

    def __str__(self) -> str:
        return self.name or f"e{self.ebits}m{self.mbits}(bias={self.bias}, {self.specials.name})"


def _ldexp(m: int, e: int) -> float:
    try:
        return math.ldexp(m, e)
    except OverflowError:
        return math.inf


# The OCP 8-bit (OFP8) and MX 6/4-bit formats, with exactly the semantics of the same-named ml_dtypes types.
E4M3FN = FPxFormat(4, 3, specials=Specials.NAN_ONLY, name="float8_e4m3fn")
E5M2 = FPxFormat(5, 2, specials=Specials.IEEE, name="float8_e5m2")
E3M2_FN = FPxFormat(3, 2, specials=Specials.NONE, name="float6_e3m2fn")
E2M3_FN = FPxFormat(2, 3, specials=Specials.NONE, name="float6_e2m3fn")
E2M1_FN = FPxFormat(2, 1, specials=Specials.NONE, name="float4_e2m1fn")

PRESETS: tuple[FPxFormat, ...] = (E4M3FN, E5M2, E3M2_FN, E2M3_FN, E2M1_FN)


_SPECIALS_TEXT = {
    Specials.IEEE: "±inf (mantissa 0) and NaN at the top exponent",
    Specials.NAN_ONLY: "no inf; NaN = S.1…1.1…1 only",
    Specials.NONE: "none (every code finite)",
}


def preset_table_markdown() -> str:
    """The presets as a markdown table (``docs/float_quantization.md`` embeds it; a test keeps them equal).
    Regenerate with ``python -c "from lowbit_flex.quant.fpx_format import *; print(preset_table_markdown())"``."""
    head = "| preset | ml_dtypes / OCP name | bits | ebits | mbits | bias | max | min normal | min subnormal |"
    head += " inf / NaN | on overflow (`saturate=True` / `False`) |"
    lines = [head, "|" + "---|" * 11]
    for name, f in (
        ("E4M3FN", E4M3FN),
        ("E5M2", E5M2),
        ("E3M2_FN", E3M2_FN),
        ("E2M3_FN", E2M3_FN),
        ("E2M1_FN", E2M1_FN),
    ):
        overflow = "±max / " + ("±inf" if f.has_inf else "NaN" if f.has_nan else "— (always saturates)")
        lines.append(
            f"| `{name}` | `{f.name}` | {f.bits} | {f.ebits} | {f.mbits} | {f.bias} | {f.max_normal:g} | "
            f"2^{f.emin} = {f.min_normal!r} | 2^{f.emin - f.mbits} = {f.min_subnormal!r} | "
            f"{_SPECIALS_TEXT[f.specials]} | {overflow} |"
        )
    return "\n".join(lines) + "\n"
