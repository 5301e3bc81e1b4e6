"""fp8 / fp6 / fp4 weight-only decode GEMV on fp16 / bf16 tensor cores, in CUDA (``csrc/float_weight_gemv/``):
``M <= 16`` rows of x, per-channel scales, the weight streamed once through per-warp ``cp.async`` rings.

Each warp owns 16 weight rows and feeds them as the A operand of a swap-AB ``mma.sync m16n8k16`` (the <= 16 tokens
are the MMA's N side), decoding two codes per 32-bit register with a shift and a mask (the tile layout of
:mod:`lowbit_flex.quant.fpx_tiles` is built for that; fp8 rows are plain e4m3 bytes). ``csrc/float_weight_gemv/
float_weight_gemv.cu`` says why each piece is there; ``docs/float_quantization.md`` has the measurements. Called
through ``ctypes`` in eager mode (one foreign call, no Triton launcher); traced calls record the
``lowbit::float_weight_gemv_cuda`` op (``lowbit_flex/ops/cutlass_gemm.py``), which AOTInductor packages can call.

Constraints (:func:`gemv_cuda_supports`): ``1 <= M <= 16``, ``K % 8 == 0`` (fp8: ``K % 16 == 0``).
"""

from __future__ import annotations

import ctypes
import functools

import torch

from lowbit_flex import cuda_build
from lowbit_flex.kernels.arch import traced
from lowbit_flex.kernels.cutlass_launch import OUT_DTYPE_CODE, aligned16

# Mirrors LOWBIT_FLOAT_WEIGHT_GEMV_CONFIGS in csrc/float_weight_gemv/float_weight_gemv.h (position = the launcher's
# config index): warps per CTA along N (16 weight rows each) x along K. Which runs for which shape: DISPATCH_TABLE
# in float_weight_dispatch.py.
GEMV_CUDA_CONFIGS: tuple[str, ...] = ("cp_n1k4", "cp_n1k8", "cp_n2k4", "cp_n4k2", "cp_n2k2")

_CONFIG_INDEX = {name: i for i, name in enumerate(GEMV_CUDA_CONFIGS)}  # the launcher's index, without a list scan

# (ebits, mbits) -> lowbit::float_weight_gemv::Format
FORMAT_CODE = {(4, 3): 0, (3, 2): 1, (2, 3): 2, (2, 1): 3}

MAX_M = 16

# CTAs per SM that the config rule plans one wave for (gemv_cuda_config).
_WAVE_CTAS_PER_SM = 2


def gemv_cuda_config(N: int, sms: int) -> str:
    """The 8-warp config for ``N`` output rows on a GPU of ``sms`` SMs: the fewest warps along N (16 rows each) that
    leave at most two CTAs' row tiles per SM, the rest along K. Persistent CTAs then take one row tile each in one
    balanced wave: run 37 (H200, M = 1-8) measured this the best config on every shape, e.g. fp4 at M = 1: 4096 rows
    ``cp_n1k8`` 1.57x bf16, 8192 rows ``cp_n2k4`` 1.83x (``cp_n1k8``: 512 row tiles over 396 resident CTAs,
    1.52x), 14336 rows ``cp_n4k2`` 1.70x (``cp_n1k8`` 1.57x)."""
    for warps_n in (1, 2, 4):
        if -(-N // (16 * warps_n)) <= _WAVE_CTAS_PER_SM * sms:
            break
    return f"cp_n{warps_n}k{8 // warps_n}"


def gemv_cuda_supports(M: int, K: int, bits: int) -> bool:
    """Whether the kernel takes the shape (``bits``: 8, 6 or 4); the library's presence and the GPU's arch are the
    dispatch's checks."""
    return 1 <= M <= MAX_M and K >= 8 and K % (16 if bits == 8 else 8) == 0


@functools.cache
def _launcher() -> ctypes._CFuncPtr:
    fn = cuda_build.load().lowbit_float_weight_gemv
    ptr, i32 = ctypes.c_void_p, ctypes.c_int
    # (config, format, dtype, x, w, w_scale, bias, out, M, N, K, stream)
    fn.argtypes = [i32, i32, i32, ptr, ptr, ptr, ptr, ptr, i32, i32, i32, ptr]
    fn.restype = ctypes.c_int
    return fn


def library_config_names() -> tuple[str, ...]:
    """The config names compiled into the loaded library (for the consistency test against GEMV_CUDA_CONFIGS)."""
    from lowbit_flex.kernels.cutlass_launch import library_config_names as names

    return names("lowbit_float_weight_gemv")


def float_weight_gemv_cuda(
    x: torch.Tensor,
    w: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None,
    ebits: int,
    mbits: int,
    config: str,
) -> torch.Tensor:
    """``x @ (decode(w) * w_scale[:, None]).T + bias`` for ``x`` fp16 / bf16 ``(M, K)``, ``1 <= M <= 16``, rows
    contiguous; ``w`` float8_e4m3fn ``(N, K)`` or int32 tile words of fp6 / fp4 codes, ``w_scale`` float32 ``(N,)``,
    ``bias`` ``(N,)`` in x's dtype or None; contiguous, on one CUDA device, validated by the op and
    :func:`gemv_cuda_supports` -> ``(M, N)`` in x's dtype. Traced calls record ``lowbit::float_weight_gemv_cuda``."""
    if traced(x):  # the op, which AOTInductor packages call by name (lowbit_flex/ops/cutlass_gemm.py)
        return torch.ops.lowbit.float_weight_gemv_cuda(x, w, w_scale, bias, ebits, mbits, config)
    return launch_gemv_cuda(x, w, w_scale, bias, ebits, mbits, config)


def bound_gemv_cuda(x, w, ebits: int, mbits: int, config: str):
    """The launcher bound to this shape, format, dtype and config: ``launch(x, w, w_scale, bias, out)`` on tensors
    with the metadata of ``x`` and ``w`` (16-byte aligned, contiguous: the eager caller's cache key keeps them so),
    on the current stream of x's device. None where ``x`` or ``w`` is misaligned (:func:`launch_gemv_cuda` copies)."""
    if x.data_ptr() % 16 or w.data_ptr() % 16:
        return None
    (M, K), N = x.shape, w.shape[0]
    fn, device = _launcher(), x.device.index
    fixed = (_CONFIG_INDEX[config], FORMAT_CODE[ebits, mbits], OUT_DTYPE_CODE[x.dtype])
    get_stream = torch._C._cuda_getCurrentRawStream

    def launch(x, w, w_scale, bias, out) -> None:
        status = fn(*fixed, x.data_ptr(), w.data_ptr(), w_scale.data_ptr(), None if bias is None else bias.data_ptr(),
                    out.data_ptr(), M, N, K, get_stream(device))  # fmt: skip
        if status:
            cuda_build.check_status(status, f"float weight GEMV {config}")

    return launch


def launch_gemv_cuda(x, w, w_scale, bias, ebits, mbits, config) -> torch.Tensor:
    """One ``ctypes`` call of the launcher on validated, contiguous CUDA tensors."""
    out = torch.empty((x.shape[0], w.shape[0]), dtype=x.dtype, device=x.device)
    x, w = aligned16(x), aligned16(w)  # (a copy where a view is misaligned; held until the launch is enqueued)
    bound_gemv_cuda(x, w, ebits, mbits, config)(x, w, w_scale, bias, out)
    return out
