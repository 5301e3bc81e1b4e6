"""Pictures of attention patterns: a FlexAttention ``score_mod`` and/or ``mask_mod`` drawn by attn-gym
(``attn_gym.utils.visualize_attention_scores``: the scaled ``q·kᵀ`` of batch 0, head 0 after the score_mod, masked
positions at -inf). Needs matplotlib, the ``viz`` extra (``pip install 'lowbit_flex[viz]'``); nothing here is
imported by ``import lowbit_flex``.

``python -m lowbit_flex.viz OUT.png`` draws SAM's decomposed relative-position bias (``rel_pos_bias``) on a small
grid under attn-gym's 2-D neighbourhood mask (``generate_natten``): the figure in ``docs/rel_pos_attention.md``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import torch

from lowbit_flex.score_mods import rel_pos_bias, sam_rel_pos


def save_attention_scores(
    path: str | Path,
    query: torch.Tensor,
    key: torch.Tensor,
    *,
    score_mod: Callable | None = None,
    mask_mod: Callable | None = None,
    title: str | None = None,
) -> Path:
    """Draw ``score_mod`` (and ``mask_mod``: masked scores at -inf) for ``query``/``key`` ``(B, H, L, D)`` into a PNG
    at ``path`` (its suffix becomes ``.png``); returns the file written."""
    if score_mod is None and mask_mod is None:
        raise ValueError("score_mod, mask_mod: give at least one to draw")
    for name, t in (("query", query), ("key", key)):
        if not isinstance(t, torch.Tensor) or t.dim() != 4:
            raise ValueError(f"{name}: expected a (B, H, L, D) tensor, got {getattr(t, 'shape', type(t).__name__)}")
    try:
        import matplotlib  # noqa: F401  (attn-gym imports pyplot inside; fail here with the fix)
    except ImportError:
        raise ModuleNotFoundError("lowbit_flex.viz needs matplotlib: pip install 'lowbit_flex[viz]'") from None
    from attn_gym.utils import visualize_attention_scores

    path = Path(path).with_suffix(".png")
    visualize_attention_scores(
        query, key, score_mod=score_mod, mask_mod=mask_mod, device=query.device.type, name=title or path.stem,
        path=path,
    )  # fmt: skip
    return path


def sam_rel_pos_example(grid: int = 12, head_dim: int = 16, seed: int = 0):
    """A SAM-style global-attention problem on a ``grid x grid`` image (random weights, smooth position tables):
    ``(q, k, score_mod)`` with ``score_mod = rel_pos_bias(*sam_rel_pos(q, ...))``, for pictures and demos."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(1, 1, grid * grid, head_dim, generator=gen)
    k = torch.randn(1, 1, grid * grid, head_dim, generator=gen)
    # SAM learns (2·size − 1, head_dim) tables; a smooth profile over the offset makes the pattern readable.
    offsets = torch.arange(-(grid - 1), grid, dtype=torch.float32)
    profile = torch.exp(-(offsets.abs() / 3.0))[:, None]
    rel_pos_h = profile * torch.randn(1, head_dim, generator=gen)
    rel_pos_w = profile * torch.randn(1, head_dim, generator=gen)
    rel_h, rel_w = sam_rel_pos(q, rel_pos_h, rel_pos_w, (grid, grid), (grid, grid))
    return q, k, rel_pos_bias(rel_h, rel_w)


def main(argv: list[str] | None = None) -> None:
    from attn_gym.masks import generate_natten

    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0]) if args else Path("rel_pos_natten")
    grid = 12
    q, k, bias = sam_rel_pos_example(grid)
    path = save_attention_scores(
        out, q, k, score_mod=bias, mask_mod=generate_natten(grid, grid, 7, 7), title="rel_pos_bias x natten 7x7"
    )
    print(path)


if __name__ == "__main__":
    main()
