"""CUTLASS W4A8 GEMM: int8 activations × packed int4 weights, int32 accumulation, scales and bias fused.

``ctypes`` wrapper over the launchers in ``lowbit_flex/csrc/s8s4_gemm/`` (built by :mod:`lowbit_flex.cuda_build`).
Two kernel families, each with a few tile configurations:

- ``"sm80"``: CUTLASS 2.x mixed-input ``GemmUniversal`` (``mma.sync``, int4 upcast to int8 in registers),
  stream-K scheduled; runs on sm_80-class GPUs and on sm_90.
- ``"sm90"``: CUTLASS 3.x mixed-input warp-specialized kernel (TMA + int8 WGMMA), computing ``out^T = W x^T`` so
  that the int4 operand is the register-sourced one; H100/H200 (compute 9.0) only.

Both compute ``out[m, n] = out_dtype(float(acc[m, n]) * x_scale[m] * w_scale[n] + bias[n])`` with one rounding.

:func:`s8s4_group_mult_cutlass` runs the Hopper kernel on group-wise weights in the integer-multiplier format
(:func:`lowbit_flex.quant.quantize_int4_weight_group_mult` with ``max_mult=GROUP_MULT_INT8_MAX``): the int4 -> int8
upcast multiplies each code by its group's multiplier (exact in int8), so ``acc[m, n] = sum_k x[m, k] * w[n, k] *
w_mult[n, k // group]`` is one exact int32 sum and ``w_scale`` is the per-channel scale: group-wise scales at the
per-channel kernel's speed.
Constraints (checked by :func:`cutlass_s8s4_supported`, see ``docs/s8s4_cutlass.md``): ``K % 32 == 0`` (128-bit int4
loads), ``N % 8 == 0`` (128-bit fp16/bf16 stores; TMA strides), any ``M >= 1``.
"""

from __future__ import annotations

import ctypes
import functools
import warnings

import torch

from lowbit_flex import cuda_build
from lowbit_flex.kernels.cutlass_launch import OUT_DTYPE_CODE, aligned16, launch_with_workspace
from lowbit_flex.kernels.cutlass_launch import library_config_names as _config_names

# Mirrors lowbit_flex/csrc/s8s4_gemm/s8s4_configs.h; position = the launcher's config index. Names give the
# (M, N, K) tile.
# Which tile runs for which M is decided in one place: the table in lowbit_flex/kernels/s8s4_dispatch.py.
CUTLASS_CONFIGS: dict[str, tuple[str, ...]] = {
    "sm80": ("16x128x128_s4", "32x128x128_s4", "128x128x64_s4", "128x256x64_s3"),
    "sm90": ("16x128x128_ws", "128x128x128_coop", "256x128x128_coop"),
}

# Mirrors LOWBIT_S8S4_SM90_MULT_CONFIGS: the Hopper tiles with int8 group multipliers on the weight.
GROUP_MULT_CONFIGS: tuple[str, ...] = ("128x128x128_coop_mult", "256x128x128_coop_mult", "16x128x128_ws_mult")
GROUP_MULT_TILE_K = 128  # every GROUP_MULT_CONFIGS tile: the group is a multiple of it

_INT32_MAX = 2**31 - 1
# |acc| <= K * 128 * 8 must fit int32; K <= 2**20 leaves a wide margin (and K * 128 * 128 with multipliers: 2**31
# at K = 2**17, so the multiplier kernels stop at MAX_K_MULT).
_MAX_K = 2**20
MAX_K_MULT = 2**17 - 128


def _check_family(family: str) -> None:
    if family not in CUTLASS_CONFIGS:
        raise ValueError(f"family: expected one of {sorted(CUTLASS_CONFIGS)}, got {family!r}")


@functools.cache
def _family_runs_on(family: str, major: int, minor: int) -> bool:
    if family == "sm90":
        return (major, minor) == (9, 0)  # sm_90a SASS (wgmma, setmaxnreg) runs on compute 9.0 only
    return major == 8 or (major, minor) == (9, 0)  # the library is built for sm_80 (all 8.x) and sm_90a


def cutlass_s8s4_supported(family: str, M: int, N: int, K: int) -> bool:
    """Whether kernel ``family`` can run an (M, N, K) problem on the current CUDA device (no device sync; does not
    build or load the library: see :func:`library_available`)."""
    _check_family(family)
    if not torch.cuda.is_available():
        return False
    if not _family_runs_on(family, *torch.cuda.get_device_capability()):
        return False
    return 1 <= M <= _INT32_MAX and 8 <= N <= _INT32_MAX and N % 8 == 0 and 32 <= K <= _MAX_K and K % 32 == 0


def group_mult_supported(M: int, N: int, K: int, group: int) -> bool:
    """Whether :func:`s8s4_group_mult_cutlass` can run an (M, N, K) problem with this group on the current device:
    the Hopper family's constraints, plus ``N % 16 == 0`` (the multipliers' rows are TMA rows), a group that is a
    whole number of 128-deep K tiles dividing K, and ``K <= 2**17 - 128`` (an exact int32 sum)."""
    return (
        cutlass_s8s4_supported("sm90", M, N, K)
        and N % 16 == 0
        and group > 0
        and group % GROUP_MULT_TILE_K == 0
        and K % group == 0
        and K <= MAX_K_MULT
    )


@functools.cache
def library_available() -> bool:
    """Whether the CUDA library loads (building it on first use unless ``LOWBIT_FLEX_NO_BUILD=1``). When it cannot
    be built or loaded (no nvcc, no CUTLASS headers, a build error), warn once per process and return False, so the
    dispatch table skips the CUTLASS rows and W4A8 runs on Triton."""
    try:
        cuda_build.load()
    except (cuda_build.CudaBuildError, OSError) as why:
        warnings.warn(
            f"lowbit_flex: the CUDA library (CUTLASS W4A8 GEMMs, the decode GEMVs) is unavailable ({why}); W4A8 "
            "and weight-only linears run on the Triton kernels. "
            "To build them: a CUDA toolkit (nvcc on PATH or in CUDA_HOME) and the CUTLASS headers "
            "(`pip install 'lowbit_flex[cuda]'`), then `python -m lowbit_flex.cuda_build`",
            RuntimeWarning,
            stacklevel=2,
        )
        return False
    return True


@functools.cache
def _launcher(family: str) -> ctypes._CFuncPtr:
    fn = getattr(cuda_build.load(), f"lowbit_s8s4_{family}")
    ptr, i32 = ctypes.c_void_p, ctypes.c_int
    # (config, out_dtype, x, x_scale, w, w_scale, bias, out, M, N, K, workspace, workspace_bytes, query, stream)
    fn.argtypes = [i32, i32, ptr, ptr, ptr, ptr, ptr, ptr, i32, i32, i32, ptr, ctypes.c_size_t]
    fn.argtypes += [ctypes.POINTER(ctypes.c_size_t), ptr]
    fn.restype = ctypes.c_int
    return fn


@functools.cache
def _group_mult_launcher() -> ctypes._CFuncPtr:
    fn = cuda_build.load().lowbit_s8s4_sm90_mult
    # the family launcher's parameters, then (w_mult, group)
    fn.argtypes = [*_launcher("sm90").argtypes, ctypes.c_void_p, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


def library_config_names(family: str) -> tuple[str, ...]:
    """The config names compiled into the loaded library (for the consistency test against CUTLASS_CONFIGS;
    ``"sm90_mult"``: against GROUP_MULT_CONFIGS)."""
    if family != "sm90_mult":
        _check_family(family)
    return _config_names(f"lowbit_s8s4_{family}")


def s8s4_linear_cutlass(
    x: torch.Tensor,
    x_scale: torch.Tensor,
    w: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None,
    out_dtype: torch.dtype,
    family: str,
    config: str,
) -> torch.Tensor:
    """``(x * x_scale[:, None]) @ (W * w_scale[:, None]).T + bias`` on CUTLASS; ``out`` is (M, N) ``out_dtype``.

    Preconditions, established once per call by the op's checks and the dispatch table (not re-checked here):
    ``x`` int8 (M, K); ``x_scale`` float32 (M,); ``w`` int8 (N, K // 2) holding two int4 per byte (element ``k``
    even in the low nibble, two's complement); ``w_scale``, ``bias``: float32 (N,); contiguous, on one CUDA device;
    :func:`cutlass_s8s4_supported` holds for ``family`` and the shape. ``config``: a name in
    ``CUTLASS_CONFIGS[family]``.
    """
    index = CUTLASS_CONFIGS[family].index(config)
    return _launch(_launcher(family), index, x, x_scale, w, w_scale, bias, out_dtype, f"s8s4 {family} {config}")


def _launch(fn, index, x, x_scale, w, w_scale, bias, out_dtype, what, extra: tuple = ()) -> torch.Tensor:
    """The launcher protocol both entry points share: operands 16-byte aligned, a fresh (M, N) output."""
    M, K = x.shape
    N = w.shape[0]
    x, w, w_scale = aligned16(x), aligned16(w), aligned16(w_scale)
    bias = None if bias is None else aligned16(bias)
    out = torch.empty((M, N), dtype=out_dtype, device=x.device)
    args = (
        index, OUT_DTYPE_CODE[out_dtype],
        x.data_ptr(), x_scale.data_ptr(), w.data_ptr(), w_scale.data_ptr(),
        None if bias is None else bias.data_ptr(), out.data_ptr(), M, N, K,
    )  # fmt: skip
    launch_with_workspace(fn, args, x.device, what, extra)
    return out


def s8s4_group_mult_cutlass(
    x: torch.Tensor,
    x_scale: torch.Tensor,
    w: torch.Tensor,
    w_channel_scale: torch.Tensor,
    w_mult_t: torch.Tensor,
    bias: torch.Tensor | None,
    out_dtype: torch.dtype,
    config: str,
) -> torch.Tensor:
    """``(x * x_scale[:, None]) @ (W * w_mult expanded over its groups * w_channel_scale[:, None]).T + bias`` on the
    Hopper kernel; ``out`` is (M, N) ``out_dtype``.

    Preconditions (the caller's checks): as :func:`s8s4_linear_cutlass`, with ``w_channel_scale`` float32 (N,) in
    ``w_scale``'s place and ``w_mult_t`` int8 (K // group, N) contiguous, the multipliers transposed, each in
    ``[0, lowbit_flex.quant.int4.GROUP_MULT_INT8_MAX]`` (outside it the kernel's four-codes-per-instruction upcast is
    wrong); :func:`group_mult_supported` holds. ``config``: a name in ``GROUP_MULT_CONFIGS``.
    """
    index = GROUP_MULT_CONFIGS.index(config)
    w_mult_t = aligned16(w_mult_t)
    extra = (w_mult_t.data_ptr(), x.shape[1] // w_mult_t.shape[0])  # the multipliers and the group
    what = f"s8s4 sm90 {config}"
    return _launch(_group_mult_launcher(), index, x, x_scale, w, w_channel_scale, bias, out_dtype, what, extra)
