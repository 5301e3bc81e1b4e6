"""Weight-only linear with fp8 / fp6 / fp4 weights: ``out = (x @ dequant(w).T) * w_scale + bias``.

One kernel serves every weight format: it reads the weight bytes once, decodes them to ``x``'s dtype in
registers (the weight never exists in bf16 in memory), runs ``tl.dot`` with fp32 accumulation and applies the
per-output-channel scale (and bias) in the epilogue.

* Packed fp4/fp6 (and bit-decoded fp8) weights are read as int32 words, a *unit* at a time (fp6: 3 words =
  16 codes; fp4: 1 word = 8; fp8: 1 word = 4); rows that are not whole units fall back to byte loads. Code ``c``
  of unit ``u`` meets activation column ``UNIT_CODES * u + c``: a dot product does not care in which order K is
  summed, so nothing is interleaved back into K order in registers.
* Decoding is table-free pure bit operations: the code's fields are moved into an fp16's, which equals the value
  times ``2^(bias - 15)`` for normal AND subnormal codes; the ``2^(15 - bias)`` factor is folded into the
  per-channel scale in the epilogue (exact: a power of two).
* fp8 e4m3 weights on sm_89+ load as ``float8e4nv`` and convert with the hardware ``.to()``; on older GPUs
  (sm_80 has no e4m3 conversion instruction) they take the same bit decode as fp6/fp4, from a ``uint8`` view.
* M <= 16 (decode, memory bound): 16-row tiles (M <= 4: a plain FMA GEMV, no MMA) and split-K over enough
  programs to fill the GPU twice over, so
  the weight streams at full bandwidth; partial sums go to an fp32 workspace and a second small kernel sums the
  splits in a fixed order (deterministic), then scales. Larger M: 64/128 x 128 tiles, no split.
Configs come from a fixed table (no autotuning on first call).
"""

from __future__ import annotations

import enum

import torch
import triton
import triton.language as tl

from lowbit_flex.kernels.arch import has_fp8_mma, sm_count, triton_interpreting
from lowbit_flex.kernels.common import LaunchConfig, dot_acc, reduce_split_k

# bits -> (int32 words, codes) per *unit*: the shortest run of whole words holding whole codes. The packed
# layouts are little-endian bit streams (code i at bit ``bits * i`` of its row), so a unit of fp6 is 3 words =
# 16 codes (two codes straddle a word boundary), of fp4 1 word = 8 codes, of fp8 1 word = 4 codes.
_UNIT = {8: (1, 4), 6: (3, 16), 4: (1, 8)}


class Variant(enum.Enum):
    """How the kernel reads and multiplies the weight (a private knob for benchmarks; the op picks the default).

    * ``WORDS_DOT``: int32 word loads (one load per 4 bytes instead of per byte), ``tl.dot`` on 16-row tiles.
    * ``WORDS_FMA``: the same loads, no ``tl.dot``: a plain multiply-add GEMV (no tensor-core operand shuffles);
      for the smallest M, where a 16-row MMA tile is mostly padding.
    * ``BYTES_DOT``: each word assembled from four byte loads (the original kernel's load pattern; also what
      runs when rows are not whole int32 words).
    """

    WORDS_DOT = "words_dot"
    WORDS_FMA = "words_fma"
    BYTES_DOT = "bytes_dot"


@triton.jit
def _load_word(w_rows, word_idx, ROW_BYTES, mask, LOAD_WORDS: tl.constexpr):
    """int32 word ``word_idx`` of each row: ``w_rows`` is an int32 pointer (LOAD_WORDS) or a uint8 pointer."""
    if LOAD_WORDS:
        word = tl.load(w_rows + word_idx, mask=mask, other=0)
    else:  # rows are not whole words (or forced): four byte loads, bytes past the row end read as 0
        word = tl.load(w_rows + word_idx * 4, mask=mask & (word_idx * 4 < ROW_BYTES), other=0).to(tl.int32)
        for b in tl.static_range(1, 4):
            off = word_idx * 4 + b
            byte = tl.load(w_rows + off, mask=mask & (off < ROW_BYTES), other=0)
            word = word | (byte.to(tl.int32) << (8 * b))
    return word


@triton.jit
def _shift(v, D: tl.constexpr):
    """``v << D`` for D >= 0, ``v >> -D`` (arithmetic) otherwise."""
    if D > 0:
        return v << D
    elif D < 0:
        return v >> (-D)
    return v


@triton.jit
def _fp16_of_code(w0, w1, w2, C: tl.constexpr, BITS: tl.constexpr, EBITS: tl.constexpr, MBITS: tl.constexpr):
    """Code ``C`` of a unit (int32 words ``w0..w2``, code c at bit ``BITS * c``) -> the fp16 equal to its value
    times 2^(bias - 15).

    The code's sign, exponent and mantissa fields are moved straight from the word into an fp16's: exact for
    normal AND subnormal codes (both keep subnormals at exponent field 0) whenever ebits <= 5, mbits <= 10. Pure
    bit operations: two shifts, two ANDs and an OR (ptxas fuses AND/OR into LOP3) unless the code straddles two
    words; the 2^(15 - bias) factor is folded into the per-channel scale in the epilogue. Arithmetic right
    shifts are safe: the copied sign bits land at bit >= 16 (sign) / >= 11 + EBITS (magnitude), above the masks."""
    P: tl.constexpr = BITS * C
    S: tl.constexpr = P % 32
    if P // 32 == 0:
        lo = w0
        hi = w1
    elif P // 32 == 1:
        lo = w1
        hi = w2
    else:
        lo = w2
        hi = w2
    NB: tl.constexpr = EBITS + MBITS  # the sign is bit NB of the code
    if S + BITS > 32:  # straddles two words: assemble the code at bit 0 first
        t = ((lo >> S) & ((1 << (32 - S)) - 1)) | (hi << (32 - S))
        sign = _shift(t, 15 - NB) & 0x8000
        mag = _shift(t, 10 - MBITS) & (((1 << NB) - 1) << (10 - MBITS))
    else:
        sign = _shift(lo, 15 - NB - S) & 0x8000
        mag = _shift(lo, 10 - MBITS - S) & (((1 << NB) - 1) << (10 - MBITS))
    return (sign | mag).to(tl.int16).to(tl.float16, bitcast=True)


@triton.jit
def _weight_only_linear_kernel(
    x_ptr, w_ptr, scale_ptr, bias_ptr, out_ptr, part_ptr,
    M, N, K, stride_xm, stride_wn, stride_om, ROW_BYTES, UNITS_PER_SPLIT,
    BITS: tl.constexpr, EBITS: tl.constexpr, MBITS: tl.constexpr, DEC_SCALE: tl.constexpr,
    NATIVE_FP8: tl.constexpr, LOAD_WORDS: tl.constexpr, USE_DOT: tl.constexpr, HAS_BIAS: tl.constexpr,
    SPLIT_K: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_U: tl.constexpr,
    UPCAST_DOT: tl.constexpr,
):  # fmt: skip
    # A unit: UNIT_WORDS int32 words = UNIT_CODES codes (one fp8 code when NATIVE_FP8). Code c of unit u meets
    # activation column UNIT_CODES * u + c: a dot product does not care in which order K is summed, so the
    # decoded codes are never interleaved back into K order (no register shuffles); for M <= 16 the strided
    # activation loads hit L1/L2 (x is tiny).
    UNIT_WORDS: tl.constexpr = 1 if BITS != 6 else 3
    UNIT_CODES: tl.constexpr = 1 if NATIVE_FP8 else 32 * UNIT_WORDS // BITS
    pid_n = tl.program_id(0)
    pid_m = tl.program_id(1)
    pid_k = tl.program_id(2)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok = rm < M
    n_ok = rn < N
    x_rows = x_ptr + rm[:, None].to(tl.int64) * stride_xm
    w_rows = w_ptr + rn[:, None].to(tl.int64) * stride_wn  # stride in elements of w_ptr (int32 words or bytes)
    u_begin = pid_k * UNITS_PER_SPLIT
    u_end = tl.minimum(u_begin + UNITS_PER_SPLIT, tl.cdiv(K, UNIT_CODES))
    if USE_DOT:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    else:
        acc3 = tl.zeros((BLOCK_M, BLOCK_N, BLOCK_U), dtype=tl.float32)
    for u0 in range(u_begin, u_end, BLOCK_U):
        u = u0 + tl.arange(0, BLOCK_U)
        u_ok = u < u_end
        w_mask = n_ok[:, None] & u_ok[None, :]
        if NATIVE_FP8:
            w0 = tl.load(w_rows + u[None, :], mask=w_mask, other=0.0)
            w1 = w0
            w2 = w0
        else:
            w0 = _load_word(w_rows, u[None, :] * UNIT_WORDS, ROW_BYTES, w_mask, LOAD_WORDS)
            w1 = w0
            w2 = w0
            if UNIT_WORDS == 3:
                w1 = _load_word(w_rows, u[None, :] * 3 + 1, ROW_BYTES, w_mask, LOAD_WORDS)
                w2 = _load_word(w_rows, u[None, :] * 3 + 2, ROW_BYTES, w_mask, LOAD_WORDS)
        for c in tl.static_range(UNIT_CODES):
            col = u * UNIT_CODES + c
            xc = tl.load(x_rows + col[None, :], mask=m_ok[:, None] & (col < K)[None, :], other=0.0)
            if NATIVE_FP8:
                w = w0  # sm_89+ hardware e4m3 conversion below, exact
            else:
                w = _fp16_of_code(w0, w1, w2, c, BITS, EBITS, MBITS)
            if USE_DOT:  # fp16 -> bf16 is exact: <= 4 significant bits, well inside bf16's range
                # UPCAST_DOT under the interpreter only (see dot_acc).
                acc = dot_acc(xc, tl.trans(w.to(x_ptr.dtype.element_ty)), acc, UPCAST_DOT, "tf32")
            else:
                acc3 += xc.to(tl.float32)[:, None, :] * w.to(tl.float32)[None, :, :]
    if not USE_DOT:
        acc = tl.sum(acc3, axis=2)
    mask = m_ok[:, None] & n_ok[None, :]
    if SPLIT_K == 1:
        out = acc * (tl.load(scale_ptr + rn, mask=n_ok, other=0.0) * DEC_SCALE)[None, :]
        if HAS_BIAS:
            out += tl.load(bias_ptr + rn, mask=n_ok, other=0.0).to(tl.float32)[None, :]
        o_ptrs = out_ptr + rm[:, None].to(tl.int64) * stride_om + rn[None, :]
        tl.store(o_ptrs, out.to(out_ptr.dtype.element_ty), mask=mask)
    else:
        p_ptrs = part_ptr + (pid_k * M + rm[:, None]).to(tl.int64) * N + rn[None, :]
        tl.store(p_ptrs, acc, mask=mask)


# Largest M at which the FMA GEMV beats the 16-row tl.dot tile, per weight width, measured on an H200 (K = N =
# 4096, bf16 x, 2026-11-22, ms): fp6 M=1 0.0233 vs 0.0373, M=4 0.0278 vs 0.0380; fp4 M=1 0.0117 vs 0.0156, M=4
# 0.0177 vs 0.0159. fp8 never: its FMA form ran 0.015 vs 0.011 at M=1 and 0.80 (!) vs 0.012 at M=4, and the
# FMA form collapses for every format at M=16 (fp8 3.2 ms, fp4 1.3 ms) -- so it stays a small-M special case.
_FMA_MAX_M = {8: 0, 6: 4, 4: 1}


def default_variant(bits: int, M: int) -> Variant:
    return Variant.WORDS_FMA if _FMA_MAX_M[bits] >= M else Variant.WORDS_DOT


def _word_loadable(w: torch.Tensor, k: int, bits: int) -> bool:
    """Rows of whole units, each row starting on a 4-byte boundary: the weight can be read as int32 words."""
    unit_codes = _UNIT[bits][1]
    return k % unit_codes == 0 and w.stride(0) % 4 == 0 and w.data_ptr() % 4 == 0


def _config(variant: Variant, m: int, unit_codes: int, native_fp8: bool) -> LaunchConfig:
    """The launch config; ``block_k`` counts units (see ``_UNIT``), not K elements."""
    if variant is Variant.WORDS_FMA:  # registers: BLOCK_M * 64 * 256 / 128 threads fp32 partial sums
        return LaunchConfig(min(16, triton.next_power_of_2(m)), 64, max(1, 256 // unit_codes), 4, 3)
    if m <= 16:  # 512 codes per row per step: 384 (fp6) / 256 (fp4) / 512 (fp8) bytes
        return LaunchConfig(16, 64, (256 if native_fp8 else 512 // unit_codes), 4, 4)
    block_m = 64 if m <= 64 else 128
    return LaunchConfig(block_m, 128, max(16, 256 // unit_codes), (4 if block_m == 64 else 8), 3)


def _launch(x, w, w_scale, bias, *, bits, ebits, mbits, exp_bias, native_fp8, split_k, variant):
    K = x.shape[-1]
    N = w.shape[0]
    x2 = x.reshape(-1, K)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    w = w if w.stride(-1) == 1 else w.contiguous()
    M = x2.shape[0]
    out = torch.empty((M, N), dtype=x.dtype, device=x.device)
    if M == 0:
        return out.view(*x.shape[:-1], N)
    if variant is None:
        variant = default_variant(bits, M)
    unit_codes = 1 if native_fp8 else _UNIT[bits][1]
    row_bytes = w.shape[1]
    load_words = not native_fp8 and variant is not Variant.BYTES_DOT and _word_loadable(w, K, bits)
    if load_words:
        w = w.view(torch.int32)  # strides now in words
    cfg = _config(variant, M, unit_codes, native_fp8)
    block_m, block_n, block_u = cfg.block_m, cfg.block_n, cfg.block_k
    n_units = triton.cdiv(K, unit_codes)
    k_steps = triton.cdiv(n_units, block_u)
    if split_k is None and M <= 16:  # memory bound: stream the weight once, >= 2 (FMA: 4) programs per SM
        per_sm = 4 if variant is Variant.WORDS_FMA else 2
        tiles = triton.cdiv(N, block_n) * triton.cdiv(M, block_m)
        split_k = max(1, min(k_steps, triton.cdiv(per_sm * sm_count(x.device), tiles)))
    split_k = max(1, min(split_k or 1, k_steps))
    units_per_split = triton.cdiv(k_steps, split_k) * block_u
    split_k = triton.cdiv(n_units, units_per_split)  # no empty splits
    part = torch.empty((split_k, M, N), dtype=torch.float32, device=x.device) if split_k > 1 else out
    bias_arg = bias if bias is not None else w_scale  # a valid pointer that is never read
    # Decoded codes are value * 2^(bias - 15) (see _fp16_of_code); the epilogue multiplies the scale back.
    dec_scale = 1.0 if native_fp8 else 2.0 ** (15 - exp_bias)
    grid = (triton.cdiv(N, block_n), triton.cdiv(M, block_m), split_k)
    _weight_only_linear_kernel[grid](
        x2, w, w_scale, bias_arg, out, part, M, N, K, x2.stride(0), w.stride(0), out.stride(0), row_bytes,
        units_per_split, BITS=bits, EBITS=ebits, MBITS=mbits, DEC_SCALE=dec_scale, NATIVE_FP8=native_fp8,
        LOAD_WORDS=load_words, USE_DOT=variant is not Variant.WORDS_FMA, HAS_BIAS=bias is not None,
        SPLIT_K=split_k, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_U=block_u, UPCAST_DOT=triton_interpreting(),
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )  # fmt: skip
    if split_k > 1:
        reduce_split_k(part, out, w_scale, bias, post_scale=dec_scale)
    return out.view(*x.shape[:-1], N)


def fp8_native_supported(device: torch.device) -> bool:
    """Hardware e4m3 -> bf16/fp16 conversion: sm_89+ (and the interpreter, which emulates it)."""
    return device.type != "cuda" or has_fp8_mma(device)


def fp8_weight_only_linear_triton(x, w_fp8, w_scale, bias=None, *, native_fp8=None, split_k=None, variant=None):
    """Launch for float8_e4m3fn weights ``(N, K)``; arguments are already validated by the op."""
    native = fp8_native_supported(x.device) if native_fp8 is None else native_fp8
    w = w_fp8 if native else w_fp8.view(torch.uint8)
    return _launch(
        x, w, w_scale, bias, bits=8, ebits=4, mbits=3, exp_bias=7, native_fp8=native, split_k=split_k,
        variant=variant,
    )  # fmt: skip


def fpx_weight_only_linear_triton(x, w_packed, w_scale, ebits, mbits, bias=None, *, split_k=None, variant=None):
    """Launch for packed fp6/fp4 weights (``lowbit_flex.quant.pack_fpx`` layout, rows of ``K * bits / 8``
    bytes); MX formats (bias ``2^(ebits-1) - 1``, no inf/NaN). Arguments are already validated by the op."""
    bits = 1 + ebits + mbits
    return _launch(
        x, w_packed, w_scale, bias, bits=bits, ebits=ebits, mbits=mbits, exp_bias=2 ** (ebits - 1) - 1,
        native_fp8=False, split_k=split_k, variant=variant,
    )  # fmt: skip
