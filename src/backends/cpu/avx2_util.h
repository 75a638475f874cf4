// Small AVX2 helpers shared by the AVX2 kernel files (kernels_avx2, kv_quant_avx2,
// attn_tile_avx2, pq_attn_avx2). Include only from translation units compiled with the AVX2
// flags: the inline functions below must be compiled the same way everywhere they are used.
#pragma once

#include <immintrin.h>

namespace million::avx2 {

/// Sum of the 8 lanes.
inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

/// Largest of the 8 lanes.
inline float hmax(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

}  // namespace million::avx2
