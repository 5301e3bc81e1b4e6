"""The decode-sized W4A8 GEMV (``lowbit_flex.kernels.s8s4_decode``) against an exact float64 definition."""

import dataclasses

import pytest
import torch

import lowbit_flex  # noqa: F401  (registers torch.ops.lowbit)
from lowbit_flex.testing import kernel_device
from tests.kernels._w4a8_exact import KernelRunner

DEVICE = kernel_device()
if DEVICE is None:
    pytest.skip("no GPU and TRITON_INTERPRET unset: Triton kernels cannot run", allow_module_level=True)

from lowbit_flex.kernels import s8s4_decode as mod  # noqa: E402  (imports Triton: after the skip)

CONFIGS = mod.DECODE_CONFIGS
KERNEL = KernelRunner(mod, mod.s8s4_decode_triton, DEVICE)


def _cfg(name, **change):
    return dataclasses.replace(CONFIGS[name], **change)


# Every config on shapes that reach its branches: ragged N, odd M, K = 96 (BLOCK_K = 32: the MMA form interleaves
# the nibble planes), groups 32..256, one K block (no split). Under the interpreter the
# "GPU" has 4 SMs, so auto split-K splits whenever K has more than one block.
CASES = [
    # name,          M,  N,   K,   group, bias,  out_dtype,      expect_split
    ("dot_16x64x256", 1, 5, 32, None, True, torch.bfloat16, False),
    ("dot_16x128x256", 1, 130, 512, 128, False, torch.float16, True),
    ("dot_16x64x256", 3, 9, 256, 32, True, torch.bfloat16, True),
    ("dot_16x128x256", 2, 72, 96, None, False, torch.float16, True),
    ("dot_16x128x256", 16, 9, 64, None, True, torch.float16, False),
    ("dot_16x64x256", 7, 72, 256, None, True, torch.bfloat16, False),
    ("dot_16x64x256", 16, 130, 512, 256, True, torch.float16, True),
    ("dot_16x64x256", 2, 5, 96, None, False, torch.bfloat16, True),
    ("dot_16x64x256", 16, 9, 64, 32, True, torch.bfloat16, True),
    ("dot_16x128x256", 1, 72, 512, 128, False, torch.bfloat16, True),
    ("dot_16x128x256", 7, 130, 256, None, True, torch.float16, False),
    ("dot_16x128x256", 3, 9, 96, 32, True, torch.float16, True),
]  # fmt: skip


@pytest.mark.parametrize("name, M, N, K, group, bias, out_dtype, expect_split", CASES)
def test_every_config(name, M, N, K, group, bias, out_dtype, expect_split):
    plan = KERNEL.check(M, N, K, group, bias, out_dtype, CONFIGS[name])
    assert (plan.splits > 1) == expect_split


@pytest.mark.parametrize("name", ["dot_16x128x256", "dot_16x64x256"])
@pytest.mark.parametrize("split_k", [1, 3])
def test_forced_split(name, split_k):
    # K = 512 in groups of 64: 8 K blocks of 64 -> one split, or three splits of 3, 3 and 2 blocks.
    plan = KERNEL.check(5, 40, 512, 64, True, torch.bfloat16, _cfg(name, split_k=split_k, block_k=64))
    assert plan.splits == split_k


@pytest.mark.skipif(DEVICE != "cuda", reason="16 K blocks per program: too slow for the interpreter")
@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("group", [None, 128])
def test_long_unsplit_k(name, group):
    # Every program runs all 16 K blocks of 256 with its WGMMAs on register operands: where pipelined WGMMAs of the
    # weight-only tiles returned wrong sums (docs/measurements/h200_run19_weight_only_ptxas.md).
    plan = KERNEL.check(16, 512, 4096, group, True, torch.bfloat16, _cfg(name, split_k=1))
    assert plan.splits == 1


def test_configs_have_16_row_tiles():
    assert all(c.block_m >= 16 for c in CONFIGS.values())


# --- fused quantization: float x is quantized in the kernel, bit-exact with lowbit::quantize_int8_rowwise -------
FUSED_CASES = [
    # x dtype,       name,             M,  N,  K,   group
    (torch.bfloat16, "dot_16x128x256", 1, 72, 512, None),
    (torch.float16, "dot_16x64x256", 3, 9, 256, 64),
    (torch.float32, "dot_16x64x256", 16, 9, 96, None),
    (torch.bfloat16, "dot_16x64x256", 16, 130, 256, 128),
    (torch.float16, "dot_16x128x256", 7, 9, 96, 32),
    (torch.float32, "dot_16x64x256", 2, 72, 512, None),
    (torch.bfloat16, "dot_16x128x256", 3, 40, 256, None),
    (torch.float32, "dot_16x128x256", 16, 40, 256, 64),
]  # fmt: skip


@pytest.mark.parametrize("x_dtype, name, M, N, K, group", FUSED_CASES)
def test_fused_quantization(x_dtype, name, M, N, K, group):
    KERNEL.check_fused_quantization(x_dtype, M, N, K, group, CONFIGS[name])


@pytest.mark.parametrize("name", ["dot_16x128x256", "dot_16x64x256"])
def test_fused_zero_and_nan_rows(name):
    KERNEL.check_fused_zero_and_nan_rows(128, CONFIGS[name])
