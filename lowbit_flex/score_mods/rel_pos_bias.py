"""Decomposed relative-position bias of Segment Anything (Kirillov et al., 2023) as a FlexAttention score_mod.

``bias[b, h, q, kv] = rel_h[b, h, q, kv // k_w] + rel_w[b, h, q, kv % k_w]`` for keys on a ``k_h x k_w`` grid
(row-major), added to the scaled logits. For the fastest path on CUDA see ``torch.ops.lowbit.rel_pos_attention``
and ``docs/rel_pos_attention.md``.
"""

from __future__ import annotations

import enum

import torch
from torch.nn.attention.flex_attention import _score_mod_signature

from lowbit_flex.score_mods._rel_pos_layout import RelPos, check_against_qkv, normalize_rel_pos


class _Formulation(enum.Enum):
    """How the closure reads the bias. Private: the benchmark times each so the GPU decides the default.

    The score_mod is inlined into FlexAttention's Triton kernel and evaluated on every (q, kv) element, so each
    formulation is two gathers per element; they differ in the index arithmetic and the captured tensors' layout.
    """

    # Two captured tensors, Python floor division and modulo: what a direct port writes. Inductor lowers `//` and
    # `%` on int tensors with sign fix-ups (floor semantics), a few extra instructions per element.
    NAIVE = "naive"
    # Two captured tensors (views of the caller's, no copy); truncating division (indices are >= 0, so it equals
    # floor division) lowers to a plain C division by a constant (multiply + shift), and the remainder reuses it.
    SEPARATE_TRUNC = "separate_trunc"
    # (A third layout, one combined (B, H, Lq, k_h + k_w) table, was dropped: built inside a compiled graph, as a SAM
    # forward does, it fails to lower in torch 2.11's FlexAttention; see docs/rel_pos_attention.md.)


# Chosen before GPU measurement: no copy at construction and the cheapest index arithmetic. The benchmark
# (benchmarks/bench_rel_pos_attention.py) times every formulation; docs/rel_pos_attention.md records the outcome.
_DEFAULT_FORMULATION = _Formulation.SEPARATE_TRUNC


def _build(rel: RelPos, formulation: _Formulation) -> _score_mod_signature:
    k_h, k_w = rel.k_h, rel.k_w
    if formulation is _Formulation.NAIVE:
        rel_h, rel_w = rel

        def rel_pos_bias_naive(score, b, h, q_idx, kv_idx):
            return score + rel_h[b, h, q_idx, kv_idx // k_w] + rel_w[b, h, q_idx, kv_idx % k_w]

        fn = rel_pos_bias_naive
    else:
        rel_h, rel_w = rel

        def rel_pos_bias_separate(score, b, h, q_idx, kv_idx):
            row = torch.div(kv_idx, k_w, rounding_mode="trunc")
            return score + rel_h[b, h, q_idx, row] + rel_w[b, h, q_idx, kv_idx - row * k_w]

        fn = rel_pos_bias_separate
    fn.__name__ = f"rel_pos_bias_{k_h}x{k_w}"
    return fn


def rel_pos_bias(rel_h: torch.Tensor, rel_w: torch.Tensor, *, num_heads: int | None = None) -> _score_mod_signature:
    """Score_mod adding SAM's decomposed relative-position bias: ``flex_attention(q, k, v, score_mod=...)``.

    ``rel_h``: ``(B, H, Lq, k_h)``, ``rel_w``: ``(B, H, Lq, k_w)``; or SAM's ``(B*H, Lq, k_h)``/``(B*H, Lq, k_w)``
    or ``(B*H, q_h, q_w, k_h, 1)``/``(B*H, q_h, q_w, 1, k_w)``, which need ``num_heads``. Keys lie on a
    ``k_h x k_w`` grid in row-major order and ``Lq == k_h * k_w`` (SAM's self-attention). Compute them from SAM's
    parameters with :func:`lowbit_flex.score_mods.sam_rel_pos`.

    Shapes and dtypes are validated here (``ValueError``/``TypeError`` naming the argument). A score_mod never sees
    ``q``/``k``, so call :func:`check_rel_pos_inputs` before ``flex_attention`` to check them against each other:
    an index past the end of ``rel_h``/``rel_w`` is not caught inside the compiled kernel.
    """
    return _build(normalize_rel_pos(rel_h, rel_w, num_heads=num_heads), _DEFAULT_FORMULATION)


def check_rel_pos_inputs(
    q: torch.Tensor, k: torch.Tensor, rel_h: torch.Tensor, rel_w: torch.Tensor, *, num_heads: int | None = None
) -> None:
    """Raise ``ValueError`` naming the argument unless ``rel_h``/``rel_w`` fit ``q``/``k`` of shape ``(B, H, L, D)``.

    Checks batch and heads, ``Lq``, ``Lkv == k_h * k_w``, the device, and the dtype (``q``'s dtype or float32).
    Works in eager, under ``torch.compile`` and on fake tensors (it only reads shapes, devices and dtypes).
    """
    rel = normalize_rel_pos(rel_h, rel_w, num_heads=num_heads if num_heads is not None else q.shape[1])
    check_against_qkv(rel, q, k)
    if rel.rel_h.dtype not in (q.dtype, torch.float32):
        raise ValueError(f"rel_h: expected dtype {q.dtype} (q's) or torch.float32, got {rel.rel_h.dtype}")
