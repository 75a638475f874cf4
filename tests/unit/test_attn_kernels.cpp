// Decode-attention building blocks at every SIMD level against their scalar tables:
//  - attention tile kernels (attn_tile_kernels.h): max (exact), exp_sum (each value within
//    2e-7 relative of std::exp, 0 below -87.3 and for -inf), dot_rows / axpy_rows over f32 and
//    f16 rows with row strides wider than head_dim, every head count 1..8 and head dims that
//    are and are not multiples of the vector width; outputs within 1e-5 relative of the scalar
//    ones (float sums in a different order) and guard regions intact.
//  - PQ kernels (pq_attn_kernels.h), every variant a level offers (AVX-512: byte planes and
//    gathers): scores and accumulate for M 16/32/64/128 x nbits 4/8 at head_dim 64 and 128,
//    1..3 blocks, G 1..8, against the scalar table within 1e-5 relative (same f16-rounded
//    centroids, float sums in a different order).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>

#include "backends/cpu/attn_tile_kernels.h"
#include "backends/cpu/pq_attn_kernels.h"
#include "common/compare.h"
#include "core/half.h"
#include "million/error.h"
#include "model/kv/pq_store.h"

namespace million {
namespace {

std::vector<float> randn(std::size_t n, std::mt19937& rng, float scale = 1.0f) {
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

std::vector<SimdLevel> fast_levels() {
  std::vector<SimdLevel> out;
  for (SimdLevel l : supported_simd_levels()) {
    if (l != SimdLevel::kScalar) out.push_back(l);
  }
  return out;
}

void expect_close(const float* got, const float* want, std::int64_t n, double rel, const std::string& what) {
  double scale = 0.0;
  for (std::int64_t i = 0; i < n; ++i) scale = std::max(scale, static_cast<double>(std::fabs(want[i])));
  const auto r = test::compare(got, want, n);
  EXPECT_EQ(r.nonfinite_mismatch, 0) << what;
  EXPECT_LE(r.max_abs, rel * std::max(scale, 1.0)) << what;
}

TEST(AttnTileKernels, MaxAndExpMatchScalar) {
  std::mt19937 rng(1);
  for (SimdLevel level : fast_levels()) {
    const AttnTileKernels& k = attn_tile_kernels(level);
    for (std::int64_t n : {0, 1, 7, 8, 15, 16, 17, 100, 1000}) {
      auto x = randn(static_cast<std::size_t>(n), rng, 20.0f);
      if (n > 3) {
        x[1] = -std::numeric_limits<float>::infinity();
        x[2] = -200.0f;
      }
      const std::string what = std::string(simd_level_name(level)) + " n=" + std::to_string(n);
      EXPECT_EQ(k.max(x.data(), n), detail::kAttnTileScalar.max(x.data(), n)) << what;
      const float shift = n > 0 ? detail::kAttnTileScalar.max(x.data(), n) : 0.0f;
      test::GuardedBuffer got(n);
      std::copy(x.begin(), x.end(), got.data());
      std::vector<float> want = x;
      const float s_got = k.exp_sum(got.data(), n, shift);
      const float s_want = detail::kAttnTileScalar.exp_sum(want.data(), n, shift);
      EXPECT_TRUE(got.guards_intact()) << what;
      for (std::int64_t i = 0; i < n; ++i) {
        const double arg = static_cast<double>(x[static_cast<std::size_t>(i)]) - shift;
        if (arg < -87.4) {
          EXPECT_EQ(got.data()[i], 0.0f) << what << " i=" << i;
        } else {
          EXPECT_NEAR(got.data()[i], want[static_cast<std::size_t>(i)], 2e-7 * want[static_cast<std::size_t>(i)] + 1e-37)
              << what << " i=" << i << " x=" << x[static_cast<std::size_t>(i)];
        }
      }
      EXPECT_NEAR(s_got, s_want, 1e-6 * std::max(1.0f, s_want)) << what;
    }
  }
}

TEST(AttnTileKernels, DotAndAxpyRowsMatchScalar) {
  std::mt19937 rng(2);
  for (SimdLevel level : fast_levels()) {
    const AttnTileKernels& k = attn_tile_kernels(level);
    for (int d : {8, 16, 24, 64, 96, 128}) {
      for (int G : {1, 2, 3, 4, 5, 8}) {
        for (int nt : {1, 7, 16, 17, 63, 256}) {
          const std::int64_t ldr = d + 8;  // strided rows, as the quantized caches' window
          const std::string what = std::string(simd_level_name(level)) + " d=" + std::to_string(d) + " G=" +
                                   std::to_string(G) + " nt=" + std::to_string(nt);
          const auto q = randn(static_cast<std::size_t>(G) * d, rng);
          const auto rows = randn(static_cast<std::size_t>(nt * ldr), rng);
          std::vector<std::uint16_t> rows16(rows.size());
          for (std::size_t i = 0; i < rows.size(); ++i) rows16[i] = f32_to_f16(rows[i]);
          const std::int64_t lds = nt + 3;
          for (bool f16 : {false, true}) {
            test::GuardedBuffer s(G * lds, 0.0f);
            std::vector<float> s_ref(static_cast<std::size_t>(G * lds), 0.0f);
            if (f16) {
              k.dot_rows_f16(q.data(), G, d, rows16.data(), ldr, nt, s.data(), lds);
              detail::kAttnTileScalar.dot_rows_f16(q.data(), G, d, rows16.data(), ldr, nt, s_ref.data(), lds);
            } else {
              k.dot_rows_f32(q.data(), G, d, rows.data(), ldr, nt, s.data(), lds);
              detail::kAttnTileScalar.dot_rows_f32(q.data(), G, d, rows.data(), ldr, nt, s_ref.data(), lds);
            }
            EXPECT_TRUE(s.guards_intact()) << what;
            expect_close(s.data(), s_ref.data(), G * lds, 1e-5, what + (f16 ? " dot f16" : " dot f32"));

            const auto p = randn(static_cast<std::size_t>(G * lds), rng);
            const auto acc0 = randn(static_cast<std::size_t>(G) * d, rng);
            test::GuardedBuffer acc(G * d);
            std::copy(acc0.begin(), acc0.end(), acc.data());
            std::vector<float> acc_ref = acc0;
            if (f16) {
              k.axpy_rows_f16(p.data(), lds, G, d, rows16.data(), ldr, nt, acc.data());
              detail::kAttnTileScalar.axpy_rows_f16(p.data(), lds, G, d, rows16.data(), ldr, nt, acc_ref.data());
            } else {
              k.axpy_rows_f32(p.data(), lds, G, d, rows.data(), ldr, nt, acc.data());
              detail::kAttnTileScalar.axpy_rows_f32(p.data(), lds, G, d, rows.data(), ldr, nt, acc_ref.data());
            }
            EXPECT_TRUE(acc.guards_intact()) << what;
            expect_close(acc.data(), acc_ref.data(), G * d, 1e-5, what + (f16 ? " axpy f16" : " axpy f32"));
          }
        }
      }
    }
  }
}

TEST(PqAttnKernels, EveryVariantMatchesScalar) {
  std::mt19937 rng(3);
  int variants_run = 0;
  for (int head_dim : {64, 128}) {
    for (int M : {16, 32, 64, 128}) {
      if (M > head_dim) continue;
      for (int nbits : {4, 8}) {
        PQCodebook cb;
        cb.head_dim = head_dim;
        cb.M = M;
        cb.nbits = nbits;
        cb.centroids = randn(static_cast<std::size_t>(M) * cb.ksub() * cb.dsub(), rng, 3.0f);
        round_centroids_to_f16(cb);
        const auto planes = pq_byte_planes(cb);
        const PQKernelCodebook kc{M, cb.ksub(), cb.dsub(), cb.centroids.data(), planes.data()};
        for (std::int64_t blocks : {1, 3}) {
          std::vector<std::uint8_t> codes(static_cast<std::size_t>(blocks * M * kPQBlockTokens));
          for (auto& c : codes) c = static_cast<std::uint8_t>(rng() % static_cast<unsigned>(cb.ksub()));
          const std::int64_t T = blocks * kPQBlockTokens;
          for (int G : {1, 2, 3, 4, 5, 8}) {
            const auto q = randn(static_cast<std::size_t>(G) * head_dim, rng);
            const std::int64_t lds = T + 5;
            std::vector<float> s_ref(static_cast<std::size_t>(G * lds), 0.0f);
            detail::kPQAttnScalar.scores(kc, codes.data(), 0, blocks, q.data(), G, s_ref.data(), lds);
            std::vector<float> p(static_cast<std::size_t>(G * lds));
            for (auto& x : p) x = std::uniform_real_distribution<float>(0.0f, 1.0f)(rng);
            std::vector<float> acc_ref(static_cast<std::size_t>(G) * head_dim, 0.5f);
            detail::kPQAttnScalar.accumulate(kc, codes.data(), 0, blocks, p.data(), lds, G, acc_ref.data());
            for (SimdLevel level : fast_levels()) {
              for (const PQAttnKernels* k : pq_attn_kernel_variants(level)) {
                const std::string what = std::string(k->name) + " head_dim=" + std::to_string(head_dim) + " M=" +
                                         std::to_string(M) + " nbits=" + std::to_string(nbits) + " blocks=" +
                                         std::to_string(blocks) + " G=" + std::to_string(G);
                test::GuardedBuffer s(G * lds, 0.0f);
                k->scores(kc, codes.data(), 0, blocks, q.data(), G, s.data(), lds);
                EXPECT_TRUE(s.guards_intact()) << what;
                expect_close(s.data(), s_ref.data(), G * lds, 1e-5, what + " scores");
                test::GuardedBuffer acc(G * head_dim, 0.5f);
                k->accumulate(kc, codes.data(), 0, blocks, p.data(), lds, G, acc.data());
                EXPECT_TRUE(acc.guards_intact()) << what;
                expect_close(acc.data(), acc_ref.data(), G * head_dim, 1e-5, what + " accumulate");
                ++variants_run;
              }
            }
          }
        }
      }
    }
  }
  if (fast_levels().empty()) GTEST_SKIP() << "no SIMD level on this CPU";
  EXPECT_GT(variants_run, 0);
}

TEST(PqAttnKernels, CentroidsOutsideF16RangeAreRejected) {
  PQCodebook cb;
  cb.head_dim = 16;
  cb.M = 8;
  cb.nbits = 4;
  cb.centroids.assign(static_cast<std::size_t>(8) * 16 * 2, 1.0f);
  cb.centroids[5] = 1e6f;
  EXPECT_THROW(round_centroids_to_f16(cb), FormatError);
}

}  // namespace
}  // namespace million
