"""``lowbit::fp8_attention``: attention on fp8 (or int8-QKᵀ) inputs with per-block scales and bf16/fp16 output.

The format (fixed, so that kernel tiles align with scale blocks):

- ``q``: ``(B, H, Lq, D)`` ``float8_e4m3fn`` (or ``int8`` for the int8-QKᵀ variant), one float32 scale per block
  of ``Q_BLOCK = 128`` query tokens: ``q_scale`` ``(B, H, ceil(Lq / 128))``.
- ``k``: ``(B, Hkv, Lk, D)``, same dtype as ``q``, one scale per block of ``K_BLOCK = 128`` key tokens:
  ``k_scale`` ``(B, Hkv, ceil(Lk / 128))``. ``H`` must be a multiple of ``Hkv`` (GQA: query head ``h`` reads
  key/value head ``h // (H // Hkv)``). ``k`` may have had its token mean subtracted (smooth-K): softmax is
  invariant to it.
- ``v``: ``(B, Hkv, Lk, D)`` ``float8_e4m3fn``, any strides (the kernel is fastest when the ``Lk`` axis is
  contiguous, i.e. ``v`` is a transposed view of a ``(B, Hkv, D, Lk)`` tensor: Hopper's fp8 MMA wants both
  operands K-major), scale ``v_scale`` ``()`` (per tensor), ``(B, Hkv)`` (per head) or ``(B, Hkv, ceil(Lk / 128))``
  (per block of 128 key tokens, what ``lowbit::lowbit_attention`` quantizes in one pass; the largest block scale
  sets P's range, so an all-zero block should carry scale 0, as that pass writes, not the quantizers' 1). Or ``v``
  in bfloat16 / float16, not quantized, with ``v_scale=None``: the accurate mode (PV in 16 bits, see below). The PV
  format follows the dtype of ``v``, as the QKᵀ variant follows the dtype of ``q``/``k``: a type, not a flag.
- ``D`` ∈ {64, 128}; others raise ``ValueError`` (``lowbit_flex.attention.lowbit_attention`` falls back to SDPA).
- ``Lq = 0`` gives an empty output; ``Lk = 0`` (softmax over no keys) is a ``ValueError`` naming ``k``.

Computation: ``S = (q·q_scale)(k·k_scale)ᵀ · sm_scale`` (fp8×fp8 or int8×int8 MMA, fp32/int32 accumulation),
blockwise online softmax over key blocks of 128, ``P = exp(S - running_max)`` quantized to e4m3 as
``fp8(P · P_SCALE)`` for the PV MMA (``P ∈ [0, 1]``; ``P_SCALE = 448`` puts it at the top of e4m3's range so small
probabilities keep 3 mantissa bits instead of flushing to subnormals), fp32 accumulation of PV, the row sum from the
unquantized ``P``, and ``O = acc / (rowsum · P_SCALE) · v_scale`` written as ``out_dtype``. With per-block v scales
``acc`` is kept in units of the head's largest block scale ``vs_max``: a block with scale ``vs_j`` enters as
``fp8(P · (vs_j · u))`` with ``u = P_SCALE · (1 / vs_max)`` (float32), and ``O = acc / (rowsum · P_SCALE) · vs_max``;
every factor is at most ``P_SCALE``, so nothing overflows.
``pv_fp16_accum=True`` accumulates each block's PV product in fp16 (then adds it to the fp32 accumulator) with
``P_SCALE = 1``, so that a 128-term sum of ``P ≤ 1`` times ``|v| ≤ 448`` cannot overflow fp16's 65504.
With a 16-bit ``v`` (accurate mode) ``P`` is instead cast to ``v``'s dtype (RNE, no scale: ``P ≤ 1`` is in range)
and the PV MMA is bf16×bf16 or fp16×fp16 with fp32 accumulation; ``O = acc / rowsum``. ``pv_fp16_accum`` is for the
fp8 PV product only.
``causal=True`` masks key ``j > i`` for query ``i`` (top-left aligned, as SDPA's ``is_causal``).

The CPU reference below emulates this exactly in float64 (block order, running max, P rounding), so the kernel
matches it up to float32 vs float64 arithmetic and accumulation order.

Registered with ``torch.library.triton_op``: ``torch.compile`` traces the body, so compiled graphs launch the Triton
kernel from generated code (on CPU the reference is traced into ordinary ops); ``torch.export`` keeps the op as one
node. The body is also the fake impl (traced with fake tensors), so the checks run there too. The one path that
stays opaque is the reference on CUDA GPUs before sm_89, behind ``lowbit::_fp8_attention_reference`` (see there).
"""

from __future__ import annotations

import math

import torch

from lowbit_flex._checks import (
    check_flags,
    check_out_dtype,
    check_same_device,
    check_shape,
    check_softmax_scale,
    check_tensor,
    dtype_from_name,
    dtype_name,
)
from lowbit_flex.kernels.arch import has_fp8_mma
from lowbit_flex.ops.eager import needs_dispatcher
from lowbit_flex.quant.fp8 import K_BLOCK, Q_BLOCK, p_scale

HEAD_DIMS = (64, 128)
QK_DTYPES = (torch.float8_e4m3fn, torch.int8)
V_16BIT_DTYPES = (torch.bfloat16, torch.float16)  # v not quantized: the accurate mode, P cast to v's dtype
OUT_DTYPES = (torch.bfloat16, torch.float16, torch.float32)


def _check_args(q, k, v, q_scale, k_scale, v_scale, causal, sm_scale, out_dtype, pv_fp16_accum) -> None:
    check_flags(causal=causal, pv_fp16_accum=pv_fp16_accum)
    check_tensor("q", q, dtypes=QK_DTYPES, ndim=4)
    check_tensor("k", k, dtypes=(q.dtype,), ndim=4)
    check_tensor("v", v, dtypes=(torch.float8_e4m3fn, *V_16BIT_DTYPES), ndim=4)
    B, H, Lq, D = q.shape
    _, Hkv, Lk, _ = k.shape
    if D not in HEAD_DIMS:
        raise ValueError(f"q: head dim {D} is not supported (the kernel takes {HEAD_DIMS})")
    if Lk == 0:  # no keys: softmax over nothing is undefined (Lq == 0 is an empty output)
        raise ValueError(f"k: expected at least one key token (Lk > 0), got shape {tuple(k.shape)}")
    if k.shape[0] != B or k.shape[3] != D or Hkv == 0 or H % Hkv != 0:
        raise ValueError(f"k: expected shape (B={B}, Hkv, Lk, D={D}) with Hkv dividing H={H}, got {tuple(k.shape)}")
    check_shape("v", v, k.shape, "the shape of k")
    check_tensor("q_scale", q_scale, dtypes=(torch.float32,))
    check_shape("q_scale", q_scale, (B, H, -(-Lq // Q_BLOCK)), f"one scale per {Q_BLOCK} query tokens")
    check_tensor("k_scale", k_scale, dtypes=(torch.float32,))
    check_shape("k_scale", k_scale, (B, Hkv, -(-Lk // K_BLOCK)), f"one scale per {K_BLOCK} key tokens")
    if v.dtype in V_16BIT_DTYPES:
        if v_scale is not None:
            raise ValueError(f"v_scale: expected None with a {v.dtype} v (a 16-bit v is not quantized)")
        if pv_fp16_accum:
            raise ValueError(f"pv_fp16_accum: only for an fp8 v (the fp8 PV product), got a {v.dtype} v")
    else:
        if v_scale is None:
            raise ValueError("v_scale: expected a float32 scale for an fp8 v, got None")
        check_tensor("v_scale", v_scale, dtypes=(torch.float32,))
        per_block = (B, Hkv, -(-Lk // K_BLOCK))
        if tuple(v_scale.shape) not in ((), (B, Hkv), per_block):
            got = tuple(v_scale.shape)
            raise ValueError(
                f"v_scale: expected shape (), {(B, Hkv)} or {per_block} (per tensor, head or {K_BLOCK} key tokens), "
                f"got {got}"
            )
    check_same_device(q=q, k=k, v=v, q_scale=q_scale, k_scale=k_scale, v_scale=v_scale)
    check_out_dtype("out_dtype", out_dtype, OUT_DTYPES)
    check_softmax_scale("sm_scale", sm_scale)


def reference_fp8_attention(
    q, k, v, q_scale, k_scale, v_scale, causal, sm_scale, out_dtype, pv_fp16_accum, keys_per_step=K_BLOCK
):
    """The format's definition in float64, key block by key block as the kernel runs it (no argument checks).
    ``keys_per_step``: the kernel's keys per online-softmax step, 128 (the format) or 64 (launch configs with
    64-key steps): P is rounded relative to the running max after each step, so the step is part of what rounds."""
    B, H, Lq, D = q.shape
    group = H // k.shape[1]
    Lk = k.shape[2]
    sm = 1.0 / math.sqrt(D) if sm_scale is None else sm_scale
    qd = q.double() * q_scale.double().repeat_interleave(Q_BLOCK, dim=2)[:, :, :Lq, None]
    kd = k.double() * k_scale.double().repeat_interleave(K_BLOCK, dim=2)[:, :, :Lk, None]
    kd, vd = kd.repeat_interleave(group, dim=1), v.double().repeat_interleave(group, dim=1)
    s = (qd @ kd.transpose(-1, -2)) * sm
    if causal:
        s = s.masked_fill(torch.ones(Lq, Lk, dtype=torch.bool, device=q.device).triu(1), -math.inf)
    pv16 = v.dtype in V_16BIT_DTYPES
    ps = 1.0 if pv16 else p_scale(pv_fp16_accum)
    block_vs = v_scale is not None and v_scale.dim() == 3
    if block_vs:  # acc in units of the head's largest block scale; float32 factors, as the kernel
        vs_blocks = v_scale.float().repeat_interleave(group, dim=1)  # (B, H, nblk)
        vs_max = vs_blocks.amax(dim=2, keepdim=True)[..., None]
        vs_max = torch.where(vs_max == 0, torch.ones_like(vs_max), vs_max)  # every block all zero
        vs_unit = torch.tensor(ps, dtype=torch.float32) * (1.0 / vs_max)
    m = torch.full((B, H, Lq, 1), -math.inf, dtype=torch.float64, device=q.device)
    row_sum = torch.zeros_like(m)
    acc = torch.zeros(B, H, Lq, D, dtype=torch.float64, device=q.device)
    for n0 in range(0, Lk, keys_per_step):
        j = n0 // K_BLOCK  # the k / v scale block
        sb = s[..., n0 : n0 + keys_per_step]
        m_new = torch.maximum(m, sb.amax(dim=-1, keepdim=True))
        alpha = torch.exp(m - m_new)  # exp(-inf) = 0 on the first block
        p = torch.exp(sb - m_new)
        row_sum = row_sum * alpha + p.sum(dim=-1, keepdim=True)
        p_mult = vs_blocks[:, :, j, None, None] * vs_unit if block_vs else torch.tensor(ps, dtype=torch.float32)
        # float32 like the kernel, then RNE to v's 16-bit dtype or (scaled) to e4m3
        p_low = p.float().to(v.dtype) if pv16 else (p.float() * p_mult).to(torch.float8_e4m3fn)
        pv = p_low.double() @ vd[:, :, n0 : n0 + keys_per_step]
        if pv_fp16_accum:
            pv = pv.half().double()
        acc = acc * alpha + pv
        m = m_new
    if v_scale is None:
        return (acc / row_sum).to(out_dtype)
    if block_vs:
        vs = vs_max.double()
    elif v_scale.dim():
        vs = v_scale.double().repeat_interleave(group, dim=1)[:, :, None, None]
    else:
        vs = v_scale.double()
    return (acc / (row_sum * ps) * vs).to(out_dtype)


@torch.library.custom_op("lowbit::_fp8_attention_reference", mutates_args=())
def _fp8_attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_scale: torch.Tensor,
    k_scale: torch.Tensor,
    v_scale: torch.Tensor | None,
    causal: bool,
    sm_scale: float | None,
    out_dtype: str,
    pv_fp16_accum: bool,
) -> torch.Tensor:
    """:func:`reference_fp8_attention` as an opaque op, for CUDA GPUs before sm_89 (no fp8 MMA, so no kernel).
    ``out_dtype`` is the dtype's name: an AOTInductor package passes it intact in every torch version (why:
    ``kernels/cutlass_op_schemas.py``).

    Traced into a compiled graph, the reference's fp8 loads and its float32 -> e4m3 cast would become Inductor
    Triton code, which does not compile there (no e4m3 conversion before sm_89, pytorch/pytorch#167082); behind a
    ``custom_op`` the reference runs eagerly, as ATen's CUDA kernels convert fp8 in software. Arguments are checked
    by ``lowbit::fp8_attention``, its only caller."""
    dtype = dtype_from_name("out_dtype", out_dtype, OUT_DTYPES)
    return reference_fp8_attention(q, k, v, q_scale, k_scale, v_scale, causal, sm_scale, dtype, pv_fp16_accum)


@_fp8_attention_reference.register_fake
def _(q, k, v, q_scale, k_scale, v_scale, causal, sm_scale, out_dtype, pv_fp16_accum):
    return q.new_empty(q.shape, dtype=dtype_from_name("out_dtype", out_dtype, OUT_DTYPES))


def _fp8_attention(q, k, v, q_scale, k_scale, v_scale, causal, sm_scale, out_dtype, pv_fp16_accum) -> torch.Tensor:
    """The op's body (see :func:`fp8_attention`), also called directly by :func:`fp8_attention_eager`."""
    args = (q, k, v, q_scale, k_scale, v_scale, causal, sm_scale, out_dtype, pv_fp16_accum)
    _check_args(*args)
    if q.numel() == 0:  # no queries (or batch / heads): nothing to launch
        return q.new_empty(q.shape, dtype=out_dtype)
    if not q.is_cuda:
        return reference_fp8_attention(*args)
    if not has_fp8_mma(q.device):
        # fp8 MMA (for PV) needs sm_89+: keep the result right, if slow (lowbit_attention routes to SDPA instead).
        return torch.ops.lowbit._fp8_attention_reference(*args[:8], dtype_name(out_dtype), pv_fp16_accum)
    from lowbit_flex.kernels.fp8_attention import fp8_attention_triton

    return fp8_attention_triton(*args)


@torch.library.triton_op("lowbit::fp8_attention", mutates_args=())
def fp8_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_scale: torch.Tensor,
    k_scale: torch.Tensor,
    v_scale: torch.Tensor | None = None,
    causal: bool = False,
    sm_scale: float | None = None,
    out_dtype: torch.dtype = torch.bfloat16,
    pv_fp16_accum: bool = False,
) -> torch.Tensor:
    """Attention on fp8/int8 ``q, k`` and fp8 (or 16-bit) ``v`` with block scales; returns ``(B, H, Lq, D)`` in
    ``out_dtype``.

    See the module docstring for the format. ``sm_scale`` defaults to ``1/sqrt(D)``. The QKᵀ variant follows the
    dtype of ``q``/``k``: ``float8_e4m3fn`` or ``int8`` (quantize K with smooth-K, see
    ``lowbit_flex.quantize_int8_blockwise``). The PV variant follows the dtype of ``v``: ``float8_e4m3fn`` with
    ``v_scale``, or bfloat16/float16 with ``v_scale=None`` (P and V in 16 bits: the accurate mode). On CUDA sm_89+
    one fused Triton kernel; on older GPUs (no fp8 MMA) and on CPU this float64 reference, which is exact but slow.
    """
    return _fp8_attention(q, k, v, q_scale, k_scale, v_scale, causal, sm_scale, out_dtype, pv_fp16_accum)


def fp8_attention_eager(
    q, k, v, q_scale, k_scale, v_scale, causal=False, sm_scale=None, out_dtype=torch.bfloat16, pv_fp16_accum=False
) -> torch.Tensor:
    """``torch.ops.lowbit.fp8_attention``, minus the custom-op dispatcher where it cannot change anything
    (:func:`~lowbit_flex.ops.eager.needs_dispatcher`)."""
    args = (q, k, v, q_scale, k_scale, v_scale, causal, sm_scale, out_dtype, pv_fp16_accum)
    if needs_dispatcher(q):
        return torch.ops.lowbit.fp8_attention(*args)
    return _fp8_attention(*args)
