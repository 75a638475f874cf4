// AVX-512 VBMI PQ attention kernels: centroid coordinates decoded 64 tokens at a time from byte
// planes (see pq_attn_kernels.h), no gathers.
// Decoding one table row r = m * dsub + e for the 64 tokens of a block: the block's codes of
// subspace m are one zmm; vpermi2b looks up the low-byte plane (entries 0-127 and 128-255, the
// code's top bit picks), the same for the high-byte plane, unpack interleaves them into 64 f16
// values, 4 x vcvtph2ps widen them. unpack works per 128-bit lane, so the four f32 vectors
// hold tokens in "plane order":
//   f[0] = tokens 0-7, 16-23   f[1] = 32-39, 48-55   f[2] = 8-15, 24-31   f[3] = 40-47, 56-63
// Probabilities are put in plane order once per call, scores are put back in token order
// once per block.
//  - scores: per block, head accumulators (NJ x 4 vectors) over groups of table rows whose
//    planes fit kPQTableBytes (L1); partial sums kept in s, in plane order, between groups.
//  - accumulate: per table row, a pass over the blocks with 2 accumulators per head.
// Compiled with AVX-512 F/BW/VL/DQ + VBMI flags; reached only when the CPU has VBMI.
#include <immintrin.h>

#include <algorithm>
#include <vector>

#include "backends/cpu/pq_attn_kernels.h"

namespace million {
namespace {

constexpr int kRowBytes = 512;  // one table row: 256 low bytes then 256 high bytes

inline __m512i load_codes(const std::uint8_t* codes, std::int64_t b, int M, int m) {
  return _mm512_loadu_si512(codes + (b * M + m) * kPQBlockTokens);
}

// 64 tokens' coordinate of table row `row` (planes + row * 512), in plane order.
template <bool kBig>  // ksub > 128: both halves of each plane
inline void decode_row(const std::uint8_t* row, __m512i idx, __mmask64 top, __m512* f) {
  __m512i lo, hi;
  if constexpr (kBig) {
    lo = _mm512_mask_blend_epi8(top, _mm512_permutex2var_epi8(_mm512_loadu_si512(row), idx, _mm512_loadu_si512(row + 64)),
                                _mm512_permutex2var_epi8(_mm512_loadu_si512(row + 128), idx, _mm512_loadu_si512(row + 192)));
    hi = _mm512_mask_blend_epi8(
        top, _mm512_permutex2var_epi8(_mm512_loadu_si512(row + 256), idx, _mm512_loadu_si512(row + 320)),
        _mm512_permutex2var_epi8(_mm512_loadu_si512(row + 384), idx, _mm512_loadu_si512(row + 448)));
  } else {
    (void)top;
    lo = _mm512_permutex2var_epi8(_mm512_loadu_si512(row), idx, _mm512_loadu_si512(row + 64));
    hi = _mm512_permutex2var_epi8(_mm512_loadu_si512(row + 256), idx, _mm512_loadu_si512(row + 320));
  }
  const __m512i w0 = _mm512_unpacklo_epi8(lo, hi), w1 = _mm512_unpackhi_epi8(lo, hi);
  f[0] = _mm512_cvtph_ps(_mm512_castsi512_si256(w0));
  f[1] = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(w0, 1));
  f[2] = _mm512_cvtph_ps(_mm512_castsi512_si256(w1));
  f[3] = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(w1, 1));
}

// Token order <-> plane order for 64 floats.
inline void to_plane_order(const float* x, __m512* f) {
  const __m512 a = _mm512_loadu_ps(x), b = _mm512_loadu_ps(x + 16), c = _mm512_loadu_ps(x + 32),
               d = _mm512_loadu_ps(x + 48);
  f[0] = _mm512_shuffle_f32x4(a, b, 0x44);
  f[2] = _mm512_shuffle_f32x4(a, b, 0xEE);
  f[1] = _mm512_shuffle_f32x4(c, d, 0x44);
  f[3] = _mm512_shuffle_f32x4(c, d, 0xEE);
}
inline void from_plane_order(const __m512* f, float* x) {
  _mm512_storeu_ps(x, _mm512_shuffle_f32x4(f[0], f[2], 0x44));
  _mm512_storeu_ps(x + 16, _mm512_shuffle_f32x4(f[0], f[2], 0xEE));
  _mm512_storeu_ps(x + 32, _mm512_shuffle_f32x4(f[1], f[3], 0x44));
  _mm512_storeu_ps(x + 48, _mm512_shuffle_f32x4(f[1], f[3], 0xEE));
}

template <int NJ, bool kBig>
void scores_heads(const PQKernelCodebook& cb, const std::uint8_t* codes, std::int64_t b0, std::int64_t b1,
                  const float* q, float* s, std::int64_t lds) {
  const int M = cb.M, dsub = cb.dsub, d = cb.head_dim();
  const int rows_per_pass = std::max(1, kPQTableBytes / kRowBytes);
  for (int r0 = 0; r0 < d; r0 += rows_per_pass) {
    const int r1 = std::min(d, r0 + rows_per_pass);
    for (std::int64_t b = b0; b < b1; ++b) {
      float* sb = s + (b - b0) * kPQBlockTokens;
      __m512 acc[NJ][4];
      for (int j = 0; j < NJ; ++j) {
        for (int k = 0; k < 4; ++k) acc[j][k] = r0 == 0 ? _mm512_setzero_ps() : _mm512_loadu_ps(sb + j * lds + 16 * k);
      }
      int m = r0 / dsub;
      __m512i idx = load_codes(codes, b, M, m);
      __mmask64 top = _mm512_movepi8_mask(idx);
      for (int r = r0; r < r1; ++r) {
        if (r / dsub != m) {
          m = r / dsub;
          idx = load_codes(codes, b, M, m);
          top = _mm512_movepi8_mask(idx);
        }
        __m512 f[4];
        decode_row<kBig>(cb.planes + static_cast<std::int64_t>(r) * kRowBytes, idx, top, f);
        for (int j = 0; j < NJ; ++j) {
          const __m512 qv = _mm512_set1_ps(q[j * d + r]);
          for (int k = 0; k < 4; ++k) acc[j][k] = _mm512_fmadd_ps(f[k], qv, acc[j][k]);
        }
      }
      for (int j = 0; j < NJ; ++j) {
        if (r1 == d) {
          from_plane_order(acc[j], sb + j * lds);
        } else {
          for (int k = 0; k < 4; ++k) _mm512_storeu_ps(sb + j * lds + 16 * k, acc[j][k]);
        }
      }
    }
  }
}

template <bool kBig>
void scores_big(const PQKernelCodebook& cb, const std::uint8_t* codes, std::int64_t b0, std::int64_t b1,
                const float* q, int G, float* s, std::int64_t lds) {
  const int d = cb.head_dim();
  for (int j0 = 0; j0 < G; j0 += 4) {
    const float* qj = q + j0 * d;
    float* sj = s + j0 * lds;
    switch (std::min(4, G - j0)) {
      case 1: scores_heads<1, kBig>(cb, codes, b0, b1, qj, sj, lds); break;
      case 2: scores_heads<2, kBig>(cb, codes, b0, b1, qj, sj, lds); break;
      case 3: scores_heads<3, kBig>(cb, codes, b0, b1, qj, sj, lds); break;
      default: scores_heads<4, kBig>(cb, codes, b0, b1, qj, sj, lds); break;
    }
  }
}

void scores(const PQKernelCodebook& cb, const std::uint8_t* codes, std::int64_t b0, std::int64_t b1, const float* q,
            int G, float* s, std::int64_t lds) {
  if (cb.ksub > 128) return scores_big<true>(cb, codes, b0, b1, q, G, s, lds);
  scores_big<false>(cb, codes, b0, b1, q, G, s, lds);
}

template <int NJ, bool kBig>
void accumulate_heads(const PQKernelCodebook& cb, const std::uint8_t* codes, std::int64_t b0, std::int64_t b1,
                      const float* pp, float* acc) {
  const int M = cb.M, dsub = cb.dsub, d = cb.head_dim();
  const std::int64_t T = (b1 - b0) * kPQBlockTokens;  // pp: [NJ, T] in plane order
  for (int r = 0; r < d; ++r) {
    const int m = r / dsub;
    const std::uint8_t* row = cb.planes + static_cast<std::int64_t>(r) * kRowBytes;
    __m512 a0[NJ], a1[NJ];
    for (int j = 0; j < NJ; ++j) a0[j] = a1[j] = _mm512_setzero_ps();
    for (std::int64_t b = b0; b < b1; ++b) {
      const __m512i idx = load_codes(codes, b, M, m);
      __m512 f[4];
      decode_row<kBig>(row, idx, _mm512_movepi8_mask(idx), f);
      const float* pb = pp + (b - b0) * kPQBlockTokens;
      for (int j = 0; j < NJ; ++j) {
        a0[j] = _mm512_fmadd_ps(f[0], _mm512_loadu_ps(pb + j * T), a0[j]);
        a1[j] = _mm512_fmadd_ps(f[1], _mm512_loadu_ps(pb + j * T + 16), a1[j]);
        a0[j] = _mm512_fmadd_ps(f[2], _mm512_loadu_ps(pb + j * T + 32), a0[j]);
        a1[j] = _mm512_fmadd_ps(f[3], _mm512_loadu_ps(pb + j * T + 48), a1[j]);
      }
    }
    for (int j = 0; j < NJ; ++j) acc[j * d + r] += _mm512_reduce_add_ps(_mm512_add_ps(a0[j], a1[j]));
  }
}

template <bool kBig>
void accumulate_big(const PQKernelCodebook& cb, const std::uint8_t* codes, std::int64_t b0, std::int64_t b1,
                    const float* p, std::int64_t ldp, int G, float* acc) {
  const int d = cb.head_dim();
  const std::int64_t T = (b1 - b0) * kPQBlockTokens;
  std::vector<float> pp(static_cast<std::size_t>(std::min(G, 4) * T));  // probabilities in plane order
  for (int j0 = 0; j0 < G; j0 += 4) {
    const int nj = std::min(4, G - j0);
    for (int j = 0; j < nj; ++j) {
      for (std::int64_t t = 0; t < T; t += kPQBlockTokens) {
        __m512 f[4];
        to_plane_order(p + (j0 + j) * ldp + t, f);
        for (int k = 0; k < 4; ++k) _mm512_storeu_ps(pp.data() + j * T + t + 16 * k, f[k]);
      }
    }
    float* aj = acc + j0 * d;
    switch (nj) {
      case 1: accumulate_heads<1, kBig>(cb, codes, b0, b1, pp.data(), aj); break;
      case 2: accumulate_heads<2, kBig>(cb, codes, b0, b1, pp.data(), aj); break;
      case 3: accumulate_heads<3, kBig>(cb, codes, b0, b1, pp.data(), aj); break;
      default: accumulate_heads<4, kBig>(cb, codes, b0, b1, pp.data(), aj); break;
    }
  }
}

void accumulate(const PQKernelCodebook& cb, const std::uint8_t* codes, std::int64_t b0, std::int64_t b1,
                const float* p, std::int64_t ldp, int G, float* acc) {
  if (cb.ksub > 128) return accumulate_big<true>(cb, codes, b0, b1, p, ldp, G, acc);
  accumulate_big<false>(cb, codes, b0, b1, p, ldp, G, acc);
}

}  // namespace

namespace detail {
const PQAttnKernels kPQAttnAvx512Vbmi = {"avx512-vbmi-planes", scores, accumulate};
}

}  // namespace million
