"""The dp4a W4A8 GEMV (``lowbit_flex.kernels.s8s4_gemv``) against an exact float64 definition."""

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

from lowbit_flex.kernels import s8s4_gemv as mod  # noqa: E402  (imports Triton: after the skip)

CONFIGS = mod.GEMV_CONFIGS
QUANTIZE = torch.ops.lowbit.quantize_int8_rowwise


def _run(x, xs, q, ws, b, out_dtype, config):
    """Launch into a poisoned output; check every element was written. Returns (out, plan)."""
    dev = lambda t: None if t is None else t.to(DEVICE)
    M, N = x.shape[0], q.shape[0]
    out = poison_(torch.empty((M, N), dtype=out_dtype, device=DEVICE))
    w = pack_int4(q).to(DEVICE)
    res = mod.s8s4_gemv_triton(dev(x), dev(xs), w, dev(ws), dev(b), out_dtype, config, out=out)
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
]  # fmt: skip


@pytest.mark.parametrize("name, M, N, K, group, bias, out_dtype", CASES)
def test_every_config(name, M, N, K, group, bias, out_dtype):
    _check(M, N, K, group, bias, out_dtype, CONFIGS[name])


@pytest.mark.parametrize("split_k, group", [(1, None), (3, 64), (3, None)])
def test_forced_split(split_k, group):
    # K = 512 in steps of 64: 8 K blocks -> one split, or three splits of 3, 3 and 2 blocks.
    cfg = dataclasses.replace(CONFIGS["dp4a_4x16x1024"], block_k=64, split_k=split_k)
    plan = _check(3, 40, 512, group, True, torch.bfloat16, cfg)
    assert plan.splits == split_k


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


def test_fused_zero_and_nan_rows():
    # float16 output (the interpreter truncates float32 -> bfloat16), a zero row (scale 1.0: the output is the
    # rounded bias) and a NaN row, whose own output may be anything while the other rows' must not change.
    M, N, K, out_dtype, config = 4, 40, 256, torch.float16, CONFIGS["dp4a_4x16x1024"]
    _, _, q, ws, b = random_inputs(M, N, K, 64, out_dtype)
    xf = torch.randn(M, K, dtype=torch.bfloat16)
    xf[1] = 0.0
    xf[2, 5] = float("nan")
    out, _ = _run(xf, None, q, ws, b, out_dtype, config)
    clean = xf.clone()
    clean[2] = 0.0
    xq, xs = QUANTIZE(clean)
    assert float(xs[1]) == 1.0
    ref, _ = _run(xq, xs.view(M), q, ws, b, out_dtype, config)
    keep = [0, 1, 3]
    torch.testing.assert_close(out[keep], ref[keep], rtol=0, atol=0)
    torch.testing.assert_close(out[1], b.to(out_dtype), rtol=0, atol=0)


def test_cached_launch_keys_on_alignment():
    # The first call per plan compiles through Triton; later calls launch the cached kernel directly (on a GPU),
    # keyed by argument dtypes and 16-byte alignment. A misaligned view of x must get its own specialization.
    M, N, K, config = 2, 40, 256, CONFIGS["dp4a_4x16x1024"]
    _, _, q, ws, b = random_inputs(M, N, K, 64, torch.bfloat16)
    xf = torch.randn(M, K, dtype=torch.bfloat16)
    first, _ = _run(xf, None, q, ws, b, torch.bfloat16, config)
    again, _ = _run(xf, None, q, ws, b, torch.bfloat16, config)
    torch.testing.assert_close(again, first, rtol=0, atol=0)
    shifted = torch.empty(M * K + 1, dtype=torch.bfloat16, device=DEVICE)[1:].view(M, K)  # 2-byte aligned
    shifted.copy_(xf)
    out = poison_(torch.empty((M, N), dtype=torch.bfloat16, device=DEVICE))
    mod.s8s4_gemv_triton(
        shifted, None, pack_int4(q).to(DEVICE), ws.to(DEVICE), b.to(DEVICE), torch.bfloat16, config, out=out
    )
    assert_fully_written(out)
    torch.testing.assert_close(out.cpu(), first, rtol=0, atol=0)
