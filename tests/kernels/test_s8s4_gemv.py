"""The dp4a W4A8 GEMV (``lowbit_flex.kernels.s8s4_gemv``) against an exact float64 definition."""

import dataclasses

import pytest
import torch

import lowbit_flex  # noqa: F401  (registers torch.ops.lowbit)
from lowbit_flex.quant import pack_int4
from lowbit_flex.testing import assert_fully_written, kernel_device, poison_
from tests.kernels._w4a8_exact import KernelRunner, random_inputs

DEVICE = kernel_device()
if DEVICE is None:
    pytest.skip("no GPU and TRITON_INTERPRET unset: Triton kernels cannot run", allow_module_level=True)

from lowbit_flex.kernels import s8s4_gemv as mod  # noqa: E402  (imports Triton: after the skip)

CONFIGS = mod.GEMV_CONFIGS
KERNEL = KernelRunner(mod, mod.s8s4_gemv_triton, DEVICE)


# Every config on shapes reaching its branches: ragged N (wrapped rows), M = 1..4 (M = 3: a padded row tile),
# K = 32 and 96 (one-word-group steps), groups 32..256 with steps inside one group and spanning several
# (WORD_SCALES). Under the interpreter the "GPU" has 4 SMs, so auto split-K splits when the tiles are few.
CASES = [
    # name,           M,  N,   K,    group, bias,  out_dtype
    ("dp4a_4x8x2048", 1, 5, 32, None, True, torch.bfloat16),
    ("dp4a_4x8x2048", 3, 37, 4096, 256, False, torch.float16),
    ("dp4a_4x8x2048", 4, 9, 96, 32, True, torch.bfloat16),
    ("dp4a_4x16x1024", 1, 130, 512, 128, True, torch.float16),
    ("dp4a_4x16x1024", 2, 40, 2048, None, True, torch.bfloat16),
    ("dp4a_4x16x1024", 3, 9, 192, 64, False, torch.bfloat16),
    ("dp4a_4x8x2048", 2, 24, 4096, 128, True, torch.float16),
    ("dp4a_4x16x1024", 4, 17, 8192, None, False, torch.float16),
    ("dp4a_4x32x512", 2, 33, 1536, 512, True, torch.bfloat16),
    ("dp4a_4x32x512", 4, 64, 128, None, True, torch.float16),
    # K not a multiple of the step: the last block is partial (masked weight, x and, group-wise, scales).
    ("dp4a_4x16x1024", 1, 9, 1120, None, True, torch.bfloat16),
    ("dp4a_4x16x1024", 2, 20, 1152, 128, False, torch.float16),
    ("dp4a_4x8x2048", 3, 9, 2112, 32, True, torch.bfloat16),
    ("dp4a_4x32x512", 4, 17, 1088, 64, True, torch.bfloat16),
]  # fmt: skip


@pytest.mark.parametrize("name, M, N, K, group, bias, out_dtype", CASES)
def test_every_config(name, M, N, K, group, bias, out_dtype):
    KERNEL.check(M, N, K, group, bias, out_dtype, CONFIGS[name])


@pytest.mark.parametrize("split_k, group", [(1, None), (3, 64), (3, None)])
def test_forced_split(split_k, group):
    # K = 512 in steps of 64: 8 K blocks -> one split, or three splits of 3, 3 and 2 blocks.
    cfg = dataclasses.replace(CONFIGS["dp4a_4x16x1024"], block_k=64, split_k=split_k)
    plan = KERNEL.check(3, 40, 512, group, True, torch.bfloat16, cfg)
    assert plan.splits == split_k


@pytest.mark.parametrize("split_k, group", [(1, None), (3, 32), (2, 128)])
def test_partial_last_block(split_k, group):
    # K = 1152 in 512-value steps: blocks of 512, 512 and 128 (its scale groups past K masked), split or not.
    cfg = dataclasses.replace(CONFIGS["dp4a_4x16x1024"], block_k=512, split_k=split_k)
    plan = KERNEL.check(2, 24, 1152, group, True, torch.bfloat16, cfg)
    assert (plan.block_k, plan.k_blocks, plan.splits) == (512, 3, split_k)
    KERNEL.check_fused_quantization(torch.bfloat16, 1, 24, 1152, group, cfg)


def test_per_channel_k_limit():
    # int32 word sums of 16x the nibbles: exact while 16 * 128 * 8 * K < 2**31.
    assert mod.gemv_supports(1, 2**17 - 32, groupwise=False)
    assert not mod.gemv_supports(1, 2**17, groupwise=False)
    assert mod.gemv_supports(4, 2**17, groupwise=True)
    assert not mod.gemv_supports(mod.GEMV_MAX_M + 1, 4096, groupwise=True)


# --- fused quantization: float x is quantized in the kernel, bit-exact with lowbit::quantize_int8_rowwise -------
FUSED_CASES = [
    # x dtype,       name,             M,  N,   K,    group
    (torch.bfloat16, "dp4a_4x16x1024", 1, 72, 2048, None),
    (torch.float16, "dp4a_4x8x2048", 3, 9, 256, 64),
    (torch.float32, "dp4a_4x16x1024", 4, 20, 96, None),
    (torch.bfloat16, "dp4a_4x32x512", 2, 130, 1024, 128),
    (torch.float16, "dp4a_4x16x1024", 1, 33, 1120, None),  # a partial last block
]  # fmt: skip


@pytest.mark.parametrize("x_dtype, name, M, N, K, group", FUSED_CASES)
def test_fused_quantization(x_dtype, name, M, N, K, group):
    KERNEL.check_fused_quantization(x_dtype, M, N, K, group, CONFIGS[name])


def test_fused_zero_and_nan_rows():
    KERNEL.check_fused_zero_and_nan_rows(256, CONFIGS["dp4a_4x16x1024"])


def test_cached_launch_keys_on_alignment():
    # The first call per plan compiles through Triton; later calls launch the cached kernel directly (on a GPU),
    # keyed by argument dtypes and 16-byte alignment. A misaligned view of x must get its own specialization.
    M, N, K, config = 2, 40, 256, CONFIGS["dp4a_4x16x1024"]
    _, _, q, ws, b = random_inputs(M, N, K, 64, torch.bfloat16)
    xf = torch.randn(M, K, dtype=torch.bfloat16)
    first, _ = KERNEL.run(xf, None, q, ws, b, torch.bfloat16, config)
    again, _ = KERNEL.run(xf, None, q, ws, b, torch.bfloat16, config)
    torch.testing.assert_close(again, first, rtol=0, atol=0)
    shifted = torch.empty(M * K + 1, dtype=torch.bfloat16, device=DEVICE)[1:].view(M, K)  # 2-byte aligned
    shifted.copy_(xf)
    out = poison_(torch.empty((M, N), dtype=torch.bfloat16, device=DEVICE))
    mod.s8s4_gemv_triton(
        shifted, None, pack_int4(q).to(DEVICE), ws.to(DEVICE), b.to(DEVICE), torch.bfloat16, config, out=out
    )
    assert_fully_written(out)
    torch.testing.assert_close(out.cpu(), first, rtol=0, atol=0)
