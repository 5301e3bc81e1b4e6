import pytest
import torch

import lowbit_flex  # noqa: F401  (registers torch.ops.lowbit)
from lowbit_flex.quant import E2M1_FN, E2M3_FN, E3M2_FN, from_fpx_bits, pack_fpx, pack_fpx_tiles, to_fpx_bits

OP = torch.ops.lowbit.fpx_weight_only_linear
FORMATS = [E3M2_FN, E2M3_FN, E2M1_FN]


def _inputs(fmt, m_shape, n, k, dtype, with_bias, device="cpu"):
    x = (torch.randn(*m_shape, k) * 2).to(dtype)
    codes = torch.randint(0, 2**fmt.bits, (n, k), dtype=torch.uint8)  # every code, subnormals and -0 included
    w_scale = torch.rand(n) + 0.25
    bias = torch.randn(n).to(dtype) if with_bias else None
    args = [x, pack_fpx_tiles(codes, fmt.bits), w_scale, bias]
    return [None if t is None else t.to(device) for t in args], from_fpx_bits(codes, fmt, torch.float64)


@pytest.mark.parametrize("fmt", FORMATS, ids=str)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_reference_matches_float64_definition(fmt, dtype):
    (x, wp, s, b), w64 = _inputs(fmt, (3, 2), 12, 37, dtype, True)  # any K: tiles are zero-padded
    out = OP(x, wp, s, fmt.ebits, fmt.mbits, b)
    want = (x.double() @ (w64 * s.double()[:, None]).T + b.double()).to(dtype)
    assert out.dtype == dtype and out.shape == (3, 2, 12)
    torch.testing.assert_close(out, want, rtol=0, atol=0)


def test_quantized_weights_round_trip_through_the_op():
    w = torch.randn(16, 64)
    scale = w.abs().amax(1) / E3M2_FN.max_normal
    wp = pack_fpx_tiles(to_fpx_bits(w / scale[:, None], E3M2_FN), 6)
    eye = torch.eye(64, dtype=torch.float16)
    got = OP(eye, wp, scale, 3, 2, None).float().T  # rows of the dequantized weight
    want = from_fpx_bits(to_fpx_bits(w / scale[:, None], E3M2_FN), E3M2_FN) * scale[:, None]
    torch.testing.assert_close(got, want.half().float(), rtol=0, atol=0)


def _good():
    return _inputs(E3M2_FN, (2,), 8, 16, torch.bfloat16, True)[0]


@pytest.mark.parametrize("mutate, exc, match", [
    (lambda a: (*a[:3], 4, 3, a[3]), ValueError, "ebits, mbits: expected one of"),
    (lambda a: (*a[:3], 2, 1, a[3]), ValueError, "w_packed: expected 16 int32 words per row"),
    (lambda a: (torch.cat([a[0]] * 9, 1), a[1], a[2], 3, 2, a[3]), ValueError, "w_packed: expected 48 int32 words"),
    (lambda a: (a[0], a[1].to(torch.int8), a[2], 3, 2, a[3]), TypeError, "w_packed: expected dtype int32"),
    (lambda a: (a[0], pack_fpx(torch.zeros(8, 16, dtype=torch.uint8), 6), a[2], 3, 2, a[3]), TypeError,
     "w_packed: expected int32 words in the tile layout"),
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
