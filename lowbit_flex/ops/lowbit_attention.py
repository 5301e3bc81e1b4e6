"""``lowbit::lowbit_attention``: attention on bf16/fp16/fp32 ``q, k, v`` with low-bit QKᵀ (and PV), quantization
included, in one op call.

The format, on top of ``lowbit::fp8_attention``'s (see there for the softmax and P rounding):

- ``q``: one scale per 128 query tokens: ``qk="fp8"`` e4m3, ``qk="int8"`` int8; ``scale = finite amax / qmax``
  (1 when there is none), codes ``= rne(clamp(x · (1 / scale)))``, the reciprocal in float32.
- ``k``: minus the smooth-K shift when ``smooth_k`` (the mean of the finite values of the head's first
  ``min(Lk, 128)`` keys, float32; any vector shared by all keys cancels in softmax), then as ``q``, per 128 keys.
- ``v``: ``pv="fp8"`` e4m3 per block of 128 keys, same rule, except that an all-zero block has scale 0;
  ``pv="fp16"`` (the accurate mode) not quantized, P
  and V in the input's 16-bit dtype (bfloat16 for float32 inputs).
- Output in ``q``'s dtype.

On CUDA sm_89+: two launches, Q, K and V quantized in one pass (``kernels/quantize_qkv.py``), then the attention
kernel of ``lowbit::fp8_attention``. On CPU the float64 reference below (exact up to accumulation order). Head
dims other than 64/128 and CUDA GPUs before sm_89 run ``F.scaled_dot_product_attention`` instead (documented).
Registered with ``torch.library.triton_op``, so compiled graphs launch both kernels from generated code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F

from lowbit_flex._checks import FLOAT_DTYPES, check_flags, check_same_device, check_softmax_scale, check_tensor
from lowbit_flex.kernels.arch import has_fp8_mma
from lowbit_flex.ops.eager import PlanCache, current_device_index, needs_dispatcher
from lowbit_flex.ops.fp8_attention import HEAD_DIMS, reference_fp8_attention
from lowbit_flex.quant.fp8 import FP8_MAX, K_BLOCK, Q_BLOCK
from lowbit_flex.quant.groups import group_amax, reference_scaled

if TYPE_CHECKING:  # kernel modules import Triton: op modules import them when they launch
    from lowbit_flex.kernels.common import BoundLaunch

QK_FORMATS = {"fp8": torch.float8_e4m3fn, "int8": torch.int8}  # qk= -> the dtype of q and k in QKᵀ
PV_FORMATS = ("fp8", "fp16")


def check_inputs(q, k, v, qk: str, pv: str, pv_fp16_accum: bool, scale: float | None = None, causal: bool = False,
                 smooth_k: bool = True) -> None:  # fmt: skip
    check_flags(causal=causal, smooth_k=smooth_k, pv_fp16_accum=pv_fp16_accum)
    if qk not in QK_FORMATS:
        raise ValueError(f"qk: expected one of {tuple(QK_FORMATS)}, got {qk!r}")
    if pv not in PV_FORMATS:
        raise ValueError(f"pv: expected one of {PV_FORMATS}, got {pv!r}")
    if pv_fp16_accum and pv != "fp8":
        raise ValueError(f"pv_fp16_accum: only with pv='fp8' (it accumulates the fp8 PV product), got pv={pv!r}")
    check_tensor("q", q, dtypes=FLOAT_DTYPES, ndim=4)
    check_tensor("k", k, dtypes=(q.dtype,), ndim=4)
    check_tensor("v", v, dtypes=(q.dtype,), ndim=4)
    B, H, _, D = q.shape
    if k.shape[0] != B or k.shape[3] != D or k.shape[1] == 0 or H % k.shape[1] != 0:
        raise ValueError(f"k: expected shape (B={B}, Hkv, Lk, D={D}) with Hkv dividing H={H}, got {tuple(k.shape)}")
    if v.shape != k.shape:
        raise ValueError(f"v: expected shape {tuple(k.shape)} (the shape of k), got {tuple(v.shape)}")
    if k.shape[2] == 0:  # no keys: softmax over nothing is undefined (Lq == 0 is an empty output)
        raise ValueError(f"k: expected at least one key token (Lk > 0), got shape {tuple(k.shape)}")
    check_same_device(q=q, k=k, v=v)
    check_softmax_scale("scale", scale)


def uses_lowbit_kernel(q: torch.Tensor) -> bool:
    """False where ``lowbit_attention`` falls back to SDPA: head dims other than 64/128, CUDA GPUs before sm_89."""
    if q.shape[-1] not in HEAD_DIMS:
        return False
    return q.device.type != "cuda" or has_fp8_mma(q.device)


def pv_16bit_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of V and P in the accurate mode (``pv="fp16"``): the input's own 16-bit dtype; bfloat16 for float32
    inputs (float32's range: a float16 V could overflow)."""
    return dtype if dtype in (torch.bfloat16, torch.float16) else torch.bfloat16


def smooth_k_shift(k: torch.Tensor) -> torch.Tensor:
    """``(B, Hkv, 1, D)`` float32: the mean of the finite values of the first ``min(Lk, 128)`` keys of each head."""
    first = k[:, :, :K_BLOCK].float()
    first = torch.where(torch.isfinite(first), first, torch.zeros_like(first))
    return first.sum(dim=2, keepdim=True) / first.shape[2]


def _quantize_blocks(x: torch.Tensor, dtype: torch.dtype, shift: torch.Tensor | None):
    """Per-128-token quantization as the kernels do it (reciprocal multiply; see :func:`reference_scaled`)."""
    qmax = 127.0 if dtype == torch.int8 else FP8_MAX[dtype]
    y, scale = reference_scaled(x, "block", Q_BLOCK, shift, qmax, nonfinite_to_nan=dtype != torch.int8,
                                reciprocal=True)  # fmt: skip
    return (torch.round(y).to(dtype) if dtype == torch.int8 else y.to(dtype)), scale


def quantize_v_blocks(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """v in e4m3 per 128 keys, an all-zero block with scale 0 (not 1): the attention kernel takes the head's largest
    block scale as P's unit, and a 1 from zero padding would push the other blocks' P into e4m3's subnormals."""
    v8, vs = _quantize_blocks(v, torch.float8_e4m3fn, None)
    empty = group_amax(v.float(), "block", K_BLOCK) == 0
    return v8, torch.where(empty, torch.zeros_like(vs), vs)


def reference_lowbit_attention(
    q, k, v, causal, scale, qk, pv, smooth_k, pv_fp16_accum, keys_per_step=K_BLOCK
) -> torch.Tensor:
    """The format (module docstring) in float64 after the same quantization the kernels perform (``keys_per_step``:
    see :func:`~lowbit_flex.ops.fp8_attention.reference_fp8_attention`)."""
    dtype = QK_FORMATS[qk]
    q8, qs = _quantize_blocks(q, dtype, None)
    k8, ks = _quantize_blocks(k, dtype, smooth_k_shift(k) if smooth_k else None)
    if pv == "fp16":
        v8, vs = v.to(pv_16bit_dtype(v.dtype)), None
    else:
        v8, vs = quantize_v_blocks(v)
    return reference_fp8_attention(q8, k8, v8, qs, ks, vs, causal, scale, q.dtype, pv_fp16_accum, keys_per_step)


def _lowbit_attention(q, k, v, causal, scale, qk, pv, smooth_k, pv_fp16_accum) -> torch.Tensor:
    """The op's body (see :func:`lowbit_attention`), also called directly by :func:`lowbit_attention_eager`."""
    check_inputs(q, k, v, qk, pv, pv_fp16_accum, scale, causal, smooth_k)
    if q.numel() == 0:  # no queries (or batch / heads): nothing to launch
        return q.new_empty(q.shape)
    if not uses_lowbit_kernel(q):
        gqa = q.shape[1] != k.shape[1]
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale, enable_gqa=gqa)
    if not q.is_cuda:
        return reference_lowbit_attention(q, k, v, causal, scale, qk, pv, smooth_k, pv_fp16_accum)
    return run_kernels(q, k, v, causal, scale, qk, pv, smooth_k, pv_fp16_accum)


def run_kernels(q, k, v, causal, scale, qk, pv, smooth_k, pv_fp16_accum) -> torch.Tensor:
    """The two launches of the CUDA path (also on CPU tensors under Triton's interpreter, for the tests)."""
    from lowbit_flex.kernels.fp8_attention import fp8_attention_triton
    from lowbit_flex.kernels.quantize_qkv import quantize_qkv_triton

    v_fp8 = pv == "fp8"  # an e4m3 v is written with its keys in the P·V MMA's order (no shuffle of P)
    q8, qs, k8, ks, v8, vs = quantize_qkv_triton(q, k, v, QK_FORMATS[qk], smooth_k, v_fp8, v_mma_key_order=v_fp8)
    if pv == "fp16":
        v8 = v.to(pv_16bit_dtype(v.dtype))  # no copy for bf16/fp16 inputs
    return fp8_attention_triton(q8, k8, v8, qs, ks, vs, causal, scale, q.dtype, pv_fp16_accum, v_mma_key_order=v_fp8)


@torch.library.triton_op("lowbit::lowbit_attention", mutates_args=())
def lowbit_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool = False,
    scale: float | None = None,
    qk: str = "fp8",
    pv: str = "fp8",
    smooth_k: bool = True,
    pv_fp16_accum: bool = False,
) -> torch.Tensor:
    """Attention with low-bit QKᵀ (``qk``: ``"fp8"``/``"int8"``) and PV (``pv``: ``"fp8"``, or ``"fp16"``, the
    accurate mode) on float ``q`` ``(B, H, Lq, D)`` and ``k``/``v`` ``(B, Hkv, Lk, D)``; see the module docstring.
    The public entry point is :func:`lowbit_flex.attention.lowbit_attention`."""
    return _lowbit_attention(q, k, v, causal, scale, qk, pv, smooth_k, pv_fp16_accum)


def lowbit_attention_eager(q, k, v, causal, scale, qk, pv, smooth_k, pv_fp16_accum) -> torch.Tensor:
    """``torch.ops.lowbit.lowbit_attention``, minus the custom-op dispatcher where it cannot change anything
    (:func:`~lowbit_flex.ops.eager.needs_dispatcher`). There, the arguments are checked and both launches planned
    once per metadata key (:func:`_eager_plan`); a call then takes a buffer for the quantized tensors (kept per
    stream and thread where small), allocates the output and launches the two compiled kernels with every other
    argument fixed, passing the buffer's addresses as ints. Before, the op body cost 80 us per call (run 26) on the H200
    host, against SDPA's 25."""
    args = (q, k, v, causal, scale, qk, pv, smooth_k, pv_fp16_accum)
    if needs_dispatcher(q):
        return torch.ops.lowbit.lowbit_attention(*args)
    try:
        key = (
            causal, scale, type(scale), qk, pv, smooth_k, pv_fp16_accum, current_device_index(),
            q.dtype, q.shape, q.stride(), q.get_device(), q.data_ptr() % 16,
            type(k), k.dtype, k.shape, k.stride(), k.get_device(), k.data_ptr() % 16,
            type(v), v.dtype, v.shape, v.stride(), v.get_device(), v.data_ptr() % 16,
        )  # fmt: skip
        plan = _EAGER_PLANS.get(key)
    except (AttributeError, TypeError):  # not a tensor, or an unhashable option: the body raises the right error
        return _lowbit_attention(*args)
    if plan is None:
        plan = _EAGER_PLANS.remember(key, _eager_plan(*args))
    if plan.quantize is None or plan.quantize.hooked():
        return _lowbit_attention(*args)
    scratch = plan.scratch(plan.scratch_bytes)  # held until both launches are queued (out must not reuse it)
    p = scratch.data_ptr()
    qs, ks, q8, k8, vs, v8 = plan.offsets
    plan.quantize(q, k, v, p + q8, p + k8, p + v8, p + qs, p + ks, p + vs)
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    plan.attend(p + q8, p + k8, p + v8 if plan.v_quantized else v, p + qs, p + ks, p + vs, out)
    return out


class _EagerPlan(NamedTuple):
    """An eager call's launches, bound to everything but the pointers (``quantize`` None: run the op's body), and
    the byte offsets of ``q_scale, k_scale, q8, k8, v_scale, v8`` in ``scratch(scratch_bytes)``, a buffer of the
    current stream (without a quantized v, ``v_scale, v8`` are placeholders at ``k_scale, k8``'s offsets, never
    read)."""

    quantize: BoundLaunch | None
    attend: BoundLaunch | None
    scratch: Callable[[int], torch.Tensor] | None
    scratch_bytes: int
    offsets: tuple[int, ...]
    v_quantized: bool


_BODY = _EagerPlan(None, None, None, 0, (), False)
_EAGER_PLANS = PlanCache()  # _EagerPlan by the metadata of a call's arguments (lowbit_attention_eager's key)


def _eager_plan(q, k, v, causal, scale, qk, pv, smooth_k, pv_fp16_accum) -> _EagerPlan:
    """Check the arguments (raising on bad input, so nothing is cached for it) and bind both launches for this
    metadata. Calls that do not run the two kernels on their inputs as they are (empty, SDPA fallback, a float32
    ``v`` that the accurate mode copies to bf16) keep the op's body."""
    check_inputs(q, k, v, qk, pv, pv_fp16_accum, scale, causal, smooth_k)
    v_quantized = pv == "fp8"
    if q.numel() == 0 or not uses_lowbit_kernel(q) or not (v_quantized or pv_16bit_dtype(v.dtype) == v.dtype):
        return _BODY
    from lowbit_flex.kernels.fp8_attention import attention_plan
    from lowbit_flex.kernels.quantize_qkv import QKV_SCRATCH, carve, output_carving, qkv_plan

    quantize, outputs_key, scalars = qkv_plan(q, k, v, QK_FORMATS[qk], smooth_k, v_quantized, v_quantized)
    layout = output_carving(*outputs_key)
    qs, ks, q8, k8, *v_outs = carve(layout, q.device)  # tensors to bind with (their dtypes), then dropped
    vs, v8 = v_outs or (ks, k8)
    off = layout.offsets
    offsets = off if v_quantized else (*off, off[1], off[3])
    bound_quantize = quantize.bind(q, k, v, q8, k8, v8, qs, ks, vs, *scalars)
    v_in = v8 if v_quantized else v
    attend, scalars = attention_plan(
        q8, k8, v_in, qs, ks, vs if v_quantized else None, causal, scale, pv_fp16_accum, v_mma_key_order=v_quantized
    )
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    bound_attend = attend.bind(q8, k8, v_in, qs, ks, vs, out, *scalars)
    if bound_quantize is None or bound_attend is None:
        return _BODY
    return _EagerPlan(bound_quantize, bound_attend, QKV_SCRATCH.current, layout.nbytes, offsets, v_quantized)
