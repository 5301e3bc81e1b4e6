"""``lowbit::sam_rel_pos``: Segment Anything's ``rel_h``/``rel_w`` for self-attention, in one kernel.

``rel_h[..., i, kh] = q[..., i, :] . rel_pos_h[y - kh + q_h - 1]`` and ``rel_w[..., i, kw] = q[..., i, :] .
rel_pos_w[x - kw + q_w - 1]`` for query ``i = y * q_w + x`` of a ``q_h x q_w`` grid: what SAM's
``add_decomposed_rel_pos`` computes with ``get_rel_pos`` and two einsums when the key grid is the query grid and the
tables have their native ``2 * size - 1`` rows (every SAM encoder block at its trained resolution). The results feed
``lowbit_flex.ops.rel_pos_attention`` or the ``rel_pos_bias`` score_mod.

Registered with ``torch.library.triton_op``: a compiled graph launches the one Triton kernel where SAM's formulation
costs two gathers, two batched matmuls and the copies around them. The body is also the fake impl (traced with
fake tensors), so the checks run there too. Elsewhere the exact reference runs (float64 math, one rounding).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch

from lowbit_flex._checks import FLOAT_DTYPES, check_shape, check_tensor
from lowbit_flex.ops.eager import PlanCache, current_device_index, needs_dispatcher
from lowbit_flex.ops.rel_pos_attention import MAX_HEAD_DIM, MAX_K
from lowbit_flex.score_mods.sam import get_rel_pos
from lowbit_flex.score_mods.sam import sam_rel_pos as sam_rel_pos_einsum

if TYPE_CHECKING:  # the kernel module imports Triton: imported when a call launches it
    from lowbit_flex.kernels.common import BoundLaunch, PlanLaunch


def _check_args(q: torch.Tensor, rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor, q_h: int, q_w: int) -> None:
    check_tensor("q", q, dtypes=FLOAT_DTYPES)
    if q.dim() not in (3, 4):
        raise ValueError(f"q: expected (N, L, D) or (B, H, L, D), got shape {tuple(q.shape)}")
    for name, size in (("q_h", q_h), ("q_w", q_w)):
        if not isinstance(size, (int, torch.SymInt)) or isinstance(size, bool) or not 1 <= size <= MAX_K:
            raise ValueError(f"{name}: expected an int in [1, {MAX_K}] (rel_pos_attention's grid), got {size!r}")
    if q.shape[-2] != q_h * q_w:
        raise ValueError(f"q: expected L = q_h * q_w = {q_h * q_w} queries, got shape {tuple(q.shape)}")
    if not 1 <= q.shape[-1] <= MAX_HEAD_DIM:
        raise ValueError(f"q: expected a head dim in [1, {MAX_HEAD_DIM}], got shape {tuple(q.shape)}")
    for name, table, size in (("rel_pos_h", rel_pos_h, q_h), ("rel_pos_w", rel_pos_w, q_w)):
        check_tensor(name, table, ndim=2)
        if table.dtype != q.dtype:
            raise TypeError(f"{name}: expected dtype {q.dtype} (the dtype of q), got {table.dtype}")
        if table.device != q.device:
            raise ValueError(f"{name}: expected a tensor on {q.device} (the device of q), got {table.device}")
        check_shape(name, table, (2 * size - 1, q.shape[-1]), "2 * grid size - 1 rows, q's head dim")


@torch.library.triton_op("lowbit::sam_rel_pos", mutates_args=())
def _sam_rel_pos_op(
    q: torch.Tensor, rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor, q_h: int, q_w: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.ops.lowbit.sam_rel_pos``; documented at :func:`sam_rel_pos`."""
    _check_args(q, rel_pos_h, rel_pos_w, q_h, q_w)
    q_h, q_w = int(q_h), int(q_w)  # the kernel's constexprs: a dynamic-shape trace specializes on them (a guard)
    if q.is_cuda:
        from lowbit_flex.kernels.sam_rel_pos import sam_rel_pos_triton

        return sam_rel_pos_triton(q, rel_pos_h, rel_pos_w, q_h, q_w)
    lead, d = q.shape[:-2], q.shape[-1]
    grid_q = q.double().reshape(-1, q_h, q_w, d)
    rel_h = torch.einsum("nyxc,ykc->nyxk", grid_q, get_rel_pos(q_h, q_h, rel_pos_h.double()))
    rel_w = torch.einsum("nyxc,xkc->nyxk", grid_q, get_rel_pos(q_w, q_w, rel_pos_w.double()))
    return (
        rel_h.to(q.dtype).reshape(*lead, q_h * q_w, q_h).contiguous(),
        rel_w.to(q.dtype).reshape(*lead, q_h * q_w, q_w).contiguous(),
    )


def sam_rel_pos(
    q: torch.Tensor,
    rel_pos_h: torch.Tensor,
    rel_pos_w: torch.Tensor,
    q_size: tuple[int, int],
    k_size: tuple[int, int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rel_h, rel_w)`` for SAM's attention, as :func:`lowbit_flex.score_mods.sam_rel_pos` (same arguments,
    same results up to rounding), in one kernel on CUDA where SAM's own formulation would launch several.

    ``q``: the unscaled query, SAM's ``(B*H, q_h*q_w, C)`` or ``(B, H, q_h*q_w, C)``, any strides (SAM's view of
    its ``qkv`` projection is read in place). ``rel_pos_h``/``rel_pos_w``: SAM's tables, cast to ``q``'s dtype as
    SAM does. Returns contiguous ``(..., L, k_h)`` and ``(..., L, k_w)`` in ``q``'s dtype.

    The kernel (``torch.ops.lowbit.sam_rel_pos``) takes self-attention (``q_size == k_size``) with tables of
    ``2 * size - 1`` rows and grids up to ``256 x 256``; other sizes (resampled tables, cross-attention) and
    float64 run SAM's formulation. It accumulates in fp32 and rounds once, as SAM's bf16 einsums do (their
    results may differ in the last bit where the sums' orders differ).
    """
    if not _kernel_applies(q, rel_pos_h, rel_pos_w, q_size, k_size):
        return sam_rel_pos_einsum(q, rel_pos_h, rel_pos_w, q_size, k_size)
    # The grid is the kernel's constexpr: a symbolic size (dynamic-shape tracing) is specialized here (a guard).
    q_h, q_w = int(q_size[0]), int(q_size[1])
    rel_pos_h, rel_pos_w = rel_pos_h.to(q.dtype), rel_pos_w.to(q.dtype)
    if not needs_dispatcher(q):
        return _eager(q, rel_pos_h, rel_pos_w, q_h, q_w)
    _check_args(q, rel_pos_h, rel_pos_w, q_h, q_w)
    return torch.ops.lowbit.sam_rel_pos(q, rel_pos_h, rel_pos_w, q_h, q_w)


def _kernel_applies(q, rel_pos_h, rel_pos_w, q_size, k_size) -> bool:
    """Whether the call is one the op computes: self-attention sizes up to ``MAX_K`` with native tables (SAM's
    formulation resamples others) and a query in a dtype other than float64 (which SAM's formulation keeps). Bad
    input otherwise goes to the op, whose checks name it."""
    sizes = (*q_size, *k_size)
    if len(sizes) != 4 or not all(isinstance(s, (int, torch.SymInt)) and not isinstance(s, bool) for s in sizes):
        return False
    if tuple(q_size) != tuple(k_size) or not all(1 <= s <= MAX_K for s in q_size):
        return False
    tables = ((rel_pos_h, q_size[0]), (rel_pos_w, q_size[1]))
    if not all(isinstance(t, torch.Tensor) and t.dim() == 2 and t.shape[0] == 2 * s - 1 for t, s in tables):
        return False
    return isinstance(q, torch.Tensor) and q.dtype != torch.float64


class _EagerPlan(NamedTuple):
    """An eager call's launch for one metadata key: outputs of ``shape_h``/``shape_w``, the bound kernel (None
    under the interpreter or with launch hooks set: then ``launch`` with ``scalars``), or no launch at all (empty
    outputs: the op's body)."""

    launch: PlanLaunch | None
    bound: BoundLaunch | None
    scalars: tuple
    shape_h: tuple
    shape_w: tuple


_EAGER_PLANS = PlanCache()


def _eager(q, rel_pos_h, rel_pos_w, q_h, q_w):
    """An eager CUDA call: checked and planned once per metadata key (everything the checks and the launch depend
    on), then each call allocates the outputs and launches the bound kernel, as ``rel_pos_attention``'s eager path
    does. ``q`` is a CUDA tensor (:func:`~lowbit_flex.ops.eager.needs_dispatcher`)."""
    try:
        key = (
            q_h, q_w, current_device_index(),
            q.dtype, q.shape, q.stride(), q.get_device(), q.data_ptr() % 16,
            type(rel_pos_h), rel_pos_h.dtype, rel_pos_h.shape, rel_pos_h.stride(), rel_pos_h.get_device(),
            rel_pos_h.data_ptr() % 16,
            type(rel_pos_w), rel_pos_w.dtype, rel_pos_w.shape, rel_pos_w.stride(), rel_pos_w.get_device(),
            rel_pos_w.data_ptr() % 16,
        )  # fmt: skip
        plan = _EAGER_PLANS.get(key)
    except (AttributeError, TypeError):  # an unhashable size: the body raises the right error
        return _sam_rel_pos_op(q, rel_pos_h, rel_pos_w, q_h, q_w)
    if plan is None:
        plan = _EAGER_PLANS.remember(key, _eager_plan(q, rel_pos_h, rel_pos_w, q_h, q_w))
    if plan.launch is None:
        return _sam_rel_pos_op(q, rel_pos_h, rel_pos_w, q_h, q_w)
    rel_h = torch.empty(plan.shape_h, dtype=q.dtype, device=q.device)
    rel_w = torch.empty(plan.shape_w, dtype=q.dtype, device=q.device)
    if plan.bound is None or plan.bound.hooked():  # profilers' launch hooks see only Triton's own path
        plan.launch(q, rel_pos_h, rel_pos_w, rel_h, rel_w, *plan.scalars)
    else:
        plan.bound(q, rel_pos_h, rel_pos_w, rel_h, rel_w)
    return rel_h, rel_w


def _eager_plan(q, rel_pos_h, rel_pos_w, q_h, q_w) -> _EagerPlan:
    """Check the arguments (raising on bad input, so nothing is cached for it) and plan the launch."""
    _check_args(q, rel_pos_h, rel_pos_w, q_h, q_w)
    lead, L = tuple(q.shape[:-2]), q_h * q_w
    shape_h, shape_w = (*lead, L, q_h), (*lead, L, q_w)
    if q.numel() == 0:
        return _EagerPlan(None, None, (), shape_h, shape_w)
    from lowbit_flex.kernels.sam_rel_pos import sam_rel_pos_plan

    launch, scalars = sam_rel_pos_plan(q, rel_pos_h, rel_pos_w, q_h, q_w)
    rel_h = torch.empty(shape_h, dtype=q.dtype, device=q.device)  # for bind's dtypes and alignment
    rel_w = torch.empty(shape_w, dtype=q.dtype, device=q.device)
    bound = launch.bind(q, rel_pos_h, rel_pos_w, rel_h, rel_w, *scalars)  # compiles; None under the interpreter
    return _EagerPlan(launch, bound, scalars, shape_h, shape_w)
