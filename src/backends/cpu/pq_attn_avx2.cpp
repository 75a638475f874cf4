// AVX2 PQ score accumulation: as the AVX-512 kernel with two 8-lane halves per 16-token block.
// Compiled with AVX2 flags only.
#include <immintrin.h>

#include "backends/cpu/pq_attn_kernels.h"

namespace million {
namespace {

constexpr int kMaxHeads = 4;  // 2 halves x 4 heads = 8 accumulators

void scores_blocks(const std::uint8_t* codes, std::int64_t b0, std::int64_t b1, int M, int ksub, const float* lut,
                   int G, float* s, std::int64_t ld) {
  for (int j0 = 0; j0 < G; j0 += kMaxHeads) {
    const int nj = G - j0 < kMaxHeads ? G - j0 : kMaxHeads;
    for (std::int64_t b = b0; b < b1; ++b) {
      __m256 lo[kMaxHeads], hi[kMaxHeads];
      for (int j = 0; j < nj; ++j) lo[j] = hi[j] = _mm256_setzero_ps();
      const std::uint8_t* cb = codes + b * M * 16;
      for (int m = 0; m < M; ++m) {
        const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(cb + m * 16));
        const __m256i idx_lo = _mm256_cvtepu8_epi32(bytes);
        const __m256i idx_hi = _mm256_cvtepu8_epi32(_mm_srli_si128(bytes, 8));
        for (int j = 0; j < nj; ++j) {
          const float* row = lut + (static_cast<std::int64_t>(j0 + j) * M + m) * ksub;
          lo[j] = _mm256_add_ps(lo[j], _mm256_i32gather_ps(row, idx_lo, 4));
          hi[j] = _mm256_add_ps(hi[j], _mm256_i32gather_ps(row, idx_hi, 4));
        }
      }
      for (int j = 0; j < nj; ++j) {
        float* out = s + (j0 + j) * ld + (b - b0) * 16;
        _mm256_storeu_ps(out, lo[j]);
        _mm256_storeu_ps(out + 8, hi[j]);
      }
    }
  }
}

}  // namespace

namespace detail {
const PQAttnKernels kPQAttnAvx2 = {scores_blocks};
}

}  // namespace million
