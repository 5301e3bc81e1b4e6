"""FlexAttention ``score_mod`` and ``block_mask`` factories (one small factory per file)."""

__all__: list[str] = []

from lowbit_flex.score_mods.compose import compose
from lowbit_flex.score_mods.fp8_descale import fp8_descale

__all__ += ["compose", "fp8_descale"]
