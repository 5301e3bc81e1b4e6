import pytest
import torch

from lowbit_flex.quant import pack_fpx, unpack_fpx


@pytest.mark.parametrize("bits", [4, 6])
@pytest.mark.parametrize("shape", [(4,), (3, 8), (2, 5, 12)])
def test_round_trip_is_exact(bits, shape):
    codes = torch.randint(0, 2**bits, shape, dtype=torch.uint8)
    packed = pack_fpx(codes, bits)
    assert packed.dtype == torch.uint8 and packed.shape == (*shape[:-1], shape[-1] * bits // 8)
    assert torch.equal(unpack_fpx(packed, bits), codes)


def test_documented_bit_order():
    # fp4: element 2i in the low nibble, 2i+1 in the high nibble.
    assert pack_fpx(torch.tensor([0x1, 0xA, 0xF, 0x0], dtype=torch.uint8), 4).tolist() == [0xA1, 0x0F]
    # fp6: c0 | c1 << 6 | c2 << 12 | c3 << 18, little-endian bytes.
    c = [0b000001, 0b100010, 0b110011, 0b101100]
    word = c[0] | c[1] << 6 | c[2] << 12 | c[3] << 18
    assert pack_fpx(torch.tensor(c, dtype=torch.uint8), 6).tolist() == [word & 0xFF, word >> 8 & 0xFF, word >> 16]
    # Every byte value unpacks and repacks to itself.
    every = torch.arange(256, dtype=torch.uint8).repeat_interleave(3)
    assert torch.equal(pack_fpx(unpack_fpx(every, 6), 6), every)
    assert torch.equal(pack_fpx(unpack_fpx(every, 4), 4), every)


@pytest.mark.parametrize("call, exc, match", [
    (lambda: pack_fpx(torch.zeros(4, dtype=torch.uint8), 5), ValueError, "bits: expected 4 or 6"),
    (lambda: unpack_fpx(torch.zeros(3, dtype=torch.uint8), 8), ValueError, "bits: expected 4 or 6"),
    (lambda: pack_fpx(torch.zeros(6, dtype=torch.uint8), 6), ValueError, "codes: the last dimension \\(6\\)"),
    (lambda: pack_fpx(torch.full((2,), 16, dtype=torch.uint8), 4), ValueError, "codes: values must be < 16"),
    (lambda: pack_fpx(torch.zeros(2, dtype=torch.int32), 4), ValueError, "codes: expected a uint8"),
    (lambda: unpack_fpx(torch.zeros(4, dtype=torch.uint8), 6), ValueError, "packed: the last dimension \\(4\\)"),
    (lambda: unpack_fpx(torch.zeros((), dtype=torch.uint8), 4), ValueError, "packed: expected at least 1"),
])  # fmt: skip
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
