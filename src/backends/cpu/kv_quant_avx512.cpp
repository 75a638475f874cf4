// AVX-512 (F/BW/VL/DQ) scores / accumulate kernels for the q8_0 and q4_0 KV stores: each block of
// 32 codes is widened to two zmm of floats times the block's f16 scale, then FMAs against up to
// kTile query rows held in registers (scores) or into the [G, head_dim] accumulator (accumulate).
// Compiled with AVX-512 flags only; reached only through kv_quant_kernels(kAvx512).
#include <immintrin.h>

#include "backends/cpu/kv_quant_kernels.h"

namespace million {
namespace {

// Query rows scored per pass over a token's blocks: kTile accumulators + 2 block vectors + loads
// fit in the 32 zmm registers; G = 1, 4 or 8 (usual GQA groups) take one pass.
constexpr int kTile = 8;

inline float f16_scale(std::uint16_t h) { return _cvtsh_ss(h); }

// One block as floats: k0 = elements 0..15, k1 = elements 16..31, times the scale.
inline void load_block(const BlockQ8_0& b, __m512& k0, __m512& k1) {
  const __m512 d = _mm512_set1_ps(f16_scale(b.d));
  const __m128i lo = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b.qs));
  const __m128i hi = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b.qs + 16));
  k0 = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(lo)));
  k1 = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(hi)));
}
inline void load_block(const BlockQ4_0& b, __m512& k0, __m512& k1) {
  const __m512 d = _mm512_set1_ps(f16_scale(b.d));
  const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b.qs));
  const __m128i mask = _mm_set1_epi8(0x0F), eight = _mm_set1_epi8(8);
  const __m128i lo = _mm_sub_epi8(_mm_and_si128(raw, mask), eight);                     // elements 0..15
  const __m128i hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(raw, 4), mask), eight);  // elements 16..31
  k0 = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(lo)));
  k1 = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(hi)));
}

// NJ query rows (q: [NJ, head_dim]) against n tokens; s: [NJ, ld].
template <class Block, int NJ>
void scores_tile(const Block* k, std::int64_t n, int head_dim, const float* q, float* s, std::int64_t ld) {
  const int nb = head_dim / kQuantBlock;
  for (std::int64_t i = 0; i < n; ++i) {
    const Block* row = k + i * nb;
    __m512 acc[NJ];
    for (int j = 0; j < NJ; ++j) acc[j] = _mm512_setzero_ps();
    for (int b = 0; b < nb; ++b) {
      __m512 k0, k1;
      load_block(row[b], k0, k1);
      const float* qb = q + b * kQuantBlock;
      for (int j = 0; j < NJ; ++j) {
        acc[j] = _mm512_fmadd_ps(_mm512_loadu_ps(qb + j * head_dim), k0, acc[j]);
        acc[j] = _mm512_fmadd_ps(_mm512_loadu_ps(qb + j * head_dim + 16), k1, acc[j]);
      }
    }
    for (int j = 0; j < NJ; ++j) s[j * ld + i] = _mm512_reduce_add_ps(acc[j]);
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
      __m512 k0, k1;
      load_block(row[b], k0, k1);
      float* ab = a.acc + b * kQuantBlock;
      for (int j = 0; j < a.G; ++j) {
        const __m512 p = _mm512_set1_ps(a.p[j * a.ldp + i]);
        float* aj = ab + static_cast<std::int64_t>(j) * a.head_dim;
        _mm512_storeu_ps(aj, _mm512_fmadd_ps(p, k0, _mm512_loadu_ps(aj)));
        _mm512_storeu_ps(aj + 16, _mm512_fmadd_ps(p, k1, _mm512_loadu_ps(aj + 16)));
      }
    }
  }
}

}  // namespace

namespace detail {
const KvQuantKernels kKvQuantAvx512 = {SimdLevel::kAvx512, scores<BlockQ8_0>, scores<BlockQ4_0>, accumulate<BlockQ8_0>,
                                       accumulate<BlockQ4_0>};
}  // namespace detail

}  // namespace million
