"""Dense packing of 4- and 6-bit codes into bytes, along the last dimension.

* 4 bits (fp4): two codes per byte; code ``2i`` in the low nibble (bits 0-3) and code ``2i+1`` in the high
  nibble (bits 4-7) of byte ``i``. This is the order of ``torch.float4_e2m1fn_x2`` and the OCP MX layout.
* 6 bits (fp6): four codes ``c0..c3`` in three bytes, as the little-endian 24-bit word
  ``c0 | c1 << 6 | c2 << 12 | c3 << 18``: byte 0 = ``c0 | (c1 & 0x3) << 6``, byte 1 = ``c1 >> 2 | (c2 & 0xF) << 4``,
  byte 2 = ``c2 >> 4 | c3 << 2``. Code ``k`` always starts at bit ``6k`` of its group.

The last dimension must be a multiple of the codes per group (2 or 4); packed tensors are ``uint8`` of last
dimension ``K * bits / 8``. ``unpack_fpx(pack_fpx(c, b), b) == c`` exactly for every in-range code.
"""

from __future__ import annotations

import torch

from lowbit_flex._checks import has_values

# bits -> (codes, bytes) per packed group: the one home of this table (ops and nn read it from here).
PACKED_GROUP = {4: (2, 1), 6: (4, 3)}


def _check_bits(bits: object) -> tuple[int, int]:
    if type(bits) is not int or bits not in PACKED_GROUP:
        raise ValueError(f"bits: expected 4 or 6 (packed widths), got {bits!r}")
    return PACKED_GROUP[bits]


def _check_uint8(name: str, t: object) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.dtype != torch.uint8:
        raise ValueError(f"{name}: expected a uint8 tensor, got {t.dtype}")
    if t.dim() < 1:
        raise ValueError(f"{name}: expected at least 1 dimension, got shape {tuple(t.shape)}")
    return t


def pack_fpx(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack ``uint8`` codes of ``bits`` (4 or 6) bits along the last dimension (see the module doc for the order)."""
    per_group, group_bytes = _check_bits(bits)
    _check_uint8("codes", codes)
    k = codes.shape[-1]
    if k % per_group:
        raise ValueError(f"codes: the last dimension ({k}) must be a multiple of {per_group} to pack {bits}-bit codes")
    if has_values(codes) and bool((codes >= 2**bits).any()):
        raise ValueError(f"codes: values must be < {2**bits} for {bits}-bit packing")
    g = codes.reshape(*codes.shape[:-1], k // per_group, per_group).to(torch.int32)
    word = torch.zeros(g.shape[:-1], dtype=torch.int32, device=codes.device)
    for j in range(per_group):
        word |= g[..., j] << (bits * j)
    out = torch.stack([(word >> (8 * b)) & 0xFF for b in range(group_bytes)], dim=-1)
    return out.reshape(*codes.shape[:-1], k // per_group * group_bytes).to(torch.uint8)


def unpack_fpx(packed: torch.Tensor, bits: int) -> torch.Tensor:
    """Inverse of :func:`pack_fpx`: ``uint8`` codes, last dimension ``packed.shape[-1] * 8 / bits``."""
    per_group, group_bytes = _check_bits(bits)
    _check_uint8("packed", packed)
    nb = packed.shape[-1]
    if nb % group_bytes:
        raise ValueError(f"packed: the last dimension ({nb}) must be a multiple of {group_bytes} for {bits}-bit codes")
    g = packed.reshape(*packed.shape[:-1], nb // group_bytes, group_bytes).to(torch.int32)
    word = torch.zeros(g.shape[:-1], dtype=torch.int32, device=packed.device)
    for b in range(group_bytes):
        word |= g[..., b] << (8 * b)
    codes = torch.stack([(word >> (bits * j)) & (2**bits - 1) for j in range(per_group)], dim=-1)
    return codes.reshape(*packed.shape[:-1], nb // group_bytes * per_group).to(torch.uint8)
