"""Segment Anything's decomposed relative positions (Kirillov et al., 2023): ``rel_h``/``rel_w`` from its tables.

SAM learns ``rel_pos_h`` and ``rel_pos_w`` with one row per relative offset (``2 * size - 1`` rows, ``head_dim``
columns). For query grid ``q_size`` and key grid ``k_size`` it resamples them to ``2 * max(q, k) - 1`` rows (linear
interpolation, as ``F.interpolate(mode="linear")``), looks up the offset of every (query, key) pair along each axis,
and contracts with the *unscaled* query. The results feed :func:`lowbit_flex.score_mods.rel_pos_bias` or
``torch.ops.lowbit.rel_pos_attention`` directly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def get_rel_pos(q_size: int, k_size: int, rel_pos: torch.Tensor) -> torch.Tensor:
    """``(q_size, k_size, C)`` table of relative-position embeddings along one axis, exactly as SAM computes it.

    ``rel_pos``: ``(n, C)``. When ``n != 2 * max(q_size, k_size) - 1`` it is linearly resampled to that many rows.
    Query ``i`` and key ``j`` get the row of offset ``i * max(k/q, 1) - j * max(q/k, 1) + (k_size - 1) * max(q/k, 1)``
    (offsets on the finer grid, truncated to an integer as SAM does).
    """
    if rel_pos.dim() != 2:
        raise ValueError(f"rel_pos: expected (2 * size - 1, head_dim), got shape {tuple(rel_pos.shape)}")
    if q_size < 1 or k_size < 1:
        raise ValueError(f"q_size, k_size: expected positive sizes, got {q_size} and {k_size}")
    rows = 2 * max(q_size, k_size) - 1
    table = rel_pos
    if rel_pos.shape[0] != rows:
        # interpolate works on (N, C, length): resample the row axis with every channel as its own signal.
        table = F.interpolate(rel_pos.t().unsqueeze(0), size=rows, mode="linear").squeeze(0).t()
    q_step, k_step = max(k_size / q_size, 1.0), max(q_size / k_size, 1.0)
    q_pos = torch.arange(q_size, device=rel_pos.device)[:, None] * q_step
    k_pos = torch.arange(k_size, device=rel_pos.device)[None, :] * k_step
    offset = q_pos - k_pos + (k_size - 1) * k_step
    return table[offset.long()]


def sam_rel_pos(
    q: torch.Tensor,
    rel_pos_h: torch.Tensor,
    rel_pos_w: torch.Tensor,
    q_size: tuple[int, int],
    k_size: tuple[int, int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rel_h, rel_w)`` for SAM's attention from the unscaled query and its ``rel_pos_h``/``rel_pos_w`` tables.

    ``q``: SAM's ``(B*H, q_h*q_w, C)`` or ``(B, H, q_h*q_w, C)``. Returns ``rel_h`` with ``k_h`` and ``rel_w`` with
    ``k_w`` as the last dimension, in ``q``'s layout: ``(B*H, Lq, k)`` or ``(B, H, Lq, k)``, in ``q``'s dtype.
    ``rel_h[..., i, j] = sum_c q[..., i, c] * Rh[i // q_w, j, c]`` and ``rel_w[..., i, j] = sum_c q[..., i, c] *
    Rw[i % q_w, j, c]`` with ``Rh = get_rel_pos(q_h, k_h, rel_pos_h)`` and ``Rw = get_rel_pos(q_w, k_w, rel_pos_w)``.
    """
    (q_h, q_w), (k_h, k_w) = q_size, k_size
    if q.dim() not in (3, 4) or q.shape[-2] != q_h * q_w:
        raise ValueError(
            f"q: expected (B*H, q_h*q_w, C) or (B, H, q_h*q_w, C) with q_h*q_w = {q_h * q_w}, got {tuple(q.shape)}"
        )
    lead, c = q.shape[:-2], q.shape[-1]
    r_h = get_rel_pos(q_h, k_h, rel_pos_h).to(q.dtype)
    r_w = get_rel_pos(q_w, k_w, rel_pos_w).to(q.dtype)
    if r_h.shape[-1] != c or r_w.shape[-1] != c:
        raise ValueError(
            f"rel_pos_h, rel_pos_w: expected head_dim {c} columns, got {r_h.shape[-1]} and {r_w.shape[-1]}"
        )
    grid_q = q.reshape(-1, q_h, q_w, c)
    rel_h = torch.einsum("nyxc,ykc->nyxk", grid_q, r_h)
    rel_w = torch.einsum("nyxc,xkc->nyxk", grid_q, r_w)
    return rel_h.reshape(*lead, q_h * q_w, k_h), rel_w.reshape(*lead, q_h * q_w, k_w)
