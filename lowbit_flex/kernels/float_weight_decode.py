"""Decoding fp4 / fp6 / fp8 weight codes to fp16 in registers: the part every weight-only kernel shares.

The decode is table-free: a code's sign and magnitude bits are moved into an fp16's sign and exponent/mantissa
fields. The fp16 then equals the code's value times ``2^(bias - 15)`` for normal AND subnormal codes (both formats
keep subnormals at exponent field 0, and fp16's range holds every ``ebits <= 5, mbits <= 10`` format), so kernels
multiply ``dec_scale(...) = 2^(15 - bias)`` back into the per-channel scale in their epilogue (exact: a power of two).

fp4 / fp6 words are in the tile layout of :mod:`lowbit_flex.quant.fpx_tiles`: codes ``p`` and ``p + 4`` of a word
sit 16 bits apart, so one shift-and-mask produces both halves of an fp16 pair. On the GPU that is written in PTX
(~3 instructions per pair for fp4, ~5 for fp6, plus the two conversions to float32 where asked): Triton would
otherwise decode each code in its own register. The interpreter runs no PTX: it gets the same values from plain
Triton integer operations, one plane at a time.
"""

from __future__ import annotations

import functools

import triton
import triton.language as tl

FP8_E4M3 = (4, 3)  # (ebits, mbits) of the one fp8 weight format


def dec_scale(ebits: int, native_fp8: bool = False) -> float:
    """The factor that turns a decoded fp16 back into the code's value: ``2^(15 - bias)`` (1 for the hardware fp8
    conversion, which is exact)."""
    return 1.0 if native_fp8 else 2.0 ** (15 - (2 ** (ebits - 1) - 1))


@functools.cache
def planes_asm(bits: int, mbits: int, to_f32: bool, bf16: bool = False) -> tuple[str, str]:
    """PTX and constraints turning one tile-layout hi word ``$8`` (and, for fp6, its lo word ``$9``, already
    shifted so the crumbs of codes ``p``, ``p + 4`` sit at bits ``2p``, ``2p + 16``) into the 8 codes' fp16 values
    (``to_f32``: as float32), plane ``p`` in output ``$p``.

    ``bf16``: the same values as bfloat16, for kernels whose tensor cores take bf16 (it saves the fp16 -> bf16
    conversion, three instructions per pair): the fields go into a bf16's, which is then the value times
    ``2^(bias - 127)``, and one ``fma.rn.bf16x2`` per pair multiplies by ``2^112`` (exact, subnormal codes
    included; the addend -0 keeps the sign of zero codes). So both forms carry the same ``dec_scale`` factor."""
    mant = 7 if bf16 else 10  # the 16-bit type's mantissa bits
    low = mant - mbits + bits - 4  # the bit the nibble's lowest magnitude bit moves to
    mag_mask = (0x7 << low) * 0x10001
    lo_mask = (0x3 << (mant - mbits)) * 0x10001
    rebias = ((127 + 112) << 7) * 0x10001  # bf16 2^112, twice: 2^(bias - 127) -> 2^(bias - 15)

    def shift(dst: str, src: str, by: int) -> str:
        return f"{'shl' if by >= 0 else 'shr'}.b32 {dst}, {src}, {abs(by)};"

    body = []
    for p in range(4):
        body.append(f"{shift('m', '$8', low - 4 * p)} and.b32 m, m, {mag_mask};")
        body.append(f"shl.b32 s, $8, {12 - 4 * p}; and.b32 s, s, 0x80008000; or.b32 m, m, s;")
        if bits == 6:
            body.append(f"{shift('s', '$9', mant - mbits - 2 * p)} and.b32 s, s, {lo_mask}; or.b32 m, m, s;")
        if bf16:
            body.append("fma.rn.bf16x2 m, m, k, z;")
        if to_f32:
            cvt = "cvt.f32.bf16" if bf16 else "cvt.f32.f16"
            body.append(f"mov.b32 {{a, b}}, m; {cvt} ${p}, a; {cvt} ${p + 4}, b;")
        else:
            body.append(f"mov.b32 {{${p}, ${p + 4}}}, m;")
    consts = f"mov.b32 k, {rebias}; mov.b32 z, 0x80008000; " if bf16 else ""  # half2 operands are registers
    asm = "{ .reg .b32 m, s, k, z; .reg .b16 a, b; " + consts + " ".join(body) + " }"
    out = "=f" if to_f32 else "=h"
    constraints = ",".join([out] * 8 + ["r"] * (2 if bits == 6 else 1))
    return asm, constraints


@triton.jit
def _plane(hi, lo, P: tl.constexpr, BITS: tl.constexpr, MBITS: tl.constexpr):
    """Plane ``P`` of tile-layout words as fp16 (the interpreter's form of :func:`decode_planes`)."""
    LOW: tl.constexpr = 10 - MBITS + BITS - 4
    nib = (hi >> (4 * P)) & 0xF
    bits = ((nib & 8) << 12) | ((nib & 7) << LOW)
    if BITS == 6:
        bits = bits | (((lo >> (2 * (P % 4) + 16 * (P // 4))) & 3) << (10 - MBITS))
    return bits.to(tl.int16).to(tl.float16, bitcast=True)


@triton.jit
def decode_planes(
    hi, lo, BITS: tl.constexpr, MBITS: tl.constexpr, TO_F32: tl.constexpr, ASM: tl.constexpr, CONS: tl.constexpr
):
    """The 8 planes of tile-layout words ``hi`` (fp6: and ``lo``, pre-shifted by ``8 * (w // 8)``) as a tuple of
    fp16 (``TO_F32``: float32) tensors of ``hi``'s shape, each value times ``2^(bias - 15)``. ``ASM``, ``CONS``:
    :func:`planes_asm` of the same arguments (a launcher computes them: jit code calls only jit functions), or
    ``""`` under the interpreter."""
    # One return per form: Triton compiles the code after a constexpr-if's return too.
    if ASM != "":
        if BITS == 6:
            args = [hi, lo]
        else:
            args = [hi]
        if TO_F32:
            out = tl.inline_asm_elementwise(ASM, CONS, args, dtype=(tl.float32,) * 8, is_pure=True, pack=1)
        else:
            out = tl.inline_asm_elementwise(ASM, CONS, args, dtype=(tl.float16,) * 8, is_pure=True, pack=1)
    else:
        out = (
            _plane(hi, lo, 0, BITS, MBITS), _plane(hi, lo, 1, BITS, MBITS), _plane(hi, lo, 2, BITS, MBITS),
            _plane(hi, lo, 3, BITS, MBITS), _plane(hi, lo, 4, BITS, MBITS), _plane(hi, lo, 5, BITS, MBITS),
            _plane(hi, lo, 6, BITS, MBITS), _plane(hi, lo, 7, BITS, MBITS),
        )  # fmt: skip
        if TO_F32:
            out = (
                out[0].to(tl.float32), out[1].to(tl.float32), out[2].to(tl.float32), out[3].to(tl.float32),
                out[4].to(tl.float32), out[5].to(tl.float32), out[6].to(tl.float32), out[7].to(tl.float32),
            )  # fmt: skip
    return out


@triton.jit
def load_tile_words(w_rows, t, w, BITS: tl.constexpr, mask):
    """The hi words (and fp6 lo words, pre-shifted for :func:`decode_planes`) of tiles ``t`` at word ``w``
    (broadcast tensors); ``w_rows`` points at each row's first int32 word."""
    TILE_WORDS: tl.constexpr = 16 if BITS == 4 else 24
    hi = tl.load(w_rows + t * TILE_WORDS + w, mask=mask, other=0)
    lo = hi
    if BITS == 6:  # word w % 8 of the tile's 8 lo words; codes of words 8..15 sit 8 bits higher
        lo = tl.load(w_rows + t * TILE_WORDS + 16 + w % 8, mask=mask, other=0) >> (8 * (w // 8))
    return hi, lo


@triton.jit
def decode_fp8(w, NATIVE: tl.constexpr):
    """float8_e4m3fn codes (NATIVE: loaded as ``float8e4nv``; else as uint8) -> fp16, times ``2^(bias - 15)``
    unless NATIVE (the hardware conversion, sm_89+, is exact)."""
    # Triton compiles the code after a constexpr-if's return too: each form sits in its own branch.
    if NATIVE:
        out = w.to(tl.float16)
    else:
        c = w.to(tl.int32)
        out = (((c & 0x80) << 8) | ((c & 0x7F) << 7)).to(tl.int16).to(tl.float16, bitcast=True)
    return out


@triton.jit
def store_weight_only_tile(
    acc, scale_ptr, bias_ptr, out_ptr, part_ptr, rm, rn, M, N, stride_om, pid_k,
    DEC_SCALE: tl.constexpr, SPLIT_PARTIALS: tl.constexpr, HAS_BIAS: tl.constexpr,
):  # fmt: skip
    """Every weight-only kernel's epilogue for a float32 ``(BLOCK_M, BLOCK_N)`` tile of ``x @ decoded.T``: times the
    channel scale and ``DEC_SCALE``, plus bias, into ``out``; or, split over K, the raw sums into split ``pid_k`` of
    the float32 ``(splits, M, N)`` partials (the split-K reduce then scales them, in split order)."""
    mask = (rm < M)[:, None] & (rn < N)[None, :]
    if SPLIT_PARTIALS:
        tl.store(part_ptr + (pid_k * M + rm[:, None]).to(tl.int64) * N + rn[None, :], acc, mask=mask)
    else:
        n_ok = rn < N
        out = acc * (tl.load(scale_ptr + rn, mask=n_ok, other=0.0) * DEC_SCALE)[None, :]
        if HAS_BIAS:
            out += tl.load(bias_ptr + rn, mask=n_ok, other=0.0).to(tl.float32)[None, :]
        o_ptrs = out_ptr + rm[:, None].to(tl.int64) * stride_om + rn[None, :]
        tl.store(o_ptrs, out.to(out_ptr.dtype.element_ty), mask=mask)
