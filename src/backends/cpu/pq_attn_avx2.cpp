// AVX2 PQ attention kernels (gathers; see pq_attn_kernels.h): lanes are 8 tokens of a 64-token
// code block, one 8-byte code load per (lane group, subspace) widened to gather indices, one
// gather per centroid coordinate shared by every head of the group. Scores: subspaces in
// groups whose centroids fit kPQTableBytes, head accumulators in registers, added into s
// between groups. Values: per (subspace, coordinate chunk) a pass over the lane groups with
// NJ x NE accumulators, reduced into acc at the end. Compiled with AVX2/FMA flags only.
#include <immintrin.h>

#include <algorithm>

#include "backends/cpu/avx2_util.h"
#include "backends/cpu/pq_attn_kernels.h"

namespace million {
namespace {

using avx2::hsum;

constexpr int kLanes = 8;
constexpr int kGroups = kPQBlockTokens / kLanes;

inline __m256i lane_indices(const std::uint8_t* codes, std::int64_t b, int M, int m, int grp, int dsub) {
  const __m256i idx = _mm256_cvtepu8_epi32(
      _mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes + (b * M + m) * kPQBlockTokens + grp * kLanes)));
  return dsub == 1 ? idx : _mm256_mullo_epi32(idx, _mm256_set1_epi32(dsub));
}

template <int NJ>
void scores_heads(const PQKernelCodebook& cb, const std::uint8_t* codes, std::int64_t b0, std::int64_t b1,
                  const float* q, float* s, std::int64_t lds) {
  const int M = cb.M, dsub = cb.dsub, d = cb.head_dim();
  const int group = std::clamp(kPQTableBytes / (cb.ksub * dsub * 4), 1, M);
  for (int m0 = 0; m0 < M; m0 += group) {
    const int m1 = std::min(M, m0 + group);
    for (std::int64_t b = b0; b < b1; ++b) {
      for (int grp = 0; grp < kGroups; ++grp) {
        float* sb = s + (b - b0) * kPQBlockTokens + grp * kLanes;
        __m256 acc[NJ];
        for (int j = 0; j < NJ; ++j) acc[j] = m0 == 0 ? _mm256_setzero_ps() : _mm256_loadu_ps(sb + j * lds);
        for (int m = m0; m < m1; ++m) {
          const __m256i idx = lane_indices(codes, b, M, m, grp, dsub);
          const float* cm = cb.centroids + static_cast<std::int64_t>(m) * cb.ksub * dsub;
          const float* qm = q + m * dsub;
          for (int e = 0; e < dsub; ++e) {
            const __m256 v = _mm256_i32gather_ps(cm + e, idx, 4);
            for (int j = 0; j < NJ; ++j) acc[j] = _mm256_fmadd_ps(v, _mm256_set1_ps(qm[j * d + e]), acc[j]);
          }
        }
        for (int j = 0; j < NJ; ++j) _mm256_storeu_ps(sb + j * lds, acc[j]);
      }
    }
  }
}

void scores(const PQKernelCodebook& cb, const std::uint8_t* codes, std::int64_t b0, std::int64_t b1, const float* q,
            int G, float* s, std::int64_t lds) {
  const int d = cb.head_dim();
  for (int j0 = 0; j0 < G; j0 += 8) {
    const float* qj = q + j0 * d;
    float* sj = s + j0 * lds;
    switch (std::min(8, G - j0)) {
      case 1: scores_heads<1>(cb, codes, b0, b1, qj, sj, lds); break;
      case 2: scores_heads<2>(cb, codes, b0, b1, qj, sj, lds); break;
      case 3: scores_heads<3>(cb, codes, b0, b1, qj, sj, lds); break;
      case 4: scores_heads<4>(cb, codes, b0, b1, qj, sj, lds); break;
      case 5: scores_heads<5>(cb, codes, b0, b1, qj, sj, lds); break;
      case 6: scores_heads<6>(cb, codes, b0, b1, qj, sj, lds); break;
      case 7: scores_heads<7>(cb, codes, b0, b1, qj, sj, lds); break;
      default: scores_heads<8>(cb, codes, b0, b1, qj, sj, lds); break;
    }
  }
}

// NJ heads x NE consecutive coordinates [e0, e0 + NE) of every subspace.
template <int NJ, int NE>
void accumulate_heads(const PQKernelCodebook& cb, const std::uint8_t* codes, std::int64_t b0, std::int64_t b1,
                      const float* p, std::int64_t ldp, float* acc) {
  const int M = cb.M, dsub = cb.dsub, d = cb.head_dim();
  for (int m = 0; m < M; ++m) {
    const float* cm = cb.centroids + static_cast<std::int64_t>(m) * cb.ksub * dsub;
    for (int e0 = 0; e0 < dsub; e0 += NE) {
      __m256 a[NJ][NE];
      for (int j = 0; j < NJ; ++j) {
        for (int e = 0; e < NE; ++e) a[j][e] = _mm256_setzero_ps();
      }
      for (std::int64_t b = b0; b < b1; ++b) {
        for (int grp = 0; grp < kGroups; ++grp) {
          const __m256i idx = lane_indices(codes, b, M, m, grp, dsub);
          __m256 w[NJ];
          for (int j = 0; j < NJ; ++j) w[j] = _mm256_loadu_ps(p + j * ldp + (b - b0) * kPQBlockTokens + grp * kLanes);
          for (int e = 0; e < NE; ++e) {
            const __m256 v = _mm256_i32gather_ps(cm + e0 + e, idx, 4);
            for (int j = 0; j < NJ; ++j) a[j][e] = _mm256_fmadd_ps(w[j], v, a[j][e]);
          }
        }
      }
      for (int j = 0; j < NJ; ++j) {
        for (int e = 0; e < NE; ++e) acc[j * d + m * dsub + e0 + e] += hsum(a[j][e]);
      }
    }
  }
}

template <int NJ>
void accumulate_nj(const PQKernelCodebook& cb, const std::uint8_t* codes, std::int64_t b0, std::int64_t b1,
                   const float* p, std::int64_t ldp, float* acc) {
  if (cb.dsub % 2 == 0) return accumulate_heads<NJ, 2>(cb, codes, b0, b1, p, ldp, acc);
  accumulate_heads<NJ, 1>(cb, codes, b0, b1, p, ldp, acc);
}

void accumulate(const PQKernelCodebook& cb, const std::uint8_t* codes, std::int64_t b0, std::int64_t b1,
                const float* p, std::int64_t ldp, int G, float* acc) {
  const int d = cb.head_dim();
  for (int j0 = 0; j0 < G; j0 += 4) {
    const float* pj = p + j0 * ldp;
    float* aj = acc + j0 * d;
    switch (std::min(4, G - j0)) {
      case 1: accumulate_nj<1>(cb, codes, b0, b1, pj, ldp, aj); break;
      case 2: accumulate_nj<2>(cb, codes, b0, b1, pj, ldp, aj); break;
      case 3: accumulate_nj<3>(cb, codes, b0, b1, pj, ldp, aj); break;
      default: accumulate_nj<4>(cb, codes, b0, b1, pj, ldp, aj); break;
    }
  }
}

}  // namespace

namespace detail {
const PQAttnKernels kPQAttnAvx2 = {"avx2-gather", scores, accumulate};
}

}  // namespace million
