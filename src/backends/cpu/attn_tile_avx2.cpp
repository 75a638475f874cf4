// AVX2 attention tile kernels (see attn_tile_kernels.h): the AVX-512 structure with 8 lanes —
// per-(token, head) partial sums reduced 8 at a time with hadd trees, value accumulators for
// 4 heads x 32 dims in registers. Compiled with AVX2/FMA/F16C flags only; head_dim not a
// multiple of 8 falls back to the scalar table.
#include <immintrin.h>

#include <algorithm>

#include "backends/cpu/attn_tile_kernels.h"
#include "backends/cpu/avx2_util.h"

namespace million {
namespace {

using avx2::hmax;
using avx2::hsum;

inline __m256 load_row(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 load_row(const std::uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}


// Cephes-style exp as in attn_exp_avx512.h, 2^n built in the exponent field.
inline __m256 exp_avx2(__m256 x) {
  const __m256 lo = _mm256_set1_ps(-87.3365447f);
  const __m256 keep = _mm256_cmp_ps(x, lo, _CMP_GE_OQ);
  x = _mm256_min_ps(_mm256_max_ps(x, lo), _mm256_set1_ps(88.0f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), r);
  y = _mm256_add_ps(y, _mm256_set1_ps(1.0f));
  const __m256i pow2 = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_and_ps(keep, _mm256_mul_ps(y, _mm256_castsi256_ps(pow2)));
}

float max_avx2(const float* x, std::int64_t n) {
  __m256 m = _mm256_set1_ps(-__builtin_inff());
  std::int64_t i = 0;
  for (; i + 8 <= n; i += 8) m = _mm256_max_ps(m, _mm256_loadu_ps(x + i));
  float r = hmax(m);
  for (; i < n; ++i) r = x[i] > r ? x[i] : r;
  return r;
}

float exp_sum_avx2(float* x, std::int64_t n, float shift) {
  const __m256 sh = _mm256_set1_ps(shift);
  __m256 sum = _mm256_setzero_ps();
  std::int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 e = exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(x + i), sh));
    _mm256_storeu_ps(x + i, e);
    sum = _mm256_add_ps(sum, e);
  }
  if (i < n) {
    alignas(32) float tmp[8] = {};
    const int rem = static_cast<int>(n - i);
    for (int k = 0; k < rem; ++k) tmp[k] = x[i + k];
    const __m256 e = exp_avx2(_mm256_sub_ps(_mm256_load_ps(tmp), sh));
    _mm256_store_ps(tmp, e);
    for (int k = 0; k < rem; ++k) {
      x[i + k] = tmp[k];
    }
    float tail = 0.0f;
    for (int k = 0; k < rem; ++k) tail += tmp[k];
    return hsum(sum) + tail;
  }
  return hsum(sum);
}

// r[i] = sum of the lanes of v[i], i < 8.
inline __m256 reduce8(const __m256* v) {
  const __m256 t0 = _mm256_hadd_ps(v[0], v[1]), t1 = _mm256_hadd_ps(v[2], v[3]);
  const __m256 t2 = _mm256_hadd_ps(v[4], v[5]), t3 = _mm256_hadd_ps(v[6], v[7]);
  const __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3);
  return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

template <int NJ, typename Row>
void dot_tile(const float* q, int d, const Row* rows, std::int64_t ldr, int n8, float* s, std::int64_t lds) {
  __m256 part[NJ][8];
  for (int t = 0; t < 8; ++t) {
    __m256 acc[NJ];
    for (int j = 0; j < NJ; ++j) acc[j] = _mm256_setzero_ps();
    if (t < n8) {
      const Row* r = rows + t * ldr;
      for (int c = 0; c < d; c += 8) {
        const __m256 rv = load_row(r + c);
        for (int j = 0; j < NJ; ++j) acc[j] = _mm256_fmadd_ps(_mm256_loadu_ps(q + j * d + c), rv, acc[j]);
      }
    }
    for (int j = 0; j < NJ; ++j) part[j][t] = acc[j];
  }
  for (int j = 0; j < NJ; ++j) {
    alignas(32) float out[8];
    _mm256_store_ps(out, reduce8(part[j]));
    for (int t = 0; t < n8; ++t) s[j * lds + t] = out[t];
  }
}

template <typename Row>
void dot_rows_impl(const float* q, int G, int d, const Row* rows, std::int64_t ldr, int nt, float* s,
                   std::int64_t lds) {
  for (int t0 = 0; t0 < nt; t0 += 8) {
    const int n8 = std::min(8, nt - t0);
    const Row* r = rows + t0 * ldr;
    for (int j0 = 0; j0 < G; j0 += 4) {
      const float* qj = q + j0 * d;
      float* sj = s + j0 * lds + t0;
      switch (std::min(4, G - j0)) {
        case 1: dot_tile<1>(qj, d, r, ldr, n8, sj, lds); break;
        case 2: dot_tile<2>(qj, d, r, ldr, n8, sj, lds); break;
        case 3: dot_tile<3>(qj, d, r, ldr, n8, sj, lds); break;
        default: dot_tile<4>(qj, d, r, ldr, n8, sj, lds); break;
      }
    }
  }
}

template <int NJ, int NV, typename Row>
void axpy_block(const float* p, std::int64_t ldp, int d, const Row* rows, std::int64_t ldr, int nt, int c0, float* acc) {
  __m256 a[NJ][NV];
  for (int j = 0; j < NJ; ++j) {
    for (int k = 0; k < NV; ++k) a[j][k] = _mm256_loadu_ps(acc + j * d + c0 + 8 * k);
  }
  for (int t = 0; t < nt; ++t) {
    const Row* r = rows + t * ldr + c0;
    __m256 rv[NV];
    for (int k = 0; k < NV; ++k) rv[k] = load_row(r + 8 * k);
    for (int j = 0; j < NJ; ++j) {
      const __m256 w = _mm256_set1_ps(p[j * ldp + t]);
      for (int k = 0; k < NV; ++k) a[j][k] = _mm256_fmadd_ps(w, rv[k], a[j][k]);
    }
  }
  for (int j = 0; j < NJ; ++j) {
    for (int k = 0; k < NV; ++k) _mm256_storeu_ps(acc + j * d + c0 + 8 * k, a[j][k]);
  }
}

template <int NJ, typename Row>
void axpy_heads(const float* p, std::int64_t ldp, int d, const Row* rows, std::int64_t ldr, int nt, float* acc) {
  int c0 = 0;
  for (; c0 + 32 <= d; c0 += 32) axpy_block<NJ, 4>(p, ldp, d, rows, ldr, nt, c0, acc);
  switch ((d - c0) / 8) {
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
  if (d % 8 != 0) return detail::kAttnTileScalar.dot_rows_f32(q, G, d, rows, ldr, nt, s, lds);
  dot_rows_impl(q, G, d, rows, ldr, nt, s, lds);
}
void dot_rows_f16(const float* q, int G, int d, const std::uint16_t* rows, std::int64_t ldr, int nt, float* s,
                  std::int64_t lds) {
  if (d % 8 != 0) return detail::kAttnTileScalar.dot_rows_f16(q, G, d, rows, ldr, nt, s, lds);
  dot_rows_impl(q, G, d, rows, ldr, nt, s, lds);
}
void axpy_rows_f32(const float* p, std::int64_t ldp, int G, int d, const float* rows, std::int64_t ldr, int nt,
                   float* acc) {
  if (d % 8 != 0) return detail::kAttnTileScalar.axpy_rows_f32(p, ldp, G, d, rows, ldr, nt, acc);
  axpy_rows_impl(p, ldp, G, d, rows, ldr, nt, acc);
}
void axpy_rows_f16(const float* p, std::int64_t ldp, int G, int d, const std::uint16_t* rows, std::int64_t ldr, int nt,
                   float* acc) {
  if (d % 8 != 0) return detail::kAttnTileScalar.axpy_rows_f16(p, ldp, G, d, rows, ldr, nt, acc);
  axpy_rows_impl(p, ldp, G, d, rows, ldr, nt, acc);
}

}  // namespace

namespace detail {
const AttnTileKernels kAttnTileAvx2 = {SimdLevel::kAvx2, max_avx2,      exp_sum_avx2, dot_rows_f32,
                                       dot_rows_f16,     axpy_rows_f32, axpy_rows_f16};
}

}  // namespace million
