"""FlexAttention ``score_mod`` and ``block_mask`` factories (one small factory per file)."""

from lowbit_flex.score_mods.compose import compose
from lowbit_flex.score_mods.fp8_descale import fp8_descale
from lowbit_flex.score_mods.rel_pos_bias import check_rel_pos_inputs, rel_pos_bias, rel_pos_kernel_options
from lowbit_flex.score_mods.sam import get_rel_pos, sam_rel_pos

__all__ = [
    "check_rel_pos_inputs",
    "compose",
    "fp8_descale",
    "get_rel_pos",
    "rel_pos_bias",
    "rel_pos_kernel_options",
    "sam_rel_pos",
]
