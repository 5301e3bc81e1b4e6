"""CUTLASS W4A8 GEMM: int8 activations × packed int4 weights, int32 accumulation, scales and bias fused.

``ctypes`` wrapper over the launchers in ``csrc/s8s4_gemm/`` (built by :mod:`lowbit_flex.cuda_build`). Two kernel
families ("variants"), each with a few tile configurations:

- ``"sm80"``: CUTLASS 2.x mixed-input ``GemmUniversal`` (``mma.sync``, int4 upcast to int8 in registers),
  stream-K scheduled; runs on sm_80-class GPUs and on sm_90.
- ``"sm90"``: CUTLASS 3.x mixed-input warp-specialized kernel (TMA + int8 WGMMA), computing ``out^T = W x^T`` so
  that the int4 operand is the register-sourced one; H100/H200 (compute 9.0) only.

Both compute ``out[m, n] = out_dtype(float(acc[m, n]) * x_scale[m] * w_scale[n] + bias[n])`` with one rounding.
Constraints (checked by :func:`cutlass_s8s4_supported`, see ``docs/s8s4_cutlass.md``): ``K % 32 == 0`` (128-bit int4
loads), ``N % 8 == 0`` (128-bit fp16/bf16 stores; TMA strides), any ``M >= 1``.
"""

from __future__ import annotations

import ctypes
import functools

import torch

from lowbit_flex import cuda_build

# Mirrors csrc/s8s4_gemm/s8s4_configs.h; position = the launcher's config index. Names give the (M, N, K) tile.
CUTLASS_CONFIGS: dict[str, tuple[str, ...]] = {
    "sm80": ("16x128x128_s4", "32x128x128_s4", "128x128x64_s4", "128x256x64_s3"),
    "sm90": ("16x128x128_ws", "128x128x128_coop", "256x128x128_coop"),
}

# Default tile per M when the caller passes config=None: (largest M, config), first match wins. Placeholder until
# the lead's measured dispatch table replaces it.
_DEFAULT_BY_M: dict[str, tuple[tuple[int, str], ...]] = {
    "sm80": ((16, "16x128x128_s4"), (64, "32x128x128_s4"), (2048, "128x128x64_s4")),
    "sm90": ((16, "16x128x128_ws"), (2048, "128x128x128_coop")),
}
_DEFAULT_LARGE_M = {"sm80": "128x256x64_s3", "sm90": "256x128x128_coop"}

_OUT_DTYPE_CODE = {torch.float16: 0, torch.bfloat16: 1}  # lowbit::s8s4::OutDtype
_INT32_MAX = 2**31 - 1
# |acc| <= K * 128 * 8 must fit int32; K <= 2**20 leaves a wide margin.
_MAX_K = 2**20


def _check_variant(variant: str) -> None:
    if variant not in CUTLASS_CONFIGS:
        raise ValueError(f"variant: expected one of {sorted(CUTLASS_CONFIGS)}, got {variant!r}")


@functools.cache
def _variant_runs_on(variant: str, major: int, minor: int) -> bool:
    if variant == "sm90":
        return (major, minor) == (9, 0)  # sm_90a SASS (wgmma, setmaxnreg) runs on compute 9.0 only
    return major == 8 or (major, minor) == (9, 0)  # the library is built for sm_80 (all 8.x) and sm_90a


def cutlass_s8s4_supported(variant: str, M: int, N: int, K: int) -> bool:
    """Whether ``variant`` can run an (M, N, K) problem on the current CUDA device (no device sync)."""
    _check_variant(variant)
    if not torch.cuda.is_available():
        return False
    if not _variant_runs_on(variant, *torch.cuda.get_device_capability()):
        return False
    return 1 <= M <= _INT32_MAX and 8 <= N <= _INT32_MAX and N % 8 == 0 and 32 <= K <= _MAX_K and K % 32 == 0


def default_config(variant: str, M: int) -> str:
    """The tile used when ``config`` is None (a placeholder until a measured dispatch table exists)."""
    _check_variant(variant)
    for max_m, name in _DEFAULT_BY_M[variant]:
        if max_m >= M:
            return name
    return _DEFAULT_LARGE_M[variant]


@functools.cache
def _launcher(variant: str) -> ctypes._CFuncPtr:
    fn = getattr(cuda_build.load(), f"lowbit_s8s4_{variant}")
    ptr, i32 = ctypes.c_void_p, ctypes.c_int
    # (config, out_dtype, x, x_scale, w, w_scale, bias, out, M, N, K, workspace, workspace_bytes, query, stream)
    fn.argtypes = [i32, i32, ptr, ptr, ptr, ptr, ptr, ptr, i32, i32, i32, ptr, ctypes.c_size_t]
    fn.argtypes += [ctypes.POINTER(ctypes.c_size_t), ptr]
    fn.restype = ctypes.c_int
    return fn


def library_config_names(variant: str) -> tuple[str, ...]:
    """The config names compiled into the loaded library (for the consistency test against CUTLASS_CONFIGS)."""
    _check_variant(variant)
    lib = cuda_build.load()
    count, name = getattr(lib, f"lowbit_s8s4_{variant}_num_configs"), getattr(lib, f"lowbit_s8s4_{variant}_config_name")
    count.restype, name.restype, name.argtypes = ctypes.c_int, ctypes.c_char_p, [ctypes.c_int]
    return tuple(name(i).decode() for i in range(count()))


def _aligned16(t: torch.Tensor) -> torch.Tensor:
    # The kernels read/write these with 128-bit (or TMA) accesses; a fresh allocation is always 16-byte aligned.
    return t if t.data_ptr() % 16 == 0 else t.clone()


def _check_operands(x, x_scale, w, w_scale, bias, out_dtype) -> None:
    """The invariants the kernels rely on for in-bounds access (the op validates the user-facing arguments)."""
    if x.dtype != torch.int8 or w.dtype != torch.int8:
        raise TypeError(f"x, w: expected int8, got {x.dtype} and {w.dtype}")
    if out_dtype not in _OUT_DTYPE_CODE:
        raise TypeError(f"out_dtype: expected torch.float16 or torch.bfloat16, got {out_dtype}")
    if x.dim() != 2 or w.dim() != 2 or w.shape[1] * 2 != x.shape[1]:
        raise ValueError(f"x (M, K) and w (N, K // 2) expected, got {tuple(x.shape)} and {tuple(w.shape)}")
    M, N = x.shape[0], w.shape[0]
    for name, t, n in (("x_scale", x_scale, M), ("w_scale", w_scale, N), ("bias", bias, N)):
        if t is not None and (t.dtype != torch.float32 or t.shape != (n,)):
            raise ValueError(f"{name}: expected float32 of shape ({n},), got {t.dtype} {tuple(t.shape)}")
    tensors = [t for t in (x, x_scale, w, w_scale, bias) if t is not None]
    if any(not t.is_contiguous() for t in tensors):
        raise ValueError("x, x_scale, w, w_scale, bias: expected contiguous tensors")
    if any(t.device != x.device for t in tensors) or x.device.type != "cuda":
        raise ValueError(f"all operands must be on one CUDA device, x is on {x.device}")


def s8s4_linear_cutlass(
    x: torch.Tensor,
    x_scale: torch.Tensor,
    w: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None,
    out_dtype: torch.dtype,
    variant: str,
    config: str | None = None,
) -> torch.Tensor:
    """``(x * x_scale[:, None]) @ (W * w_scale[:, None]).T + bias`` on CUTLASS; ``out`` is (M, N) ``out_dtype``.

    ``x``: int8 (M, K); ``x_scale``: float32 (M,); ``w``: int8 (N, K // 2) holding two int4 per byte (element
    ``k`` even in the low nibble, two's complement); ``w_scale``, ``bias``: float32 (N,). Contiguous, one CUDA
    device. ``config``: a name from ``CUTLASS_CONFIGS[variant]`` (None: :func:`default_config`).
    """
    _check_variant(variant)
    _check_operands(x, x_scale, w, w_scale, bias, out_dtype)
    M, K = x.shape
    N = w.shape[0]
    if not cutlass_s8s4_supported(variant, M, N, K):
        raise ValueError(
            f"s8s4 CUTLASS {variant} cannot run M={M}, N={N}, K={K} on this device "
            f"(needs K % 32 == 0, N % 8 == 0; sm90 needs compute 9.0)"
        )
    name = default_config(variant, M) if config is None else config
    if name not in CUTLASS_CONFIGS[variant]:
        raise ValueError(f"config: expected one of {CUTLASS_CONFIGS[variant]}, got {name!r}")
    x, w, w_scale = _aligned16(x), _aligned16(w), _aligned16(w_scale)
    bias = None if bias is None else _aligned16(bias)
    out = torch.empty((M, N), dtype=out_dtype, device=x.device)

    fn = _launcher(variant)
    with torch.cuda.device(x.device):  # the launcher sizes stream-K / TMA work for the current device
        stream = torch.cuda.current_stream().cuda_stream
        args = (
            CUTLASS_CONFIGS[variant].index(name), _OUT_DTYPE_CODE[out_dtype],
            x.data_ptr(), x_scale.data_ptr(), w.data_ptr(), w_scale.data_ptr(),
            None if bias is None else bias.data_ptr(), out.data_ptr(), M, N, K,
        )  # fmt: skip
        need = ctypes.c_size_t(0)
        cuda_build.check_status(fn(*args, None, 0, ctypes.byref(need), stream), f"s8s4 {variant} {name} workspace")
        workspace = torch.empty(need.value, dtype=torch.uint8, device=x.device) if need.value else None
        ws_ptr = None if workspace is None else workspace.data_ptr()
        cuda_build.check_status(fn(*args, ws_ptr, need.value, None, stream), f"s8s4 {variant} {name}")
    return out
