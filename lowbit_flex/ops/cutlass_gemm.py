"""The CUDA-library kernels as ops: the CUTLASS GEMMs ``lowbit::s8s4_gemm_cutlass``,
``lowbit::s8s4_group_mult_gemm_cutlass`` and ``lowbit::s8s8_groupwise_gemm_cutlass``, the W4A8 decode GEMV
``lowbit::w4a8_gemv_cuda``, the fp8 / fp6 / fp4 weight-only decode GEMV ``lowbit::float_weight_gemv_cuda``, the
fp8 / fp6 / fp4 weight-only WGMMA GEMM ``lowbit::float_weight_gemm_cuda`` and the fp8 weight-only prefill GEMM
``lowbit::fp8_weight_gemm_cutlass``.

``lowbit::s8s4_linear`` is a ``triton_op``: compiled and exported graphs hold its kernels rather than the op. Where
its dispatch table picks a kernel of the CUDA library, the traced graph holds one of these opaque ops instead (the
kernel's tile config is an argument). An AOTInductor package calls them by name at run time, which any process can serve
after loading the C++ registration library (``csrc/torch_ops/cutlass_ops.cpp``, built by
:func:`torch_ops_library`), without importing lowbit_flex.

Registration: first registrant wins. This module (at import) and the C++ library (at load) each define a schema only
where it is absent and register their CUDA kernel only where none is, so either may come first. The Python kernels
call the same launchers through ``ctypes``. The schemas' one home is ``kernels/cutlass_op_schemas.py``: the C++ build
receives them as ``-D`` strings and this module defines the ops from them. Both take the output dtype by name
(``"float16"`` / ``"bfloat16"``; why: ``kernels/cutlass_op_schemas.py``).

Eager ``s8s4_linear`` calls the ``ctypes`` launchers directly (no second dispatcher call per layer); only traced
calls go through these ops.
"""

from __future__ import annotations

from pathlib import Path

import torch

from lowbit_flex._checks import FLOAT_DTYPES, HALF_DTYPES, check_same_device, check_tensor, dtype_from_name
from lowbit_flex.kernels.cutlass_op_schemas import TORCH_OPS_SCHEMAS
from lowbit_flex.ops.s8s4_linear import check_group_mult, reference_int_linear, reference_s8s4_linear

S8S4_GEMM_CUTLASS_SCHEMA = TORCH_OPS_SCHEMAS["LOWBIT_S8S4_GEMM_CUTLASS_SCHEMA"]
S8S4_GROUP_MULT_GEMM_CUTLASS_SCHEMA = TORCH_OPS_SCHEMAS["LOWBIT_S8S4_GROUP_MULT_GEMM_CUTLASS_SCHEMA"]
S8S8_GROUPWISE_GEMM_CUTLASS_SCHEMA = TORCH_OPS_SCHEMAS["LOWBIT_S8S8_GROUPWISE_GEMM_CUTLASS_SCHEMA"]
W4A8_GEMV_CUDA_SCHEMA = TORCH_OPS_SCHEMAS["LOWBIT_W4A8_GEMV_CUDA_SCHEMA"]
FLOAT_WEIGHT_GEMV_CUDA_SCHEMA = TORCH_OPS_SCHEMAS["LOWBIT_FLOAT_WEIGHT_GEMV_CUDA_SCHEMA"]
FLOAT_WEIGHT_GEMM_CUDA_SCHEMA = TORCH_OPS_SCHEMAS["LOWBIT_FLOAT_WEIGHT_GEMM_CUDA_SCHEMA"]
FP8_WEIGHT_GEMM_CUTLASS_SCHEMA = TORCH_OPS_SCHEMAS["LOWBIT_FP8_WEIGHT_GEMM_CUTLASS_SCHEMA"]
# The ops the C++ library registers (what a package's loader without lowbit_flex can serve).
CPP_OPS = [f"lowbit::{schema.split('(', 1)[0]}" for schema in TORCH_OPS_SCHEMAS.values()]

_LIB = torch.library.Library("lowbit", "FRAGMENT")  # a fragment: the C++ library may define these ops first


def _check(x, x_scale, w, w_scale, bias, out_dtype, *, packed: bool, groupwise: bool) -> torch.dtype:
    """The checks both ops share (the C++ kernels make the same ones); returns the dtype ``out_dtype`` names.
    ``packed``: ``w`` holds two int4 per byte; ``groupwise``: ``w_scale`` is ``(N, K // group)``, else ``(N,)``."""
    check_tensor("x", x, dtypes=(torch.int8,), ndim=2)
    check_tensor("x_scale", x_scale, dtypes=(torch.float32,), ndim=1)
    check_tensor("w", w, dtypes=(torch.int8,), ndim=2)
    check_tensor("w_scale", w_scale, dtypes=(torch.float32,), ndim=2 if groupwise else 1)
    if bias is not None:
        check_tensor("bias", bias, dtypes=(torch.float32,), ndim=1)
    dtype = dtype_from_name("out_dtype", out_dtype, HALF_DTYPES)
    (M, K), N = x.shape, w_scale.shape[0]
    if K < 32 or K % 32:
        raise ValueError(f"x: expected K = x.shape[1] a positive multiple of 32, got {K}")
    if x_scale.shape[0] != M:
        raise ValueError(f"x_scale: expected shape ({M},), got {tuple(x_scale.shape)}")
    if N < 8 or N % 8:
        raise ValueError(f"w_scale: expected N = w_scale.shape[0] a positive multiple of 8, got {N}")
    width, what = (K // 2, "two int4 per byte") if packed else (K, "int8, one value per byte")
    if tuple(w.shape) != (N, width):
        raise ValueError(f"w: expected shape ({N}, {width}) ({what}), got {tuple(w.shape)}")
    if groupwise and (w_scale.shape[1] < 1 or K % w_scale.shape[1]):
        shape = tuple(w_scale.shape)
        raise ValueError(f"w_scale: expected (N, K // group) with the group dividing K = {K}, got {shape}")
    if bias is not None and bias.shape[0] != N:
        raise ValueError(f"bias: expected shape ({N},), got {tuple(bias.shape)}")
    check_same_device(x=x, x_scale=x_scale, w=w, w_scale=w_scale, bias=bias)
    return dtype


def _check_s8s4(x, x_scale, w, w_scale, bias, out_dtype, family, config) -> torch.dtype:
    from lowbit_flex.kernels.s8s4_cutlass import CUTLASS_CONFIGS

    dtype = _check(x, x_scale, w, w_scale, bias, out_dtype, packed=True, groupwise=False)
    if family not in CUTLASS_CONFIGS:
        raise ValueError(f"family: expected one of {sorted(CUTLASS_CONFIGS)}, got {family!r}")
    if config not in CUTLASS_CONFIGS[family]:
        raise ValueError(f"config: expected one of {list(CUTLASS_CONFIGS[family])} for family {family}, got {config!r}")
    return dtype


def _check_s8s4_group_mult(x, x_scale, w, w_channel_scale, w_group_mult, bias, out_dtype, config) -> torch.dtype:
    from lowbit_flex.kernels.s8s4_cutlass import GROUP_MULT_CONFIGS, GROUP_MULT_TILE_K, MAX_K_MULT

    dtype = _check(x, x_scale, w, w_channel_scale, bias, out_dtype, packed=True, groupwise=False)
    K = x.shape[1]
    check_group_mult("w_group_mult", w_group_mult, K, w_channel_scale.shape[0])
    group = K // w_group_mult.shape[0]
    if group % GROUP_MULT_TILE_K:
        raise ValueError(
            f"w_group_mult: expected the group a multiple of {GROUP_MULT_TILE_K} (whole K tiles), got {group}"
        )
    check_same_device(x=x, w_group_mult=w_group_mult)
    if w_channel_scale.shape[0] % 16:
        raise ValueError(f"w_channel_scale: expected N a multiple of 16, got {w_channel_scale.shape[0]}")
    if K > MAX_K_MULT:
        raise ValueError(f"x: expected K <= {MAX_K_MULT} (an exact int32 sum), got {K}")
    if config not in GROUP_MULT_CONFIGS:
        raise ValueError(f"config: expected one of {list(GROUP_MULT_CONFIGS)}, got {config!r}")
    return dtype


def _s8s4_group_mult_cpu(x, x_scale, w, w_channel_scale, w_group_mult, bias, out_dtype, config):
    dtype = _check_s8s4_group_mult(x, x_scale, w, w_channel_scale, w_group_mult, bias, out_dtype, config)
    ws = w_channel_scale.double()[:, None] * w_group_mult.t().double()  # the group scales, exact in float64
    return reference_s8s4_linear(x, x_scale, w, ws, bias, dtype)


def _s8s4_group_mult_fake(x, x_scale, w, w_channel_scale, w_group_mult, bias, out_dtype, config):
    dtype = _check_s8s4_group_mult(x, x_scale, w, w_channel_scale, w_group_mult, bias, out_dtype, config)
    return _empty_out(x, w_channel_scale, dtype)


def _s8s4_group_mult_cuda(x, x_scale, w, w_channel_scale, w_group_mult, bias, out_dtype, config):
    dtype = _check_s8s4_group_mult(x, x_scale, w, w_channel_scale, w_group_mult, bias, out_dtype, config)
    from lowbit_flex.kernels.s8s4_cutlass import group_mult_supported, s8s4_group_mult_cutlass

    (M, K), N = x.shape, w.shape[0]
    if not group_mult_supported(max(M, 1), N, K, K // w_group_mult.shape[0]):
        raise ValueError(f"config: the group-multiplier kernel cannot run (M={M}, N={N}, K={K}) on this GPU")
    if M == 0:
        return _empty_out(x, w_channel_scale, dtype)
    x, x_scale, w, m = x.contiguous(), x_scale.contiguous(), w.contiguous(), w_group_mult.contiguous()
    b = None if bias is None else bias.contiguous()
    return s8s4_group_mult_cutlass(x, x_scale, w, w_channel_scale.contiguous(), m, b, dtype, config)


def _check_s8s8_groupwise(x, x_scale, w, w_scale, bias, out_dtype, config) -> torch.dtype:
    from lowbit_flex.kernels.s8s8_groupwise_cutlass import GROUPWISE_CONFIGS

    dtype = _check(x, x_scale, w, w_scale, bias, out_dtype, packed=False, groupwise=True)
    if config not in GROUPWISE_CONFIGS:
        raise ValueError(f"config: expected one of {list(GROUPWISE_CONFIGS)}, got {config!r}")
    group = x.shape[1] // w_scale.shape[1]
    if group not in GROUPWISE_CONFIGS[config]:
        raise ValueError(f"w_scale: config {config} takes groups {GROUPWISE_CONFIGS[config]}, not {group}")
    return dtype


def _empty_out(x: torch.Tensor, w_scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return x.new_empty((x.shape[0], w_scale.shape[0]), dtype=dtype)


def _s8s4_cpu(x, x_scale, w, w_scale, bias, out_dtype, family, config):
    dtype = _check_s8s4(x, x_scale, w, w_scale, bias, out_dtype, family, config)
    return reference_s8s4_linear(x, x_scale, w, w_scale, bias, dtype)


def _s8s4_fake(x, x_scale, w, w_scale, bias, out_dtype, family, config):
    return _empty_out(x, w_scale, _check_s8s4(x, x_scale, w, w_scale, bias, out_dtype, family, config))


def _s8s4_cuda(x, x_scale, w, w_scale, bias, out_dtype, family, config):
    dtype = _check_s8s4(x, x_scale, w, w_scale, bias, out_dtype, family, config)
    from lowbit_flex.kernels.s8s4_cutlass import cutlass_s8s4_supported, s8s4_linear_cutlass

    (M, K), N = x.shape, w.shape[0]
    if not cutlass_s8s4_supported(family, max(M, 1), N, K):
        raise ValueError(f"family: the {family} kernels cannot run (M={M}, N={N}, K={K}) on this GPU")
    if M == 0:
        return _empty_out(x, w_scale, dtype)
    x, x_scale, w = x.contiguous(), x_scale.contiguous(), w.contiguous()
    b = None if bias is None else bias.contiguous()
    return s8s4_linear_cutlass(x, x_scale, w, w_scale, b, dtype, family, config)


def _s8s8_groupwise_cpu(x, x_scale, w, w_scale, bias, out_dtype, config):
    dtype = _check_s8s8_groupwise(x, x_scale, w, w_scale, bias, out_dtype, config)
    return reference_int_linear(x, x_scale, w, w_scale, bias, dtype)


def _s8s8_groupwise_fake(x, x_scale, w, w_scale, bias, out_dtype, config):
    return _empty_out(x, w_scale, _check_s8s8_groupwise(x, x_scale, w, w_scale, bias, out_dtype, config))


def _s8s8_groupwise_cuda(x, x_scale, w, w_scale, bias, out_dtype, config):
    dtype = _check_s8s8_groupwise(x, x_scale, w, w_scale, bias, out_dtype, config)
    from lowbit_flex.kernels.s8s8_groupwise_cutlass import s8s8_groupwise_cutlass, supported

    (M, K), N = x.shape, w.shape[0]
    if not supported(max(M, 1), N, K, K // w_scale.shape[1]):
        raise ValueError(f"config: the group-wise kernel cannot run (M={M}, N={N}, K={K}) on this GPU")
    if M == 0:
        return _empty_out(x, w_scale, dtype)
    return s8s8_groupwise_cutlass(x, x_scale, w, w_scale, bias, dtype, config)


def _check_w4a8_gemv(x, x_scale, w, w_scale, bias, out_dtype, config) -> torch.dtype:
    """The checks of ``lowbit::w4a8_gemv_cuda`` (the C++ kernel makes the same ones); returns the output dtype."""
    from lowbit_flex.kernels import w4a8_gemv_cuda as gemv
    from lowbit_flex.kernels.s8s4_dispatch import group_of

    check_tensor("x", x, dtypes=(torch.int8, *FLOAT_DTYPES), ndim=2)
    check_tensor("w", w, dtypes=(torch.int8,), ndim=2)
    check_tensor("w_scale", w_scale, dtypes=(torch.float32,), min_ndim=1)
    if w_scale.dim() > 2:
        raise ValueError(f"w_scale: expected (N,) or (N, K // group), got shape {tuple(w_scale.shape)}")
    if bias is not None:
        check_tensor("bias", bias, dtypes=(torch.float32,), ndim=1)
    dtype = dtype_from_name("out_dtype", out_dtype, HALF_DTYPES)
    (M, K), N = x.shape, w_scale.shape[0]
    if x.dtype == torch.int8:
        if x_scale is None:
            raise ValueError("x_scale: expected float32 (M,) scales for an int8 x, got None")
        check_tensor("x_scale", x_scale, dtypes=(torch.float32,), ndim=1)
        if x_scale.shape[0] != M:
            raise ValueError(f"x_scale: expected shape ({M},), got {tuple(x_scale.shape)}")
    elif x_scale is not None:
        raise ValueError(f"x_scale: expected None for a {x.dtype} x (quantized in the kernel)")
    elif not gemv.fuses_quantization(M, K):
        raise ValueError(f"x: a float x is quantized in the kernel up to M = 8 and M * K = 65536, got ({M}, {K})")
    if w_scale.dim() == 2 and (w_scale.shape[1] < 1 or K % w_scale.shape[1]):
        raise ValueError(f"w_scale: expected (N,) or (N, K // group) with the group dividing K = {K}, got "
                         f"{tuple(w_scale.shape)}")  # fmt: skip
    group = group_of(w_scale, K)
    if M > gemv.MAX_M or not gemv.gemv_cuda_supports(max(M, 1), K, group):
        raise ValueError(
            f"x: the GEMV takes M <= {gemv.MAX_M} rows, K a multiple of {gemv.CHUNK_K} (per channel below 2**17) "
            f"and groups a multiple of {gemv.CHUNK_K}; got M={M}, K={K}, group={group}"
        )
    if N < 1:
        raise ValueError(f"w_scale: expected N = w_scale.shape[0] >= 1, got {N}")
    if tuple(w.shape) != (N, K // 2):
        raise ValueError(f"w: expected shape ({N}, {K // 2}) (two int4 per byte), got {tuple(w.shape)}")
    if bias is not None and bias.shape[0] != N:
        raise ValueError(f"bias: expected shape ({N},), got {tuple(bias.shape)}")
    if config not in gemv.GEMV_CUDA_CONFIGS:
        raise ValueError(f"config: expected one of {list(gemv.GEMV_CUDA_CONFIGS)}, got {config!r}")
    check_same_device(x=x, x_scale=x_scale, w=w, w_scale=w_scale, bias=bias)
    return dtype


def _w4a8_gemv_cpu(x, x_scale, w, w_scale, bias, out_dtype, config):
    dtype = _check_w4a8_gemv(x, x_scale, w, w_scale, bias, out_dtype, config)
    if x_scale is None:  # the quantizer's exact CPU reference
        x, x_scale = torch.ops.lowbit.quantize_int8_rowwise(x)
    return reference_s8s4_linear(x, x_scale.reshape(-1), w, w_scale, bias, dtype)


def _w4a8_gemv_fake(x, x_scale, w, w_scale, bias, out_dtype, config):
    return x.new_empty((x.shape[0], w_scale.shape[0]), dtype=_check_w4a8_gemv(x, x_scale, w, w_scale, bias,
                                                                               out_dtype, config))  # fmt: skip


def _w4a8_gemv_cuda(x, x_scale, w, w_scale, bias, out_dtype, config):
    dtype = _check_w4a8_gemv(x, x_scale, w, w_scale, bias, out_dtype, config)
    from lowbit_flex.kernels.w4a8_gemv_cuda import launch_gemv_cuda

    if x.shape[0] == 0:
        return x.new_empty((0, w_scale.shape[0]), dtype=dtype)
    x, w, w_scale = x.contiguous(), w.contiguous(), w_scale.contiguous()
    xs = None if x_scale is None else x_scale.contiguous()
    b = None if bias is None else bias.contiguous()
    return launch_gemv_cuda(x, xs, w, w_scale, b, dtype, config)


def _check_weight_only(x, w, w_scale, bias, ebits, mbits) -> None:
    """The weight-only ops' checks (``lowbit::fp8_weight_only_linear`` / ``lowbit::fpx_weight_only_linear``) on a 2-D
    x, which the CUDA library's weight-only kernels share."""
    from lowbit_flex.ops.fp8_weight_only_linear import check_args as check_fp8
    from lowbit_flex.ops.fpx_weight_only_linear import check_args as check_fpx

    check_tensor("x", x, dtypes=HALF_DTYPES, ndim=2)
    if (ebits, mbits) == (4, 3):
        check_fp8(x, w, w_scale, bias, w_name="w")
    else:
        check_fpx(x, w, w_scale, ebits, mbits, bias, w_name="w")


def _weight_only_reference(x, w, w_scale, bias, ebits, mbits):
    """The weight-only ops' exact CPU reference (float64, rounded once): the CPU kernel of the CUDA library's
    weight-only ops."""
    if (ebits, mbits) == (4, 3):
        return torch.ops.lowbit.fp8_weight_only_linear(x, w, w_scale, bias)
    return torch.ops.lowbit.fpx_weight_only_linear(x, w, w_scale, ebits, mbits, bias)


def _check_float_weight_gemv(x, w, w_scale, bias, ebits, mbits, config) -> None:
    """The checks of ``lowbit::float_weight_gemv_cuda`` (the C++ op makes the same ones): the weight-only op's
    (``lowbit::fp8_weight_only_linear`` / ``lowbit::fpx_weight_only_linear``), then the GEMV's shape limits."""
    from lowbit_flex.kernels import float_weight_gemv_cuda as gemv

    _check_weight_only(x, w, w_scale, bias, ebits, mbits)
    (M, K), bits = x.shape, 1 + ebits + mbits
    if M > gemv.MAX_M or not gemv.gemv_cuda_supports(max(M, 1), K, bits):
        raise ValueError(
            f"x: the GEMV takes M <= {gemv.MAX_M} rows and K a multiple of {16 if bits == 8 else 8}; got M={M}, K={K}"
        )
    if config not in gemv.GEMV_CUDA_CONFIGS:
        raise ValueError(f"config: expected one of {list(gemv.GEMV_CUDA_CONFIGS)}, got {config!r}")


def _float_weight_gemv_cpu(x, w, w_scale, bias, ebits, mbits, config):
    _check_float_weight_gemv(x, w, w_scale, bias, ebits, mbits, config)
    return _weight_only_reference(x, w, w_scale, bias, ebits, mbits)


def _float_weight_gemv_fake(x, w, w_scale, bias, ebits, mbits, config):
    _check_float_weight_gemv(x, w, w_scale, bias, ebits, mbits, config)
    return x.new_empty((x.shape[0], w.shape[0]))


def _float_weight_gemv_cuda(x, w, w_scale, bias, ebits, mbits, config):
    _check_float_weight_gemv(x, w, w_scale, bias, ebits, mbits, config)
    from lowbit_flex.kernels.float_weight_gemv_cuda import launch_gemv_cuda

    if x.shape[0] == 0:
        return x.new_empty((0, w.shape[0]))
    b = None if bias is None else bias.contiguous()
    return launch_gemv_cuda(x.contiguous(), w.contiguous(), w_scale.contiguous(), b, ebits, mbits, config)


def _check_float_weight_gemm(x, w, w_scale, bias, ebits, mbits, config) -> None:
    """The checks of ``lowbit::float_weight_gemm_cuda`` (the C++ op makes the same ones): the weight-only ops',
    then the GEMM's shape limits."""
    from lowbit_flex.kernels import float_weight_gemm_cuda as gemm

    _check_weight_only(x, w, w_scale, bias, ebits, mbits)
    K, bits = x.shape[1], 1 + ebits + mbits
    if not gemm.gemm_cuda_supports(1, K, bits):
        raise ValueError(f"x: the GEMM takes K a multiple of {16 if bits == 8 else 8} (at least 8); got K={K}")
    # the launcher's int arguments; no max(): under export, comparing a symbolic M with N and K would guard M's range
    if x.shape[0] > 2**31 - 1 or w.shape[0] > 2**31 - 1 or K > 2**31 - 1:
        raise ValueError(f"x: shape too large, got {tuple(x.shape)}")
    if config not in gemm.GEMM_CUDA_CONFIGS:
        raise ValueError(f"config: expected one of {list(gemm.GEMM_CUDA_CONFIGS)}, got {config!r}")


def _float_weight_gemm_cpu(x, w, w_scale, bias, ebits, mbits, config):
    _check_float_weight_gemm(x, w, w_scale, bias, ebits, mbits, config)
    return _weight_only_reference(x, w, w_scale, bias, ebits, mbits)


def _float_weight_gemm_fake(x, w, w_scale, bias, ebits, mbits, config):
    _check_float_weight_gemm(x, w, w_scale, bias, ebits, mbits, config)
    return x.new_empty((x.shape[0], w.shape[0]))


def _float_weight_gemm_cuda(x, w, w_scale, bias, ebits, mbits, config):
    _check_float_weight_gemm(x, w, w_scale, bias, ebits, mbits, config)
    from lowbit_flex.kernels.float_weight_gemm_cuda import launch_gemm_cuda

    b = None if bias is None else bias.contiguous()
    return launch_gemm_cuda(x.contiguous(), w.contiguous(), w_scale.contiguous(), b, ebits, mbits, config)


def _check_fp8_weight_gemm(x, w, w_scale, bias, config) -> None:
    """The checks of ``lowbit::fp8_weight_gemm_cutlass`` (the C++ op makes the same ones): the fp8 weight-only op's
    (``lowbit::fp8_weight_only_linear``), then the GEMM's shape limits."""
    from lowbit_flex.kernels import fp8_weight_gemm_cutlass as gemm
    from lowbit_flex.ops.fp8_weight_only_linear import check_args

    check_tensor("x", x, dtypes=HALF_DTYPES, ndim=2)
    check_args(x, w, w_scale, bias, w_name="w")
    N, K = w.shape
    if not gemm.fp8_weight_gemm_supports(N, K):
        raise ValueError(f"w: the GEMM takes N a multiple of 8 and K a multiple of 16; got N={N}, K={K}")
    # the launcher's int arguments; no max(): under export, comparing a symbolic M with N and K would guard M's range
    if x.shape[0] > 2**31 - 1 or N > 2**31 - 1 or K > 2**31 - 1:
        raise ValueError(f"x: shape too large, got {tuple(x.shape)}")
    if config not in gemm.CONFIGS:
        raise ValueError(f"config: expected one of {list(gemm.CONFIGS)}, got {config!r}")


def _fp8_weight_gemm_cpu(x, w, w_scale, bias, config):
    """The fp8 weight-only op's exact CPU reference (float64, rounded once)."""
    _check_fp8_weight_gemm(x, w, w_scale, bias, config)
    return torch.ops.lowbit.fp8_weight_only_linear(x, w, w_scale, bias)


def _fp8_weight_gemm_fake(x, w, w_scale, bias, config):
    _check_fp8_weight_gemm(x, w, w_scale, bias, config)
    return x.new_empty((x.shape[0], w.shape[0]))


def _fp8_weight_gemm_cuda(x, w, w_scale, bias, config):
    _check_fp8_weight_gemm(x, w, w_scale, bias, config)
    from lowbit_flex.kernels.fp8_weight_gemm_cutlass import launch_fp8_weight_gemm

    b = None if bias is None else bias.contiguous()
    return launch_fp8_weight_gemm(x.contiguous(), w.contiguous(), w_scale.contiguous(), b, config)


def _register(schema: str, cpu, fake, cuda) -> None:
    name = schema.split("(", 1)[0]
    qualname = f"lowbit::{name}"
    if not _defined(qualname):
        _LIB.define(schema, tags=(torch.Tag.pt2_compliant_tag,))
    _LIB.impl(name, cpu, "CPU")
    torch.library.register_fake(qualname, fake, lib=_LIB)
    if not torch._C._dispatch_has_kernel_for_dispatch_key(qualname, "CUDA"):  # the C++ library's, if loaded first
        _LIB.impl(name, cuda, "CUDA")


def _defined(qualname: str) -> bool:
    try:
        torch._C._dispatch_find_schema_or_throw(qualname, "")
    except RuntimeError:
        return False
    return True


_register(S8S4_GEMM_CUTLASS_SCHEMA, _s8s4_cpu, _s8s4_fake, _s8s4_cuda)
_register(S8S4_GROUP_MULT_GEMM_CUTLASS_SCHEMA, _s8s4_group_mult_cpu, _s8s4_group_mult_fake, _s8s4_group_mult_cuda)
_register(S8S8_GROUPWISE_GEMM_CUTLASS_SCHEMA, _s8s8_groupwise_cpu, _s8s8_groupwise_fake, _s8s8_groupwise_cuda)
_register(W4A8_GEMV_CUDA_SCHEMA, _w4a8_gemv_cpu, _w4a8_gemv_fake, _w4a8_gemv_cuda)
_register(FLOAT_WEIGHT_GEMV_CUDA_SCHEMA, _float_weight_gemv_cpu, _float_weight_gemv_fake, _float_weight_gemv_cuda)
_register(FLOAT_WEIGHT_GEMM_CUDA_SCHEMA, _float_weight_gemm_cpu, _float_weight_gemm_fake, _float_weight_gemm_cuda)
_register(FP8_WEIGHT_GEMM_CUTLASS_SCHEMA, _fp8_weight_gemm_cpu, _fp8_weight_gemm_fake, _fp8_weight_gemm_cuda)


def torch_ops_library(arch: str | None = None) -> Path:
    """The C++ registration library of these ops for ``arch`` (``"sm_80"`` / ``"sm_90a"``; default: the current
    GPU's), built on first use with the CUDA library it links. Load it with ``torch.ops.load_library`` in a process
    that runs an AOTInductor package without lowbit_flex (``docs/deploy.md``)."""
    from lowbit_flex import cuda_build

    if arch is None:
        if not torch.cuda.is_available():
            raise cuda_build.CudaBuildError("no CUDA GPU here: pass arch ('sm_80' or 'sm_90a')")
        arch = cuda_build.arch_for_capability(*torch.cuda.get_device_capability())
    return cuda_build.build_torch_ops(arch)
