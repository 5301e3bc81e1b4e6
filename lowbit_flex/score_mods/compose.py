"""Stack FlexAttention ``score_mod``s: ``compose(fp8_descale(qs, ks), rel_pos_bias(...), generate_alibi_bias(H))``."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

ScoreMod = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor], Tensor]


def compose(*score_mods: ScoreMod) -> ScoreMod:
    """One ``score_mod`` applying ``score_mods`` in order (the output score of each is the input of the next).

    Its ``__name__`` lists the parts, e.g. ``compose(fp8_descale_qtensor_ktensor, alibi_bias)``."""
    if not score_mods:
        raise ValueError("score_mods: expected at least one score_mod")
    for i, m in enumerate(score_mods):
        if not callable(m):
            raise TypeError(f"score_mods[{i}]: expected a callable score_mod, got {type(m).__name__}")
    if len(score_mods) == 1:
        return score_mods[0]
    mods = tuple(score_mods)

    def composed(score: Tensor, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        for m in mods:
            score = m(score, b, h, q_idx, kv_idx)
        return score

    composed.__name__ = "compose(" + ", ".join(getattr(m, "__name__", type(m).__name__) for m in mods) + ")"
    return composed
