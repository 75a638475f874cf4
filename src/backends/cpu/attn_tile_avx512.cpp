// AVX-512 attention tile kernels (see attn_tile_kernels.h). Scores: one pass over each key row
// for up to 4 query heads, per-(token, head) vector partial sums reduced 16 at a time by a
// transposing add tree (45 shuffles/adds per 16 dot products instead of 16 full reductions).
// Values: accumulators for 4 heads x 64 dims held in registers across the tile's rows.
// Compiled with AVX-512 flags only; head_dim not a multiple of 16 falls back to the scalar table.
#include <immintrin.h>

#include <algorithm>

#include "backends/cpu/attn_exp_avx512.h"
#include "backends/cpu/attn_tile_kernels.h"

namespace million {
namespace {

inline __mmask16 tail_mask(int rem) { return static_cast<__mmask16>((1u << rem) - 1u); }

inline __m512 load_row(const float* p) { return _mm512_loadu_ps(p); }
inline __m512 load_row(const std::uint16_t* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}

float max_avx512(const float* x, std::int64_t n) {
  __m512 m = _mm512_set1_ps(-__builtin_inff());
  std::int64_t i = 0;
  for (; i + 16 <= n; i += 16) m = _mm512_max_ps(m, _mm512_loadu_ps(x + i));
  if (i < n) m = _mm512_mask_max_ps(m, tail_mask(static_cast<int>(n - i)), m, _mm512_maskz_loadu_ps(tail_mask(static_cast<int>(n - i)), x + i));
  return _mm512_reduce_max_ps(m);
}

float exp_sum_avx512(float* x, std::int64_t n, float shift) {
  const __m512 sh = _mm512_set1_ps(shift);
  __m512 sum = _mm512_setzero_ps();
  std::int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 e = exp_avx512(_mm512_sub_ps(_mm512_loadu_ps(x + i), sh));
    _mm512_storeu_ps(x + i, e);
    sum = _mm512_add_ps(sum, e);
  }
  if (i < n) {
    const __mmask16 m = tail_mask(static_cast<int>(n - i));
    const __m512 e = _mm512_maskz_mov_ps(m, exp_avx512(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), sh)));
    _mm512_mask_storeu_ps(x + i, m, e);
    sum = _mm512_add_ps(sum, e);
  }
  return _mm512_reduce_add_ps(sum);
}

// r[i] = sum of the lanes of v[i], i < 16: four levels of pairwise "half and add" shuffles.
alignas(64) const int kFirst[4][16] = {{0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23},
                                       {0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27},
                                       {0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29},
                                       {0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30}};
alignas(64) const int kSecond[4][16] = {{8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31},
                                        {4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31},
                                        {2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30, 31},
                                        {1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31}};

inline __m512 reduce16(__m512* v) {
  int n = 16;
  for (int level = 0; level < 4; ++level) {
    const __m512i a = _mm512_load_si512(kFirst[level]), b = _mm512_load_si512(kSecond[level]);
    for (int i = 0; i < n / 2; ++i) {
      v[i] = _mm512_add_ps(_mm512_permutex2var_ps(v[2 * i], a, v[2 * i + 1]),
                           _mm512_permutex2var_ps(v[2 * i], b, v[2 * i + 1]));
    }
    n /= 2;
  }
  return v[0];
}

// Scores of NJ heads (q rows j0.., stride d) against the rows of one tile of <= 16 tokens.
template <int NJ, typename Row>
void dot_tile(const float* q, int d, const Row* rows, std::int64_t ldr, int n16, float* s, std::int64_t lds) {
  alignas(64) __m512 part[NJ][16];
  for (int t = 0; t < 16; ++t) {
    __m512 acc[NJ];
    for (int j = 0; j < NJ; ++j) acc[j] = _mm512_setzero_ps();
    if (t < n16) {
      const Row* r = rows + t * ldr;
      for (int c = 0; c < d; c += 16) {
        const __m512 rv = load_row(r + c);
        for (int j = 0; j < NJ; ++j) acc[j] = _mm512_fmadd_ps(_mm512_loadu_ps(q + j * d + c), rv, acc[j]);
      }
    }
    for (int j = 0; j < NJ; ++j) part[j][t] = acc[j];
  }
  for (int j = 0; j < NJ; ++j) _mm512_mask_storeu_ps(s + j * lds, tail_mask(n16), reduce16(part[j]));
}

template <typename Row>
void dot_rows_impl(const float* q, int G, int d, const Row* rows, std::int64_t ldr, int nt, float* s,
                   std::int64_t lds) {
  for (int t0 = 0; t0 < nt; t0 += 16) {
    const int n16 = std::min(16, nt - t0);
    const Row* r = rows + t0 * ldr;
    for (int j0 = 0; j0 < G; j0 += 4) {
      const float* qj = q + j0 * d;
      float* sj = s + j0 * lds + t0;
      switch (std::min(4, G - j0)) {
        case 1: dot_tile<1>(qj, d, r, ldr, n16, sj, lds); break;
        case 2: dot_tile<2>(qj, d, r, ldr, n16, sj, lds); break;
        case 3: dot_tile<3>(qj, d, r, ldr, n16, sj, lds); break;
        default: dot_tile<4>(qj, d, r, ldr, n16, sj, lds); break;
      }
    }
  }
}

// acc[j, c0 .. c0 + 16 NV) += sum_t p_j,t row_t[c0 ..] for NJ heads: NJ x NV accumulators.
template <int NJ, int NV, typename Row>
void axpy_block(const float* p, std::int64_t ldp, int d, const Row* rows, std::int64_t ldr, int nt, int c0, float* acc) {
  __m512 a[NJ][NV];
  for (int j = 0; j < NJ; ++j) {
    for (int k = 0; k < NV; ++k) a[j][k] = _mm512_loadu_ps(acc + j * d + c0 + 16 * k);
  }
  for (int t = 0; t < nt; ++t) {
    const Row* r = rows + t * ldr + c0;
    __m512 rv[NV];
    for (int k = 0; k < NV; ++k) rv[k] = load_row(r + 16 * k);
    for (int j = 0; j < NJ; ++j) {
      const __m512 w = _mm512_set1_ps(p[j * ldp + t]);
      for (int k = 0; k < NV; ++k) a[j][k] = _mm512_fmadd_ps(w, rv[k], a[j][k]);
    }
  }
  for (int j = 0; j < NJ; ++j) {
    for (int k = 0; k < NV; ++k) _mm512_storeu_ps(acc + j * d + c0 + 16 * k, a[j][k]);
  }
}

template <int NJ, typename Row>
void axpy_heads(const float* p, std::int64_t ldp, int d, const Row* rows, std::int64_t ldr, int nt, float* acc) {
  int c0 = 0;
  for (; c0 + 64 <= d; c0 += 64) axpy_block<NJ, 4>(p, ldp, d, rows, ldr, nt, c0, acc);
  switch ((d - c0) / 16) {
    case 1: axpy_block<NJ, 1>(p, ldp, d, rows, ldr, nt, c0, acc); break;
    case 2: axpy_block<NJ, 2>(p, ldp, d, rows, ldr, nt, c0, acc); break;
    case 3: axpy_block<NJ, 3>(p, ldp, d, rows, ldr, nt, c0, acc); break;
    default: break;
  }
}

template <typename Row>
void axpy_rows_impl(const float* p, std::int64_t ldp, int G, int d, const Row* rows, std::int64_t ldr, int nt,
                    float* acc) {
  for (int j0 = 0; j0 < G; j0 += 4) {
    const float* pj = p + j0 * ldp;
    float* aj = acc + j0 * d;
    switch (std::min(4, G - j0)) {
      case 1: axpy_heads<1>(pj, ldp, d, rows, ldr, nt, aj); break;
      case 2: axpy_heads<2>(pj, ldp, d, rows, ldr, nt, aj); break;
      case 3: axpy_heads<3>(pj, ldp, d, rows, ldr, nt, aj); break;
      default: axpy_heads<4>(pj, ldp, d, rows, ldr, nt, aj); break;
    }
  }
}

void dot_rows_f32(const float* q, int G, int d, const float* rows, std::int64_t ldr, int nt, float* s, std::int64_t lds) {
  if (d % 16 != 0) return detail::kAttnTileScalar.dot_rows_f32(q, G, d, rows, ldr, nt, s, lds);
  dot_rows_impl(q, G, d, rows, ldr, nt, s, lds);
}
void dot_rows_f16(const float* q, int G, int d, const std::uint16_t* rows, std::int64_t ldr, int nt, float* s,
                  std::int64_t lds) {
  if (d % 16 != 0) return detail::kAttnTileScalar.dot_rows_f16(q, G, d, rows, ldr, nt, s, lds);
  dot_rows_impl(q, G, d, rows, ldr, nt, s, lds);
}
void axpy_rows_f32(const float* p, std::int64_t ldp, int G, int d, const float* rows, std::int64_t ldr, int nt,
                   float* acc) {
  if (d % 16 != 0) return detail::kAttnTileScalar.axpy_rows_f32(p, ldp, G, d, rows, ldr, nt, acc);
  axpy_rows_impl(p, ldp, G, d, rows, ldr, nt, acc);
}
void axpy_rows_f16(const float* p, std::int64_t ldp, int G, int d, const std::uint16_t* rows, std::int64_t ldr, int nt,
                   float* acc) {
  if (d % 16 != 0) return detail::kAttnTileScalar.axpy_rows_f16(p, ldp, G, d, rows, ldr, nt, acc);
  axpy_rows_impl(p, ldp, G, d, rows, ldr, nt, acc);
}

}  // namespace

namespace detail {
const AttnTileKernels kAttnTileAvx512 = {SimdLevel::kAvx512, max_avx512,    exp_sum_avx512, dot_rows_f32,
                                         dot_rows_f16,       axpy_rows_f32, axpy_rows_f16};
}

}  // namespace million
