// AVX-512 dequantizers for Q8_0, Q4_0, Q4_1: 16 floats per store, bit-identical to the scalar
// reference (multiply, then add: no FMA). Compiled with the AVX-512 flags only; reached only
// through dequant_kernels(kAvx512).
#include <immintrin.h>

#include <cstring>

#include "backends/cpu/dequant_kernels.h"

namespace million {
namespace {

inline __m512 broadcast_half(const std::uint8_t* p) {
  std::uint16_t h;
  std::memcpy(&h, p, 2);
  return _mm512_cvtph_ps(_mm256_set1_epi16(static_cast<short>(h)));
}

void q8_0(const std::uint8_t* src, float* dst, std::int64_t n_blocks) {
  for (std::int64_t b = 0; b < n_blocks; ++b, src += kQ8_0Bytes, dst += kQuantBlock) {
    const __m512 d = broadcast_half(src);
    for (int j = 0; j < 32; j += 16) {
      const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 2 + j));
      _mm512_storeu_ps(dst + j, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q)), d));
    }
  }
}

inline void nibbles(const std::uint8_t* qs, __m128i& lo, __m128i& hi) {
  const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  const __m128i mask = _mm_set1_epi8(15);
  lo = _mm_and_si128(x, mask);
  hi = _mm_and_si128(_mm_srli_epi16(x, 4), mask);
}

void q4_0(const std::uint8_t* src, float* dst, std::int64_t n_blocks) {
  const __m128i eight = _mm_set1_epi8(8);
  for (std::int64_t b = 0; b < n_blocks; ++b, src += kQ4_0Bytes, dst += kQuantBlock) {
    const __m512 d = broadcast_half(src);
    __m128i lo, hi;
    nibbles(src + 2, lo, hi);
    _mm512_storeu_ps(dst + 0, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_sub_epi8(lo, eight))), d));
    _mm512_storeu_ps(dst + 16, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_sub_epi8(hi, eight))), d));
  }
}

void q4_1(const std::uint8_t* src, float* dst, std::int64_t n_blocks) {
  for (std::int64_t b = 0; b < n_blocks; ++b, src += kQ4_1Bytes, dst += kQuantBlock) {
    const __m512 d = broadcast_half(src), m = broadcast_half(src + 2);
    __m128i lo, hi;
    nibbles(src + 4, lo, hi);
    _mm512_storeu_ps(dst + 0, _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(lo)), d), m));
    _mm512_storeu_ps(dst + 16, _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(hi)), d), m));
  }
}

}  // namespace

namespace detail {
const DequantKernels kAvx512Dequant = {SimdLevel::kAvx512, q8_0, q4_0, q4_1};
}  // namespace detail

}  // namespace million
