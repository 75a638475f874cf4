// PQ encoding: every SIMD level this CPU supports against the double-precision reference over a
// sweep of shapes and data, plus decode, 4-bit packing, guard bytes and argument errors.
// Tolerance: a level's code may differ from the reference only at a floating-point tie, i.e. when
// the chosen centroid's exact (double) distance is within 1e-5 relative of the reference minimum
// (float distances over dsub <= 32 terms are good to ~1e-6 relative); such differences are
// counted and printed. Exact inputs (centroids themselves, duplicate centroids) allow no slack.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "common/compare.h"
#include "million/error.h"
#include "million/simd.h"
#include "pq/encode.h"

namespace million {
namespace {

constexpr double kTieRelTol = 1e-5;  // relative slack on the exact distance at a float tie
constexpr std::int64_t kGuardBytes = 64;
constexpr std::uint8_t kSentinel = 0xA5;

// A byte buffer with kGuardBytes sentinel bytes on each side.
class GuardedBytes {
 public:
  explicit GuardedBytes(std::int64_t n) : n_(n), buf_(static_cast<std::size_t>(n + 2 * kGuardBytes), kSentinel) {}
  std::uint8_t* data() { return buf_.data() + kGuardBytes; }
  const std::uint8_t* data() const { return buf_.data() + kGuardBytes; }
  bool guards_intact() const {
    for (std::int64_t i = 0; i < kGuardBytes; ++i) {
      if (buf_[static_cast<std::size_t>(i)] != kSentinel) return false;
      if (buf_[static_cast<std::size_t>(kGuardBytes + n_ + i)] != kSentinel) return false;
    }
    return true;
  }
  std::vector<std::uint8_t> vec() const { return {data(), data() + n_}; }

 private:
  std::int64_t n_;
  std::vector<std::uint8_t> buf_;
};

PQCodebook random_codebook(int head_dim, int M, int nbits, std::uint64_t seed) {
  PQCodebook cb;
  cb.head_dim = head_dim;
  cb.M = M;
  cb.nbits = nbits;
  cb.centroids.resize(static_cast<std::size_t>(M) * cb.ksub() * cb.dsub());
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist;
  for (auto& c : cb.centroids) c = dist(rng);
  return cb;
}

const float* centroid(const PQCodebook& cb, int m, int c) {
  return cb.centroids.data() + (static_cast<std::size_t>(m) * cb.ksub() + static_cast<std::size_t>(c)) * cb.dsub();
}

double exact_dist(const PQCodebook& cb, const float* x_vec, int m, int c) {
  const float* xs = x_vec + static_cast<std::ptrdiff_t>(m) * cb.dsub();
  const float* cc = centroid(cb, m, c);
  double d = 0.0;
  for (int j = 0; j < cb.dsub(); ++j) {
    const double t = static_cast<double>(xs[j]) - cc[j];
    d += t * t;
  }
  return d;
}

enum class Data { kNormal, kOutliers, kCentroids };
const char* data_name(Data d) {
  switch (d) {
    case Data::kNormal: return "normal";
    case Data::kOutliers: return "outliers";
    case Data::kCentroids: return "centroids";
  }
  return "?";
}

// x [n, head_dim]. kOutliers: ~3% of entries scaled by 1e2..1e4 (both signs). kCentroids: every
// subspace is an exact copy of a random centroid, whose index goes to exact_codes [n, M].
std::vector<float> make_data(const PQCodebook& cb, std::int64_t n, Data kind, std::uint64_t seed,
                             std::vector<std::uint8_t>* exact_codes) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal;
  std::uniform_real_distribution<float> unit(0.0f, 1.0f);
  std::vector<float> x(static_cast<std::size_t>(n * cb.head_dim));
  for (auto& v : x) v = normal(rng);
  if (kind == Data::kOutliers) {
    for (auto& v : x) {
      if (unit(rng) < 0.03f) v *= std::pow(10.0f, 2.0f + 2.0f * unit(rng)) * (unit(rng) < 0.5f ? -1.0f : 1.0f);
    }
  }
  if (kind == Data::kCentroids) {
    exact_codes->resize(static_cast<std::size_t>(n * cb.M));
    std::uniform_int_distribution<int> pick(0, cb.ksub() - 1);
    for (std::int64_t i = 0; i < n; ++i) {
      for (int m = 0; m < cb.M; ++m) {
        const int c = pick(rng);
        (*exact_codes)[static_cast<std::size_t>(i * cb.M + m)] = static_cast<std::uint8_t>(c);
        std::copy(centroid(cb, m, c), centroid(cb, m, c) + cb.dsub(),
                  x.begin() + static_cast<std::ptrdiff_t>(i * cb.head_dim + m * cb.dsub()));
      }
    }
  }
  return x;
}

struct TieStats {
  std::int64_t points = 0;
  std::int64_t ties = 0;  // codes differing from the reference at a float tie
};

// got vs the reference codes `want`: equal, or a float tie (see the file comment). Returns false
// (after reporting up to a few points) if any difference is not a tie.
bool check_codes(const PQCodebook& cb, const float* x, std::int64_t n, const std::uint8_t* got,
                 const std::uint8_t* want, const std::string& what, TieStats* stats) {
  int reported = 0;
  bool ok = true;
  for (std::int64_t i = 0; i < n; ++i) {
    for (int m = 0; m < cb.M; ++m) {
      const std::int64_t p = i * cb.M + m;
      ++stats->points;
      if (got[p] == want[p]) continue;
      bool tie = false;
      double d_got = std::numeric_limits<double>::infinity(), d_ref = 0.0;
      if (got[p] < cb.ksub()) {
        const float* xv = x + i * cb.head_dim;
        d_got = exact_dist(cb, xv, m, got[p]);
        d_ref = exact_dist(cb, xv, m, want[p]);
        tie = d_got <= d_ref + kTieRelTol * d_ref;
      }
      if (tie) {
        ++stats->ties;
        continue;
      }
      ok = false;
      if (reported++ < 5) {
        ADD_FAILURE() << what << ": vector " << i << " subspace " << m << ": code " << int{got[p]} << " (distance "
                      << d_got << "), reference " << int{want[p]} << " (distance " << d_ref << ")";
      }
    }
  }
  return ok;
}

struct Shape {
  int head_dim, M;
};
// dsub 1, 2, 4, 8 for head_dim 8, 64, 128 (the brief's sweep), plus shapes whose M is neither a
// divisor nor a multiple of 16 (partial chunks) and odd dsub (the generic kernels), and the
// k-means assignment shape (M = 1, dsub 2).
const std::vector<Shape> kShapes = {
    {8, 8},   {8, 4},   {8, 2},   {8, 1},  {64, 64}, {64, 32}, {64, 16}, {64, 8}, {128, 128}, {128, 64}, {128, 32},
    {128, 16}, {96, 24}, {96, 12}, {96, 3}, {80, 40}, {80, 5},  {12, 4},  {2, 1},
};

TEST(PQEncode, EveryLevelMatchesReference) {
  TieStats total[3];  // by SimdLevel
  std::uint64_t seed = 1;
  for (const Shape& s : kShapes) {
    for (int nbits : {4, 5, 8}) {
      const PQCodebook cb = random_codebook(s.head_dim, s.M, nbits, seed++);
      const PQEncoder enc(cb);
      for (std::int64_t n : {1, 3, 17, 1000}) {
        for (Data kind : {Data::kNormal, Data::kOutliers, Data::kCentroids}) {
          std::vector<std::uint8_t> exact;
          const std::vector<float> x = make_data(cb, n, kind, seed++, &exact);
          // The reference itself is checked on exact centroids at small n only (it dominates the
          // run time of a sanitized Debug build; levels are checked against `exact` at every n).
          std::vector<std::uint8_t> ref(static_cast<std::size_t>(n * cb.M));
          if (kind != Data::kCentroids || n <= 17) pq_encode_ref(cb, x.data(), n, ref.data());
          if (kind == Data::kCentroids && n <= 17) {
            ASSERT_EQ(ref, exact) << "reference, head_dim " << s.head_dim << " M " << s.M;
          }
          for (SimdLevel level : supported_simd_levels()) {
            const std::string what = std::string(simd_level_name(level)) + " head_dim " + std::to_string(s.head_dim) +
                                     " M " + std::to_string(s.M) + " nbits " + std::to_string(nbits) + " n " +
                                     std::to_string(n) + " " + data_name(kind);
            GuardedBytes out(n * cb.M);
            enc.encode(x.data(), n, out.data(), level);
            ASSERT_TRUE(out.guards_intact()) << what << ": wrote outside the codes";
            if (kind == Data::kCentroids) {
              ASSERT_EQ(out.vec(), exact) << what << ": an exact centroid must get its own index";
            } else {
              TieStats st;
              ASSERT_TRUE(check_codes(cb, x.data(), n, out.data(), ref.data(), what, &st));
              total[static_cast<int>(level)].points += st.points;
              total[static_cast<int>(level)].ties += st.ties;
            }
          }
        }
      }
    }
  }
  for (SimdLevel level : supported_simd_levels()) {
    const TieStats& t = total[static_cast<int>(level)];
    std::cout << "[ info ] " << simd_level_name(level) << ": " << t.ties << " of " << t.points
              << " codes differ from the reference at a floating-point tie (within " << kTieRelTol << " relative)\n";
    RecordProperty(std::string("float_ties_") + simd_level_name(level), std::to_string(t.ties));
  }
}

// Duplicate centroids give bit-identical float distances at every level, so the lower index
// must win for any input: a duplicate's higher index is never a valid code.
TEST(PQEncode, DuplicateCentroidsTieToLowerIndex) {
  for (const Shape& s : std::vector<Shape>{{128, 64}, {128, 32}, {64, 16}, {8, 2}, {96, 24}, {2, 1}, {96, 3}}) {
    for (int nbits : {4, 8}) {
      PQCodebook cb = random_codebook(s.head_dim, s.M, nbits, 77);
      const int ksub = cb.ksub(), dsub = cb.dsub();
      // In every subspace, centroid c for odd c >= ksub / 2 is a copy of centroid c - ksub / 2 + 1
      // (a lower, even-offset index), and the last centroid a copy of centroid 0.
      std::vector<int> lower(static_cast<std::size_t>(ksub), -1);
      for (int c = ksub / 2 + 1; c < ksub; c += 2) lower[static_cast<std::size_t>(c)] = c - ksub / 2 + 1;
      lower[static_cast<std::size_t>(ksub - 1)] = 0;
      for (int m = 0; m < s.M; ++m) {
        for (int c = 0; c < ksub; ++c) {
          const int lo = lower[static_cast<std::size_t>(c)];
          if (lo < 0) continue;
          float* dst = cb.centroids.data() + (static_cast<std::size_t>(m) * ksub + c) * dsub;
          std::copy(centroid(cb, m, lo), centroid(cb, m, lo) + dsub, dst);
        }
      }
      const PQEncoder enc(cb);
      const std::int64_t n = 257;
      // Inputs: each subspace a copy of a duplicate (higher-index) centroid, or random.
      std::mt19937_64 rng(5);
      std::normal_distribution<float> normal;
      std::vector<float> x(static_cast<std::size_t>(n * s.head_dim));
      std::vector<int> want(static_cast<std::size_t>(n * s.M), -1);
      for (std::int64_t i = 0; i < n; ++i) {
        for (int m = 0; m < s.M; ++m) {
          float* xs = x.data() + i * s.head_dim + m * dsub;
          if (rng() % 2 == 0) {
            const int c = (rng() % 2 == 0) ? ksub - 1 : ksub / 2 + 1 + 2 * static_cast<int>(rng() % (ksub / 4));
            std::copy(centroid(cb, m, c), centroid(cb, m, c) + dsub, xs);
            want[static_cast<std::size_t>(i * s.M + m)] = lower[static_cast<std::size_t>(c)];
          } else {
            for (int j = 0; j < dsub; ++j) xs[j] = normal(rng);
          }
        }
      }
      std::vector<std::uint8_t> ref(static_cast<std::size_t>(n * s.M));
      pq_encode_ref(cb, x.data(), n, ref.data());
      for (SimdLevel level : supported_simd_levels()) {
        std::vector<std::uint8_t> got(ref.size());
        enc.encode(x.data(), n, got.data(), level);
        for (std::size_t p = 0; p < got.size(); ++p) {
          const auto where = [&] {
            return std::string(simd_level_name(level)) + " M " + std::to_string(s.M) + " nbits " +
                   std::to_string(nbits) + " point " + std::to_string(p);
          };
          if (want[p] >= 0) {
            ASSERT_EQ(int{ref[p]}, want[p]) << "reference, " << where();
            ASSERT_EQ(int{got[p]}, want[p]) << where();
          }
          ASSERT_LT(lower[got[p]], 0) << where() << ": code " << int{got[p]} << " duplicates the lower index "
                                      << lower[got[p]];
        }
      }
    }
  }
}

TEST(PQEncode, DecodeGivesCentroidsAndEncodeOfDecodeIsIdentity) {
  for (const Shape& s : std::vector<Shape>{{128, 64}, {128, 32}, {64, 8}, {96, 24}, {8, 1}}) {
    for (int nbits : {4, 8}) {
      const PQCodebook cb = random_codebook(s.head_dim, s.M, nbits, 11);
      const PQEncoder enc(cb);
      const std::int64_t n = 33;
      std::vector<float> x = make_data(cb, n, Data::kNormal, 3, nullptr);
      std::vector<std::uint8_t> codes(static_cast<std::size_t>(n * s.M));
      enc.encode(x.data(), n, codes.data(), detect_simd_level());
      test::GuardedBuffer dec(n * s.head_dim);
      pq_decode(cb, codes.data(), n, dec.data());
      ASSERT_TRUE(dec.guards_intact());
      for (std::int64_t i = 0; i < n; ++i) {
        for (int m = 0; m < s.M; ++m) {
          const float* c = centroid(cb, m, codes[static_cast<std::size_t>(i * s.M + m)]);
          for (int j = 0; j < cb.dsub(); ++j) ASSERT_EQ(dec.data()[i * s.head_dim + m * cb.dsub() + j], c[j]);
        }
      }
      // Random codes -> decode -> encode returns them (random normal centroids are distinct).
      std::mt19937 rng(9);
      std::vector<std::uint8_t> rc(codes.size());
      for (auto& c : rc) c = static_cast<std::uint8_t>(rng() % static_cast<unsigned>(cb.ksub()));
      pq_decode(cb, rc.data(), n, dec.data());
      for (SimdLevel level : supported_simd_levels()) {
        std::vector<std::uint8_t> back(rc.size());
        enc.encode(dec.data(), n, back.data(), level);
        EXPECT_EQ(back, rc) << simd_level_name(level) << " M " << s.M << " nbits " << nbits;
      }
      std::vector<std::uint8_t> back_ref(rc.size());
      pq_encode_ref(cb, dec.data(), n, back_ref.data());
      EXPECT_EQ(back_ref, rc);
    }
  }
}

// NaN coordinates make every distance NaN; no centroid is strictly nearer than +inf, so code 0.
TEST(PQEncode, NanInputGivesCodeZeroAtEveryLevel) {
  const PQCodebook cb = random_codebook(128, 64, 8, 21);
  const PQEncoder enc(cb);
  std::vector<float> x = make_data(cb, 2, Data::kNormal, 4, nullptr);
  x[5] = std::nanf("");  // subspace 2 of vector 0
  std::vector<std::uint8_t> ref(128);
  pq_encode_ref(cb, x.data(), 2, ref.data());
  EXPECT_EQ(ref[2], 0);
  for (SimdLevel level : supported_simd_levels()) {
    std::vector<std::uint8_t> got(128);
    enc.encode(x.data(), 2, got.data(), level);
    EXPECT_EQ(got, ref) << simd_level_name(level);
  }
}

TEST(PQPack4, LayoutAndRoundTripIncludingOddCounts) {
  std::mt19937 rng(2);
  for (std::int64_t n : {0, 1, 2, 3, 7, 8, 31, 64, 1001}) {
    std::vector<std::uint8_t> codes(static_cast<std::size_t>(n));
    for (auto& c : codes) c = static_cast<std::uint8_t>(rng() % 16);
    const std::int64_t bytes = (n + 1) / 2;
    GuardedBytes packed(bytes);
    pq_pack4(codes.data(), n, packed.data());
    ASSERT_TRUE(packed.guards_intact()) << "n " << n;
    for (std::int64_t i = 0; i < bytes; ++i) {
      const int lo = codes[static_cast<std::size_t>(2 * i)];
      const int hi = 2 * i + 1 < n ? codes[static_cast<std::size_t>(2 * i + 1)] : 0;
      ASSERT_EQ(int{packed.data()[i]}, lo | (hi << 4)) << "n " << n << " byte " << i;
    }
    GuardedBytes back(n);
    pq_unpack4(packed.data(), n, back.data());
    ASSERT_TRUE(back.guards_intact()) << "n " << n;
    EXPECT_EQ(back.vec(), codes) << "n " << n;
  }
  const std::uint8_t known[3] = {0x1, 0xF, 0x7};
  std::uint8_t p[2] = {0, 0};
  pq_pack4(known, 3, p);
  EXPECT_EQ(p[0], 0xF1);
  EXPECT_EQ(p[1], 0x07);
  const std::uint8_t too_big[2] = {3, 16};
  EXPECT_THROW(pq_pack4(too_big, 2, p), InvalidArgumentError);
}

TEST(PQEncode, LevelsAndArguments) {
  const PQCodebook cb = random_codebook(64, 32, 8, 5);
  const PQEncoder enc(cb);
  std::vector<float> x = make_data(cb, 1, Data::kNormal, 6, nullptr);
  std::vector<std::uint8_t> codes(32);
  int checked_unsupported = 0;
  for (SimdLevel level : {SimdLevel::kScalar, SimdLevel::kAvx2, SimdLevel::kAvx512}) {
    if (simd_level_supported(level)) {
      EXPECT_NO_THROW(enc.encode(x.data(), 1, codes.data(), level)) << simd_level_name(level);
    } else {
      EXPECT_THROW(enc.encode(x.data(), 1, codes.data(), level), InvalidArgumentError) << simd_level_name(level);
      ++checked_unsupported;
    }
  }
  if (checked_unsupported == 0) std::cout << "[ info ] every level is supported here; unsupported-level check skipped\n";
  // A value outside the enum is never supported.
  EXPECT_THROW(enc.encode(x.data(), 1, codes.data(), static_cast<SimdLevel>(7)), InvalidArgumentError);
  EXPECT_THROW(enc.encode(x.data(), -1, codes.data(), SimdLevel::kScalar), InvalidArgumentError);
  EXPECT_NO_THROW(enc.encode(nullptr, 0, nullptr, SimdLevel::kScalar));
  PQCodebook bad = cb;
  bad.centroids.pop_back();
  EXPECT_THROW(PQEncoder{bad}, InvalidArgumentError);
  EXPECT_THROW(pq_encode_ref(bad, x.data(), 1, codes.data()), InvalidArgumentError);
  bad = cb;
  bad.nbits = 9;
  EXPECT_THROW(PQEncoder{bad}, InvalidArgumentError);
  const std::uint8_t out_of_range[32] = {17};
  PQCodebook small = random_codebook(64, 32, 4, 5);
  std::vector<float> dec(64);
  EXPECT_THROW(pq_decode(small, out_of_range, 1, dec.data()), InvalidArgumentError);
}

}  // namespace
}  // namespace million
