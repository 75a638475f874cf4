// AVX-512 (F/BW/VL/DQ) PQ nearest-centroid kernel: 16 points (vector, subspace) per zmm, one per
// lane, scanned against centroids 0..ksub-1 in order with a strict-less running min, so ties go
// to the lower index with no cross-lane reduction. Layout and chunks: pq_encode_kernels.h.
// Compiled with AVX-512 flags only; reached only through PQEncoder::encode(..., kAvx512).
#include <immintrin.h>

#include <cstring>
#include <limits>
#include <vector>

#include "backends/cpu/pq_encode_kernels.h"

namespace million {
namespace {

constexpr int kLanes = 16;  // floats per zmm
static_assert(kLanes == kPQTableLanes, "the AVX-512 kernel reads whole table rows");
// Scratch for partial chunks of the fixed-dsub kernels: R chunks of [16, D] floats, and D * R is
// at most 16 for every fixed kernel chosen in pq_encode_chunks_avx512 (1 x 4, 2 x 4, 4 x 4, 8 x 1).
constexpr int kMaxDsubTimesChunks = 16;
// The generic kernel's two [16, dsub] buffers live on the stack up to this dsub (2 x 4 KiB).
constexpr int kMaxStackDsub = 64;

// Points side by side: xv[j] lane k = coordinate j of point k; p is [16, D] f32 contiguous.
template <int D>
inline void load_points(const float* p, __m512 (&xv)[D]) {
  if constexpr (D == 1) {
    xv[0] = _mm512_loadu_ps(p);
  } else if constexpr (D == 2) {
    const __m512 a = _mm512_loadu_ps(p), b = _mm512_loadu_ps(p + 16);
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    xv[0] = _mm512_permutex2var_ps(a, even, b);
    xv[1] = _mm512_permutex2var_ps(a, odd, b);
  } else if constexpr (D == 4) {
    // r0|r1 hold points 0..7, r2|r3 points 8..15. One permute gathers coordinates (j, j+1) of
    // eight points into the low and high 256 bits; a 128-bit shuffle then joins the two halves.
    const __m512 r0 = _mm512_loadu_ps(p), r1 = _mm512_loadu_ps(p + 16);
    const __m512 r2 = _mm512_loadu_ps(p + 32), r3 = _mm512_loadu_ps(p + 48);
    const __m512i i01 = _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 1, 5, 9, 13, 17, 21, 25, 29);
    const __m512i i23 = _mm512_add_epi32(i01, _mm512_set1_epi32(2));
    const __m512 a01 = _mm512_permutex2var_ps(r0, i01, r1), b01 = _mm512_permutex2var_ps(r2, i01, r3);
    const __m512 a23 = _mm512_permutex2var_ps(r0, i23, r1), b23 = _mm512_permutex2var_ps(r2, i23, r3);
    xv[0] = _mm512_shuffle_f32x4(a01, b01, _MM_SHUFFLE(1, 0, 1, 0));
    xv[1] = _mm512_shuffle_f32x4(a01, b01, _MM_SHUFFLE(3, 2, 3, 2));
    xv[2] = _mm512_shuffle_f32x4(a23, b23, _MM_SHUFFLE(1, 0, 1, 0));
    xv[3] = _mm512_shuffle_f32x4(a23, b23, _MM_SHUFFLE(3, 2, 3, 2));
  } else {
    const __m512i vindex = _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), _mm512_set1_epi32(D));
#pragma GCC unroll 16
    for (int j = 0; j < D; ++j) xv[j] = _mm512_i32gather_ps(vindex, p + j, 4);
  }
}

inline void store_codes(__m512i idx, std::uint8_t* codes, int nvalid) {
  const __m128i bytes = _mm512_cvtepi32_epi8(idx);
  if (nvalid == kLanes) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(codes), bytes);
  } else {
    alignas(16) std::uint8_t tmp[kLanes];
    _mm_store_si128(reinterpret_cast<__m128i*>(tmp), bytes);
    std::memcpy(codes, tmp, static_cast<std::size_t>(nvalid));
  }
}

// R chunks at once (independent min chains hide vminps latency when dsub is small); src[r] is
// chunk r's [16, D] points (the chunk's own x, or a zero-padded copy for a partial chunk).
template <int D, int R>
void scan_fixed(const PQChunk* ch, const float* const* src, int ksub) {
  __m512 xv[R][D];
  const float* tab[R];
  __m512 best[R];
  __m512i idx[R];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
    load_points<D>(src[r], xv[r]);
    tab[r] = ch[r].table;
    best[r] = _mm512_set1_ps(std::numeric_limits<float>::infinity());
    idx[r] = _mm512_setzero_si512();
  }
  constexpr int kRow = D * kLanes;  // floats per centroid in the table: [D][16]
  __m512i cv = _mm512_setzero_si512();
  const __m512i one = _mm512_set1_epi32(1);
  for (int c = 0; c < ksub; ++c) {
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const float* row = tab[r] + static_cast<std::ptrdiff_t>(c) * kRow;
      __m512 t = _mm512_sub_ps(xv[r][0], _mm512_loadu_ps(row));
      __m512 d = _mm512_mul_ps(t, t);
#pragma GCC unroll 8
      for (int j = 1; j < D; ++j) {
        t = _mm512_sub_ps(xv[r][j], _mm512_loadu_ps(row + j * kLanes));
        d = _mm512_fmadd_ps(t, t, d);
      }
      const __mmask16 less = _mm512_cmp_ps_mask(d, best[r], _CMP_LT_OQ);
      best[r] = _mm512_min_ps(d, best[r]);  // d < best ? d : best, the same strict test
      idx[r] = _mm512_mask_mov_epi32(idx[r], less, cv);
    }
    cv = _mm512_add_epi32(cv, one);
  }
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) store_codes(idx[r], ch[r].codes, ch[r].nvalid);
}

// Any dsub: one chunk, points transposed into xt [D][16] on the stack or heap; two centroids per
// step and two partial sums each keep several FMA chains in flight when D is large.
void scan_generic(const PQChunk& ch, const float* src, int D, int ksub, float* xt) {
  const __m512i vindex = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                            _mm512_set1_epi32(D));
  for (int j = 0; j < D; ++j) _mm512_storeu_ps(xt + j * kLanes, _mm512_i32gather_ps(vindex, src + j, 4));
  const std::ptrdiff_t row_len = static_cast<std::ptrdiff_t>(D) * kLanes;
  auto dist = [&](const float* row) {
    __m512 d0 = _mm512_setzero_ps(), d1 = _mm512_setzero_ps();
    int j = 0;
    for (; j + 2 <= D; j += 2) {
      const __m512 t0 = _mm512_sub_ps(_mm512_loadu_ps(xt + j * kLanes), _mm512_loadu_ps(row + j * kLanes));
      const __m512 t1 = _mm512_sub_ps(_mm512_loadu_ps(xt + (j + 1) * kLanes), _mm512_loadu_ps(row + (j + 1) * kLanes));
      d0 = _mm512_fmadd_ps(t0, t0, d0);
      d1 = _mm512_fmadd_ps(t1, t1, d1);
    }
    if (j < D) {
      const __m512 t0 = _mm512_sub_ps(_mm512_loadu_ps(xt + j * kLanes), _mm512_loadu_ps(row + j * kLanes));
      d0 = _mm512_fmadd_ps(t0, t0, d0);
    }
    return _mm512_add_ps(d0, d1);
  };
  __m512 best = _mm512_set1_ps(std::numeric_limits<float>::infinity());
  __m512i idx = _mm512_setzero_si512();
  __m512i cv = _mm512_setzero_si512();
  const __m512i one = _mm512_set1_epi32(1);
  for (int c = 0; c < ksub; c += 2) {  // ksub = 2^nbits is even
    const __m512 da = dist(ch.table + c * row_len), db = dist(ch.table + (c + 1) * row_len);
    // In index order: c first, then c + 1, each with strict less-than.
    const __mmask16 la = _mm512_cmp_ps_mask(da, best, _CMP_LT_OQ);
    best = _mm512_min_ps(da, best);
    idx = _mm512_mask_mov_epi32(idx, la, cv);
    cv = _mm512_add_epi32(cv, one);
    const __mmask16 lb = _mm512_cmp_ps_mask(db, best, _CMP_LT_OQ);
    best = _mm512_min_ps(db, best);
    idx = _mm512_mask_mov_epi32(idx, lb, cv);
    cv = _mm512_add_epi32(cv, one);
  }
  store_codes(idx, ch.codes, ch.nvalid);
}

// Copies a partial chunk's points into dst [16, D], zeros past nvalid (those lanes are computed
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
  alignas(64) float scratch[kMaxDsubTimesChunks * kLanes];  // R partial chunks of [16, D]
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
  // [2][16, dsub] f32: a zero-padded partial chunk, then the chunk's points transposed [dsub][16]
  alignas(64) float stack_buf[2 * kMaxStackDsub * kLanes];
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

void pq_encode_chunks_avx512(const PQEncodeArgs& a, std::int64_t q_begin, std::int64_t q_end) {
  // Chunks per call of the fixed kernels: enough independent min chains that the 4-cycle
  // vminps latency is hidden (dsub 1-2: ~3 cycles of work per chunk and centroid), and for
  // dsub 4 four chunks share each table row load (the 64 KiB group table does not fit L1;
  // measured ~1.35x over 2 chunks in a batch). R * (D + 2) live values fit the 32 zmm registers.
  switch (a.dsub) {
    case 1: run_fixed<1, 4>(a, q_begin, q_end); break;
    case 2: run_fixed<2, 4>(a, q_begin, q_end); break;
    case 4: run_fixed<4, 4>(a, q_begin, q_end); break;
    case 8: run_fixed<8, 1>(a, q_begin, q_end); break;
    default: run_generic(a, q_begin, q_end); break;
  }
}

}  // namespace million
