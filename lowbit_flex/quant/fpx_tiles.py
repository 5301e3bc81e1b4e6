"""The weight-only kernels' layout of packed fp4 / fp6 codes: int32 words in tiles of 128 codes per row.

The kernels decode two codes per bit operation: a code's sign and magnitude bits are moved into an fp16's fields
with a shift and a mask, and two codes 16 bits apart in a word land in the two halves of one 32-bit register. The
OCP order of :func:`~lowbit_flex.quant.pack_fpx` (codes in K order, 6-bit codes straddling bytes) cannot give that,
so the modules store this layout instead; :func:`pack_fpx_tiles` / :func:`unpack_fpx_tiles` convert, exactly.

Each row of K codes is padded with zero codes to whole tiles of ``TILE_CODES = 128``; code ``k = 128 t + 16 p + w``
(``p`` in 0..7, ``w`` in 0..15) of tile ``t`` lives in:

* fp4 (16 words per tile): nibble ``p`` (bits ``4p .. 4p+3``) of word ``16 t + w``;
* fp6 (24 words per tile): its top four bits (sign and the three highest magnitude bits) in nibble ``p`` of word
  ``24 t + w``; its two lowest bits in word ``24 t + 16 + w % 8``, at bit ``8 (w // 8) + 2 (p % 4) + 16 (p // 4)``.

So codes ``p`` and ``p + 4`` of a word are 16 bits apart (one register pair), and plane ``p`` of a tile's 16 words
meets 16 consecutive activation columns ``128 t + 16 p .. + 15`` (contiguous loads). fp6 loses no bit (24 words =
128 six-bit codes); the padding is at most 127 codes per row (none when K is a multiple of 128).
"""

from __future__ import annotations

import sys

import torch

from lowbit_flex._checks import has_values
from lowbit_flex.quant.fpx_pack import _check_uint8

TILE_CODES = 128
# bits -> int32 words per tile: the one home of these numbers (ops, nn and kernels read them from here).
TILE_WORDS = {4: 16, 6: 24}


def tile_words_per_row(k: int, bits: int) -> int:
    """int32 words per packed row of ``k`` codes."""
    return -(-k // TILE_CODES) * _check_bits(bits)


def _check_bits(bits: object) -> int:
    if type(bits) is not int or bits not in TILE_WORDS:
        raise ValueError(f"bits: expected 4 or 6 (packed widths), got {bits!r}")
    return TILE_WORDS[bits]


def _bit_positions(bits: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """For the (8, 16) codes ``(p, w)`` of a tile: the bit of its nibble within the tile's hi words (word ``w``),
    and for fp6 the bit of its two low bits within the tile's lo words (word ``w % 8``)."""
    p = torch.arange(8).view(8, 1)
    w = torch.arange(16).view(1, 16)
    nibble_bit = (4 * p).expand(8, 16)
    if bits == 4:
        return nibble_bit, None
    return nibble_bit, 8 * (w // 8) + 2 * (p % 4) + 16 * (p // 4)


def pack_fpx_tiles(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """``uint8`` codes ``(..., K)`` of ``bits`` (4 or 6) bits -> int32 words ``(..., tile_words_per_row(K, bits))``."""
    words_per_tile = _check_bits(bits)
    _check_uint8("codes", codes)
    if has_values(codes) and int(codes.max()) >= 2**bits:  # max: ~30x faster than (codes >= 2**bits).any()
        raise ValueError(f"codes: values must be < {2**bits} for {bits}-bit packing")
    *lead, k = codes.shape
    tiles = -(-k // TILE_CODES)
    c = codes.contiguous()  # (the views below need row-major codes)
    if k != tiles * TILE_CODES:  # zero codes up to whole tiles
        c = torch.zeros(*lead, tiles * TILE_CODES, dtype=torch.uint8, device=codes.device)
        c[..., :k] = codes
    # The words are built byte by byte in uint8 (byte j: bits 8j .. 8j + 7) and viewed as int32, 7-10x faster than
    # shifting int64 copies of every code (a 4096 x 11008 weight on 2 cores: fp6 0.19 s instead of 1.3 s).
    # hi word w of tile t, byte j: nibbles p = 2j (bits 8j ..) and 2j + 1 (bits 8j + 4 ..), the codes' top 4 bits.
    nib = (c >> (bits - 4)).view(*lead, tiles, 4, 2, 16)  # (..., t, j, p % 2, w)
    hi = nib[..., 0, :] | (nib[..., 1, :] << 4)  # (..., t, j, w)
    parts = [hi.transpose(-1, -2)]  # (..., t, w, j): the bytes of each word in order
    if bits == 6:
        # lo word w % 8, byte half + 2 (p // 4) (half = w // 8), bits 2 (p % 4): the codes' two low bits.
        low = (c & 3).view(*lead, tiles, 2, 4, 2, 8)  # (..., t, p // 4, p % 4, half, w % 8)
        lo = low[..., 0, :, :] | (low[..., 1, :, :] << 2) | (low[..., 2, :, :] << 4) | (low[..., 3, :, :] << 6)
        parts.append(lo.permute(*range(len(lead) + 1), -1, -3, -2).reshape(*lead, tiles, 8, 4))  # (.., t, w%8, byte)
    words = torch.cat(parts, dim=-2)  # (..., t, words_per_tile, 4 bytes), least significant first
    if sys.byteorder == "big":  # the int32 view reads the first byte as the most significant
        words = words.flip(-1)
    return words.contiguous().view(torch.int32).reshape(*lead, tiles * words_per_tile)


def unpack_fpx_tiles(words: torch.Tensor, bits: int, k: int) -> torch.Tensor:
    """Inverse of :func:`pack_fpx_tiles`: the first ``k`` codes of each row, ``uint8 (..., k)``."""
    words_per_tile = _check_bits(bits)
    if not isinstance(words, torch.Tensor) or words.dtype != torch.int32 or words.dim() < 1:
        got = getattr(words, "dtype", type(words).__name__)
        raise ValueError(f"words: expected an int32 tensor with at least 1 dimension, got {got}")
    if isinstance(k, bool) or not isinstance(k, (int, torch.SymInt)) or k < 0:
        raise ValueError(f"k: expected a non-negative int, got {k!r}")
    if words.shape[-1] != tile_words_per_row(k, bits):
        raise ValueError(
            f"words: expected {tile_words_per_row(k, bits)} words per row for k={k} {bits}-bit codes, "
            f"got shape {tuple(words.shape)}"
        )
    *lead, n_words = words.shape
    tiles = n_words // words_per_tile
    w = words.to(torch.int64).view(*lead, tiles, 1, words_per_tile) & 0xFFFFFFFF
    nibble_bit, lo_bit = _bit_positions(bits)
    codes = ((w[..., :16] >> nibble_bit.to(w.device)) & 0xF) << (bits - 4)  # (..., t, p, w)
    if lo_bit is not None:
        lo = w[..., 16:].repeat(*([1] * (w.dim() - 1)), 2)  # word w % 8 for w in 0..15
        codes = codes | ((lo >> lo_bit.to(w.device)) & 3)
    return codes.reshape(*lead, tiles * TILE_CODES)[..., :k].to(torch.uint8)
