"""W4A8 decode GEMV on int8 tensor cores, in CUDA (``csrc/w4a8_gemv/``): ``M <= 16`` rows of x, per-channel or
group-wise scales (groups a multiple of 128), a float x quantized inside the kernel (one launch per layer).

The kernel streams the packed int4 weight once: each warp owns 16 weight rows and feeds them as the A operand of a
swap-AB ``mma.sync m16n8k32`` (the <= 16 tokens are the MMA's N side), unpacking 16x each nibble plane with two
masks per 32-bit word. ``csrc/w4a8_gemv/w4a8_gemv.cu`` says why each piece is there; ``docs/w4a8.md`` has the
measurements. Called through ``ctypes`` in eager mode (one foreign call, no Triton launcher); traced calls record
the ``lowbit::w4a8_gemv_cuda`` op (``lowbit_flex/ops/cutlass_gemm.py``), which AOTInductor packages can call.

Constraints (:func:`gemv_cuda_supports`): ``K % 128 == 0``, groups a multiple of 128, per channel ``K < 2**17``.
A float x is quantized in the kernel when ``M <= 8`` and ``M * K <= 65536`` (its int8 rows are kept in shared
memory); otherwise the launcher quantizes it first with ``lowbit::quantize_int8_rowwise``'s kernel.
:func:`quantize_then_gemv_cuda` always quantizes first, with the library's own quantizer kernel in the same foreign
call, and on sm_90 launches the GEMV as that kernel's programmatic dependent (the quantizer lets it start at once;
its CTAs wait for x before their first load). Either way each
CTA first copies x's rows into shared memory where they fit (``csrc/common/stage_shared.cuh``; the launcher decides,
``LOWBIT_W4A8_GEMV_STAGE_X=0`` turns it off).
"""

from __future__ import annotations

import ctypes
import functools
import os
from collections.abc import Callable
from typing import NamedTuple

import torch

from lowbit_flex import cuda_build
from lowbit_flex._checks import dtype_name
from lowbit_flex.kernels.arch import traced
from lowbit_flex.kernels.common import StreamScratch
from lowbit_flex.kernels.cutlass_launch import OUT_DTYPE_CODE, aligned16
from lowbit_flex.kernels.quantize_int8_rowwise import quantize_int8_rowwise_triton

# Mirrors LOWBIT_W4A8_GEMV_CONFIGS in csrc/w4a8_gemv/w4a8_gemv.h (position = the launcher's config index): warps
# per CTA along N (16 weight rows each) x along K, the K splits across CTAs (``_s2`` / ``_s4``: a thread-block
# cluster per row tile on sm_90, unsplit elsewhere) and the L2 prefetch distance in steps. Which runs for which
# shape: DISPATCH_TABLE in s8s4_dispatch.py.
GEMV_CUDA_CONFIGS: tuple[str, ...] = (
    "mma_n1k8_pf0", "mma_n1k8_pf2", "mma_n2k4_pf0", "mma_n2k4_pf2", "mma_n4k2_pf2", "mma_n1k16_pf0", "mma_n2k8_pf0",
    "mma_n4k4_pf0", "mma_n4k4_pf2", "mma_n4k2_s2_pf2", "mma_n4k4_s2_pf0", "mma_n2k4_s2_pf0", "mma_n2k8_s2_pf0",
    "mma_n4k4_s4_pf0", "mma_n2k4_s4_pf0",
)  # fmt: skip

_CONFIG_INDEX = {name: i for i, name in enumerate(GEMV_CUDA_CONFIGS)}  # the launcher's index, without a list scan

X_DTYPE_CODE = {torch.int8: 0, torch.float16: 1, torch.bfloat16: 2, torch.float32: 3}  # lowbit::w4a8_gemv::XDtype

MAX_M = 16
CHUNK_K = 128  # K values per MMA step of a warp (and the smallest scale group)
MAX_FUSED_M = 8
_MAX_FUSED_X_BYTES = 64 * 1024  # the int8 x rows a CTA stages in shared memory
_MAX_K_PER_CHANNEL = 2**17  # the int32 sum of 16x the dot stays exact below this


def gemv_cuda_supports(M: int, K: int, group: int | None) -> bool:
    """Whether the kernel takes the shape (``group``: None per channel); the library's presence is checked by the
    dispatch (:func:`~lowbit_flex.kernels.s8s4_cutlass.library_available`)."""
    if not 1 <= M <= MAX_M or K < CHUNK_K or K % CHUNK_K:
        return False
    return K < _MAX_K_PER_CHANNEL if group is None else group % CHUNK_K == 0 and K % group == 0


def fuses_quantization(M: int, K: int) -> bool:
    """Whether a float x of this shape is quantized inside the kernel (else by the quantizer kernel first)."""
    return M <= MAX_FUSED_M and M * K <= _MAX_FUSED_X_BYTES


@functools.cache
def _launcher() -> ctypes._CFuncPtr:
    fn = cuda_build.load().lowbit_w4a8_gemv
    ptr, i32 = ctypes.c_void_p, ctypes.c_int
    # (config, x_dtype, out_dtype, x, x_scale, w, w_scale, group, bias, out, M, N, K, stream)
    fn.argtypes = [i32, i32, i32, ptr, ptr, ptr, ptr, i32, ptr, ptr, i32, i32, i32, ptr]
    fn.restype = ctypes.c_int
    return fn


@functools.cache
def _quantize_then_launcher() -> ctypes._CFuncPtr:
    fn = cuda_build.load().lowbit_w4a8_quantize_then_gemv
    ptr, i32 = ctypes.c_void_p, ctypes.c_int
    # (config, x_dtype, out_dtype, x, xq, xq_scale, w, w_scale, group, bias, out, M, N, K, programmatic, stream)
    fn.argtypes = [i32, i32, i32, ptr, ptr, ptr, ptr, ptr, i32, ptr, ptr, i32, i32, i32, i32, ptr]
    fn.restype = ctypes.c_int
    return fn


# Whether the quantize-first call launches the GEMV as the quantizer's programmatic dependent (sm_90; elsewhere the
# attribute is not set): the A/B switch of run 75, LOWBIT_W4A8_QUANTIZE_FIRST_PDL=0 turns it off (read at import).
PROGRAMMATIC = int(os.environ.get("LOWBIT_W4A8_QUANTIZE_FIRST_PDL", "1") != "0")

# The int8 rows and scales the quantize-first call writes and its GEMV reads, kept per (device, stream, thread):
# a torch.empty per call cost 3-7 us of host time. Per thread: ctypes releases the GIL during the call, so two
# threads' launches on one stream could interleave between a quantizer and its GEMV.
_X_SCRATCH = StreamScratch(per_thread=True)


def library_config_names() -> tuple[str, ...]:
    """The config names compiled into the loaded library (for the consistency test against GEMV_CUDA_CONFIGS)."""
    from lowbit_flex.kernels.cutlass_launch import library_config_names as names

    return names("lowbit_w4a8_gemv")


def s8s4_gemv_cuda(
    x: torch.Tensor,
    x_scale: torch.Tensor | None,
    w: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None,
    out_dtype: torch.dtype,
    config: str,
    *,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """The decode launcher (the signature :func:`~lowbit_flex.kernels.s8s4_dispatch.decode_launcher` shares): ``x``
    ``(M, K)``, ``1 <= M <= 16``, int8 with ``x_scale`` float32 ``(M,)``, or float16 / bfloat16 / float32 with
    ``x_scale=None`` (quantized per row, bit-exact with ``lowbit::quantize_int8_rowwise``: in the kernel where
    :func:`fuses_quantization`, else by the quantizer kernel first). ``w`` int8 ``(N, K // 2)`` packed int4,
    ``w_scale`` float32 ``(N,)`` or ``(N, K // group)``, ``bias`` float32 ``(N,)`` or None; contiguous, on one CUDA
    device, validated by the op and :func:`gemv_cuda_supports` -> ``(M, N)`` ``out_dtype`` (float16 / bfloat16),
    written into ``out`` if given (contiguous; eager calls only). Traced calls record ``lowbit::w4a8_gemv_cuda``."""
    M, K = x.shape
    if x_scale is None and not fuses_quantization(int(M), int(K)):
        x, x_scale = quantize_int8_rowwise_triton(x)
        x_scale = x_scale.view(-1)
    if traced(x):  # the op, which AOTInductor packages call by name (lowbit_flex/ops/cutlass_gemm.py)
        return torch.ops.lowbit.w4a8_gemv_cuda(x, x_scale, w, w_scale, bias, dtype_name(out_dtype), config)
    return launch_gemv_cuda(x, x_scale, w, w_scale, bias, out_dtype, config, out=out)


def quantize_then_gemv_cuda(
    x: torch.Tensor,
    x_scale: torch.Tensor | None,
    w: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None,
    out_dtype: torch.dtype,
    config: str,
    *,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """:func:`s8s4_gemv_cuda` (the same signature and results) for a float ``x`` that the library's quantizer kernel
    quantizes first whatever its size, in the same foreign call, with the GEMV launched as that kernel's
    programmatic dependent on sm_90: the quantizer lets it start at once, and its CTAs wait for x before their first
    load, so the GEMV's launch overlaps the quantization. An int8 ``x`` and traced calls take :func:`s8s4_gemv_cuda`
    itself (a compiled graph launches the kernels its own way; the values are the same)."""
    if x_scale is not None or traced(x):
        return s8s4_gemv_cuda(x, x_scale, w, w_scale, bias, out_dtype, config, out=out)
    fixed = _fixed_args(x, w, w_scale, out_dtype, config)
    if out is None:
        out = torch.empty((fixed.M, fixed.N), dtype=out_dtype, device=x.device)
    return _call_quantize_first(fixed, aligned16(x), aligned16(w), w_scale, bias, out, x.device.index)


def launch_gemv_cuda(x, x_scale, w, w_scale, bias, out_dtype, config, *, out=None) -> torch.Tensor:
    """One ``ctypes`` call of the launcher on validated, contiguous CUDA tensors (a float x here must be one the
    kernel quantizes: :func:`fuses_quantization`)."""
    fixed = _fixed_args(x, w, w_scale, out_dtype, config)
    if out is None:
        out = torch.empty((fixed.M, fixed.N), dtype=out_dtype, device=x.device)
    x, w = aligned16(x), aligned16(w)  # (a copy where a view is misaligned; held until the launch is enqueued)
    return _call(fixed, x, x_scale, w, w_scale, bias, out, x.device.index)


def bind_gemv_cuda(
    x: torch.Tensor,
    w: torch.Tensor,
    w_scale: torch.Tensor,
    out_dtype: torch.dtype,
    config: str,
    *,
    quantize_first: bool = False,
) -> Callable[..., torch.Tensor] | None:
    """:func:`launch_gemv_cuda` (``quantize_first``: :func:`quantize_then_gemv_cuda`) for these arguments'
    metadata, with everything but the tensors' addresses and the current stream fixed: ``(x, x_scale, w, w_scale,
    bias) -> out``, for an eager caller that keeps it per key (dtypes, shapes, devices, 16-byte alignment of ``x``
    and ``w``). None where each call needs more: a misaligned ``x`` or ``w`` (the launchers copy those). The
    arguments are validated by the caller (a float ``x`` only where :func:`fuses_quantization` or
    ``quantize_first``)."""
    if x.data_ptr() % 16 or w.data_ptr() % 16:
        return None
    fixed = _fixed_args(x, w, w_scale, out_dtype, config)
    device, shape = x.device, (fixed.M, fixed.N)

    def launch(x, x_scale, w, w_scale, bias) -> torch.Tensor:
        out = torch.empty(shape, dtype=out_dtype, device=device)
        return _call(fixed, x, x_scale, w, w_scale, bias, out, device.index)

    def launch_quantize_first(x, x_scale, w, w_scale, bias) -> torch.Tensor:
        out = torch.empty(shape, dtype=out_dtype, device=device)
        return _call_quantize_first(fixed, x, w, w_scale, bias, out, device.index)

    return launch_quantize_first if quantize_first else launch


class _Fixed(NamedTuple):
    """The launcher's arguments that follow from metadata (:func:`_fixed_args`)."""

    config: int  # the launcher's config index
    x_code: int
    out_code: int
    M: int
    N: int
    K: int
    group: int  # 0: per-channel scales


def _fixed_args(x, w, w_scale, out_dtype, config) -> _Fixed:
    """The group is 0 for per-channel scales, (N,) or (N, 1) (s8s4_dispatch.group_of's rule; the dispatch sits above
    this module, so it is not imported here)."""
    M, K = (int(n) for n in x.shape)
    group = 0 if w_scale.dim() == 1 or w_scale.shape[1] == 1 else K // int(w_scale.shape[1])
    return _Fixed(_CONFIG_INDEX[config], X_DTYPE_CODE[x.dtype], OUT_DTYPE_CODE[out_dtype], M, int(w.shape[0]), K, group)


def _call(f: _Fixed, x, x_scale, w, w_scale, bias, out, device_index: int) -> torch.Tensor:
    """The ``ctypes`` call: the fixed arguments, the tensors' addresses, the device's current stream."""
    status = _launcher()(
        f.config, f.x_code, f.out_code, x.data_ptr(), None if x_scale is None else x_scale.data_ptr(), w.data_ptr(),
        w_scale.data_ptr(), f.group, None if bias is None else bias.data_ptr(), out.data_ptr(), f.M, f.N, f.K,
        torch._C._cuda_getCurrentRawStream(device_index),
    )  # fmt: skip
    if status:
        cuda_build.check_status(status, f"w4a8 GEMV {GEMV_CUDA_CONFIGS[f.config]}")
    return out


def _call_quantize_first(f: _Fixed, x, w, w_scale, bias, out, device_index: int) -> torch.Tensor:
    """The quantize-first ``ctypes`` call: a float ``x``, its int8 rows and scales in the stream's scratch (the rows
    first: ``K % 128 == 0`` keeps the scales aligned)."""
    stream = torch._C._cuda_getCurrentRawStream(device_index)
    xq = _X_SCRATCH(f.M * f.K + 4 * f.M, 16, stream).data_ptr()
    status = _quantize_then_launcher()(
        f.config, f.x_code, f.out_code, x.data_ptr(), xq, xq + f.M * f.K, w.data_ptr(), w_scale.data_ptr(), f.group,
        None if bias is None else bias.data_ptr(), out.data_ptr(), f.M, f.N, f.K, PROGRAMMATIC, stream,
    )  # fmt: skip
    if status:
        cuda_build.check_status(status, f"w4a8 quantizer and GEMV {GEMV_CUDA_CONFIGS[f.config]}")
    return out
