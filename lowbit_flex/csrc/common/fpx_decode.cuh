// fp4 / fp6 tile-layout codes (and e4m3 bytes) -> fp16 / bf16 pairs, two codes per 32-bit register, with bit
// operations. Shared by the decode GEMV (float_weight_gemv) and the Hopper GEMM (float_weight_gemm).
//
// The tile layout (lowbit_flex/quant/fpx_tiles.py) puts codes p and p + 4 of a word 16 bits apart, so one shift and
// mask moves both into the fields of an fp16 / bf16 pair. The codes' exponent bias is fixed up exactly: for fp16 by
// a power of two the caller applies after the sums (fpx_post_scale), for bf16 (whose exponent is too wide for that:
// the sums would leave fp32's range) by one bf16x2 multiply-add per register.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>
#include <type_traits>

#include "common/fpx_format.h"

namespace lowbit {

template <int S>
__device__ __forceinline__ uint32_t shift(uint32_t v) {
  if constexpr (S >= 0)
    return v << S;
  else
    return v >> -S;
}

// bf16 only: times 2^(127 - bias), exactly (the decoded fields carry the code's exponent unbiased by 127). The
// addend -0 keeps the sign of zero codes.
template <class T, int BIAS>
__device__ __forceinline__ uint32_t rebias(uint32_t r) {
  if constexpr (std::is_same_v<T, __half>) {
    return r;
  } else {
    constexpr uint32_t kScale = static_cast<uint32_t>(254 - BIAS) << 7;  // the bf16 2^(127 - BIAS)
    uint32_t out;
    asm("fma.rn.bf16x2 %0, %1, %2, %3;" : "=r"(out) : "r"(r), "r"(kScale * 0x10001u), "r"(0x80008000u));
    return out;
  }
}

// What the sums of fp4 / fp6 codes decoded for x's dtype T are multiplied by to be the codes' values: fp16 fields
// carry the code's exponent unbiased by 15 instead of its own bias (a power of two, exact); bf16 was rebiased.
template <int FMT, class T>
constexpr float fpx_post_scale() {
  return std::is_same_v<T, __half> && FMT != kE4M3 ? static_cast<float>(1 << (15 - FpxTraits<FMT>::kBias)) : 1.0f;
}

// Codes p and p + 4 of a tile word (nibble p and p + 4: the top four bits; fp6: `lo` holds their low bit pairs at
// bits 2p and 2p + 16) -> the x-dtype pair (code p, code p + 4). P is 0 or 1: planes 2 and 3 are planes 0 and 1 of
// the words shifted right by 8 (hi) and 4 (lo). Bits outside the ones named are ignored.
template <int FMT, class T, int P>
__device__ __forceinline__ uint32_t decode_fpx_pair(uint32_t hi, uint32_t lo) {
  using F = FpxTraits<FMT>;
  constexpr int kMant = std::is_same_v<T, __half> ? 10 : 7;
  constexpr int kLow = kMant - F::kMbits + F::kBits - 4;  // where the nibble's lowest magnitude bit goes
  constexpr uint32_t kFields = ((7u << kLow) | 0x8000u) * 0x10001u;
  uint32_t r;
  if constexpr (kLow + 3 < 12) {
    // One multiply places both copies of the nibble pair: << (kLow - 4P) puts the magnitude in place, << (12 - 4P)
    // the sign; the four shifted nibbles occupy disjoint bits (no carries), and the mask keeps the fields.
    constexpr uint32_t kTwoShifts = (1u << (kLow - 4 * P)) + (1u << (12 - 4 * P));
    r = ((hi & (0x000F000Fu << (4 * P))) * kTwoShifts) & kFields;
  } else {  // fp16: the magnitude's copy would reach the sign's bits
    r = (shift<kLow - 4 * P>(hi) & ((7u << kLow) * 0x10001u)) | (shift<12 - 4 * P>(hi) & 0x80008000u);
  }
  if constexpr (F::kBits == 6) {
    constexpr int kCrumb = kMant - F::kMbits;
    r |= shift<kCrumb - 2 * P>(lo) & ((3u << kCrumb) * 0x10001u);
  }
  return rebias<T, F::kBias>(r);
}

// prmt.b32 in its default mode: byte i of the result is byte (sel >> 4i) & 7 of {b, a}, or, where bit 4i + 3 of
// sel is set, that byte's top bit copied into all eight (a sign extension; __byte_perm documents the index bits only).
__device__ __forceinline__ uint32_t prmt(uint32_t a, uint32_t b, uint32_t sel) {
  uint32_t r;
  asm("prmt.b32 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(sel));
  return r;
}

// The prmt selector that moves the e4m3 codes at bytes c0 and c1 of {b, a} to where decode_fp8_bytes<T> takes them:
// fp16 bytes 0 and 1; bf16 bytes 0 and 2, each with its sign extended into the byte above.
template <class T>
__host__ __device__ constexpr uint32_t fp8_pair_selector(uint32_t c0, uint32_t c1) {
  return std::is_same_v<T, __half> ? c0 | c1 << 4 : c0 | (8 | c0) << 4 | c1 << 8 | (8 | c1) << 12;
}

// Two e4m3 codes -> an x-dtype pair (exact: every e4m3 value is a bf16 and an fp16 value), from a prmt by
// fp8_pair_selector<T>. fp16: the hardware conversion. bf16: each 16-bit half is the code's sign in its high byte
// and the code in its low byte; shifted left by four, the sign lands on bit 15 and the exponent and mantissa on
// bf16's fields, the mask drops the rest (also what the low half shifts into the high one), and the pair is
// rebiased. The shift is written as a multiply so that ptxas may issue it on the FMA pipe (IMAD.SHL: it does in the
// WGMMA GEMM's loops, the GEMV's mix it with SHF), leaving the ALU pipe (the decode's bound, H100 run 63) the prmt
// and the mask: two slots a pair, where the byte-aligned form took four.
template <class T>
__device__ __forceinline__ uint32_t decode_fp8_bytes(uint32_t u) {
  if constexpr (std::is_same_v<T, __half>) {
    const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(u & 0xFFFFu), __NV_E4M3);
    return static_cast<uint32_t>(h.x) | (static_cast<uint32_t>(h.y) << 16);
  } else {
    return rebias<T, 7>((u * 16u) & 0x87F087F0u);
  }
}

}  // namespace lowbit
