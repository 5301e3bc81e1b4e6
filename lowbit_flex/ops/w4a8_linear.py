"""``lowbit::w4a8_linear``: the whole W4A8 linear in one op: per-token int8 quantization of a float input, then
``lowbit::s8s4_linear``.

``out = s8s4_linear(*quantize_int8_rowwise(x), weight, weight_scale, bias, out_dtype)`` exactly: the same int8
values and scales as the quantizer, the same exact integer dot products and scaling as the GEMM. One op per layer
call is what keeps the host path thin in eager decode loops, and what lets the decode kernel fuse the
quantization: at M = 1 the CUDA path is one kernel that quantizes ``x`` itself (on Hopper the CUDA tensor-core GEMV
of ``kernels/w4a8_gemv_cuda.py``, elsewhere the Triton dp4a GEMV of ``kernels/s8s4_gemv.py``), up to M = 16 the
quantizer and a tensor-core GEMV (the CUDA one, or ``kernels/s8s4_decode.py``: the dispatch table's decode rows);
larger M runs the quantizer and then the GEMM the dispatch table picks.

Registered with ``torch.library.triton_op``: ``torch.compile`` traces the body, so compiled graphs launch the Triton
kernel from generated code (no Python op wrapper per call); ``torch.export`` keeps ``lowbit.w4a8_linear`` as one node.
Eager callers on the hot path (``W4A8Linear``) use :func:`w4a8_linear_eager`, which skips the custom-op dispatcher
only where it cannot matter and checks and plans each metadata key once.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import torch

from lowbit_flex._checks import FLOAT_DTYPES, HALF_DTYPES, check_same_device, check_tensor
from lowbit_flex.kernels.arch import rows_hint
from lowbit_flex.ops.eager import PlanCache, current_device_index, needs_dispatcher
from lowbit_flex.ops.s8s4_linear import check_int4_weight_args, reference_s8s4_linear


def _check_args(x, weight, weight_scale, bias, out_dtype, weight_group_mult, weight_channel_scale) -> None:
    check_tensor("x", x, dtypes=FLOAT_DTYPES, min_ndim=1)
    check_int4_weight_args("x", x, weight, weight_scale, bias, out_dtype, weight_group_mult, weight_channel_scale)
    check_same_device(
        x=x, weight=weight, weight_scale=weight_scale, bias=bias, weight_group_mult=weight_group_mult,
        weight_channel_scale=weight_channel_scale,
    )  # fmt: skip


def resolve_out_dtype(x_dtype: torch.dtype, out_dtype: torch.dtype | None) -> torch.dtype:
    """``out_dtype``, or by default ``x``'s dtype when it is fp16/bf16 and bfloat16 otherwise (the kernels write
    half precision; int4 weight error dominates bf16 rounding by far)."""
    if out_dtype is not None:
        return out_dtype
    return x_dtype if x_dtype in HALF_DTYPES else torch.bfloat16


class DecodePath(NamedTuple):
    """How a decode-sized CUDA call runs: ``quantize`` (the quantizer kernel, or None where the launcher quantizes
    ``x`` itself), the launcher with its tile config bound, the backend and config it runs, and whether the launcher
    quantizes first and launches the CUDA GEMV as the quantizer's programmatic dependent (``Rule.programmatic``)."""

    quantize: Callable | None
    launch: Callable
    backend: object  # s8s4_dispatch.Backend (imported where a call needs it: the dispatch sits below the ops)
    config: object
    programmatic: bool = False


@functools.lru_cache(maxsize=1024)
def _decode_path(
    device: torch.device, M: int, N: int, K: int, group: int | None, has_mult: bool = False
) -> DecodePath | None:
    """For a CUDA problem the dispatch table gives to a decode-sized kernel: its :class:`DecodePath`; None for every
    other rule (``has_mult``: the call passes group multipliers, which some GEMM rows take ahead of the decode
    kernels). Cached per shape key, so an eager decode step pays one lookup here instead of a table walk, imports
    and config lookups."""
    from lowbit_flex.kernels.s8s4_dispatch import ScaleKind, arch_of, choose, decode_launcher

    scale = ScaleKind.PER_CHANNEL if group is None else ScaleKind.GROUPWISE
    rule = choose(arch_of(device), scale, M, N, K, group, has_mult=has_mult)
    launch = decode_launcher(rule.backend, rule.config)
    if launch is None:
        return None
    if rule.fuse_quant:
        return DecodePath(None, launch, rule.backend, rule.config)
    if rule.programmatic:  # the CUDA GEMV's launcher runs the quantizer and the GEMV as its dependent
        from lowbit_flex.kernels.w4a8_gemv_cuda import quantize_then_gemv_cuda

        return DecodePath(None, functools.partial(quantize_then_gemv_cuda, config=rule.config), rule.backend,
                          rule.config, programmatic=True)  # fmt: skip
    from lowbit_flex.kernels.quantize_int8_rowwise import quantize_int8_rowwise_triton

    return DecodePath(quantize_int8_rowwise_triton, launch, rule.backend, rule.config)


def _w4a8_linear(
    x, weight, weight_scale, bias=None, out_dtype=None, weight_group_mult=None, weight_channel_scale=None
) -> torch.Tensor:
    """The op's body (see :func:`w4a8_linear`), also called directly by :func:`w4a8_linear_eager`."""
    _check_args(x, weight, weight_scale, bias, out_dtype, weight_group_mult, weight_channel_scale)
    dtype = resolve_out_dtype(x.dtype, out_dtype)
    K, N = x.shape[-1], weight.shape[0]
    if x.is_cuda:
        x2 = x.reshape(-1, K)
        groups = int(weight_scale.shape[1]) if weight_scale.dim() == 2 else 1  # a guard, not a SymInt key
        M, any_m = rows_hint(x2.shape[0])
        # A symbolic M (a dynamic batch) takes the GEMM path, whose kernels take any M: the decode kernels are
        # picked per concrete M, and reading M would put a guard on it (export rejects that for a dynamic batch).
        group = int(K) // groups if groups > 1 else None
        path = None if any_m else _decode_path(x.device, M, int(N), int(K), group, weight_group_mult is not None)
        if path is not None:  # the decode kernels straight from here: no second op call per layer
            quantize, launch = path.quantize, path.launch
            x2 = x2 if x2.is_contiguous() else x2.contiguous()
            xs = None
            if quantize is not None:
                x2, xs = quantize(x2)
                xs = xs.view(-1)
            b = bias.float() if bias is not None else None
            return launch(x2, xs, weight, weight_scale.float(), b, dtype).view(*x.shape[:-1], N)
    xq, xs = torch.ops.lowbit.quantize_int8_rowwise(x.contiguous())  # s8s4_linear reads contiguous rows
    if not x.is_cuda:  # the reference itself: one op call fewer per layer, the same ATen ops when traced
        return reference_s8s4_linear(xq, xs, weight, weight_scale, bias, dtype)
    return torch.ops.lowbit.s8s4_linear(xq, xs, weight, weight_scale, bias, dtype, weight_group_mult,
                                        weight_channel_scale)  # fmt: skip


@torch.library.triton_op("lowbit::w4a8_linear", mutates_args=())
def w4a8_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    weight_scale: torch.Tensor,
    bias: torch.Tensor | None = None,
    out_dtype: torch.dtype | None = None,
    weight_group_mult: torch.Tensor | None = None,
    weight_channel_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """W4A8 linear of a float input: ``s8s4_linear(*quantize_int8_rowwise(x), weight, weight_scale, bias)``.

    Args:
        x: float16/bfloat16/float32 ``(..., K)``, ``K`` a multiple of 32; finite.
        weight, weight_scale, bias: as for ``lowbit::s8s4_linear`` (packed int4 ``(N, K // 2)``; float scales
            ``(N,)`` or ``(N, K // group)``; float bias ``(N,)`` or None).
        out_dtype: float16 or bfloat16; None means ``x``'s dtype if it is one of them, else bfloat16.
        weight_group_mult, weight_channel_scale: as for ``lowbit::s8s4_linear`` (group-wise scales also as integer
            multipliers of a channel scale; the large-M GEMM on Hopper reads them).

    Returns ``(..., N)`` in ``out_dtype``: on CUDA a decode-sized kernel (M <= 16: one launch at M = 1, quantization
    fused) or the quantizer and the dispatched GEMM; elsewhere the exact references of both ops.
    """
    return _w4a8_linear(x, weight, weight_scale, bias, out_dtype, weight_group_mult, weight_channel_scale)


def w4a8_linear_eager(
    x, weight, weight_scale, bias=None, out_dtype=None, weight_group_mult=None, weight_channel_scale=None
) -> torch.Tensor:
    """``torch.ops.lowbit.w4a8_linear``, minus the custom-op dispatcher where it cannot change anything
    (:func:`~lowbit_flex.ops.eager.needs_dispatcher`); eager decode loops would pay it per layer. There a call builds
    one key from its tensors' metadata; the first call with a key checks the arguments (bad input raises, and nothing
    is cached for it) and plans the call (:func:`_eager_plan`), later calls with the key launch the planned decode
    kernels straight away. H100 run 62, before the plan: 47-54 us of host time per layer call against 27-31 us for
    bf16 ``nn.Linear``, of which the argument checks took 6.5 us and the decode path's lookups and reshapes most of
    the rest beside the launch."""
    args = (x, weight, weight_scale, bias, out_dtype, weight_group_mult, weight_channel_scale)
    if needs_dispatcher(x):
        return torch.ops.lowbit.w4a8_linear(*args)
    mult, chan = weight_group_mult, weight_channel_scale
    try:
        key = (
            out_dtype, current_device_index(),
            x.dtype, x.shape, x.stride(), x.get_device(), x.data_ptr() % 16,
            type(weight), weight.dtype, weight.shape, weight.stride(), weight.get_device(), weight.data_ptr() % 16,
            type(weight_scale), weight_scale.dtype, weight_scale.shape, weight_scale.stride(),
            weight_scale.get_device(),
            None if bias is None else (type(bias), bias.dtype, bias.shape, bias.stride(), bias.get_device()),
            None if mult is None else (type(mult), mult.dtype, mult.shape, mult.stride(), mult.get_device()),
            None if chan is None else (type(chan), chan.dtype, chan.shape, chan.stride(), chan.get_device()),
        )  # fmt: skip
        plan = _EAGER_PLANS.get(key)
    except (AttributeError, TypeError):  # not a tensor, or an unhashable option: the body raises the right error
        return _w4a8_linear(*args)
    if plan is None:
        plan = _EAGER_PLANS.remember(key, _eager_plan(*args))
    if plan is _BODY:
        return _w4a8_linear(*args)
    return plan(x, weight, weight_scale, bias)


class _EagerDecode(NamedTuple):
    """A planned eager call of the decode path (the body's, for one metadata key): ``quantize`` (None where the
    kernel quantizes ``x`` itself), the launcher (the CUDA GEMV bound by ``bind_gemv_cuda``, or the decode path's
    own), ``x``'s rows as a 2-D shape and the output's shape (None: ``x`` is 2-D already, no views), the output
    dtype, and whether the scales and bias need a float32 copy."""

    quantize: Callable | None
    launch: Callable
    bound: bool  # launch takes (x, x_scale, w, w_scale, bias); else the decode path's (..., out_dtype)
    rows: tuple[int, int] | None
    out_shape: tuple[int, ...] | None
    dtype: torch.dtype
    scale_to_float: bool
    bias_to_float: bool

    def __call__(self, x, weight, weight_scale, bias) -> torch.Tensor:
        x2, xs = x if self.rows is None else x.view(self.rows), None
        if self.quantize is not None:
            x2, xs = self.quantize(x2)
            xs = xs.view(-1)
        ws = weight_scale.float() if self.scale_to_float else weight_scale
        b = bias.float() if self.bias_to_float else bias
        out = self.launch(x2, xs, weight, ws, b) if self.bound else self.launch(x2, xs, weight, ws, b, self.dtype)
        return out if self.out_shape is None else out.view(self.out_shape)


_BODY = False  # the key's calls take the op's body
_EAGER_PLANS = PlanCache()  # _EagerDecode, or _BODY, by w4a8_linear_eager's key


def _eager_plan(x, weight, weight_scale, bias, out_dtype, weight_group_mult, weight_channel_scale):
    """Check the arguments (raising on bad input) and plan the call: an :class:`_EagerDecode` where the body would
    run a decode kernel on a contiguous ``x``, else ``_BODY`` (the GEMM path, whose GPU time dwarfs the host's; views;
    empty inputs)."""
    _check_args(x, weight, weight_scale, bias, out_dtype, weight_group_mult, weight_channel_scale)
    K, N = int(x.shape[-1]), int(weight.shape[0])
    if not x.is_contiguous() or x.numel() == 0:
        return _BODY
    M = x.numel() // K
    groups = int(weight_scale.shape[1]) if weight_scale.dim() == 2 else 1
    group = K // groups if groups > 1 else None
    path = _decode_path(x.device, M, N, K, group, weight_group_mult is not None)
    if path is None:
        return _BODY
    dtype = resolve_out_dtype(x.dtype, out_dtype)
    launch = path.launch
    from lowbit_flex.kernels.s8s4_dispatch import Backend

    if path.backend is Backend.CUDA_GEMV:  # bind the CUDA GEMV's ctypes launch to this metadata
        from lowbit_flex.kernels.w4a8_gemv_cuda import bind_gemv_cuda, fuses_quantization

        if path.quantize is None and not path.programmatic and not fuses_quantization(M, K):
            return _BODY  # the launcher would quantize first: its way
        # the launch's x: the float rows, or the quantizer's int8 output (a fresh, aligned allocation per call)
        x_in = x.view(M, K) if path.quantize is None else torch.empty((M, K), dtype=torch.int8, device=x.device)
        launch = bind_gemv_cuda(x_in, weight, weight_scale, dtype, path.config, quantize_first=path.programmatic)
        if launch is None:
            return _BODY
    rows, out_shape = (None, None) if x.dim() == 2 else ((M, K), (*x.shape[:-1], N))
    return _EagerDecode(
        path.quantize, launch, launch is not path.launch, rows, out_shape, dtype,
        weight_scale.dtype != torch.float32, bias is not None and bias.dtype != torch.float32,
    )  # fmt: skip
