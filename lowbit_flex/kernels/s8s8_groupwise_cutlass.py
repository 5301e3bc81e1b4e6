"""CUTLASS int8 × int8 GEMM with group-wise weight scales on Hopper (the large-M group-wise W4A8 path).

``ctypes`` wrapper over the launcher in ``lowbit_flex/csrc/s8s8_groupwise/`` (built by :mod:`lowbit_flex.cuda_build`):
a cooperative warp-specialized CUTLASS 3.x kernel (TMA producer warp, two consumer warp groups) whose mainloop
runs each scale group's int8 WGMMAs into an int32 register accumulator and promotes it, ``acc += float(dot) *
w_scale[n, g]``, into an fp32 accumulator while the other warp group's WGMMAs run (the ``_pp`` configs keep two
int32 accumulators, so a warp group's next WGMMAs also overlap its own promotion). The epilogue applies
``x_scale``, adds ``bias`` and rounds once:

``out[m, n] = out_dtype((sum_g float(dot_g[m, n]) * w_scale[n, g]) * x_scale[m] + bias[n])``

:func:`s8s8_group_mult_cutlass` runs the same mainloop with integer group multipliers instead of float scales (the
``_int`` configs): the promotion is one integer multiply-add per accumulator element and group, into an int32 sum,
and the epilogue applies a per-channel float scale:

``out[m, n] = out_dtype(float(sum_g dot_g[m, n] * w_mult[n, g]) * x_scale[m] * w_channel_scale[n] + bias[n])``

(the weight format of :func:`lowbit_flex.quant.quantize_int4_weight_group_mult`).

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
# Integer group multipliers (GroupwiseMainloop's IntegerScales): one IMAD per accumulator element and group instead
# of the float promotion's three instructions. Unmeasured: forced only.
GROUP_MULT_CONFIGS: dict[str, tuple[int, ...]] = {
    "128x128x128_g128_pp_int": (128, 256),
    "128x192x128_g128_int": (128, 256),
}
# The launcher's config indices: the float configs, then the integer ones (the header's order).
_LIBRARY_CONFIGS = (*GROUPWISE_CONFIGS, *GROUP_MULT_CONFIGS)
# The promotion converts an int32 group dot to float exactly while |dot| <= 2**22, i.e. for any int8 x int8 up to
# group 256 (128 * 128 * 256).
GROUPS = (32, 64, 128, 256)
_INT32_MAX = 2**31 - 1
# The integer sum of K products |x * w * mult| <= 128 * 8 * 128 = 2**17 stays inside int32 for K < 2**14 (the W4A8
# weight after unpacking, int8 multipliers).
GROUP_MULT_MAX_K = 2**14 - 32


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


def group_mult_supported(M: int, N: int, K: int, group: int) -> bool:
    """:func:`supported` for the integer-multiplier configs: also ``K <= GROUP_MULT_MAX_K`` (an exact int32 sum)
    and a group those configs take (multiples of 128)."""
    return supported(M, N, K, group) and K <= GROUP_MULT_MAX_K and group % 128 == 0


@functools.cache
def _launcher() -> ctypes._CFuncPtr:
    fn = cuda_build.load().lowbit_s8s8_groupwise_sm90
    ptr, i32 = ctypes.c_void_p, ctypes.c_int
    # (config, out_dtype, x, x_scale, w, w_scale, w_channel_scale, bias, out, M, N, K, group, workspace,
    #  workspace_bytes, query, stream)
    fn.argtypes = [i32, i32, ptr, ptr, ptr, ptr, ptr, ptr, ptr, i32, i32, i32, i32, ptr, ctypes.c_size_t]
    fn.argtypes += [ctypes.POINTER(ctypes.c_size_t), ptr]
    fn.restype = ctypes.c_int
    return fn


def library_config_names() -> tuple[str, ...]:
    """The config names compiled into the loaded library (for the consistency test against the float configs,
    then GROUP_MULT_CONFIGS)."""
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
    _check(x_int8, x_scale, w_int8_unpacked, w_scale, bias, out_dtype, config, GROUPWISE_CONFIGS)
    if w_scale.dtype != torch.float32:
        raise ValueError(f"w_scale: expected float32, got {w_scale.dtype}")
    _check_devices(x_int8, x_scale, w_int8_unpacked, w_scale, bias)
    return _launch(x_int8, x_scale, w_int8_unpacked, w_scale, None, bias, out_dtype, config)


def s8s8_group_mult_cutlass(
    x_int8: torch.Tensor,
    x_scale: torch.Tensor,
    w_int8_unpacked: torch.Tensor,
    w_mult: torch.Tensor,
    w_channel_scale: torch.Tensor,
    bias: torch.Tensor | None,
    out_dtype: torch.dtype,
    config: str,
) -> torch.Tensor:
    """``(x * x_scale[:, None]) @ (w * w_mult expanded over its groups * w_channel_scale[:, None]).T + bias`` on
    CUTLASS, the group sums multiplied and added in int32; (M, N) ``out_dtype``.

    ``w_mult`` int8 or int32 (N, K // group) integer multipliers with ``|w_mult| <= 128``; ``w_channel_scale``
    float32 (N,); ``K <= GROUP_MULT_MAX_K``; ``config`` a name in :data:`GROUP_MULT_CONFIGS`; the rest as for
    :func:`s8s8_groupwise_cutlass`. :func:`group_mult_supported` must hold.
    """
    _check(x_int8, x_scale, w_int8_unpacked, w_mult, bias, out_dtype, config, GROUP_MULT_CONFIGS)
    N, K = w_int8_unpacked.shape
    if w_mult.dtype not in (torch.int8, torch.int32):
        raise ValueError(f"w_mult: expected int8 or int32 multipliers, got {w_mult.dtype}")
    if K > GROUP_MULT_MAX_K:
        raise ValueError(f"x: K = {K} exceeds {GROUP_MULT_MAX_K}, beyond which the int32 sum could overflow")
    if w_channel_scale.dtype != torch.float32 or w_channel_scale.shape != (N,):
        got = f"{w_channel_scale.dtype} {tuple(w_channel_scale.shape)}"
        raise ValueError(f"w_channel_scale: expected float32 ({N},), got {got}")
    _check_devices(x_int8, x_scale, w_int8_unpacked, w_mult, w_channel_scale, bias)
    # The kernel reads 4-byte multipliers (its scale loads are 4-byte cp.async copies).
    return _launch(x_int8, x_scale, w_int8_unpacked, w_mult.to(torch.int32), w_channel_scale, bias, out_dtype, config)


def _launch(x_int8, x_scale, w_int8, w_scale, w_channel_scale, bias, out_dtype, config) -> torch.Tensor:
    M, K = x_int8.shape
    N, groups = w_scale.shape
    x, w = aligned16(x_int8.contiguous()), aligned16(w_int8.contiguous())
    # Bound to names: a temporary's pointer would dangle (its block back in the caching allocator) at the launch.
    x_scale, w_scale = x_scale.contiguous(), w_scale.contiguous()
    channel = None if w_channel_scale is None else w_channel_scale.contiguous()
    bias = None if bias is None else bias.contiguous()
    out = torch.empty((M, N), dtype=out_dtype, device=x.device)
    args = (
        _LIBRARY_CONFIGS.index(config), OUT_DTYPE_CODE[out_dtype],
        x.data_ptr(), x_scale.data_ptr(), w.data_ptr(), w_scale.data_ptr(),
        None if channel is None else channel.data_ptr(), None if bias is None else bias.data_ptr(), out.data_ptr(),
        M, N, K, K // groups,
    )  # fmt: skip
    launch_with_workspace(_launcher(), args, x.device, f"s8s8 groupwise {config}")
    return out


def _check(x, x_scale, w, w_scale, bias, out_dtype, config, configs) -> None:
    """The checks both wrappers share; ``w_scale``'s dtype and the devices are the caller's to check (float scales
    or integer multipliers, then every tensor)."""
    if config not in configs:
        raise ValueError(f"config: expected one of {sorted(configs)}, got {config!r}")
    if out_dtype not in OUT_DTYPE_CODE:
        raise ValueError(f"out_dtype: expected torch.float16 or torch.bfloat16, got {out_dtype}")
    if x.dtype != torch.int8 or w.dtype != torch.int8 or x.dim() != 2 or w.dim() != 2:
        raise ValueError(f"x, w: expected 2-D int8, got {tuple(x.shape)} {x.dtype} and {tuple(w.shape)} {w.dtype}")
    (M, K), N = x.shape, w.shape[0]
    if w.shape[1] != K:
        raise ValueError(f"w: expected (N, {K}) (unpacked int8, one byte per value), got {tuple(w.shape)}")
    if x_scale.dtype != torch.float32 or x_scale.shape != (M,):
        raise ValueError(f"x_scale: expected float32 ({M},), got {x_scale.dtype} {tuple(x_scale.shape)}")
    if w_scale.dim() != 2 or w_scale.shape[0] != N or w_scale.shape[1] < 1:
        raise ValueError(f"w_scale: expected ({N}, K // group), got {w_scale.dtype} {tuple(w_scale.shape)}")
    if K % w_scale.shape[1]:
        raise ValueError(f"w_scale: {w_scale.shape[1]} groups do not divide K = {K}")
    group = K // w_scale.shape[1]
    if group not in configs[config]:
        raise ValueError(f"config {config} takes groups {configs[config]}, not {group}")
    if bias is not None and (bias.dtype != torch.float32 or bias.shape != (N,)):
        raise ValueError(f"bias: expected float32 ({N},) or None, got {bias.dtype} {tuple(bias.shape)}")


def _check_devices(*tensors: torch.Tensor | None) -> None:
    devices = {t.device for t in tensors if t is not None}
    if len(devices) != 1 or next(iter(devices)).type != "cuda":
        raise ValueError(f"expected every tensor on one CUDA device, got {sorted(map(str, devices))}")
