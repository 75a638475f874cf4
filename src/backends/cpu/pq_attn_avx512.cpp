// AVX-512 PQ score accumulation: per (block of 16 tokens, subspace) one 16-byte load of codes,
// widened to 32-bit indices and shared by the G query heads, one gather per head from its
// lookup-table row (ksub floats, L1/L2 resident). Compiled with AVX-512 flags only.
#include <immintrin.h>

#include "backends/cpu/pq_attn_kernels.h"

namespace million {
namespace {

constexpr int kMaxHeads = 8;  // accumulators held in registers per pass; more heads take more passes

void scores_blocks(const std::uint8_t* codes, std::int64_t b0, std::int64_t b1, int M, int ksub, const float* lut,
                   int G, float* s, std::int64_t ld) {
  for (int j0 = 0; j0 < G; j0 += kMaxHeads) {
    const int nj = G - j0 < kMaxHeads ? G - j0 : kMaxHeads;
    for (std::int64_t b = b0; b < b1; ++b) {
      __m512 acc[kMaxHeads];
      for (int j = 0; j < nj; ++j) acc[j] = _mm512_setzero_ps();
      const std::uint8_t* cb = codes + b * M * 16;
      for (int m = 0; m < M; ++m) {
        const __m512i idx = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(cb + m * 16)));
        for (int j = 0; j < nj; ++j) {
          const float* row = lut + (static_cast<std::int64_t>(j0 + j) * M + m) * ksub;
          acc[j] = _mm512_add_ps(acc[j], _mm512_i32gather_ps(idx, row, 4));
        }
      }
      for (int j = 0; j < nj; ++j) _mm512_storeu_ps(s + (j0 + j) * ld + (b - b0) * 16, acc[j]);
    }
  }
}

}  // namespace

namespace detail {
const PQAttnKernels kPQAttnAvx512 = {scores_blocks};
}

}  // namespace million
