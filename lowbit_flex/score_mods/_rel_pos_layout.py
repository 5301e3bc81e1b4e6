"""One place that turns every accepted ``rel_h`` / ``rel_w`` layout into ``(B, H, Lq, k)`` views.

Shared by the ``rel_pos_bias`` score_mod and the ``lowbit::rel_pos_attention`` op, so both accept exactly the same
layouts and raise the same errors. Accepted (``Lq = q_h * q_w`` query positions, keys on a ``k_h x k_w`` grid):

* 4-D ``(B, H, Lq, k_h)`` and ``(B, H, Lq, k_w)``;
* 3-D ``(B*H, Lq, k_h)`` and ``(B*H, Lq, k_w)``: what SAM's ``get_decomposed_rel_pos`` gives once flattened
  (needs ``num_heads`` to split ``B*H``);
* 5-D ``(B*H, q_h, q_w, k_h, 1)`` and ``(B*H, q_h, q_w, 1, k_w)``: SAM's broadcast form
  ``rel_h[:, :, :, :, None]`` / ``rel_w[:, :, :, None, :]`` (needs ``num_heads``).

Only self-attention over the key grid is supported, as in SAM: ``Lq == k_h * k_w``. The normalised tensors are views
(no copy) whenever the input's strides allow it.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class RelPos(NamedTuple):
    rel_h: torch.Tensor  # (B, H, Lq, k_h)
    rel_w: torch.Tensor  # (B, H, Lq, k_w)

    @property
    def k_h(self) -> int:
        return self.rel_h.shape[-1]

    @property
    def k_w(self) -> int:
        return self.rel_w.shape[-1]


def _split_heads(name: str, t: torch.Tensor, num_heads: int | torch.SymInt | None) -> torch.Tensor:
    """``(B*H, Lq, k)`` -> ``(B, H, Lq, k)``."""
    if num_heads is None:
        raise ValueError(
            f"{name}: the (B*H, ...) layout {tuple(t.shape)} needs num_heads to split B*H "
            "(or pass the 4-D (B, H, Lq, k) layout)"
        )
    # SymInt: the op passes q.shape[1], which is symbolic under dynamic-shape tracing.
    if isinstance(num_heads, bool) or not isinstance(num_heads, (int, torch.SymInt)) or num_heads < 1:
        raise ValueError(f"num_heads: expected a positive int, got {num_heads!r}")
    if t.shape[0] % num_heads:
        raise ValueError(f"{name}: leading dimension {t.shape[0]} (B*H) is not a multiple of num_heads={num_heads}")
    return t.reshape(t.shape[0] // num_heads, num_heads, *t.shape[1:])


def normalize_rel_pos(rel_h: object, rel_w: object, *, num_heads: int | None = None) -> RelPos:
    """Validate ``rel_h``/``rel_w`` (any accepted layout) and return ``(B, H, Lq, k_h)``/``(B, H, Lq, k_w)`` views.

    Raises ``TypeError`` for non-tensors and non-float dtypes, ``ValueError`` (naming the argument) for anything
    else: mismatched ranks, leading dimensions, devices or dtypes, and ``Lq != k_h * k_w``.
    """
    for name, t in (("rel_h", rel_h), ("rel_w", rel_w)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{name}: expected a floating-point dtype, got {t.dtype}")
    if rel_w.device != rel_h.device:
        raise ValueError(f"rel_w: expected a tensor on {rel_h.device} (the device of rel_h), got {rel_w.device}")
    if rel_w.dtype != rel_h.dtype:
        raise ValueError(f"rel_w: expected dtype {rel_h.dtype} (the dtype of rel_h), got {rel_w.dtype}")
    if rel_h.dim() != rel_w.dim() or rel_h.dim() not in (3, 4, 5):
        raise ValueError(
            "rel_h, rel_w: expected (B, H, Lq, k_h)/(B, H, Lq, k_w), (B*H, Lq, k_h)/(B*H, Lq, k_w) or "
            f"(B*H, q_h, q_w, k_h, 1)/(B*H, q_h, q_w, 1, k_w), got {tuple(rel_h.shape)} and {tuple(rel_w.shape)}"
        )
    if rel_h.dim() == 5:
        if rel_h.shape[4] != 1:
            raise ValueError(f"rel_h: expected the 5-D form (B*H, q_h, q_w, k_h, 1), got {tuple(rel_h.shape)}")
        if rel_w.shape[3] != 1:
            raise ValueError(f"rel_w: expected the 5-D form (B*H, q_h, q_w, 1, k_w), got {tuple(rel_w.shape)}")
        if rel_w.shape[:3] != rel_h.shape[:3]:
            raise ValueError(f"rel_w: leading dimensions {tuple(rel_w.shape[:3])} != rel_h's {tuple(rel_h.shape[:3])}")
        n, q_h, q_w = rel_h.shape[:3]
        rel_h = rel_h.reshape(n, q_h * q_w, rel_h.shape[3])
        rel_w = rel_w.reshape(n, q_h * q_w, rel_w.shape[4])
    if rel_w.shape[:-1] != rel_h.shape[:-1]:
        raise ValueError(
            f"rel_w: leading dimensions {tuple(rel_w.shape[:-1])} != rel_h's {tuple(rel_h.shape[:-1])} "
            "(both must be (..., Lq, k) for the same batch, heads and queries)"
        )
    if rel_h.dim() == 3:
        rel_h, rel_w = _split_heads("rel_h", rel_h, num_heads), _split_heads("rel_w", rel_w, num_heads)
    lq, k_h, k_w = rel_h.shape[2], rel_h.shape[3], rel_w.shape[3]
    if k_h < 1 or k_w < 1:
        raise ValueError(f"rel_h, rel_w: expected k_h, k_w >= 1, got {k_h} and {k_w}")
    if lq != k_h * k_w:
        hint = ""
        if rel_h.shape[1] * rel_h.shape[2] == k_h * k_w:
            hint = " (this looks like SAM's (B*H, q_h, q_w, k_h): reshape it to (B*H, q_h*q_w, k_h))"
        raise ValueError(
            f"rel_h: expected Lq = k_h * k_w = {k_h} * {k_w} = {k_h * k_w} query positions (self-attention over "
            f"the key grid), got Lq = {lq} in shape {tuple(rel_h.shape)}{hint}"
        )
    return RelPos(rel_h, rel_w)


def check_against_qkv(rel: RelPos, q: torch.Tensor, k: torch.Tensor) -> None:
    """Raise ``ValueError`` naming the argument unless ``rel`` fits ``q``/``k`` of shape ``(B, H, L, D)``."""
    if q.dim() != 4 or k.dim() != 4:
        raise ValueError(f"q, k: expected (B, H, L, D) tensors, got {tuple(q.shape)} and {tuple(k.shape)}")
    b, h, lq = q.shape[:3]
    if tuple(rel.rel_h.shape[:2]) != (b, h):
        raise ValueError(f"rel_h: batch and heads {tuple(rel.rel_h.shape[:2])} do not match q's (B, H) = {(b, h)}")
    if rel.rel_h.shape[2] != lq:
        raise ValueError(f"rel_h: {rel.rel_h.shape[2]} query positions, but q has Lq = {lq}")
    if k.shape[2] != rel.k_h * rel.k_w:
        raise ValueError(
            f"k: expected Lkv = k_h * k_w = {rel.k_h} * {rel.k_w} = {rel.k_h * rel.k_w} key positions, got {k.shape[2]}"
        )
    if rel.rel_h.device != q.device:
        raise ValueError(f"rel_h: expected a tensor on {q.device} (the device of q), got {rel.rel_h.device}")


def attention_out_strides(q: torch.Tensor) -> tuple[int, int, int, int]:
    """Strides of the fused op's ``(B, H, L, D)`` output: ``(B, L, H, D)`` memory where ``q`` has its heads inside
    its tokens (SAM's ``qkv.reshape(B, L, 3, H, D).permute(...)`` view, as SDPA's kernels keep ``q``'s layout), so
    the caller's ``out.transpose(1, 2).reshape(B, L, H * D)`` is a view instead of a copy; contiguous otherwise."""
    _, h, lq, d = q.shape
    if q.stride(1) < q.stride(2):
        return (lq * h * d, d, h * d, 1)
    return (h * lq * d, lq * d, d, 1)
