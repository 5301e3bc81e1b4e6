"""Launcher calls compiled for sm_80 and sm_90 by ``tests/kernels/test_triton_aot.py`` (no GPU needed).

Each ``case_*`` function runs Triton launchers on small CPU tensors covering every constexpr branch (configs, dtypes,
paths) that the GPU can take. Add one per kernel module; ``test_every_kernel_module_has_a_case`` checks that.
"""

import torch


def case_quantize_int8_rowwise():
    from lowbit_flex.kernels.quantize_int8_rowwise import quantize_int8_rowwise_triton

    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        quantize_int8_rowwise_triton(torch.empty(8, 4096, dtype=dtype))  # single pass
    quantize_int8_rowwise_triton(torch.empty(2, 20000, dtype=torch.bfloat16))  # two passes
    quantize_int8_rowwise_triton(torch.empty(64, 64, dtype=torch.bfloat16))  # many rows per program


def case_s8s4_linear():
    from lowbit_flex.kernels.s8s4_linear import TRITON_CONFIGS, s8s4_linear_triton

    M, N, K = 48, 256, 1024
    x, x_scale = torch.empty(M, K, dtype=torch.int8), torch.empty(M)
    w, bias = torch.empty(N, K // 2, dtype=torch.int8), torch.empty(N)
    # Every config once (per channel, bias, bf16); the other constexpr branches once each (compiles cost ~1 s).
    for cfg in TRITON_CONFIGS.values():
        s8s4_linear_triton(x, x_scale, w, torch.empty(N), bias, torch.bfloat16, config=cfg)
    cfg = TRITON_CONFIGS["large_128x128x128"]
    s8s4_linear_triton(x, x_scale, w, torch.empty(N, K // 128), None, torch.float16, config=cfg)
    s8s4_linear_triton(x, x_scale, w, torch.empty(N, K // 128), bias, torch.bfloat16, config=cfg)


def case_float_weight_only_linear():
    from lowbit_flex.kernels.float_weight_only_linear import (
        fp8_native_supported,
        fp8_weight_only_linear_triton,
        fpx_weight_only_linear_triton,
    )
    from lowbit_flex.quant import pack_fpx

    # sm_80 has no e4m3 conversion instruction: the launcher picks the bit-decode path there (see the kernel doc).
    native = torch.cuda.get_device_capability() >= (8, 9)
    assert fp8_native_supported(torch.device("cuda")) == native
    w8, s = torch.empty(128, 256, dtype=torch.float8_e4m3fn), torch.empty(128)
    for m in (1, 200):  # split-K GEMV form, tiled form (M > 64)
        for dtype in (torch.bfloat16, torch.float16):
            x, bias = torch.empty(m, 256, dtype=dtype), torch.empty(128, dtype=dtype)
            fp8_weight_only_linear_triton(x, w8, s, bias, native_fp8=native, split_k=2 if m == 1 else None)
            for bits, e, mb in ((6, 3, 2), (6, 2, 3), (4, 2, 1)):
                wp = pack_fpx(torch.zeros(128, 256, dtype=torch.uint8), bits)
                fpx_weight_only_linear_triton(x, wp, s, e, mb, bias if m > 1 else None, split_k=2 if m == 1 else None)
    fp8_weight_only_linear_triton(torch.empty(40, 256, dtype=torch.bfloat16), w8, s, None, native_fp8=native)
