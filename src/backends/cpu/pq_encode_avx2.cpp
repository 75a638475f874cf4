// AVX2+FMA PQ nearest-centroid kernel: 8 points (vector, subspace) per ymm, one per lane, scanned
// against centroids 0..ksub-1 in order with a strict-less running min, so ties go to the lower
// index with no cross-lane reduction. Reads half (8 lanes) of the 16-lane table rows described in
// pq_encode_kernels.h. Compiled with AVX2 flags only; reached through PQEncoder::encode(kAvx2).
#include <immintrin.h>

#include <cstring>
#include <limits>
#include <vector>

#include "backends/cpu/pq_encode_kernels.h"

namespace million {
namespace {

constexpr int kLanes = 8;  // floats per ymm
// Scratch for partial chunks of the fixed-dsub kernels: R chunks of [8, D] floats, and D * R is
// at most 8 for every fixed kernel chosen in pq_encode_chunks_avx2 (1 x 4, 2 x 3, 4 x 2).
constexpr int kMaxDsubTimesChunks = 8;
// The generic kernel's two [8, dsub] buffers live on the stack up to this dsub (2 x 2 KiB).
constexpr int kMaxStackDsub = 64;
constexpr int kRowStride = kPQTableLanes;  // a table row holds 16 lanes; this kernel uses 8

// Points side by side: xv[j] lane k = coordinate j of point k; p is [8, D] f32 contiguous.
template <int D>
inline void load_points(const float* p, __m256 (&xv)[D]) {
  if constexpr (D == 1) {
    xv[0] = _mm256_loadu_ps(p);
  } else if constexpr (D == 2) {
    // shuffle_ps works per 128-bit half: (p0 p1 p4 p5 | p2 p3 p6 p7); the 64-bit permute
    // restores point order.
    const __m256 a = _mm256_loadu_ps(p), b = _mm256_loadu_ps(p + 8);
    xv[0] = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, 0x88)), 0xD8));
    xv[1] = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, 0xDD)), 0xD8));
  } else {
    const __m256i vindex = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(D));
#pragma GCC unroll 8
    for (int j = 0; j < D; ++j) xv[j] = _mm256_i32gather_ps(p + j, vindex, 4);
  }
}

inline void store_codes(__m256i idx, std::uint8_t* codes, int nvalid) {
  // Low byte of each 32-bit lane: bytes 0..3 of each 128-bit half, then join the two halves.
  const __m256i pick = _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,  //
                                        0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
  const __m256i b = _mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(idx, pick), _mm256_setr_epi32(0, 4, 1, 1, 1, 1, 1, 1));
  const __m128i bytes = _mm256_castsi256_si128(b);
  if (nvalid == kLanes) {
    _mm_storel_epi64(reinterpret_cast<__m128i*>(codes), bytes);
  } else {
    alignas(16) std::uint8_t tmp[16];
    _mm_store_si128(reinterpret_cast<__m128i*>(tmp), bytes);
    std::memcpy(codes, tmp, static_cast<std::size_t>(nvalid));
  }
}

// One centroid against one chunk: strict-less update of the running min and its index.
inline void update(__m256 d, __m256i cv, __m256& best, __m256i& idx) {
  const __m256 less = _mm256_cmp_ps(d, best, _CMP_LT_OQ);
  best = _mm256_min_ps(d, best);  // d < best ? d : best, the same strict test
  idx = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(idx), _mm256_castsi256_ps(cv), less));
}

// R chunks at once (independent min chains hide vminps latency when dsub is small); src[r] is
// chunk r's [8, D] points (the chunk's own x, or a zero-padded copy for a partial chunk).
template <int D, int R>
void scan_fixed(const PQChunk* ch, const float* const* src, int ksub) {
  __m256 xv[R][D];
  const float* tab[R];
  __m256 best[R];
  __m256i idx[R];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
    load_points<D>(src[r], xv[r]);
    tab[r] = ch[r].table;
    best[r] = _mm256_set1_ps(std::numeric_limits<float>::infinity());
    idx[r] = _mm256_setzero_si256();
  }
  constexpr int kRow = D * kRowStride;  // floats per centroid in the table: [D][16]
  __m256i cv = _mm256_setzero_si256();
  const __m256i one = _mm256_set1_epi32(1);
  for (int c = 0; c < ksub; ++c) {
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const float* row = tab[r] + static_cast<std::ptrdiff_t>(c) * kRow;
      __m256 t = _mm256_sub_ps(xv[r][0], _mm256_loadu_ps(row));
      __m256 d = _mm256_mul_ps(t, t);
#pragma GCC unroll 8
      for (int j = 1; j < D; ++j) {
        t = _mm256_sub_ps(xv[r][j], _mm256_loadu_ps(row + j * kRowStride));
        d = _mm256_fmadd_ps(t, t, d);
      }
      update(d, cv, best[r], idx[r]);
    }
    cv = _mm256_add_epi32(cv, one);
  }
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) store_codes(idx[r], ch[r].codes, ch[r].nvalid);
}

// Any dsub: one chunk, points transposed into xt [D][8]; two centroids per step and two partial
// sums each keep several FMA chains in flight when D is large.
void scan_generic(const PQChunk& ch, const float* src, int D, int ksub, float* xt) {
  const __m256i vindex = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(D));
  for (int j = 0; j < D; ++j) _mm256_storeu_ps(xt + j * kLanes, _mm256_i32gather_ps(src + j, vindex, 4));
  const std::ptrdiff_t row_len = static_cast<std::ptrdiff_t>(D) * kRowStride;
  auto dist = [&](const float* row) {
    __m256 d0 = _mm256_setzero_ps(), d1 = _mm256_setzero_ps();
    int j = 0;
    for (; j + 2 <= D; j += 2) {
      const __m256 t0 = _mm256_sub_ps(_mm256_loadu_ps(xt + j * kLanes), _mm256_loadu_ps(row + j * kRowStride));
      const __m256 t1 =
          _mm256_sub_ps(_mm256_loadu_ps(xt + (j + 1) * kLanes), _mm256_loadu_ps(row + (j + 1) * kRowStride));
      d0 = _mm256_fmadd_ps(t0, t0, d0);
      d1 = _mm256_fmadd_ps(t1, t1, d1);
    }
    if (j < D) {
      const __m256 t0 = _mm256_sub_ps(_mm256_loadu_ps(xt + j * kLanes), _mm256_loadu_ps(row + j * kRowStride));
      d0 = _mm256_fmadd_ps(t0, t0, d0);
    }
    return _mm256_add_ps(d0, d1);
  };
  __m256 best = _mm256_set1_ps(std::numeric_limits<float>::infinity());
  __m256i idx = _mm256_setzero_si256();
  __m256i cv = _mm256_setzero_si256();
  const __m256i one = _mm256_set1_epi32(1);
  for (int c = 0; c < ksub; c += 2) {  // ksub = 2^nbits is even
    const __m256 da = dist(ch.table + c * row_len), db = dist(ch.table + (c + 1) * row_len);
    update(da, cv, best, idx);  // in index order: c, then c + 1
    cv = _mm256_add_epi32(cv, one);
    update(db, cv, best, idx);
    cv = _mm256_add_epi32(cv, one);
  }
  store_codes(idx, ch.codes, ch.nvalid);
}

// Copies a partial chunk's points into dst [8, D], zeros past nvalid (those lanes are computed
// and discarded), and returns where the kernel should read the chunk's points.
inline const float* chunk_source(const PQChunk& ch, int D, float* dst) {
  if (ch.nvalid == kLanes) return ch.x;
  const std::size_t valid = static_cast<std::size_t>(ch.nvalid) * static_cast<std::size_t>(D);
  std::memcpy(dst, ch.x, valid * sizeof(float));
  std::memset(dst + valid, 0, (static_cast<std::size_t>(kLanes) * D - valid) * sizeof(float));
  return dst;
}

// scan_fixed<D, count> for 1 <= count <= R (the last chunks of a range).
template <int D, int R>
void scan_count(int count, const PQChunk* ch, const float* const* src, int ksub) {
  if constexpr (R > 1) {
    if (count < R) {
      scan_count<D, R - 1>(count, ch, src, ksub);
      return;
    }
  }
  scan_fixed<D, R>(ch, src, ksub);
}

template <int D, int R>
void run_fixed(const PQEncodeArgs& a, std::int64_t q_begin, std::int64_t q_end) {
  static_assert(D * R <= kMaxDsubTimesChunks, "scratch below is sized for D * R <= kMaxDsubTimesChunks");
  alignas(32) float scratch[kMaxDsubTimesChunks * kLanes];  // R partial chunks of [8, D]
  PQChunkCursor<kLanes> cursor(a, pq_chunk_grid<kLanes>(a), q_begin);
  PQChunk ch[R];
  const float* src[R];
  for (std::int64_t q = q_begin; q < q_end; q += R) {
    const int count = static_cast<int>(std::min<std::int64_t>(R, q_end - q));
    for (int r = 0; r < count; ++r, cursor.next()) {
      ch[r] = cursor.get();
      src[r] = chunk_source(ch[r], D, scratch + r * D * kLanes);
    }
    scan_count<D, R>(count, ch, src, a.ksub);
  }
}

void run_generic(const PQEncodeArgs& a, std::int64_t q_begin, std::int64_t q_end) {
  const std::size_t chunk_floats = static_cast<std::size_t>(a.dsub) * kLanes;
  // [2][8, dsub] f32: a zero-padded partial chunk, then the chunk's points transposed [dsub][8]
  alignas(32) float stack_buf[2 * kMaxStackDsub * kLanes];
  std::vector<float> heap_buf;
  float* buf = stack_buf;
  if (a.dsub > kMaxStackDsub) {
    heap_buf.resize(2 * chunk_floats);
    buf = heap_buf.data();
  }
  PQChunkCursor<kLanes> cursor(a, pq_chunk_grid<kLanes>(a), q_begin);
  for (std::int64_t q = q_begin; q < q_end; ++q, cursor.next()) {
    const PQChunk ch = cursor.get();
    scan_generic(ch, chunk_source(ch, a.dsub, buf), a.dsub, a.ksub, buf + chunk_floats);
  }
}

}  // namespace

void pq_encode_chunks_avx2(const PQEncodeArgs& a, std::int64_t q_begin, std::int64_t q_end) {
  // Chunks per call of the fixed kernels: several independent min chains hide the vminps
  // latency and share each table row load; R * (D + 2) live values must stay near the 16 ymm
  // registers (measured: dsub 2 with 3 chunks beats 2 and 4, dsub 4 with 2 beats 1).
  switch (a.dsub) {
    case 1: run_fixed<1, 4>(a, q_begin, q_end); break;
    case 2: run_fixed<2, 3>(a, q_begin, q_end); break;
    case 4: run_fixed<4, 2>(a, q_begin, q_end); break;
    default: run_generic(a, q_begin, q_end); break;
  }
}

}  // namespace million
