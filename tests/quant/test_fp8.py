import pytest
import torch

import lowbit_flex  # noqa: F401  (registers torch.ops.lowbit)
from lowbit_flex import quantize_fp8, quantize_int8_blockwise
from lowbit_flex.quant import FP8_MAX, dequantize
from lowbit_flex.testing import assert_fully_written, kernel_device, poison_

# (mantissa bits, exponent of the smallest normal) of each fp8 format
_FORMAT = {torch.float8_e4m3fn: (3, -6), torch.float8_e5m2: (2, -14)}
GRANS = ["tensor", "head", "token", "block"]


def _group_amax_f64(x64: torch.Tensor, granularity: str, block: int) -> torch.Tensor:
    """Scale groups written out independently of lowbit_flex.quant.groups: loops over heads and blocks."""
    if granularity == "tensor":
        return x64.abs().max()
    B, H, L, _ = x64.shape
    if granularity == "head":
        return torch.stack([torch.stack([x64[b, h].abs().max() for h in range(H)]) for b in range(B)])
    if granularity == "token":
        return x64.abs().amax(dim=-1)
    starts = range(0, L, block)
    return torch.tensor(
        [[[x64[b, h, s : s + block].abs().max().item() for s in starts] for h in range(H)] for b in range(B)],
        dtype=torch.float64,
    )


@pytest.mark.parametrize("fp8_dtype", [torch.float8_e4m3fn, torch.float8_e5m2])
@pytest.mark.parametrize("granularity", GRANS)
def test_reference_matches_float64_definition(granularity, fp8_dtype):
    x = torch.randn(2, 3, 37, 16) * torch.logspace(-4, 2, 16)
    block = 8
    xq, scale = quantize_fp8(x, granularity, block, fp8_dtype)
    fmax = FP8_MAX[fp8_dtype]
    s64 = _group_amax_f64(x.double(), granularity, block) / fmax
    assert xq.dtype == fp8_dtype and scale.dtype == torch.float32 and scale.shape == s64.shape
    torch.testing.assert_close(scale.double(), s64, rtol=2**-23, atol=0)  # one float32 rounding of amax / fmax
    # Dequantization error: half an fp8 ulp (2**-(mant+1) relative for normals, a fixed step for subnormals).
    mant, emin = _FORMAT[fp8_dtype]
    s_full = dequantize(torch.ones_like(xq, dtype=torch.float32), scale, granularity, block).double()
    err = (dequantize(xq, scale, granularity, block).double() - x.double()).abs()
    bound = torch.maximum(x.double().abs() * 2.0 ** -(mant + 1), s_full * 2.0 ** (emin - mant - 1))
    assert bool((err <= bound * (1 + 1e-5)).all()), float((err / bound).max())
    # Every group's largest element lands exactly on +-fmax (scale = amax / fmax).
    assert float(xq.float().abs().max()) == fmax


def test_saturating_zero_groups_and_no_nan():
    x = torch.randn(1, 2, 20, 8)
    x[0, 0] = 0  # an all-zero head
    x[0, 1, 3, 2] = -3e38  # near float32 max: must saturate, never overflow to NaN
    for g in GRANS:
        xq, scale = quantize_fp8(x, g, 4)
        assert not torch.isnan(xq.float()).any(), g
        assert float(xq.float().abs().max()) == 448.0
    xq, scale = quantize_fp8(x, "head")
    assert scale[0, 0].item() == 1.0 and bool((xq[0, 0].float() == 0).all())
    assert xq[0, 1, 3, 2].item() == -448.0


def test_int8_blockwise_definition_and_shift():
    x = torch.randn(2, 2, 50, 16) + 5 * torch.randn(2, 2, 1, 16)  # a per-channel mean (K's outlier channels)
    shift = x.mean(dim=-2, keepdim=True)
    xq, scale = quantize_int8_blockwise(x, 16, shift)
    y64 = x.double() - shift.double()
    s64 = _group_amax_f64(y64, "block", 16) / 127
    torch.testing.assert_close(scale.double(), s64, rtol=2**-23, atol=0)
    err = (dequantize(xq, scale, "block", 16, shift).double() - x.double()).abs()
    s_full = scale.double().repeat_interleave(16, dim=2)[:, :, :50, None]
    assert bool((err <= s_full * (0.5 + 1e-5) + 1e-6).all())
    # Smoothing removes the channel mean, so the int8 step is set by the noise, not by the mean.
    _, s_plain = quantize_int8_blockwise(x, 16)
    assert bool((scale < s_plain).all())


def _with_nonfinite(x):
    """``x`` with a NaN, +inf and -inf in different groups of every granularity, and where they are."""
    x = x.clone()
    where = [(0, 0, 3, 2), (0, 1, 20, 5), (1, 2, 36, 0)]
    for idx, val in zip(where, (float("nan"), float("inf"), -float("inf"))):
        x[idx] = val
    mask = torch.zeros(x.shape, dtype=torch.bool)
    for idx in where:
        mask[idx] = True
    return x, mask


@pytest.mark.parametrize("granularity, fp8_dtype", [
    *((g, d) for g in GRANS for d in (torch.float8_e4m3fn, torch.float8_e5m2)), ("block", torch.int8),
])  # fmt: skip
def test_nonfinite_values_skip_the_scales(granularity, fp8_dtype):
    # A NaN or inf leaves its group's other values exactly as without it (as if it were 0); itself it becomes NaN in
    # fp8 (NaN and inf alike) and 0 / +-127 in int8 (int8 is quantized per block only).
    x, mask = _with_nonfinite(torch.randn(2, 3, 37, 16))
    if fp8_dtype == torch.int8:
        q, s = quantize_int8_blockwise(x, 8)
        q0, s0 = quantize_int8_blockwise(x.masked_fill(mask, 0.0), 8)
    else:
        q, s = quantize_fp8(x, granularity, 8, fp8_dtype)
        q0, s0 = quantize_fp8(x.masked_fill(mask, 0.0), granularity, 8, fp8_dtype)
    assert torch.equal(s, s0) and bool(torch.isfinite(s).all())
    assert torch.equal(q.view(torch.uint8)[~mask], q0.view(torch.uint8)[~mask])
    if fp8_dtype == torch.int8:
        assert q[mask].tolist() == [0, 127, -127]
    else:
        assert bool(q[mask].float().isnan().all())


@pytest.mark.parametrize("bad, kwargs, exc, match", [
    (torch.randint(0, 5, (2, 2, 4, 8), dtype=torch.int32), {}, TypeError, "x: expected dtype"),
    (torch.randn(2, 4, 8), {"granularity": "head"}, ValueError, "x: expected 4 dimensions"),
    (torch.randn(2, 2, 4, 8), {"granularity": "row"}, ValueError, "granularity: expected one of"),
    (torch.randn(2, 2, 4, 8), {"granularity": "block", "block_size": 0}, ValueError, "block_size"),
    (torch.randn(2, 2, 4, 8), {"fp8_dtype": torch.float16}, TypeError, "fp8_dtype"),
    (torch.randn(2, 2, 4, 8), {"shift": torch.zeros(2, 2, 4, 8)}, ValueError, "shift: expected shape"),
    (torch.randn(2, 0, 4, 8), {}, ValueError, "x: expected a non-empty tensor"),
])  # fmt: skip
def test_bad_input_eager_and_fake(bad, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        quantize_fp8(bad, **kwargs)
    with torch._subclasses.fake_tensor.FakeTensorMode() as mode, pytest.raises(exc, match=match):
        fk = {k: mode.from_tensor(v) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
        quantize_fp8(mode.from_tensor(bad), **fk)


needs_kernel = pytest.mark.skipif(kernel_device() is None, reason="needs CUDA or TRITON_INTERPRET=1")


# (granularity, out_dtype, native_e4m3): native_e4m3=False is the e4m3fn form for GPUs before sm_89 (codes built with
# integer operations).
KERNEL_CASES = (
    [(g, d, True) for g in GRANS for d in (torch.float8_e4m3fn, torch.float8_e5m2)]
    + [(g, torch.float8_e4m3fn, False) for g in GRANS]
    + [("block", torch.int8, True)]  # int8 is quantized per block only
)


def _force_two_pass(mod, monkeypatch, request):
    """The chunked amax + quantize path on a small tensor. Launch plans are cached by shape: clear them on both
    sides, so neither this test nor a later one runs a plan made under the other setting."""
    monkeypatch.setattr(mod, "_MAX_SINGLE_PASS", 64)
    monkeypatch.setattr(mod, "_CHUNK", 128)
    mod._launch_plan.cache_clear()
    request.addfinalizer(mod._launch_plan.cache_clear)


@needs_kernel
@pytest.mark.parametrize("two_pass", [False, True])
@pytest.mark.parametrize("granularity, out_dtype, native_e4m3", KERNEL_CASES)
@pytest.mark.parametrize("with_shift", [False, True])
def test_triton_kernel_bit_exact_with_reference(
    granularity, out_dtype, native_e4m3, two_pass, with_shift, monkeypatch, request
):
    from lowbit_flex.kernels import quantize_groups as mod

    if two_pass:
        _force_two_pass(mod, monkeypatch, request)
    dev = kernel_device()
    x = (torch.randn(2, 3, 37, 16) * torch.logspace(-6, 3, 16)).to(torch.bfloat16)
    shift = x.float().mean(dim=-2, keepdim=True) if with_shift else None
    if out_dtype == torch.int8:
        ref_q, ref_s = quantize_int8_blockwise(x, 8, shift)
    else:
        ref_q, ref_s = quantize_fp8(x, granularity, 8, out_dtype, shift)
    q, s = mod.quantize_groups_triton(
        x.to(dev), granularity, 8, out_dtype, None if shift is None else shift.to(dev), native_e4m3
    )
    assert q.dtype == out_dtype and q.shape == x.shape and s.shape == ref_s.shape
    torch.testing.assert_close(s.cpu(), ref_s, rtol=0, atol=0)
    assert torch.equal(q.cpu().view(torch.uint8), ref_q.view(torch.uint8))  # bit for bit, the sign of zero too


@needs_kernel
@pytest.mark.parametrize("two_pass", [False, True])
@pytest.mark.parametrize("granularity, out_dtype, native_e4m3", KERNEL_CASES)
def test_triton_kernel_nonfinite_bit_exact_with_reference(granularity, out_dtype, native_e4m3, two_pass, monkeypatch,
                                                          request):  # fmt: skip
    from lowbit_flex.kernels import quantize_groups as mod

    if two_pass:
        _force_two_pass(mod, monkeypatch, request)
    x, _ = _with_nonfinite(torch.randn(2, 3, 37, 16))
    if out_dtype == torch.int8:
        ref_q, ref_s = quantize_int8_blockwise(x, 8)
    else:
        ref_q, ref_s = quantize_fp8(x, granularity, 8, out_dtype)
    q, s = mod.quantize_groups_triton(x.to(kernel_device()), granularity, 8, out_dtype, None, native_e4m3)
    torch.testing.assert_close(s.cpu(), ref_s, rtol=0, atol=0)
    assert torch.equal(q.cpu().view(torch.uint8), ref_q.view(torch.uint8))  # NaN as 0x7F, as torch casts +NaN


@needs_kernel
@pytest.mark.parametrize("native_e4m3", [True, False])
def test_triton_kernel_every_e4m3_code(native_e4m3):
    # Every finite e4m3fn value, with 448 present: the tensor scale is exactly 1, so each value must come back as
    # its own code (subnormals, the normal/subnormal boundary, -0 and the saturation bound included).
    from lowbit_flex.kernels.quantize_groups import quantize_groups_triton

    codes = torch.arange(256, dtype=torch.int32).to(torch.uint8)
    codes = codes[(codes & 0x7F) != 0x7F]  # drop the two NaN codes
    x = codes.view(torch.float8_e4m3fn).float()
    q, s = quantize_groups_triton(x.to(kernel_device()), "tensor", 128, torch.float8_e4m3fn, None, native_e4m3)
    assert s.item() == 1.0
    assert torch.equal(q.cpu().view(torch.uint8), codes)


@needs_kernel
@pytest.mark.parametrize("granularity", GRANS)
@pytest.mark.parametrize("native_e4m3", [True, False])
def test_triton_kernel_writes_every_element(granularity, native_e4m3, monkeypatch):
    from lowbit_flex.kernels import quantize_groups as mod

    x = torch.randn(1, 2, 45, 64, device=kernel_device()) + 1.0  # +1: no exact zeros, so NaN poison is visible
    real_empty = torch.empty
    monkeypatch.setattr(mod.torch, "empty", lambda *a, **k: poison_(real_empty(*a, **k)))
    q, s = mod.quantize_groups_triton(x, granularity, 16, torch.float8_e4m3fn, None, native_e4m3)
    assert_fully_written(q, "x_fp8")
    assert_fully_written(s, "scale")
