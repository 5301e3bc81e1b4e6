"""CUTLASS int8 × int8 GEMM with group-wise weight scales on Hopper (the large-M group-wise W4A8 path).

``ctypes`` wrapper over the launcher in ``lowbit_flex/csrc/s8s8_groupwise/`` (built by :mod:`lowbit_flex.cuda_build`):
a cooperative warp-specialized CUTLASS 3.x kernel (TMA producer warp, two consumer warp groups) whose mainloop
runs each scale group's int8 WGMMAs into an int32 register accumulator and promotes it, ``acc += float(dot) *
w_scale[n, g]``, into an fp32 accumulator while the other warp group's WGMMAs run (the ``_pp`` configs keep two
int32 accumulators, so a warp group's next WGMMAs also overlap its own promotion). The epilogue applies
``x_scale``, adds ``bias`` and rounds once:

``out[m, n] = out_dtype((sum_g float(dot_g[m, n]) * w_scale[n, g]) * x_scale[m] + bias[n])``

The weight is int8 (N, K): the W4A8 weight after :func:`~lowbit_flex.kernels.s8s4_unpacked_gemm.unpack_int4_triton`.
Constraints (:func:`supported`, see ``docs/s8s8_groupwise_cutlass.md``): compute capability 9.0; ``K % 32 == 0``;
``N % 8 == 0`` (16-byte TMA rows of the fp16/bf16 output); ``group`` in {32, 64, 128, 256} dividing K (each config
takes some of them: :data:`GROUPWISE_CONFIGS`); any ``M >= 1``.
"""

from __future__ import annotations

import ctypes
import functools

import torch

from lowbit_flex import cuda_build
from lowbit_flex.kernels.cutlass_launch import OUT_DTYPE_CODE, aligned16, launch_with_workspace
from lowbit_flex.kernels.cutlass_launch import library_config_names as _config_names

# Mirrors lowbit_flex/csrc/s8s8_groupwise/s8s8_groupwise_configs.h; position = the launcher's config index. Name ->
# the groups that config takes (its mainloop's promotion cadence is compiled in: every 128-multiple, 64 or 32).
# "_pp": two int32 accumulators (ping-pong), group g+1's WGMMAs run while group g is promoted; unmeasured, so no
# dispatch row names it (forced only).
GROUPWISE_CONFIGS: dict[str, tuple[int, ...]] = {
    "128x128x128_g128": (128, 256),
    "128x192x128_g128": (128, 256),
    "128x128x128_g64": (64,),
    "128x128x128_g32": (32,),
    "128x128x128_g128_pp": (128, 256),
    "128x96x128_g128_pp": (128, 256),
}
# The promotion converts an int32 group dot to float exactly while |dot| <= 2**22, i.e. for any int8 x int8 up to
# group 256 (128 * 128 * 256).
GROUPS = (32, 64, 128, 256)
_INT32_MAX = 2**31 - 1


def configs_for_group(group: int) -> tuple[str, ...]:
    """The config names that take ``group``, in table order."""
    return tuple(name for name, groups in GROUPWISE_CONFIGS.items() if group in groups)


def supported(M: int, N: int, K: int, group: int) -> bool:
    """Whether the kernel can run an (M, N, K) problem with this scale group on the current CUDA device (no device
    sync; does not build or load the library: see ``s8s4_cutlass.library_available``)."""
    if not torch.cuda.is_available() or torch.cuda.get_device_capability() != (9, 0):
        return False  # sm_90a SASS (wgmma, setmaxnreg) runs on compute 9.0 only
    return (
        1 <= M <= _INT32_MAX
        and 8 <= N <= _INT32_MAX
        and N % 8 == 0
        and 32 <= K <= _INT32_MAX
        and K % 32 == 0
        and group in GROUPS
        and K % group == 0
    )


@functools.cache
def _launcher() -> ctypes._CFuncPtr:
    fn = cuda_build.load().lowbit_s8s8_groupwise_sm90
    ptr, i32 = ctypes.c_void_p, ctypes.c_int
    # (config, out_dtype, x, x_scale, w, w_scale, bias, out, M, N, K, group, workspace, workspace_bytes, query,
    #  stream)
    fn.argtypes = [i32, i32, ptr, ptr, ptr, ptr, ptr, ptr, i32, i32, i32, i32, ptr, ctypes.c_size_t]
    fn.argtypes += [ctypes.POINTER(ctypes.c_size_t), ptr]
    fn.restype = ctypes.c_int
    return fn


def library_config_names() -> tuple[str, ...]:
    """The config names compiled into the loaded library (for the consistency test against GROUPWISE_CONFIGS)."""
    return _config_names("lowbit_s8s8_groupwise_sm90")


def s8s8_groupwise_cutlass(
    x_int8: torch.Tensor,
    x_scale: torch.Tensor,
    w_int8_unpacked: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None,
    out_dtype: torch.dtype,
    config: str,
) -> torch.Tensor:
    """``(x * x_scale[:, None]) @ (w * w_scale expanded over its groups).T + bias`` on CUTLASS; (M, N) ``out_dtype``.

    ``x_int8`` int8 (M, K); ``x_scale`` float32 (M,); ``w_int8_unpacked`` int8 (N, K); ``w_scale`` float32
    (N, K // group); ``bias`` float32 (N,) or None; ``out_dtype`` float16 or bfloat16; ``config`` a name in
    :data:`GROUPWISE_CONFIGS` that takes the group. The arguments are checked here too (the kernel also runs outside the
    op, on an int8 weight): a few microseconds against a GEMM the dispatch gives only M > 512 rows;
    :func:`supported` must hold.
    """
    _check(x_int8, x_scale, w_int8_unpacked, w_scale, bias, out_dtype, config)
    M, K = x_int8.shape
    N, groups = w_scale.shape
    group = K // groups
    index = tuple(GROUPWISE_CONFIGS).index(config)
    x, w = aligned16(x_int8.contiguous()), aligned16(w_int8_unpacked.contiguous())
    # Bound to names: a temporary's pointer would dangle (its block back in the caching allocator) at the launch.
    x_scale, w_scale = x_scale.contiguous(), w_scale.contiguous()
    bias = None if bias is None else bias.contiguous()
    out = torch.empty((M, N), dtype=out_dtype, device=x.device)
    args = (
        index, OUT_DTYPE_CODE[out_dtype],
        x.data_ptr(), x_scale.data_ptr(), w.data_ptr(), w_scale.data_ptr(),
        None if bias is None else bias.data_ptr(), out.data_ptr(), M, N, K, group,
    )  # fmt: skip
    launch_with_workspace(_launcher(), args, x.device, f"s8s8 groupwise {config}")
    return out


def _check(x, x_scale, w, w_scale, bias, out_dtype, config) -> None:
    if config not in GROUPWISE_CONFIGS:
        raise ValueError(f"config: expected one of {sorted(GROUPWISE_CONFIGS)}, got {config!r}")
    if out_dtype not in OUT_DTYPE_CODE:
        raise ValueError(f"out_dtype: expected torch.float16 or torch.bfloat16, got {out_dtype}")
    if x.dtype != torch.int8 or w.dtype != torch.int8 or x.dim() != 2 or w.dim() != 2:
        raise ValueError(f"x, w: expected 2-D int8, got {tuple(x.shape)} {x.dtype} and {tuple(w.shape)} {w.dtype}")
    (M, K), N = x.shape, w.shape[0]
    if w.shape[1] != K:
        raise ValueError(f"w: expected (N, {K}) (unpacked int8, one byte per value), got {tuple(w.shape)}")
    if x_scale.dtype != torch.float32 or x_scale.shape != (M,):
        raise ValueError(f"x_scale: expected float32 ({M},), got {x_scale.dtype} {tuple(x_scale.shape)}")
    if w_scale.dtype != torch.float32 or w_scale.dim() != 2 or w_scale.shape[0] != N or w_scale.shape[1] < 1:
        raise ValueError(f"w_scale: expected float32 ({N}, K // group), got {w_scale.dtype} {tuple(w_scale.shape)}")
    if K % w_scale.shape[1]:
        raise ValueError(f"w_scale: {w_scale.shape[1]} groups do not divide K = {K}")
    group = K // w_scale.shape[1]
    if group not in GROUPWISE_CONFIGS[config]:
        raise ValueError(f"config {config} takes groups {GROUPWISE_CONFIGS[config]}, not {group}")
    if bias is not None and (bias.dtype != torch.float32 or bias.shape != (N,)):
        raise ValueError(f"bias: expected float32 ({N},) or None, got {bias.dtype} {tuple(bias.shape)}")
    devices = {t.device for t in (x, x_scale, w, w_scale) + (() if bias is None else (bias,))}
    if len(devices) != 1 or next(iter(devices)).type != "cuda":
        raise ValueError(f"expected every tensor on one CUDA device, got {sorted(map(str, devices))}")
