"""``lowbit::s8s4_linear``: W4A8 linear, int8 activations × packed int4 weights, symmetric scales.

``out = (input · input_scale) @ (weight · weight_scale)ᵀ + bias`` where ``input`` holds int8 values with one scale per
row (token) and ``weight`` holds int4 values (two per byte, :mod:`lowbit_flex.quant.int4` format) with one scale per
output channel or per ``(channel, group of K)``. Symmetric only: there are no zero-points.

The CPU reference is exact in this sense: each integer dot product (per group) is computed exactly in int64; the
scales are applied in float64 (``Σ_g dot_g · weight_scale[n, g]``, then ``· input_scale[m]``, then ``+ bias``),
whose relative error (≈ (groups + 2) · 2⁻⁵³) is far below the one final rounding to fp16/bf16. So the reference is
the correctly rounded result except, at worst, for values within ~1e-15 relative of a rounding boundary.
"""

from __future__ import annotations

import torch

from lowbit_flex._checks import FLOAT_DTYPES, HALF_DTYPES, check_out_dtype, check_same_device, check_tensor

# The kernels read K in blocks of at least 32 int8 values (16 packed bytes): int8 tensor-core MMAs take K = 32.
K_MULTIPLE = 32
DEFAULT_OUT_DTYPE = torch.bfloat16


def _check_args(
    input: torch.Tensor,
    input_scale: torch.Tensor,
    weight: torch.Tensor,
    weight_scale: torch.Tensor,
    bias: torch.Tensor | None,
    out_dtype: torch.dtype | None,
    weight_group_mult: torch.Tensor | None = None,
    weight_channel_scale: torch.Tensor | None = None,
) -> None:
    check_tensor("input", input, dtypes=(torch.int8,), min_ndim=1, contiguous=True)
    check_tensor("input_scale", input_scale, dtypes=FLOAT_DTYPES, contiguous=True)
    lead = tuple(input.shape[:-1])
    if tuple(input_scale.shape) not in (lead, (*lead, 1)):
        raise ValueError(
            f"input_scale: expected shape {lead} or {(*lead, 1)} (one scale per row of input), "
            f"got {tuple(input_scale.shape)}"
        )
    check_int4_weight_args(
        "input", input, weight, weight_scale, bias, out_dtype, weight_group_mult, weight_channel_scale
    )
    check_same_device(
        input=input, input_scale=input_scale, weight=weight, weight_scale=weight_scale, bias=bias,
        weight_group_mult=weight_group_mult, weight_channel_scale=weight_channel_scale,
    )  # fmt: skip


def check_int4_weight_args(
    x_name: str,
    x: torch.Tensor,
    weight: torch.Tensor,
    weight_scale: torch.Tensor,
    bias: torch.Tensor | None,
    out_dtype: torch.dtype | None,
    weight_group_mult: torch.Tensor | None = None,
    weight_channel_scale: torch.Tensor | None = None,
) -> None:
    """The checks every W4A8 op shares: the packed int4 weight, its scales (and their integer-multiplier form, where
    given) and the bias against ``x``'s K."""
    check_tensor("weight", weight, dtypes=(torch.int8,), ndim=2, contiguous=True)
    check_tensor("weight_scale", weight_scale, dtypes=FLOAT_DTYPES, contiguous=True)
    if bias is not None:
        check_tensor("bias", bias, dtypes=FLOAT_DTYPES, ndim=1, contiguous=True)
    check_out_dtype("out_dtype", out_dtype, HALF_DTYPES)
    K = x.shape[-1]
    if K == 0 or K % K_MULTIPLE:
        raise ValueError(f"{x_name}: expected the last dimension K to be a positive multiple of {K_MULTIPLE}, got {K}")
    N = weight.shape[0]
    if weight.shape[1] != K // 2:
        raise ValueError(
            f"weight: expected shape (N, K // 2) = (N, {K // 2}) (two int4 per byte, K={K}), got {tuple(weight.shape)}"
        )
    if weight_scale.dim() == 1:
        if weight_scale.shape[0] != N:
            raise ValueError(
                f"weight_scale: expected shape ({N},) or ({N}, K // group), got {tuple(weight_scale.shape)}"
            )
    elif weight_scale.dim() == 2:
        groups = weight_scale.shape[1]
        if weight_scale.shape[0] != N or groups == 0 or K % groups or (K // groups) % K_MULTIPLE:
            raise ValueError(
                f"weight_scale: expected shape ({N},) or ({N}, K // group) with the group size a multiple of "
                f"{K_MULTIPLE} dividing K={K}, got {tuple(weight_scale.shape)}"
            )
    else:
        raise ValueError(f"weight_scale: expected 1 or 2 dimensions, got shape {tuple(weight_scale.shape)}")
    if bias is not None and bias.shape[0] != N:
        raise ValueError(f"bias: expected shape ({N},) (N = weight.shape[0]), got {tuple(bias.shape)}")
    if (weight_group_mult is None) != (weight_channel_scale is None):
        raise ValueError("weight_group_mult, weight_channel_scale: expected both (group scales as integer multiples "
                         "of a channel scale) or neither")  # fmt: skip
    if weight_group_mult is not None:
        if weight_scale.dim() != 2:
            raise ValueError(
                f"weight_group_mult: given with per-channel weight_scale {tuple(weight_scale.shape)}; the multipliers "
                "express group-wise scales (N, K // group)"
            )
        check_group_mult("weight_group_mult", weight_group_mult, K, N, groups=weight_scale.shape[1])
        check_tensor("weight_channel_scale", weight_channel_scale, dtypes=FLOAT_DTYPES, ndim=1, contiguous=True)
        if weight_channel_scale.shape[0] != N:
            raise ValueError(f"weight_channel_scale: expected shape ({N},), got {tuple(weight_channel_scale.shape)}")


def check_group_mult(name: str, group_mult: torch.Tensor, K: int, N: int, groups: int | None = None) -> None:
    """Integer group multipliers: int8 ``(K // group, N)``, contiguous, the group a multiple of 32 dividing K (and
    ``groups`` rows, where the float group scales fix their number)."""
    check_tensor(name, group_mult, dtypes=(torch.int8,), ndim=2, contiguous=True)
    G = group_mult.shape[0]
    if group_mult.shape[1] != N or G == 0 or K % G or (K // G) % K_MULTIPLE or (groups is not None and groups != G):
        want = f"({groups}, {N})" if groups is not None else f"(K // group, {N})"
        raise ValueError(
            f"{name}: expected int8 multipliers of shape {want}, the group a multiple of {K_MULTIPLE} dividing "
            f"K={K}, got {tuple(group_mult.shape)}"
        )


def reference_s8s4_linear(input, input_scale, weight, weight_scale, bias=None, out_dtype=None) -> torch.Tensor:
    """The op's exact CPU reference (no argument checks). ``lowbit::w4a8_linear`` calls it directly off CUDA, so a
    traced W4A8 graph there holds only ATen ops (an AOTInductor CPU package needs no ``lowbit`` op to load)."""
    from lowbit_flex.quant.int4 import unpack_int4

    return reference_int_linear(input, input_scale, unpack_int4(weight), weight_scale, bias, out_dtype)


def reference_int_linear(input, input_scale, weight_int, weight_scale, bias=None, out_dtype=None) -> torch.Tensor:
    """:func:`reference_s8s4_linear` of an unpacked integer weight ``(N, K)`` (any integer dtype)."""
    K, N = input.shape[-1], weight_int.shape[0]
    x = input.reshape(-1, K).long()
    M = x.shape[0]
    groups = 1 if weight_scale.dim() == 1 else weight_scale.shape[1]
    g = K // groups
    w = weight_int.long()
    # Exact per-group integer dot products: (groups, M, N) in int64 (|dot| <= K * 128 * 128, far below 2**63).
    dots = torch.bmm(x.view(M, groups, g).transpose(0, 1), w.view(N, groups, g).permute(1, 2, 0))
    ws = weight_scale.double().reshape(N, groups).t()  # (groups, N)
    acc = (dots.double() * ws[:, None, :]).sum(dim=0)
    out = acc * input_scale.double().reshape(M, 1)
    if bias is not None:
        out = out + bias.double()
    return out.to(out_dtype or DEFAULT_OUT_DTYPE).reshape(*input.shape[:-1], N)


@torch.library.triton_op("lowbit::s8s4_linear", mutates_args=())
def s8s4_linear(
    input: torch.Tensor,
    input_scale: torch.Tensor,
    weight: torch.Tensor,
    weight_scale: torch.Tensor,
    bias: torch.Tensor | None = None,
    out_dtype: torch.dtype | None = None,
    weight_group_mult: torch.Tensor | None = None,
    weight_channel_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """W4A8 linear: ``(input · input_scale) @ (weight · weight_scale)ᵀ + bias``.

    Args:
        input: int8 ``(..., K)``, contiguous, ``K`` a multiple of 32.
        input_scale: float ``(...)`` or ``(..., 1)``: one scale per row of ``input`` (as from
            ``lowbit::quantize_int8_rowwise``).
        weight: int8 ``(N, K // 2)``: two int4 per byte in ``[-8, 7]``, element ``2j`` in the low nibble of byte ``j``
            (see :func:`lowbit_flex.quant.pack_int4`).
        weight_scale: float ``(N,)`` per output channel, or ``(N, K // group)`` group-wise (group size a multiple
            of 32).
        bias: float ``(N,)`` or None.
        out_dtype: float16 or bfloat16; None means bfloat16.
        weight_group_mult, weight_channel_scale: optional, both or neither, with group-wise ``weight_scale`` only:
            the same scales as integer multiples of a channel scale, ``weight_scale[n, g] == weight_channel_scale[n]
            * weight_group_mult[g, n]`` (int8 ``(K // group, N)``, float ``(N,)``; the format of
            :func:`lowbit_flex.quant.quantize_int4_weight_group_mult`, whose :func:`group_mult_scales` gives that
            ``weight_scale``), with every multiplier in ``[0, 16]``. Preconditions, not checked per call (that
            would cost a device sync; ``lowbit_flex.quant.int4.check_group_mult_format`` checks them once, as
            ``W4A8Linear`` does on load): kernels read either form, and from M = 129 the GEMM multiplies codes by
            the multipliers in int8 and runs the per-channel main loop. Decode kernels read ``weight_scale``.

    Returns:
        ``(..., N)`` tensor of ``out_dtype``. On CUDA a dispatch table picks the Triton or CUTLASS kernel (see
        ``docs/w4a8.md``); elsewhere this exact reference runs (int64 dot products, float64 scaling, one rounding).

    Registered with ``torch.library.triton_op``: compiled and exported-then-compiled graphs (AOTInductor) hold its
    Triton kernels, or a ``lowbit::s8s4_gemm_cutlass`` / ``lowbit::s8s4_group_mult_gemm_cutlass`` /
    ``lowbit::s8s8_groupwise_gemm_cutlass`` node where the table picks CUTLASS (``ops/cutlass_gemm.py``).
    """
    _check_args(input, input_scale, weight, weight_scale, bias, out_dtype, weight_group_mult, weight_channel_scale)
    if input.is_cuda:
        from lowbit_flex.kernels.s8s4_dispatch import s8s4_linear_cuda

        dtype = out_dtype or DEFAULT_OUT_DTYPE
        return s8s4_linear_cuda(
            input, input_scale, weight, weight_scale, bias, dtype, weight_group_mult, weight_channel_scale
        )
    return reference_s8s4_linear(input, input_scale, weight, weight_scale, bias, out_dtype)
