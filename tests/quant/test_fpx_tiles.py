import pytest
import torch

from lowbit_flex.quant import pack_fpx_tiles, tile_words_per_row, unpack_fpx_tiles


@pytest.mark.parametrize("bits", [4, 6])
@pytest.mark.parametrize("shape", [(1,), (3, 127), (2, 128), (2, 3, 300)])
def test_round_trip_is_exact(bits, shape):
    codes = torch.randint(0, 2**bits, shape, dtype=torch.uint8)
    words = pack_fpx_tiles(codes, bits)
    assert words.dtype == torch.int32 and words.shape == (*shape[:-1], tile_words_per_row(shape[-1], bits))
    assert torch.equal(unpack_fpx_tiles(words, bits, shape[-1]), codes)


def _documented_words(codes: torch.Tensor, bits: int) -> list[list[int]]:
    """The layout of the module docstring, code by code in Python (an independent reference): rows of uint32 words."""
    per_tile = 16 if bits == 4 else 24
    rows = []
    for row in codes.tolist():
        tiles = -(-len(row) // 128)
        words = [0] * (tiles * per_tile)
        for k, code in enumerate(row):
            t, p, w = k // 128, k % 128 // 16, k % 16
            words[per_tile * t + w] |= (code >> (bits - 4)) << (4 * p)
            if bits == 6:
                words[per_tile * t + 16 + w % 8] |= (code & 3) << (8 * (w // 8) + 2 * (p % 4) + 16 * (p // 4))
        rows.append(words)
    return rows


@pytest.mark.parametrize("bits", [4, 6])
def test_every_code_lands_where_the_docstring_says(bits):
    # Random codes (every bit position of both word kinds, a ragged last tile), given as a non-contiguous view.
    codes = torch.randint(0, 2**bits, (300, 5), dtype=torch.uint8, generator=torch.Generator().manual_seed(7)).t()
    words = pack_fpx_tiles(codes, bits)
    assert (words.to(torch.int64) & 0xFFFFFFFF).tolist() == _documented_words(codes, bits)
    assert pack_fpx_tiles(codes[:, :0], bits).shape == (5, 0)
    assert pack_fpx_tiles(codes[:0], bits).shape == (0, tile_words_per_row(300, bits))


def test_documented_bit_positions():
    # fp4: code 128 t + 16 p + w in nibble p of word 16 t + w.
    codes = torch.zeros(256, dtype=torch.uint8)
    codes[128 + 16 * 3 + 5] = 0xB
    words = pack_fpx_tiles(codes, 4)
    assert words.shape == (32,) and words.nonzero().flatten().tolist() == [16 + 5]
    assert int(words[21]) == 0xB << 12
    # fp6: the top 4 bits in nibble p of word 24 t + w, the low 2 bits in word 24 t + 16 + w % 8 at bit
    # 8 (w // 8) + 2 (p % 4) + 16 (p // 4).
    codes = torch.zeros(128, dtype=torch.uint8)
    codes[16 * 6 + 9] = 0b110111
    words = pack_fpx_tiles(codes, 6)
    assert words.shape == (24,) and words.nonzero().flatten().tolist() == [9, 17]
    assert int(words[9]) == 0b1101 << 24 and int(words[17]) == 0b11 << (8 + 4 + 16)
    # The sign nibble of code 7 lands in bit 31: the int32 word is negative, as the kernels read it.
    assert int(pack_fpx_tiles(torch.tensor([0] * 112 + [8] + [0] * 15, dtype=torch.uint8), 4)[0]) < 0


@pytest.mark.parametrize("call, match", [
    (lambda: pack_fpx_tiles(torch.zeros(4, dtype=torch.uint8), 5), "bits: expected 4 or 6"),
    (lambda: pack_fpx_tiles(torch.full((2,), 16, dtype=torch.uint8), 4), "codes: values must be < 16"),
    (lambda: pack_fpx_tiles(torch.zeros(2, dtype=torch.int32), 4), "codes: expected a uint8 tensor"),
    (lambda: unpack_fpx_tiles(torch.zeros(16, dtype=torch.uint8), 4, 128), "words: expected an int32 tensor"),
    (lambda: unpack_fpx_tiles(torch.zeros(16, dtype=torch.int32), 4, 129), "words: expected 32 words per row"),
    (lambda: unpack_fpx_tiles(torch.zeros(16, dtype=torch.int32), 4, -1), "k: expected a non-negative int"),
])  # fmt: skip
def test_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()
