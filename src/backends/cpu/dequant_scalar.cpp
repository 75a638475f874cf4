// Scalar reference dequantizers for Q8_0, Q4_0 and Q4_1 (layouts in dequant_kernels.h) and the
// dispatch that picks a level's table. The SIMD files must match these bit for bit.
#include <fmt/format.h>

#include <cstring>

#include "backends/cpu/dequant_kernels.h"
#include "core/half.h"
#include "million/error.h"

namespace million {
namespace {

inline float half_at(const std::uint8_t* p) {
  std::uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}

void q8_0_ref(const std::uint8_t* src, float* dst, std::int64_t n_blocks) {
  for (std::int64_t b = 0; b < n_blocks; ++b, src += kQ8_0Bytes, dst += kQuantBlock) {
    const float d = half_at(src);
    for (int j = 0; j < kQuantBlock; ++j) dst[j] = static_cast<float>(static_cast<std::int8_t>(src[2 + j])) * d;
  }
}

void q4_0_ref(const std::uint8_t* src, float* dst, std::int64_t n_blocks) {
  for (std::int64_t b = 0; b < n_blocks; ++b, src += kQ4_0Bytes, dst += kQuantBlock) {
    const float d = half_at(src);
    for (int j = 0; j < 16; ++j) {
      dst[j] = static_cast<float>((src[2 + j] & 15) - 8) * d;
      dst[j + 16] = static_cast<float>((src[2 + j] >> 4) - 8) * d;
    }
  }
}

void q4_1_ref(const std::uint8_t* src, float* dst, std::int64_t n_blocks) {
  for (std::int64_t b = 0; b < n_blocks; ++b, src += kQ4_1Bytes, dst += kQuantBlock) {
    const float d = half_at(src), m = half_at(src + 2);
    for (int j = 0; j < 16; ++j) {
      const float lo = static_cast<float>(src[4 + j] & 15) * d;  // separate statements: no FMA contraction
      const float hi = static_cast<float>(src[4 + j] >> 4) * d;
      dst[j] = lo + m;
      dst[j + 16] = hi + m;
    }
  }
}

}  // namespace

namespace detail {
const DequantKernels kScalarDequant = {SimdLevel::kScalar, q8_0_ref, q4_0_ref, q4_1_ref};
}  // namespace detail

const DequantKernels& dequant_kernels(SimdLevel level) {
  if (!simd_level_supported(level)) {
    throw InvalidArgumentError(fmt::format("SIMD level '{}' is not supported by this CPU", simd_level_name(level)));
  }
  switch (level) {
    case SimdLevel::kScalar: return detail::kScalarDequant;
    case SimdLevel::kAvx2: return detail::kAvx2Dequant;
    case SimdLevel::kAvx512: return detail::kAvx512Dequant;
  }
  return detail::kScalarDequant;
}

}  // namespace million
