import pytest
import torch

import lowbit_flex  # noqa: F401  (registers torch.ops.lowbit)

OP = torch.ops.lowbit.fp8_weight_only_linear


def _inputs(m_shape, n, k, dtype, with_bias, device="cpu"):
    x = (torch.randn(*m_shape, k) * 2).to(dtype)
    w = (torch.randn(n, k) * torch.logspace(-3, 2, k)).to(torch.float8_e4m3fn)  # subnormals to large codes
    w_scale = torch.rand(n) + 0.25
    bias = torch.randn(n).to(dtype) if with_bias else None
    move = lambda t: None if t is None else t.to(device)
    return move(x), move(w), move(w_scale), move(bias)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("m_shape, n, k, with_bias", [((1,), 8, 16, False), ((3, 5), 24, 40, True)])
def test_reference_matches_float64_definition(m_shape, n, k, dtype, with_bias):
    x, w, s, b = _inputs(m_shape, n, k, dtype, with_bias)
    out = OP(x, w, s, b)
    want = (x.double() @ (w.double() * s.double()[:, None]).T + (b.double() if b is not None else 0)).to(dtype)
    assert out.dtype == dtype and out.shape == (*m_shape, n)
    torch.testing.assert_close(out, want, rtol=0, atol=0)


def _good():
    return _inputs((2,), 8, 16, torch.bfloat16, True)


@pytest.mark.parametrize("mutate, exc, match", [
    (lambda a: (a[0].float(), *a[1:]), TypeError, "x: expected dtype"),
    (lambda a: (a[0], a[1].to(torch.float8_e5m2), *a[2:]), TypeError, "w_fp8: expected dtype"),
    (lambda a: (a[0], a[1][None], *a[2:]), ValueError, "w_fp8: expected 2 dimensions"),
    (lambda a: (a[0][:, :8], *a[1:]), ValueError, "x: expected last dimension 16"),
    (lambda a: (a[0], a[1], a[2][:4], a[3]), ValueError, "w_scale: expected shape \\(8,\\)"),
    (lambda a: (a[0], a[1], a[2].double(), a[3]), TypeError, "w_scale: expected dtype float32"),
    (lambda a: (*a[:3], a[3].float()), TypeError, "bias: expected dtype bfloat16"),
    (lambda a: (*a[:3], a[3][:3]), ValueError, "bias: expected shape"),
])  # fmt: skip
def test_bad_input_eager_and_fake(mutate, exc, match):
    args = mutate(_good())
    with pytest.raises(exc, match=match):
        OP(*args)
    with torch._subclasses.fake_tensor.FakeTensorMode() as mode, pytest.raises(exc, match=match):
        OP(*(None if a is None else mode.from_tensor(a) for a in args))
