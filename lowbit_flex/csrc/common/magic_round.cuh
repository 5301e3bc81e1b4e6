// Exact conversions between small integers and float32 with full-rate add instructions, through the float
// 1.5 * 2^23 (bits 0x4B400000), whose ulp is 1: for |v| <= 2^22, v + 1.5 * 2^23 keeps no fraction bits (the add
// rounds to the nearest integer, ties to even) and holds v in its low mantissa bits.
//
// Why: I2F, F2I and FRND (what a static_cast between int and float and rintf compile to) run at a sixteenth of the
// FP32 rate on sm_90, and the kernels that use these convert every accumulator element or every activation value.
// (The Triton kernels' home of the same trick: lowbit_flex/kernels/rounding.py.)
#pragma once

namespace lowbit {

constexpr float kMagicRound = 12582912.0f;  // 1.5 * 2^23
constexpr int kMagicRoundBits = 0x4B400000;

// rint(v) for |v| <= 2^22; a larger |v| comes back as another large value.
__device__ __forceinline__ float round_small(float v) { return __fadd_rn(__fadd_rn(v, kMagicRound), -kMagicRound); }

// v as a float, exactly, for |v| <= 2^22 (one integer add, one float add).
__device__ __forceinline__ float small_int_to_float(int v) { return __int_as_float(v + kMagicRoundBits) - kMagicRound; }

// An integer-valued float v, |v| <= 2^22, as an int, exactly.
__device__ __forceinline__ int small_float_to_int(float v) {
  return __float_as_int(__fadd_rn(v, kMagicRound)) - kMagicRoundBits;
}

}  // namespace lowbit
