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
    if has_values(codes) and bool((codes >= 2**bits).any()):
        raise ValueError(f"codes: values must be < {2**bits} for {bits}-bit packing")
    *lead, k = codes.shape
    tiles = -(-k // TILE_CODES)
    c = torch.zeros(*lead, tiles * TILE_CODES, dtype=torch.int64, device=codes.device)
    c[..., :k] = codes
    c = c.view(*lead, tiles, 8, 16)  # (..., t, p, w)
    nibble_bit, lo_bit = _bit_positions(bits)
    hi = ((c >> (bits - 4)) << nibble_bit.to(c.device)).sum(-2)  # (..., t, 16): disjoint bits, so sum == or
    parts = [hi]
    if lo_bit is not None:
        lo = ((c & 3) << lo_bit.to(c.device)).view(*lead, tiles, 8, 2, 8).sum((-3, -2))  # word w % 8
        parts.append(lo)
    words = torch.cat(parts, dim=-1)  # (..., t, words_per_tile)
    assert words.shape[-1] == words_per_tile
    # int64 -> int32 keeps the low 32 bits (two's complement): bit 31 becomes the sign, as in the kernels' words.
    return words.reshape(*lead, tiles * words_per_tile).to(torch.int32)


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
