// AVX2+FMA+F16C scores / accumulate kernels for the q8_0 and q4_0 KV stores: each block of 32
// codes is widened to four ymm of floats times the block's f16 scale, then FMAs against up to
// kTile query rows held in registers (scores) or into the [G, head_dim] accumulator (accumulate).
// Compiled with AVX2 flags only; reached only through kv_quant_kernels(kAvx2).
#include <immintrin.h>

#include "backends/cpu/avx2_util.h"
#include "backends/cpu/kv_quant_kernels.h"

namespace million {
namespace {

using avx2::hsum;

// Query rows scored per pass over a token's blocks: kTile accumulators + 4 block vectors + one
// load fit in the 16 ymm registers; G = 1, 4 or 8 (usual GQA groups) take one pass.
constexpr int kTile = 8;

inline float f16_scale(std::uint16_t h) { return _cvtsh_ss(h); }

inline __m256 widen8(__m128i bytes8, __m256 d) {  // low 8 signed bytes -> 8 floats times d
  return _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes8)));
}

// One block as floats: k[u] = elements 8u..8u+7, times the scale.
inline void load_block(const BlockQ8_0& b, __m256 (&k)[4]) {
  const __m256 d = _mm256_set1_ps(f16_scale(b.d));
  const __m128i lo = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b.qs));
  const __m128i hi = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b.qs + 16));
  k[0] = widen8(lo, d);
  k[1] = widen8(_mm_srli_si128(lo, 8), d);
  k[2] = widen8(hi, d);
  k[3] = widen8(_mm_srli_si128(hi, 8), d);
}
inline void load_block(const BlockQ4_0& b, __m256 (&k)[4]) {
  const __m256 d = _mm256_set1_ps(f16_scale(b.d));
  const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b.qs));
  const __m128i mask = _mm_set1_epi8(0x0F), eight = _mm_set1_epi8(8);
  const __m128i lo = _mm_sub_epi8(_mm_and_si128(raw, mask), eight);                     // elements 0..15
  const __m128i hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(raw, 4), mask), eight);  // elements 16..31
  k[0] = widen8(lo, d);
  k[1] = widen8(_mm_srli_si128(lo, 8), d);
  k[2] = widen8(hi, d);
  k[3] = widen8(_mm_srli_si128(hi, 8), d);
}

// NJ query rows (q: [NJ, head_dim]) against n tokens; s: [NJ, ld].
template <class Block, int NJ>
void scores_tile(const Block* k, std::int64_t n, int head_dim, const float* q, float* s, std::int64_t ld) {
  const int nb = head_dim / kQuantBlock;
  for (std::int64_t i = 0; i < n; ++i) {
    const Block* row = k + i * nb;
    __m256 acc[NJ];
    for (int j = 0; j < NJ; ++j) acc[j] = _mm256_setzero_ps();
    for (int b = 0; b < nb; ++b) {
      __m256 kv[4];
      load_block(row[b], kv);
      const float* qb = q + b * kQuantBlock;
      for (int j = 0; j < NJ; ++j) {
        for (int u = 0; u < 4; ++u) acc[j] = _mm256_fmadd_ps(_mm256_loadu_ps(qb + j * head_dim + 8 * u), kv[u], acc[j]);
      }
    }
    for (int j = 0; j < NJ; ++j) s[j * ld + i] = hsum(acc[j]);
  }
}

template <class Block>
void scores(const BlockScoresArgs& a) {
  const auto* k = static_cast<const Block*>(a.k);
  for (int j0 = 0; j0 < a.G; j0 += kTile) {
    const float* q = a.q + static_cast<std::int64_t>(j0) * a.head_dim;
    float* s = a.s + j0 * a.ld;
    switch (a.G - j0 < kTile ? a.G - j0 : kTile) {
      case 1: scores_tile<Block, 1>(k, a.n, a.head_dim, q, s, a.ld); break;
      case 2: scores_tile<Block, 2>(k, a.n, a.head_dim, q, s, a.ld); break;
      case 3: scores_tile<Block, 3>(k, a.n, a.head_dim, q, s, a.ld); break;
      case 4: scores_tile<Block, 4>(k, a.n, a.head_dim, q, s, a.ld); break;
      case 5: scores_tile<Block, 5>(k, a.n, a.head_dim, q, s, a.ld); break;
      case 6: scores_tile<Block, 6>(k, a.n, a.head_dim, q, s, a.ld); break;
      case 7: scores_tile<Block, 7>(k, a.n, a.head_dim, q, s, a.ld); break;
      default: scores_tile<Block, kTile>(k, a.n, a.head_dim, q, s, a.ld); break;
    }
  }
}

// The accumulator ([G, head_dim] f32: 4 KiB at G = 8, head_dim = 128) stays in L1; each block is
// widened once per token and applied to every query row.
template <class Block>
void accumulate(const BlockAccumulateArgs& a) {
  const auto* v = static_cast<const Block*>(a.v);
  const int nb = a.head_dim / kQuantBlock;
  for (std::int64_t i = 0; i < a.n; ++i) {
    const Block* row = v + i * nb;
    for (int b = 0; b < nb; ++b) {
      __m256 kv[4];
      load_block(row[b], kv);
      float* ab = a.acc + b * kQuantBlock;
      for (int j = 0; j < a.G; ++j) {
        const __m256 p = _mm256_set1_ps(a.p[j * a.ldp + i]);
        float* aj = ab + static_cast<std::int64_t>(j) * a.head_dim;
        for (int u = 0; u < 4; ++u)
          _mm256_storeu_ps(aj + 8 * u, _mm256_fmadd_ps(p, kv[u], _mm256_loadu_ps(aj + 8 * u)));
      }
    }
  }
}

}  // namespace

namespace detail {
const KvQuantKernels kKvQuantAvx2 = {SimdLevel::kAvx2, scores<BlockQ8_0>, scores<BlockQ4_0>, accumulate<BlockQ8_0>,
                                     accumulate<BlockQ4_0>};
}  // namespace detail

}  // namespace million
