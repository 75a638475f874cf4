// PQ encode/decode: the double-precision scalar reference, decoding, 4-bit packing, and PQEncoder,
// which builds a transposed centroid table once and per call picks one kernel (scalar here,
// AVX2 / AVX-512 in src/backends/cpu/pq_encode_*.cpp), then splits the chunks over OpenMP threads.
// Table layout and chunking: src/backends/cpu/pq_encode_kernels.h.
#include "pq/encode.h"

#include <fmt/format.h>
#include <omp.h>

#include <cstring>
#include <limits>

#include "backends/cpu/pq_encode_kernels.h"
#include "million/error.h"

namespace million {

namespace {

// Below this much work (points x centroids x dsub multiply-adds) one thread encodes everything:
// 2^20 is tens of microseconds of AVX-512 work, well above what starting an OpenMP region costs,
// and keeps the per-token call single-threaded (n = 1: head_dim x ksub <= 128 x 256 = 2^15).
constexpr std::int64_t kParallelMinWork = std::int64_t{1} << 20;

void check_codebook(const PQCodebook& cb, const char* who) {
  if (cb.head_dim <= 0 || cb.M <= 0 || cb.head_dim % cb.M != 0) {
    throw InvalidArgumentError(fmt::format("{}: codebook M={} does not divide head_dim {}", who, cb.M, cb.head_dim));
  }
  if (cb.nbits < 4 || cb.nbits > 8) {
    throw InvalidArgumentError(fmt::format("{}: codebook nbits={} is outside 4..8", who, cb.nbits));
  }
  const std::size_t want = static_cast<std::size_t>(cb.M) * static_cast<std::size_t>(cb.ksub()) *
                           static_cast<std::size_t>(cb.dsub());
  if (cb.centroids.size() != want) {
    throw InvalidArgumentError(
        fmt::format("{}: codebook has {} centroid values, expected {}", who, cb.centroids.size(), want));
  }
}

void check_io(const void* in, std::int64_t n, const void* out, const char* who) {
  if (n < 0) throw InvalidArgumentError(fmt::format("{}: negative vector count {}", who, n));
  if (n > 0 && (in == nullptr || out == nullptr)) {
    throw InvalidArgumentError(fmt::format("{}: null input or output for a count of {}", who, n));
  }
}

// Packed chunks (see PQEncodeArgs) when a 16-lane chunk holds whole vectors: M = 1, 2, 4, 8.
bool use_packed(int M) { return M < kPQTableLanes && kPQTableLanes % M == 0; }

// Floats of PQEncodeArgs::table for this codebook: [groups, ksub, dsub, 16].
std::size_t table_floats(const PQCodebook& cb) {
  const std::size_t groups = use_packed(cb.M) ? 1 : static_cast<std::size_t>(cb.M + kPQTableLanes - 1) / kPQTableLanes;
  return groups * static_cast<std::size_t>(cb.ksub()) * static_cast<std::size_t>(cb.dsub()) * kPQTableLanes;
}

}  // namespace

void pq_encode_ref(const PQCodebook& cb, const float* x, std::int64_t n, std::uint8_t* codes) {
  check_codebook(cb, "pq_encode_ref");
  check_io(x, n, codes, "pq_encode_ref");
  const int M = cb.M, dsub = cb.dsub(), ksub = cb.ksub();
  for (std::int64_t i = 0; i < n; ++i) {
    for (int m = 0; m < M; ++m) {
      const float* xs = x + i * cb.head_dim + static_cast<std::int64_t>(m) * dsub;
      const float* cm = cb.centroids.data() + static_cast<std::size_t>(m) * ksub * dsub;
      int best_c = 0;
      double best = std::numeric_limits<double>::infinity();
      for (int c = 0; c < ksub; ++c) {
        double d = 0.0;
        for (int j = 0; j < dsub; ++j) {
          const double t = static_cast<double>(xs[j]) - static_cast<double>(cm[c * dsub + j]);
          d += t * t;
        }
        if (d < best) {  // strict: ties keep the lower index (NaN input keeps code 0)
          best = d;
          best_c = c;
        }
      }
      codes[i * M + m] = static_cast<std::uint8_t>(best_c);
    }
  }
}

void pq_decode(const PQCodebook& cb, const std::uint8_t* codes, std::int64_t n, float* out) {
  check_codebook(cb, "pq_decode");
  check_io(codes, n, out, "pq_decode");
  const int M = cb.M, dsub = cb.dsub(), ksub = cb.ksub();
  const std::size_t bytes = static_cast<std::size_t>(dsub) * sizeof(float);
  for (std::int64_t i = 0; i < n; ++i) {
    for (int m = 0; m < M; ++m) {
      const int c = codes[i * M + m];
      if (c >= ksub) {
        throw InvalidArgumentError(fmt::format("pq_decode: code {} of vector {} subspace {} is not below ksub {}", c,
                                               i, m, ksub));
      }
      std::memcpy(out + i * cb.head_dim + static_cast<std::int64_t>(m) * dsub,
                  cb.centroids.data() + (static_cast<std::size_t>(m) * ksub + static_cast<std::size_t>(c)) * dsub,
                  bytes);
    }
  }
}

namespace {

// Points the scalar kernel scans side by side: independent running minima, so the loop is not
// bound by the latency of one compare-and-select chain per centroid (measured ~2x at dsub 2).
constexpr int kScalarPoints = 4;

// Scalar kernel body for points [p_begin, p_end), kCount (1 or kScalarPoints) at a time; kDsub > 0
// fixes dsub at compile time (the common 1, 2, 4, 8, unrolled), 0 reads it from the arguments.
template <int kDsub, int kCount>
void encode_points_scalar(const PQEncodeArgs& a, std::int64_t p_begin, std::int64_t p_end) {
  const int dsub = kDsub > 0 ? kDsub : a.dsub, ksub = a.ksub;
  for (std::int64_t p = p_begin; p + kCount <= p_end; p += kCount) {
    const float* xs[kCount];
    const float* cm[kCount];
    int best_c[kCount];
    float best[kCount];
    for (int r = 0; r < kCount; ++r) {
      xs[r] = a.x + (p + r) * dsub;
      cm[r] = a.centroids + ((p + r) % a.M) * ksub * dsub;
      best_c[r] = 0;
      best[r] = std::numeric_limits<float>::infinity();
    }
    for (int c = 0; c < ksub; ++c) {
      for (int r = 0; r < kCount; ++r) {
        float d = 0.0f;
        for (int j = 0; j < dsub; ++j) {
          const float t = xs[r][j] - cm[r][c * dsub + j];
          d += t * t;
        }
        if (d < best[r]) {
          best[r] = d;
          best_c[r] = c;
        }
      }
    }
    for (int r = 0; r < kCount; ++r) a.codes[p + r] = static_cast<std::uint8_t>(best_c[r]);
  }
}

template <int kDsub>
void encode_range_scalar(const PQEncodeArgs& a, std::int64_t p_begin, std::int64_t p_end) {
  const std::int64_t split = p_begin + (p_end - p_begin) / kScalarPoints * kScalarPoints;
  encode_points_scalar<kDsub, kScalarPoints>(a, p_begin, split);
  encode_points_scalar<kDsub, 1>(a, split, p_end);
}

}  // namespace

// Scalar kernel: one point (vector, subspace) per "chunk", float arithmetic on the codebook's
// own [M, ksub, dsub] centroids, strict less-than in index order like the SIMD kernels.
void pq_encode_chunks_scalar(const PQEncodeArgs& a, std::int64_t q_begin, std::int64_t q_end) {
  switch (a.dsub) {
    case 1: encode_range_scalar<1>(a, q_begin, q_end); break;
    case 2: encode_range_scalar<2>(a, q_begin, q_end); break;
    case 4: encode_range_scalar<4>(a, q_begin, q_end); break;
    case 8: encode_range_scalar<8>(a, q_begin, q_end); break;
    default: encode_range_scalar<0>(a, q_begin, q_end); break;
  }
}

PQEncoder::PQEncoder(const PQCodebook& cb) : cb_(cb) {
  check_codebook(cb, "PQEncoder");
  const int M = cb.M, dsub = cb.dsub(), ksub = cb.ksub();
  const bool packed = use_packed(M);
  const int groups = packed ? 1 : (M + kPQTableLanes - 1) / kPQTableLanes;
  // [groups, ksub, dsub, 16] f32 (see PQEncodeArgs::table); padding lanes past M stay zero.
  centroids_t_.assign(table_floats(cb), 0.0f);
  for (int g = 0; g < groups; ++g) {
    for (int k = 0; k < kPQTableLanes; ++k) {
      const int m = packed ? k % M : g * kPQTableLanes + k;
      if (m >= M) break;
      for (int c = 0; c < ksub; ++c) {
        for (int j = 0; j < dsub; ++j) {
          centroids_t_[((static_cast<std::size_t>(g) * ksub + c) * dsub + j) * kPQTableLanes + k] =
              cb.centroids[(static_cast<std::size_t>(m) * ksub + c) * dsub + j];
        }
      }
    }
  }
}

void PQEncoder::encode(const float* x, std::int64_t n, std::uint8_t* codes, SimdLevel level) const {
  if (!simd_level_supported(level)) {
    throw InvalidArgumentError(
        fmt::format("PQEncoder: SIMD level '{}' is not supported by this CPU", simd_level_name(level)));
  }
  check_io(x, n, codes, "PQEncoder::encode");
  if (n == 0) return;
  // The codebook is held by reference; a change of shape since construction would make the
  // table stale, which is a caller bug.
  MILLION_ASSERT(centroids_t_.size() == table_floats(cb_));
  PQEncodeArgs a;
  a.x = x;
  a.n = n;
  a.codes = codes;
  a.head_dim = cb_.head_dim;
  a.M = cb_.M;
  a.dsub = cb_.dsub();
  a.ksub = cb_.ksub();
  a.packed = use_packed(cb_.M);
  a.table = centroids_t_.data();
  a.centroids = cb_.centroids.data();

  // The level is resolved here, once: a kernel and its chunk count.
  void (*kernel)(const PQEncodeArgs&, std::int64_t, std::int64_t) = nullptr;
  std::int64_t chunks = 0;
  switch (level) {
    case SimdLevel::kScalar:
      kernel = pq_encode_chunks_scalar;
      chunks = n * a.M;
      break;
    case SimdLevel::kAvx2:
      kernel = pq_encode_chunks_avx2;
      chunks = pq_chunk_grid<8>(a).count();
      break;
    case SimdLevel::kAvx512:
      kernel = pq_encode_chunks_avx512;
      chunks = pq_chunk_grid<16>(a).count();
      break;
  }
  MILLION_ASSERT(kernel != nullptr);

  const std::int64_t work = n * cb_.head_dim * static_cast<std::int64_t>(a.ksub);  // n * M * dsub * ksub
  if (work < kParallelMinWork || chunks < 2 || omp_in_parallel() || omp_get_max_threads() == 1) {
    kernel(a, 0, chunks);
    return;
  }
#pragma omp parallel
  {
    // Contiguous ranges: a thread's chunks mostly share one table group (see PQEncodeArgs).
    const std::int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
    kernel(a, chunks * t / nt, chunks * (t + 1) / nt);
  }
}

void pq_pack4(const std::uint8_t* codes, std::int64_t n_codes, std::uint8_t* packed) {
  check_io(codes, n_codes, packed, "pq_pack4");
  std::uint8_t high = 0;
  for (std::int64_t i = 0; i < n_codes; ++i) high |= codes[i];
  if ((high & 0xF0) != 0) throw InvalidArgumentError("pq_pack4: a code does not fit in 4 bits (is above 15)");
  const std::int64_t pairs = n_codes / 2;
  for (std::int64_t i = 0; i < pairs; ++i) {
    packed[i] = static_cast<std::uint8_t>(codes[2 * i] | (codes[2 * i + 1] << 4));
  }
  if (n_codes % 2 != 0) packed[pairs] = codes[n_codes - 1];  // high nibble 0
}

void pq_unpack4(const std::uint8_t* packed, std::int64_t n_codes, std::uint8_t* codes) {
  check_io(packed, n_codes, codes, "pq_unpack4");
  const std::int64_t pairs = n_codes / 2;
  for (std::int64_t i = 0; i < pairs; ++i) {
    codes[2 * i] = packed[i] & 0x0F;
    codes[2 * i + 1] = static_cast<std::uint8_t>(packed[i] >> 4);
  }
  if (n_codes % 2 != 0) codes[n_codes - 1] = packed[pairs] & 0x0F;
}

}  // namespace million
