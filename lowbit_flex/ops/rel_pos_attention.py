"""``lowbit::rel_pos_attention``: attention with Segment Anything's decomposed relative-position bias, fused.

``out = softmax(q @ k^T * scale + bias) @ v`` with ``bias[b, h, i, j] = rel_h[b, h, i, j // k_w] +
rel_w[b, h, i, j % k_w]``: keys on a ``k_h x k_w`` grid (row-major), self-attention (``L == k_h * k_w``).
On CUDA a Triton flash-attention kernel adds the bias from ``rel_h``/``rel_w`` rows loaded once per query block;
no ``L x L`` tensor is ever formed. Elsewhere the exact reference below runs (float64 math, materialised bias).

Registered with ``torch.library.triton_op``: ``torch.compile`` traces the body, so compiled graphs launch the Triton
kernel from generated code (the CPU reference is traced into ordinary ops); ``torch.export`` keeps the op as one
node. The body is also the fake impl (traced with fake tensors), so the checks run there too.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

import torch

from lowbit_flex._checks import FLOAT_DTYPES, check_softmax_scale, check_tensor
from lowbit_flex.ops.eager import PlanCache, current_device_index, needs_dispatcher
from lowbit_flex.score_mods._rel_pos_layout import RelPos, attention_out_strides, check_against_qkv, normalize_rel_pos

if TYPE_CHECKING:  # kernel modules import Triton: op modules import them when they launch
    from lowbit_flex.kernels.common import BoundLaunch, PlanLaunch

# Kernel limits (the kernel pads head dim and the rel_h/rel_w rows to powers of two in registers). Checked for
# every device so eager, fake and compiled calls accept and reject the same inputs.
MAX_HEAD_DIM = 256
MAX_K = 256


def _check_args(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rel_h: torch.Tensor, rel_w: torch.Tensor, scale: float | None
) -> RelPos:
    check_tensor("q", q, dtypes=FLOAT_DTYPES, ndim=4)
    for name, t in (("k", k), ("v", v)):
        check_tensor(name, t, dtypes=FLOAT_DTYPES, ndim=4)
        if t.dtype != q.dtype:
            raise ValueError(f"{name}: expected dtype {q.dtype} (the dtype of q), got {t.dtype}")
        if t.device != q.device:
            raise ValueError(f"{name}: expected a tensor on {q.device} (the device of q), got {t.device}")
        if tuple(t.shape) != tuple(q.shape):
            raise ValueError(f"{name}: expected shape {tuple(q.shape)} (q's: self-attention), got {tuple(t.shape)}")
    d = q.shape[-1]
    if not 1 <= d <= MAX_HEAD_DIM:
        raise ValueError(f"q: expected a head dim in [1, {MAX_HEAD_DIM}], got {d}")
    rel = normalize_rel_pos(rel_h, rel_w, num_heads=q.shape[1])
    check_against_qkv(rel, q, k)
    if rel.rel_h.dtype != q.dtype:
        raise ValueError(f"rel_h: expected dtype {q.dtype} (the dtype of q), got {rel.rel_h.dtype}")
    if rel.k_h > MAX_K or rel.k_w > MAX_K:
        raise ValueError(f"rel_h, rel_w: expected k_h, k_w <= {MAX_K}, got {rel.k_h} and {rel.k_w}")
    check_softmax_scale("scale", scale)
    return rel


def _runs_kernel(q: torch.Tensor) -> bool:
    """Where the op launches the Triton kernel (elsewhere the float64 reference runs)."""
    return q.is_cuda


def _rel_pos_attention(q, k, v, rel_h, rel_w, scale=None) -> torch.Tensor:
    """The op's body (see :func:`rel_pos_attention`), also the eager fast path's fallback."""
    rel = _check_args(q, k, v, rel_h, rel_w, scale)
    if _runs_kernel(q):
        from lowbit_flex.kernels.rel_pos_attention import rel_pos_attention_triton

        return rel_pos_attention_triton(q, k, v, rel.rel_h, rel.rel_w, scale)
    s = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    rh, rw = rel.rel_h.double(), rel.rel_w.double()
    bias = (rh[..., :, None] + rw[..., None, :]).flatten(-2)  # (B, H, L, k_h * k_w): column j = (j // k_w, j % k_w)
    logits = q.double() @ k.double().transpose(-1, -2) * s + bias
    out = torch.empty_strided(q.shape, attention_out_strides(q), dtype=q.dtype, device=q.device)
    return out.copy_(torch.softmax(logits, dim=-1) @ v.double())


@torch.library.triton_op("lowbit::rel_pos_attention", mutates_args=())
def _rel_pos_attention_op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rel_h: torch.Tensor,
    rel_w: torch.Tensor,
    scale: float | None = None,
) -> torch.Tensor:
    """``torch.ops.lowbit.rel_pos_attention``; documented at :func:`rel_pos_attention`."""
    return _rel_pos_attention(q, k, v, rel_h, rel_w, scale)


def rel_pos_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rel_h: torch.Tensor,
    rel_w: torch.Tensor,
    scale: float | None = None,
) -> torch.Tensor:
    """Attention of ``q, k, v`` (``(B, H, L, D)``, same dtype) with SAM's decomposed relative-position bias.

    ``rel_h``/``rel_w``: ``(B, H, L, k_h)``/``(B, H, L, k_w)``, SAM's ``(B*H, L, k_h)``/``(B*H, L, k_w)`` or
    ``(B*H, q_h, q_w, k_h, 1)``/``(B*H, q_h, q_w, 1, k_w)``, in ``q``'s dtype, with ``L == k_h * k_w`` (compute
    them with :func:`lowbit_flex.ops.sam_rel_pos`). ``scale`` defaults to ``1 / sqrt(D)`` and multiplies
    ``q @ k^T`` only (not the bias), as in SAM. Returns ``(B, H, L, D)`` in ``q``'s dtype: contiguous, or
    ``(B, L, H, D)`` in memory where ``q`` is (SAM's view of its ``qkv`` projection), as SDPA's kernels do, so
    ``out.transpose(1, 2).reshape(B, L, H * D)`` is a view.
    fp16/bf16 (fp32 accumulation) are the fast CUDA path; float32 runs there too with IEEE-exact (slow, FMA)
    dot products. Head dim up to 256, ``k_h, k_w <= 256``. Elsewhere the exact float64 reference runs.

    Validates before dispatching to ``torch.ops.lowbit.rel_pos_attention``: under ``torch.compile`` the checks then
    run as traced Python and a bad input raises its ``ValueError`` itself (inside the op, dynamo reports errors of
    the fake impl wrapped in a ``TorchRuntimeError``). In plain eager CUDA calls, where the custom-op dispatcher
    cannot change anything (:func:`~lowbit_flex.ops.eager.needs_dispatcher`), the checks and the launch plan are
    kept per metadata key (:func:`_eager`).
    """
    if not needs_dispatcher(q):
        return _eager(q, k, v, rel_h, rel_w, scale)
    _check_args(q, k, v, rel_h, rel_w, scale)
    return torch.ops.lowbit.rel_pos_attention(q, k, v, rel_h, rel_w, scale)


class _EagerPlan(NamedTuple):
    """What an eager call with one metadata key does: launch into a new ``shape`` / ``strides`` tensor, or, where
    ``launch`` is None, run the op's body (a copy of rel_h/rel_w, an empty output or the reference). ``bound``: the
    compiled kernel with every argument after the tensors fixed (:class:`~lowbit_flex.kernels.common.BoundLaunch`);
    None where it could not be bound (the interpreter, launch hooks set when the plan was made): those
    calls take ``launch`` with ``scalars`` after the tensors."""

    launch: PlanLaunch | None
    bound: BoundLaunch | None
    scalars: tuple
    shape: tuple
    strides: tuple
    dtype: torch.dtype
    device: torch.device


_EAGER_PLANS = PlanCache()  # _EagerPlan by the metadata of a call's arguments (see _eager's key)


def _eager(q, k, v, rel_h, rel_w, scale):
    """An eager CUDA call: the arguments are checked once per metadata key (everything the checks and the launch
    depend on is in the key), then each call allocates the output and launches. On the H200 host the checks, the
    layout normalisation and the launch planning cost ~25 us per call (run 16), more than SDPA's whole call. The
    launch itself skips Triton's per-call binding and :class:`~lowbit_flex.kernels.common.PlanLaunch`'s per-call key
    (device, dtypes and alignment of six tensors): the key here fixes all of them."""
    try:
        key = (
            scale, current_device_index(),
            q.dtype, q.shape, q.stride(), q.get_device(), q.data_ptr() % 16,
            type(k), k.dtype, k.shape, k.stride(), k.get_device(), k.data_ptr() % 16,
            type(v), v.dtype, v.shape, v.stride(), v.get_device(), v.data_ptr() % 16,
            type(rel_h), rel_h.dtype, rel_h.shape, rel_h.stride(), rel_h.get_device(), rel_h.data_ptr() % 16,
            type(rel_w), rel_w.dtype, rel_w.shape, rel_w.stride(), rel_w.get_device(), rel_w.data_ptr() % 16,
        )  # fmt: skip
        plan = _EAGER_PLANS.get(key)
    except (AttributeError, TypeError):  # not a tensor, or an unhashable scale: the body raises the right error
        return _rel_pos_attention(q, k, v, rel_h, rel_w, scale)
    if plan is None:
        plan = _EAGER_PLANS.remember(key, _eager_plan(q, k, v, rel_h, rel_w, scale))
    if plan.launch is None:
        return _rel_pos_attention(q, k, v, rel_h, rel_w, scale)
    out = torch.empty_strided(plan.shape, plan.strides, dtype=plan.dtype, device=plan.device)
    if plan.bound is None or plan.bound.hooked():  # profilers' launch hooks see only Triton's own path
        plan.launch(q, k, v, rel_h, rel_w, out, *plan.scalars)
    else:
        plan.bound(q, k, v, rel_h, rel_w, out)
    return out


def _eager_plan(q, k, v, rel_h, rel_w, scale) -> _EagerPlan:
    """Check the arguments (raising on bad input, so nothing is cached for it) and plan the launch. The kernel reads
    the caller's rel_h/rel_w through the normalised views' strides: only where those views share the caller's
    address (no copy) and rows have unit stride; otherwise every call runs the body."""
    rel = _check_args(q, k, v, rel_h, rel_w, scale)
    shape, strides = tuple(q.shape), attention_out_strides(q)
    direct = (
        _runs_kernel(q)
        and q.numel() > 0
        and all(
            t.data_ptr() == view.data_ptr() and view.stride(-1) == 1
            for t, view in ((rel_h, rel.rel_h), (rel_w, rel.rel_w))
        )
    )
    if not direct:
        return _EagerPlan(None, None, (), shape, strides, q.dtype, q.device)
    from lowbit_flex.kernels.rel_pos_attention import rel_pos_plan

    # Plans with device-side TMA descriptors (the Gluon kernel's, TMA loads) are bound too: Triton's launcher takes
    # their global scratch from the allocator rel_pos_plan made sure of, at each call (as lowbit_attention's).
    launch, scalars = rel_pos_plan(q, k, v, rel.rel_h, rel.rel_w, scale)
    out = torch.empty_strided(shape, strides, dtype=q.dtype, device=q.device)  # for bind's dtype and alignment
    bound = launch.bind(q, k, v, rel.rel_h, rel.rel_w, out, *scalars)  # compiles; None under the interpreter
    return _EagerPlan(launch, bound, scalars, shape, strides, q.dtype, q.device)
