"""The decode-sized W4A8 GEMV (``lowbit_flex.kernels.s8s4_decode``) against an exact float64 definition."""

import dataclasses

import pytest
import torch

import lowbit_flex  # noqa: F401  (registers torch.ops.lowbit)
from lowbit_flex.quant import pack_int4
from lowbit_flex.testing import assert_fully_written, kernel_device, poison_
from tests.kernels._w4a8_exact import assert_close_to_exact, exact_f64, fp32_terms, log_uniform, random_inputs

DEVICE = kernel_device()
if DEVICE is None:
    pytest.skip("no GPU and TRITON_INTERPRET unset: Triton kernels cannot run", allow_module_level=True)

from lowbit_flex.kernels import s8s4_decode as mod  # noqa: E402  (imports Triton: after the skip)

CONFIGS = mod.DECODE_CONFIGS
QUANTIZE = torch.ops.lowbit.quantize_int8_rowwise


def _run(x, xs, q, ws, b, out_dtype, config):
    """Launch into a poisoned output; check every element was written. Returns (out, plan)."""
    dev = lambda t: None if t is None else t.to(DEVICE)
    M, N = x.shape[0], q.shape[0]
    out = poison_(torch.empty((M, N), dtype=out_dtype, device=DEVICE))
    w = pack_int4(q).to(DEVICE)
    res = mod.s8s4_decode_triton(dev(x), dev(xs), w, dev(ws), dev(b), out_dtype, config, out=out)
    assert res is out and out.shape == (M, N) and out.dtype == out_dtype
    assert_fully_written(out)
    groups = 1 if ws.dim() == 1 else ws.shape[1]
    plan = mod._plan(torch.device(DEVICE), M, N, x.shape[1], groups, x.dtype, out_dtype, b is not None, config)
    return out.cpu(), plan


def _check(M, N, K, group, bias, out_dtype, config):
    x, xs, q, ws, b = random_inputs(M, N, K, group, out_dtype, bias)
    out, plan = _run(x, xs, q, ws, b, out_dtype, config)
    exact, magnitude = exact_f64(x, xs, q, ws, b)
    assert_close_to_exact(out, exact, magnitude, out_dtype, fp32_terms(plan, group is not None))
    return plan


def _cfg(name, **change):
    return dataclasses.replace(CONFIGS[name], **change)


# Every config on shapes that reach its branches: ragged N, odd M, K = 96 (BLOCK_K = 32: the MMA form interleaves
# the nibble planes), groups 32..256, FMA tiles with several M tiles (M > block_m). Under the interpreter the
# "GPU" has 4 SMs, so auto split-K splits whenever K has more than one block.
CASES = [
    # name,          M,  N,   K,   group, bias,  out_dtype,      expect_split
    ("fma_1x64x256", 1, 5, 32, None, True, torch.bfloat16, False),
    ("fma_1x64x256", 1, 130, 512, 128, False, torch.float16, True),
    ("fma_1x64x256", 3, 9, 256, 32, True, torch.bfloat16, True),
    ("fma_4x32x128", 2, 72, 96, None, False, torch.float16, True),
    ("fma_4x32x128", 3, 9, 256, 64, True, torch.bfloat16, True),
    ("fma_4x32x128", 16, 9, 64, None, True, torch.float16, False),
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
    plan = _check(M, N, K, group, bias, out_dtype, CONFIGS[name])
    assert (plan.splits > 1) == expect_split


@pytest.mark.parametrize("name", ["fma_4x32x128", "dot_16x64x256"])
@pytest.mark.parametrize("split_k", [1, 3])
def test_forced_split(name, split_k):
    # K = 512 in groups of 64: 8 K blocks of 64 -> one split, or three splits of 3, 3 and 2 blocks.
    plan = _check(5, 40, 512, 64, True, torch.bfloat16, _cfg(name, split_k=split_k, block_k=64))
    assert plan.splits == split_k


def test_dot_configs_have_16_row_tiles():
    assert all(c.block_m >= 16 for c in CONFIGS.values() if c.use_dot)


# --- fused quantization: float x is quantized in the kernel, bit-exact with lowbit::quantize_int8_rowwise -------
FUSED_CASES = [
    # x dtype,       name,             M,  N,  K,   group
    (torch.bfloat16, "fma_1x64x256", 1, 72, 512, None),
    (torch.float16, "fma_4x32x128", 3, 9, 256, 64),
    (torch.float32, "fma_4x32x128", 16, 9, 96, None),
    (torch.bfloat16, "dot_16x64x256", 16, 130, 256, 128),
    (torch.float16, "dot_16x128x256", 7, 9, 96, 32),
    (torch.float32, "dot_16x64x256", 2, 72, 512, None),
    (torch.bfloat16, "dot_16x128x256", 3, 40, 256, None),
    (torch.float32, "dot_16x128x256", 16, 40, 256, 64),
]  # fmt: skip


@pytest.mark.parametrize("x_dtype, name, M, N, K, group", FUSED_CASES)
def test_fused_quantization(x_dtype, name, M, N, K, group):
    out_dtype = torch.bfloat16
    _, _, q, ws, b = random_inputs(M, N, K, group, out_dtype)
    xf = (torch.randn(M, K) * log_uniform((M, 1), -2.0, 2.0)).to(x_dtype)
    xf[0, 0] = 0.0
    config = CONFIGS[name]
    out, plan = _run(xf, None, q, ws, b, out_dtype, config)
    xq, xs = QUANTIZE(xf)  # CPU reference
    # The same kernel on the reference's int8 values: identical quantization gives identical bits.
    ref, _ = _run(xq, xs.view(M), q, ws, b, out_dtype, config)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    exact, magnitude = exact_f64(xq, xs.view(M), q, ws, b)
    assert_close_to_exact(out, exact, magnitude, out_dtype, fp32_terms(plan, group is not None))


@pytest.mark.parametrize("name", ["fma_4x32x128", "dot_16x64x256"])
def test_fused_zero_and_nan_rows(name):
    # float16 output: Triton's interpreter truncates float32 -> bfloat16 (the GPU rounds to nearest even), so only
    # fp16 makes "the zero row's output is exactly the rounded bias" checkable here.
    M, N, K, out_dtype = 4, 40, 128, torch.float16
    _, _, q, ws, b = random_inputs(M, N, K, 64, out_dtype)
    xf = torch.randn(M, K, dtype=torch.bfloat16)
    xf[1] = 0.0  # scale 1.0
    xf[2, 5] = float("nan")  # its own output may be anything; the other rows' must not change
    out, _ = _run(xf, None, q, ws, b, out_dtype, CONFIGS[name])
    clean = xf.clone()
    clean[2] = 0.0
    xq, xs = QUANTIZE(clean)
    assert float(xs[1]) == 1.0
    ref, _ = _run(xq, xs.view(M), q, ws, b, out_dtype, CONFIGS[name])
    keep = [0, 1, 3]
    torch.testing.assert_close(out[keep], ref[keep], rtol=0, atol=0)
    torch.testing.assert_close(out[1], b.to(out_dtype), rtol=0, atol=0)
