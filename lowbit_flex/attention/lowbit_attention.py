"""``lowbit_attention(q, k, v, qk="fp8" | "int8", pv="fp8" | "fp16")``: the public entry point of
``lowbit::lowbit_attention`` (quantization and attention in one op call), with its deprecated aliases; and
:func:`quantize_attention_inputs`, the pre-quantized inputs of ``lowbit::fp8_attention``."""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from lowbit_flex.ops.fp8_attention import K_BLOCK, Q_BLOCK
from lowbit_flex.ops.lowbit_attention import QK_FORMATS, lowbit_attention_eager, pv_16bit_dtype
from lowbit_flex.ops.quantize_fp8 import quantize_fp8
from lowbit_flex.ops.quantize_int8_blockwise import quantize_int8_blockwise

# lowbit_attention(q, k, v, dtype, causal, scale): the positional parameters before qk / pv, kept for one release.
_LEGACY_POSITIONAL = ("dtype", "causal", "scale")


def quantize_attention_inputs(
    q: Tensor, k: Tensor, v: Tensor, qk: str = "fp8", smooth_k: bool = True, *, pv: str = "fp8"
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor | None]:
    """``(q8, k8, v8, q_scale, k_scale, v_scale)`` in exactly the layouts ``lowbit::fp8_attention`` consumes:
    q/k per block of 128 tokens (``qk``: fp8 e4m3 or int8), k minus its token mean when ``smooth_k``; v fp8 per
    head (``pv="fp8"``), or with ``pv="fp16"`` v itself in its 16-bit dtype (:func:`pv_16bit_dtype`) and
    ``v_scale=None``."""
    shift = k.mean(dim=-2, keepdim=True, dtype=torch.float32) if smooth_k else None
    if qk == "int8":
        q8, qs = quantize_int8_blockwise(q, Q_BLOCK)
        k8, ks = quantize_int8_blockwise(k, K_BLOCK, shift)
    else:
        q8, qs = quantize_fp8(q, "block", Q_BLOCK)
        k8, ks = quantize_fp8(k, "block", K_BLOCK, torch.float8_e4m3fn, shift)
    if pv == "fp16":
        # Not quantized; a 16-bit MMA takes V as it is ((Lk, D) row-major), no transposed copy.
        return q8, k8, v.to(pv_16bit_dtype(v.dtype)), qs, ks, None
    v8, vs = quantize_fp8(v, "head")
    if v8.is_cuda:
        # Hopper's fp8 MMA reads both operands K-major: for PV that is v with the token axis contiguous.
        v8 = v8.transpose(-1, -2).contiguous().transpose(-1, -2)
    return q8, k8, v8, qs, ks, vs


def _resolve_legacy(args: tuple, dtype: str | None, qk: str, causal: bool, scale: float | None):
    """``(qk, causal, scale)`` after the deprecated positional ``dtype, causal, scale`` and keyword ``dtype``."""
    if len(args) > len(_LEGACY_POSITIONAL):
        raise TypeError(f"lowbit_attention: takes 3 positional arguments (q, k, v), got {3 + len(args)}")
    if args:
        names = ", ".join(_LEGACY_POSITIONAL[: len(args)])
        warnings.warn(
            f"lowbit_attention: passing {names} positionally is deprecated and will be removed in the next "
            "release; pass qk=..., causal=..., scale=... as keywords",
            FutureWarning,
            stacklevel=3,
        )
        if dtype is not None:
            raise TypeError("lowbit_attention: got multiple values for 'dtype' (positional and keyword)")
        dtype = args[0]
        if len(args) > 1:
            if causal:
                raise TypeError("lowbit_attention: got multiple values for 'causal' (positional and keyword)")
            causal = args[1]
        if len(args) > 2:
            if scale is not None:
                raise TypeError("lowbit_attention: got multiple values for 'scale' (positional and keyword)")
            scale = args[2]
    elif dtype is not None:
        warnings.warn(
            "lowbit_attention: dtype= is deprecated and will be removed in the next release; use qk= (the QKᵀ "
            "format; pv= picks the PV format)",
            FutureWarning,
            stacklevel=3,
        )
    if dtype is not None:
        if qk != "fp8" and qk != dtype:
            raise ValueError(f"dtype: a deprecated alias of qk, got dtype={dtype!r} and qk={qk!r}; pass only qk")
        if dtype not in QK_FORMATS:
            raise ValueError(f"dtype: expected one of {tuple(QK_FORMATS)} (deprecated: use qk=), got {dtype!r}")
        qk = dtype
    return qk, causal, scale


def lowbit_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *deprecated_positional,
    causal: bool = False,
    scale: float | None = None,
    qk: str = "fp8",
    pv: str = "fp8",
    smooth_k: bool = True,
    pv_fp16_accum: bool = False,
    dtype: str | None = None,
) -> Tensor:
    """Attention with low-bit QKᵀ (and PV); ``q`` ``(B, H, Lq, D)``, ``k``/``v`` ``(B, Hkv, Lk, D)``, float.

    ``qk``, the QKᵀ format: ``"fp8"``: q, k in e4m3 with one scale per 128 tokens; ``"int8"``: q, k in int8 per 128
    tokens (SageAttention-style, more accurate for Gaussian-like q/k). Both: k minus the mean of its first 128
    tokens first (``smooth_k``: it cancels in softmax and removes K's outlier channels).
    ``pv``, the PV format: ``"fp8"``: v in e4m3 per 128 tokens, P in e4m3 (fastest); ``"fp16"``: the accurate
    mode, V not quantized and P cast to V's 16-bit dtype (the input's: bf16 or fp16; bf16 for float32 inputs).
    Both: fp32 accumulation, output in ``q``'s dtype. ``pv_fp16_accum`` (``pv="fp8"`` only) accumulates each
    block's PV product in fp16. ``causal`` masks key ``j > i`` (top-left, as SDPA). ``scale`` defaults to
    ``1/sqrt(D)``.

    One call of ``lowbit::lowbit_attention`` (:mod:`lowbit_flex.ops.lowbit_attention` defines the format): on
    CUDA, Q, K and V quantized in one pass, then the attention kernel; on CPU the op's float64 reference.

    Deprecated, for one release: ``dtype=`` (now ``qk=``) and passing ``dtype, causal, scale`` positionally; both
    warn (``FutureWarning``).

    Fallback (documented, never a wrong result): head dims other than 64/128 and CUDA GPUs before sm_89 (no fp8
    MMA) run ``F.scaled_dot_product_attention`` in the input dtype. ``Lq = 0`` returns an empty output; ``Lk = 0``
    is a ``ValueError`` naming ``k``.
    """
    qk, causal, scale = _resolve_legacy(deprecated_positional, dtype, qk, causal, scale)
    return lowbit_attention_eager(q, k, v, causal, scale, qk, pv, smooth_k, pv_fp16_accum)
