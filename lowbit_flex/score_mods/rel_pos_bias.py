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


# FlexAttention tiles for this score_mod, keyed by "L <= 256" (SAM's 14 x 14 windows), from the H200 sweep of
# benchmarks/bench_rel_pos_score_mod.py (torch 2.11, bf16, D = 64; docs/rel_pos_attention.md, run 39). Without
# options the template's tiles ran vit_b global attention in 5.72 ms (2.2x slower than compiled SDPA with the
# materialised bias), SAM's windows in 1.96 ms and a 48 x 40 grid in 0.74 ms; these tiles: 2.41, 0.41 and 0.32 ms.
# At D = 80 the defaults are these tiles already (7.32 ms either way). Head dims past 128 keep FlexAttention's own
# choice (unmeasured; three stages of D = 256 keys and values would not fit an A100's shared memory).
# PRESCALE_QK is left out although it was faster still (1.81 ms global): the score_mod then sees logits in log2
# units and needs tables times log2(e), which is right only where the Triton template runs; FlexAttention's eager
# and CPU paths ignore the option and would add a bias 1.44x too large.
_KERNEL_OPTIONS = {
    False: {"BLOCK_M": 64, "BLOCK_N": 64, "num_warps": 4, "num_stages": 3},
    True: {"BLOCK_M": 64, "BLOCK_N": 32, "num_warps": 4, "num_stages": 3},
}
_KERNEL_OPTIONS_MAX_HEAD_DIM = 128
_SHORT_SEQ = 256


def rel_pos_kernel_options(head_dim: int, seq_len: int) -> dict:
    """``kernel_options`` for ``flex_attention(q, k, v, score_mod=rel_pos_bias(...), kernel_options=...)`` with
    ``q`` of shape ``(B, H, seq_len, head_dim)``: the tiles measured fastest for this score_mod on an H200 (each
    logit gathers two bias terms, which FlexAttention's default tiles pay for in registers). They only change speed:
    the result is the same with or without them, on every backend. A new dict per call; empty (FlexAttention's own
    choice) past ``head_dim`` 128."""
    for name, value in (("head_dim", head_dim), ("seq_len", seq_len)):
        # SymInt: q.shape under torch.compile with dynamic shapes (the comparisons below then guard on it).
        if not isinstance(value, (int, torch.SymInt)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name}: expected a positive int, got {value!r}")
    if head_dim > _KERNEL_OPTIONS_MAX_HEAD_DIM:
        return {}
    return dict(_KERNEL_OPTIONS[seq_len <= _SHORT_SEQ])


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
