// Dequantization of ggml block formats (GGUF weights) to f32, one table per instruction set:
// dequant_scalar.cpp (the reference, which is the specification), dequant_avx2.cpp,
// dequant_avx512.cpp, each compiled with its own flags. Every level gives results bit-identical
// to the reference (value = q * d, or q * d + m, computed in f32 without fused multiply-add).
// Block layouts (ggml, little-endian, 32 elements per block):
//   Q8_0: f16 d, int8 q[32]                 value j = q[j] * d                       (34 bytes)
//   Q4_0: f16 d, u8 qs[16]                  value j = ((qs[j] & 15) - 8) * d,
//                                           value j+16 = ((qs[j] >> 4) - 8) * d       (18 bytes)
//   Q4_1: f16 d, f16 m, u8 qs[16]           value j = (qs[j] & 15) * d + m,
//                                           value j+16 = (qs[j] >> 4) * d + m          (20 bytes)
// Blocks are read byte-wise (no alignment needed). No other ggml formats (K-quants, IQ) here.
#pragma once

#include <cstdint>

#include "million/simd.h"

namespace million {

inline constexpr int kQuantBlock = 32;
inline constexpr int kQ8_0Bytes = 34;
inline constexpr int kQ4_0Bytes = 18;
inline constexpr int kQ4_1Bytes = 20;

struct DequantKernels {
  SimdLevel level;
  /// dst[0, 32 * n_blocks) from n_blocks consecutive blocks at src.
  void (*q8_0)(const std::uint8_t* src, float* dst, std::int64_t n_blocks);
  void (*q4_0)(const std::uint8_t* src, float* dst, std::int64_t n_blocks);
  void (*q4_1)(const std::uint8_t* src, float* dst, std::int64_t n_blocks);
};

/// The table for `level`; throws InvalidArgumentError if this CPU cannot run it.
const DequantKernels& dequant_kernels(SimdLevel level);

namespace detail {
extern const DequantKernels kScalarDequant;
extern const DequantKernels kAvx2Dequant;
extern const DequantKernels kAvx512Dequant;
}  // namespace detail

}  // namespace million
