import pytest
import torch

from lowbit_flex.quant import pack_int4, quantize_int4_weight, unpack_int4


def test_pack_bit_order():
    # element 2j in the low nibble, 2j+1 in the high nibble, two's complement: [1, -2] -> 0xE1, [-8, 7] -> 0x78
    packed = pack_int4(torch.tensor([[1, -2, -8, 7]], dtype=torch.int8))
    assert [b & 0xFF for b in packed[0].tolist()] == [0xE1, 0x78]


@pytest.mark.parametrize("shape", [(2,), (5, 16), (3, 4, 64)])
def test_pack_unpack_round_trip(shape):
    v = torch.randint(-8, 8, shape, dtype=torch.int8)
    v.view(-1)[:2] = torch.tensor([-8, 7], dtype=torch.int8)  # both extremes present
    p = pack_int4(v)
    assert p.dtype == torch.int8 and p.shape == (*shape[:-1], shape[-1] // 2) and p.is_contiguous()
    assert torch.equal(unpack_int4(p), v)
    # every byte value unpacks and re-packs to itself
    every_byte = torch.arange(-128, 128, dtype=torch.int16).to(torch.int8)
    assert torch.equal(pack_int4(unpack_int4(every_byte)), every_byte)


@pytest.mark.parametrize("group_size", [None, 32, 64])
def test_quantize_int4_weight_definition(group_size):
    N, K = 7, 128
    w = torch.randn(N, K, dtype=torch.float64) * torch.logspace(-3, 2, N, dtype=torch.float64)[:, None]
    packed, scale = quantize_int4_weight(w.to(torch.bfloat16), group_size)
    g = K if group_size is None else group_size
    assert packed.shape == (N, K // 2) and scale.dtype == torch.float32
    assert scale.shape == ((N,) if group_size is None else (N, K // g))
    wg = w.to(torch.bfloat16).double().view(N, K // g, g)
    s64 = wg.abs().amax(-1) / 7
    torch.testing.assert_close(scale.double().view(N, K // g), s64, rtol=2**-23, atol=0)
    q = unpack_int4(packed).double().view(N, K // g, g)
    assert q.abs().amax(-1).eq(7).all()  # the largest magnitude of each row/group maps to ±7
    assert q.min() >= -8 and q.max() <= 7
    err = (wg - q * scale.double().view(N, K // g, 1)).abs()
    assert bool((err <= scale.double().view(N, K // g, 1) * (0.5 + 1e-6)).all())


def test_zero_rows_get_scale_one():
    w = torch.randn(3, 32)
    w[1] = 0
    packed, scale = quantize_int4_weight(w)
    assert scale[1].item() == 1.0 and bool((unpack_int4(packed)[1] == 0).all())


@pytest.mark.parametrize("fn, args, exc, match", [
    (pack_int4, (torch.zeros(4, dtype=torch.int32),), TypeError, "values: expected dtype int8"),
    (pack_int4, (torch.zeros(3, dtype=torch.int8),), ValueError, "values: expected a last dimension of even"),
    (pack_int4, (torch.full((2,), 8, dtype=torch.int8),), ValueError, r"values: expected entries in \[-8, 7\]"),
    (unpack_int4, (torch.zeros(4),), TypeError, "packed: expected dtype int8"),
    (quantize_int4_weight, (torch.zeros(4, 8, dtype=torch.int8),), TypeError, "w: expected a floating-point"),
    (quantize_int4_weight, (torch.zeros(4, 7),), ValueError, "w: expected shape"),
    (quantize_int4_weight, (torch.zeros(4, 64), 48), ValueError, "group_size: expected an even divisor"),
    (quantize_int4_weight, (torch.zeros(4, 64), 0), ValueError, "group_size: expected a positive int"),
])  # fmt: skip
def test_bad_input(fn, args, exc, match):
    with pytest.raises(exc, match=match):
        fn(*args)
