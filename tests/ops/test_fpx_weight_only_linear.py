import pytest
import torch

import lowbit_flex  # noqa: F401  (registers torch.ops.lowbit)
from lowbit_flex.quant import E2M1_FN, E2M3_FN, E3M2_FN, from_fpx_bits, pack_fpx, to_fpx_bits
from lowbit_flex.testing import assert_fully_written, kernel_device, poison_
from tests.ops._weight_only_reference import assert_within, exact_linear

OP = torch.ops.lowbit.fpx_weight_only_linear
FORMATS = [E3M2_FN, E2M3_FN, E2M1_FN]


def _inputs(fmt, m_shape, n, k, dtype, with_bias, device="cpu"):
    x = (torch.randn(*m_shape, k) * 2).to(dtype)
    codes = torch.randint(0, 2**fmt.bits, (n, k), dtype=torch.uint8)  # every code, subnormals and -0 included
    w_scale = torch.rand(n) + 0.25
    bias = torch.randn(n).to(dtype) if with_bias else None
    args = [x, pack_fpx(codes, fmt.bits), w_scale, bias]
    return [None if t is None else t.to(device) for t in args], from_fpx_bits(codes, fmt, torch.float64)


@pytest.mark.parametrize("fmt", FORMATS, ids=str)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_reference_matches_float64_definition(fmt, dtype):
    (x, wp, s, b), w64 = _inputs(fmt, (3, 2), 12, 32, dtype, True)
    out = OP(x, wp, s, fmt.ebits, fmt.mbits, b)
    want = (x.double() @ (w64 * s.double()[:, None]).T + b.double()).to(dtype)
    assert out.dtype == dtype and out.shape == (3, 2, 12)
    torch.testing.assert_close(out, want, rtol=0, atol=0)


def test_quantized_weights_round_trip_through_the_op():
    w = torch.randn(16, 64)
    scale = w.abs().amax(1) / E3M2_FN.max_normal
    wp = pack_fpx(to_fpx_bits(w / scale[:, None], E3M2_FN), 6)
    eye = torch.eye(64, dtype=torch.float16)
    got = OP(eye, wp, scale, 3, 2, None).float().T  # rows of the dequantized weight
    want = from_fpx_bits(to_fpx_bits(w / scale[:, None], E3M2_FN), E3M2_FN) * scale[:, None]
    torch.testing.assert_close(got, want.half().float(), rtol=0, atol=0)


@pytest.mark.skipif(kernel_device() is None, reason="needs CUDA or TRITON_INTERPRET=1")
@pytest.mark.parametrize("fmt", FORMATS, ids=str)
# K = 512, 80: whole int32-word units (word loads); K = 260: a partial last unit (byte loads, masked)
@pytest.mark.parametrize("m, n, k, split_k", [(1, 40, 512, None), (4, 70, 260, 3), (40, 24, 80, None)])
@pytest.mark.parametrize("variant", [None, "WORDS_DOT", "WORDS_FMA", "BYTES_DOT"])
def test_triton_kernel_within_rounding_of_float64(fmt, m, n, k, split_k, variant, monkeypatch):
    from lowbit_flex.kernels import float_weight_only_linear as mod

    dev = kernel_device()
    (x, wp, s, b), w64 = _inputs(fmt, (m,), n, k, torch.bfloat16, m != 1, dev)
    real_empty = torch.empty
    monkeypatch.setattr(mod.torch, "empty", lambda *a, **kw: poison_(real_empty(*a, **kw)))
    v = None if variant is None else mod.Variant[variant]
    out = mod.fpx_weight_only_linear_triton(x, wp, s, fmt.ebits, fmt.mbits, b, split_k=split_k, variant=v)
    assert_fully_written(out)
    exact, bound = exact_linear(x.cpu(), w64, s.cpu(), None if b is None else b.cpu())
    assert_within(out, exact, bound)


def _good():
    return _inputs(E3M2_FN, (2,), 8, 16, torch.bfloat16, True)[0]


@pytest.mark.parametrize("mutate, exc, match", [
    (lambda a: (*a[:3], 4, 3, a[3]), ValueError, "ebits, mbits: expected one of"),
    (lambda a: (*a[:3], 2, 1, a[3]), ValueError, "w_packed: expected 8 bytes per row"),
    (lambda a: (a[0][:, :6], a[1], a[2], 3, 2, a[3]), ValueError, "x: the last dimension \\(6\\) must be a multiple"),
    (lambda a: (a[0], a[1].to(torch.int8), a[2], 3, 2, a[3]), TypeError, "w_packed: expected dtype uint8"),
    (lambda a: (a[0].float(), a[1], a[2], 3, 2, a[3]), TypeError, "x: expected dtype"),
    (lambda a: (a[0], a[1], a[2][:3], 3, 2, a[3]), ValueError, "w_scale: expected shape"),
    (lambda a: (a[0], a[1], a[2], 3, 2, a[3][:2]), ValueError, "bias: expected shape"),
])  # fmt: skip
def test_bad_input_eager_and_fake(mutate, exc, match):
    args = mutate(_good())
    with pytest.raises(exc, match=match):
        OP(*args)
    with torch._subclasses.fake_tensor.FakeTensorMode() as mode, pytest.raises(exc, match=match):
        OP(*(mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args))


def test_word_loads_chosen_exactly_for_whole_unit_rows():
    from lowbit_flex.kernels.float_weight_only_linear import _word_loadable

    for bits, k_whole, k_partial in ((6, 512, 260), (4, 264, 260)):
        assert _word_loadable(pack_fpx(torch.zeros(3, k_whole, dtype=torch.uint8), bits), k_whole, bits)
        assert not _word_loadable(pack_fpx(torch.zeros(3, k_partial, dtype=torch.uint8), bits), k_partial, bits)


def test_default_variant_follows_the_measured_table():
    from lowbit_flex.kernels.float_weight_only_linear import Variant, default_variant

    # fp8 always on tensor cores; the FMA GEMV only where it won on the H200 (docs/float_quantization.md).
    assert {default_variant(8, m) for m in (1, 4, 16, 4096)} == {Variant.WORDS_DOT}
    assert [default_variant(6, m) for m in (1, 4, 5, 16)] == [Variant.WORDS_FMA] * 2 + [Variant.WORDS_DOT] * 2
    assert [default_variant(4, m) for m in (1, 2)] == [Variant.WORDS_FMA, Variant.WORDS_DOT]
