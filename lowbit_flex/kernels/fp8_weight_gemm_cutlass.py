"""fp8 (e4m3) weight-only GEMM for prefill sizes on Hopper, in CUTLASS (``csrc/fp8_weight_gemm/``).

``out = x @ (float(w) * w_scale[:, None]).T + bias`` with a 16-bit ``x``: TMA loads both operands, CUTLASS's
mixed-input collective converts the e4m3 weight to x's dtype on its way from shared memory to registers (exact) and
feeds 16-bit WGMMAs with fp32 accumulators, and the epilogue applies the per-channel scale and the bias. The weight
crosses memory once, in its 8-bit form, where the dequantize + cuBLAS path writes and reads a 16-bit copy first.

Called through ``ctypes`` in eager mode; traced calls record the ``lowbit::fp8_weight_gemm_cutlass`` op
(``lowbit_flex/ops/cutlass_gemm.py``), which AOTInductor packages can call. Which config runs for which M:
``DISPATCH_TABLE`` in :mod:`~lowbit_flex.kernels.float_weight_dispatch`.

Constraints (:func:`fp8_weight_gemm_supports`): sm_90, ``K % 16 == 0`` (16-byte TMA rows of w), ``N % 8 == 0``
(of the transposed output), 16-byte aligned bases (copied where not).
"""

from __future__ import annotations

import ctypes
import functools

import torch

from lowbit_flex import cuda_build
from lowbit_flex.kernels.arch import traced
from lowbit_flex.kernels.cutlass_launch import OUT_DTYPE_CODE, aligned16, launch_with_workspace
from lowbit_flex.kernels.cutlass_launch import library_config_names as _config_names

# Mirrors LOWBIT_FP8_WEIGHT_GEMM_SM90_CONFIGS in csrc/fp8_weight_gemm/fp8_weight_gemm_configs.h (position = the
# launcher's config index): the (M, N, K) tile, the schedule, "_sk" for stream-K.
CONFIGS: tuple[str, ...] = ("64x128x64_coop_sk", "128x128x64_coop_sk", "128x256x64_coop", "256x128x64_coop")

_CONFIG_INDEX = {name: i for i, name in enumerate(CONFIGS)}


def fp8_weight_gemm_supports(N: int, K: int) -> bool:
    """Whether the kernel takes the shape; the library's presence and the GPU (sm_90) are the dispatch's checks."""
    return N >= 8 and N % 8 == 0 and K >= 16 and K % 16 == 0


@functools.cache
def _launcher() -> ctypes._CFuncPtr:
    fn = cuda_build.load().lowbit_fp8_weight_gemm_sm90
    ptr, i32 = ctypes.c_void_p, ctypes.c_int
    # (config, dtype, x, w, w_scale, bias, out, M, N, K, workspace, workspace_bytes, query, stream)
    fn.argtypes = [i32, i32, ptr, ptr, ptr, ptr, ptr, i32, i32, i32, ptr, ctypes.c_size_t, ptr, ptr]
    fn.restype = ctypes.c_int
    return fn


def library_config_names() -> tuple[str, ...]:
    """The config names compiled into the loaded library (for the consistency test against :data:`CONFIGS`)."""
    return _config_names("lowbit_fp8_weight_gemm_sm90")


def fp8_weight_gemm_cutlass(
    x: torch.Tensor, w: torch.Tensor, w_scale: torch.Tensor, bias: torch.Tensor | None, config: str
) -> torch.Tensor:
    """``x @ (float(w) * w_scale[:, None]).T + bias`` for ``x`` fp16 / bf16 ``(M, K)`` with contiguous rows, ``w``
    float8_e4m3fn ``(N, K)``, ``w_scale`` float32 ``(N,)``, ``bias`` ``(N,)`` in x's dtype or None; contiguous, on
    one sm_90 device, validated by the op and :func:`fp8_weight_gemm_supports` -> ``(M, N)`` in x's dtype. Traced
    calls record ``lowbit::fp8_weight_gemm_cutlass``."""
    if traced(x):  # the op, which AOTInductor packages call by name (lowbit_flex/ops/cutlass_gemm.py)
        return torch.ops.lowbit.fp8_weight_gemm_cutlass(x, w, w_scale, bias, config)
    return launch_fp8_weight_gemm(x, w, w_scale, bias, config)


def launch_fp8_weight_gemm(x, w, w_scale, bias, config: str) -> torch.Tensor:
    """The ``ctypes`` launch on validated, contiguous CUDA tensors (a workspace query, then the launch)."""
    (M, K), N = x.shape, w.shape[0]
    out = torch.empty((M, N), dtype=x.dtype, device=x.device)
    if M == 0:
        return out
    # (copies where a view is misaligned; held until the launch is enqueued)
    x, w, w_scale = aligned16(x), aligned16(w), aligned16(w_scale)
    bias = None if bias is None else aligned16(bias)
    args = (_CONFIG_INDEX[config], OUT_DTYPE_CODE[x.dtype], x.data_ptr(), w.data_ptr(), w_scale.data_ptr(),
            None if bias is None else bias.data_ptr(), out.data_ptr(), M, N, K)  # fmt: skip
    launch_with_workspace(_launcher(), args, x.device, f"fp8 weight GEMM {config}")
    return out
