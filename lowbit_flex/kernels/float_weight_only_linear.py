"""Weight-only linear with fp8 / fp6 / fp4 weights: ``out = (x @ dequant(w).T) * w_scale + bias``.

One kernel serves every weight format: it reads the weight bytes once, decodes them to ``x``'s dtype in
registers (the weight never exists in bf16 in memory), runs ``tl.dot`` with fp32 accumulation and applies the
per-output-channel scale (and bias) in the epilogue.

* Packed fp4/fp6 weights are consumed a *group* at a time (two fp4 codes in one byte, four fp6 codes in three
  bytes). Instead of interleaving the decoded codes back into K order, code ``j`` of every group meets the
  activations at columns ``VALS * g + j``: a dot product does not care in which order K is summed, and this needs
  no shuffles (``tl.join``/``reshape``) in registers.
* Decoding is table-free: the code's exponent and mantissa fields are written into an fp16's, which makes the
  fp16 equal to the value times ``2^(bias - 15)`` for normal AND subnormal codes (both formats keep subnormals
  at exponent field 0); the fp16 -> fp32 conversion is exact, and one multiply by ``2^(15 - bias)`` in fp32 (on
  a normal number, so flush-to-zero cannot bite) gives the value. Works for every format with ``ebits <= 4``.
* fp8 e4m3 weights on sm_89+ load as ``float8e4nv`` and convert with the hardware ``.to()``; on older GPUs
  (sm_80 has no e4m3 conversion instruction) they take the same bit decode as fp6/fp4, from a ``uint8`` view.
* M <= 16 (decode, memory bound): 16-row tiles and split-K over enough programs to fill the GPU twice over, so
  the weight streams at full bandwidth; partial sums go to an fp32 workspace and a second small kernel sums the
  splits in a fixed order (deterministic), then scales. Larger M: 64/128 x 128 tiles, no split.
Configs come from a fixed table (no autotuning on first call).
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from lowbit_flex.testing import triton_interpreting

# codes per group, bytes per group
_GROUP = {8: (1, 1), 6: (4, 3), 4: (2, 1)}


@triton.jit
def _decode_minifloat(code, EBITS: tl.constexpr, MBITS: tl.constexpr, DEC_SCALE: tl.constexpr):
    """int32 codes (sign | exponent | mantissa) -> float32 values; see the module docstring."""
    sign = (code >> (EBITS + MBITS)) & 1
    mag = code & ((1 << (EBITS + MBITS)) - 1)
    h = (sign << 15) | (mag << (10 - MBITS))
    return h.to(tl.int16).to(tl.float16, bitcast=True).to(tl.float32) * DEC_SCALE


@triton.jit
def _dot(acc, a, b, UPCAST_DOT: tl.constexpr):
    # acc += a @ b.T. UPCAST_DOT: the Triton 3.9 CPU interpreter computes bf16 x bf16 tl.dot wrongly (measured);
    # fp32 operands are exact there (bf16/fp16 values are exact in fp32), so the interpreter uses them.
    if UPCAST_DOT:
        return tl.dot(a.to(tl.float32), tl.trans(b.to(tl.float32)), acc, input_precision="ieee")
    return tl.dot(a, tl.trans(b), acc)


@triton.jit
def _weight_only_linear_kernel(
    x_ptr, w_ptr, scale_ptr, bias_ptr, out_ptr, part_ptr,
    M, N, K, stride_xm, stride_wn, stride_om, GROUPS_PER_SPLIT,
    BITS: tl.constexpr, EBITS: tl.constexpr, MBITS: tl.constexpr, DEC_SCALE: tl.constexpr,
    NATIVE_FP8: tl.constexpr, HAS_BIAS: tl.constexpr, SPLIT_K: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_G: tl.constexpr, UPCAST_DOT: tl.constexpr,
):  # fmt: skip
    VALS: tl.constexpr = 1 if BITS == 8 else (2 if BITS == 4 else 4)
    GROUP_BYTES: tl.constexpr = VALS * BITS // 8
    pid_n = tl.program_id(0)
    pid_m = tl.program_id(1)
    pid_k = tl.program_id(2)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok = rm < M
    n_ok = rn < N
    x_rows = x_ptr + rm[:, None].to(tl.int64) * stride_xm
    w_rows = w_ptr + rn[:, None].to(tl.int64) * stride_wn
    g_begin = pid_k * GROUPS_PER_SPLIT
    g_end = tl.minimum(g_begin + GROUPS_PER_SPLIT, K // VALS)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for g0 in range(g_begin, g_end, BLOCK_G):
        g = g0 + tl.arange(0, BLOCK_G)
        g_ok = g < g_end
        w_mask = n_ok[:, None] & g_ok[None, :]
        x_mask = m_ok[:, None] & g_ok[None, :]
        if NATIVE_FP8:
            w = tl.load(w_rows + g[None, :], mask=w_mask, other=0.0).to(x_ptr.dtype.element_ty)
            acc = _dot(acc, tl.load(x_rows + g[None, :], mask=x_mask, other=0.0), w, UPCAST_DOT)
        else:
            word = tl.zeros((BLOCK_N, BLOCK_G), dtype=tl.int32)
            for b in tl.static_range(GROUP_BYTES):
                byte = tl.load(w_rows + g[None, :] * GROUP_BYTES + b, mask=w_mask, other=0)
                word = word | (byte.to(tl.int32) << (8 * b))
            for j in tl.static_range(VALS):
                code = (word >> (BITS * j)) & ((1 << BITS) - 1)
                w = _decode_minifloat(code, EBITS, MBITS, DEC_SCALE).to(x_ptr.dtype.element_ty)
                xj = tl.load(x_rows + (g * VALS + j)[None, :], mask=x_mask, other=0.0)
                acc = _dot(acc, xj, w, UPCAST_DOT)
    mask = m_ok[:, None] & n_ok[None, :]
    if SPLIT_K == 1:
        out = acc * tl.load(scale_ptr + rn, mask=n_ok, other=0.0)[None, :]
        if HAS_BIAS:
            out += tl.load(bias_ptr + rn, mask=n_ok, other=0.0).to(tl.float32)[None, :]
        o_ptrs = out_ptr + rm[:, None].to(tl.int64) * stride_om + rn[None, :]
        tl.store(o_ptrs, out.to(out_ptr.dtype.element_ty), mask=mask)
    else:
        p_ptrs = part_ptr + (pid_k * M + rm[:, None]).to(tl.int64) * N + rn[None, :]
        tl.store(p_ptrs, acc, mask=mask)


@triton.jit
def _splitk_epilogue_kernel(
    part_ptr, scale_ptr, bias_ptr, out_ptr, M, N, stride_om,
    SPLIT_K: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < M * N
    m = offs // N
    n = offs % N
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for s in tl.static_range(SPLIT_K):  # a fixed order: the result does not depend on scheduling
        acc += tl.load(part_ptr + s * M * N + offs, mask=ok, other=0.0)
    out = acc * tl.load(scale_ptr + n, mask=ok, other=0.0)
    if HAS_BIAS:
        out += tl.load(bias_ptr + n, mask=ok, other=0.0).to(tl.float32)
    tl.store(out_ptr + m.to(tl.int64) * stride_om + n, out.to(out_ptr.dtype.element_ty), mask=ok)


@functools.cache
def _num_sms(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def _sms(device: torch.device) -> int:
    # Under the interpreter a small count keeps the grids tiny while still exercising split-K.
    return _num_sms(device.index or 0) if device.type == "cuda" else 4


def _launch(x, w, w_scale, bias, *, bits, ebits, mbits, exp_bias, native_fp8, split_k):
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
    vals, _ = _GROUP[bits]
    n_groups = K // vals
    if M <= 16:  # memory bound: stream the weight once, spread over >= 2 programs per SM
        block_m, block_n, num_warps, num_stages = 16, 64, 4, 4
        block_g = 64 if bits == 6 else 128  # 192 / 64 / 128 weight bytes per row per step
        k_steps = triton.cdiv(n_groups, block_g)
        if split_k is None:
            split_k = max(1, min(k_steps, triton.cdiv(2 * _sms(x.device), triton.cdiv(N, block_n))))
    else:
        block_m, block_n, block_g = (64 if M <= 64 else 128), 128, 64
        num_warps, num_stages = (4 if block_m == 64 else 8), 3
        k_steps = triton.cdiv(n_groups, block_g)
        split_k = 1 if split_k is None else split_k
    split_k = max(1, min(split_k, k_steps))
    groups_per_split = triton.cdiv(k_steps, split_k) * block_g
    split_k = triton.cdiv(n_groups, groups_per_split)  # no empty splits
    part = torch.empty((split_k, M, N), dtype=torch.float32, device=x.device) if split_k > 1 else out
    bias_arg = bias if bias is not None else w_scale  # a valid pointer that is never read
    grid = (triton.cdiv(N, block_n), triton.cdiv(M, block_m), split_k)
    _weight_only_linear_kernel[grid](
        x2, w, w_scale, bias_arg, out, part, M, N, K, x2.stride(0), w.stride(0), out.stride(0), groups_per_split,
        BITS=bits, EBITS=ebits, MBITS=mbits, DEC_SCALE=2.0 ** (15 - exp_bias), NATIVE_FP8=native_fp8,
        HAS_BIAS=bias is not None, SPLIT_K=split_k, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_G=block_g,
        UPCAST_DOT=triton_interpreting(), num_warps=num_warps, num_stages=num_stages,
    )  # fmt: skip
    if split_k > 1:
        block = 1024
        _splitk_epilogue_kernel[(triton.cdiv(M * N, block),)](
            part, w_scale, bias_arg, out, M, N, out.stride(0),
            SPLIT_K=split_k, HAS_BIAS=bias is not None, BLOCK=block, num_warps=4,
        )  # fmt: skip
    return out.view(*x.shape[:-1], N)


def fp8_native_supported(device: torch.device) -> bool:
    """Hardware e4m3 -> bf16/fp16 conversion: sm_89+ (and the interpreter, which emulates it)."""
    if device.type != "cuda":
        return True
    return torch.cuda.get_device_capability(device) >= (8, 9)


def fp8_weight_only_linear_triton(x, w_fp8, w_scale, bias=None, *, native_fp8=None, split_k=None):
    """Launch for float8_e4m3fn weights ``(N, K)``; arguments are already validated by the op."""
    native = fp8_native_supported(x.device) if native_fp8 is None else native_fp8
    w = w_fp8 if native else w_fp8.view(torch.uint8)
    return _launch(
        x, w, w_scale, bias, bits=8, ebits=4, mbits=3, exp_bias=7, native_fp8=native, split_k=split_k
    )  # fmt: skip


def fpx_weight_only_linear_triton(x, w_packed, w_scale, ebits, mbits, bias=None, *, split_k=None):
    """Launch for packed fp6/fp4 weights (``lowbit_flex.quant.pack_fpx`` layout, rows of ``K * bits / 8``
    bytes); MX formats (bias ``2^(ebits-1) - 1``, no inf/NaN). Arguments are already validated by the op."""
    bits = 1 + ebits + mbits
    return _launch(
        x, w_packed, w_scale, bias, bits=bits, ebits=ebits, mbits=mbits, exp_bias=2 ** (ebits - 1) - 1,
        native_fp8=False, split_k=split_k,
    )  # fmt: skip
