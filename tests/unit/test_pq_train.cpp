// PQ training: k-means (FAISS, with our encoder as the assignment step) recovers well-separated
// synthetic clusters exactly; reconstruction error falls as bits rise; Hadamard and OPQ
// rotations are orthogonal (R R^T = I within 1e-5) and stored in the codebook; training is
// reproducible for a seed; too few vectors is a clear error. Relative errors are measured on
// vectors not used for training.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <set>

#include "million/error.h"
#include "pq/calibrate.h"
#include "pq/encode.h"
#include "pq/rotation.h"
#include "pq/train.h"

namespace million {
namespace {

std::vector<float> gaussian(std::int64_t n, int d, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist;
  std::vector<float> v(static_cast<std::size_t>(n) * d);
  for (auto& x : v) x = dist(rng);
  return v;
}

TEST(PqTrain, RecoversWellSeparatedClusters) {
  // 16 cluster centres per subspace, far apart (spacing 100, noise 0.1): 4-bit k-means must put
  // exactly one centroid on each centre, so every point encodes to its own centre.
  const int d = 8, M = 4, dsub = 2, ksub = 16;
  std::mt19937 rng(5);
  std::vector<float> centres(static_cast<std::size_t>(M) * ksub * dsub);
  for (int m = 0; m < M; ++m) {
    for (int c = 0; c < ksub; ++c) {
      centres[static_cast<std::size_t>((m * ksub + c) * dsub)] = 100.0f * static_cast<float>(c % 4) + 7.0f * m;
      centres[static_cast<std::size_t>((m * ksub + c) * dsub + 1)] = 100.0f * static_cast<float>(c / 4) - 3.0f * m;
    }
  }
  const std::int64_t n = 4000;
  std::vector<float> x(static_cast<std::size_t>(n) * d);
  std::vector<int> truth(static_cast<std::size_t>(n) * M);
  std::normal_distribution<float> noise(0.0f, 0.1f);
  std::uniform_int_distribution<int> pick(0, ksub - 1);
  for (std::int64_t i = 0; i < n; ++i) {
    for (int m = 0; m < M; ++m) {
      const int c = pick(rng);
      truth[static_cast<std::size_t>(i * M + m)] = c;
      for (int j = 0; j < dsub; ++j) {
        x[static_cast<std::size_t>(i * d + m * dsub + j)] = centres[static_cast<std::size_t>((m * ksub + c) * dsub + j)] + noise(rng);
      }
    }
  }
  const PQCodebook cb = train_pq_codebook(x.data(), n, d, {M, 4}, RotationKind::kNone, 1, {});
  EXPECT_EQ(cb.n_samples, static_cast<std::uint64_t>(n));
  for (int m = 0; m < M; ++m) {
    std::set<int> matched;
    for (int c = 0; c < ksub; ++c) {
      const float* cen = cb.centroids.data() + (m * ksub + c) * dsub;
      int best = -1;
      float best_d = 1e30f;
      for (int t = 0; t < ksub; ++t) {
        const float* tc = centres.data() + (m * ksub + t) * dsub;
        const float dd = std::hypot(cen[0] - tc[0], cen[1] - tc[1]);
        if (dd < best_d) best_d = dd, best = t;
      }
      EXPECT_LT(best_d, 0.05f) << "subspace " << m << " centroid " << c << " is not on a cluster centre";
      matched.insert(best);
    }
    EXPECT_EQ(matched.size(), static_cast<std::size_t>(ksub)) << "two centroids on one centre in subspace " << m;
  }
  EXPECT_LT(relative_error(cb, x.data(), n), 1e-3);
}

TEST(PqTrain, ErrorFallsAsBitsRise) {
  const int d = 16;
  const auto train = gaussian(6000, d, 1), held = gaussian(1000, d, 2);
  double prev = 1e9;
  for (int nbits : {4, 5, 6, 7, 8}) {
    const PQCodebook cb = train_pq_codebook(train.data(), 6000, d, {8, nbits}, RotationKind::kNone, 3, {});
    const double e = relative_error(cb, held.data(), 1000);
    EXPECT_LT(e, prev) << "nbits " << nbits;
    EXPECT_GT(e, 0.0);
    prev = e;
  }
  // Fewer subspaces (longer sub-vectors) at the same nbits costs accuracy too.
  const PQCodebook m2 = train_pq_codebook(train.data(), 6000, d, {2, 8}, RotationKind::kNone, 3, {});
  const PQCodebook m8 = train_pq_codebook(train.data(), 6000, d, {8, 8}, RotationKind::kNone, 3, {});
  EXPECT_GT(relative_error(m2, held.data(), 1000), relative_error(m8, held.data(), 1000));
}

void expect_orthogonal(const std::vector<float>& r, int d) {
  ASSERT_EQ(r.size(), static_cast<std::size_t>(d) * d);
  for (int i = 0; i < d; ++i) {
    for (int j = 0; j < d; ++j) {
      double dot = 0;
      for (int k = 0; k < d; ++k) dot += static_cast<double>(r[static_cast<std::size_t>(i * d + k)]) * r[static_cast<std::size_t>(j * d + k)];
      EXPECT_NEAR(dot, i == j ? 1.0 : 0.0, 1e-5) << i << "," << j;
    }
  }
}

TEST(PqTrain, RotationsAreOrthogonalAndInvertible) {
  const int d = 32;
  expect_orthogonal(hadamard_rotation(d, 9), d);
  EXPECT_NE(hadamard_rotation(d, 9), hadamard_rotation(d, 10)) << "the seed must change the signs";
  EXPECT_THROW(hadamard_rotation(24, 1), InvalidArgumentError);
  const auto x = gaussian(5, d, 4);
  std::vector<float> y(x.size()), z(x.size());
  const auto r = hadamard_rotation(d, 1);
  rotate_vectors(r, d, x.data(), 5, y.data());
  unrotate_vectors(r, d, y.data(), 5, z.data());
  for (std::size_t i = 0; i < x.size(); ++i) EXPECT_NEAR(z[i], x[i], 1e-5);

  // A few outlier channels, as in real keys: OPQ learns an orthogonal rotation.
  auto train = gaussian(3000, d, 6);
  for (std::int64_t i = 0; i < 3000; ++i) train[static_cast<std::size_t>(i * d + 3)] *= 20.0f;
  const PQCodebook opq = train_pq_codebook(train.data(), 3000, d, {8, 4}, RotationKind::kOpq, 2, {});
  EXPECT_EQ(opq.rotation, RotationKind::kOpq);
  expect_orthogonal(opq.rotation_matrix, d);
  const PQCodebook had = train_pq_codebook(train.data(), 3000, d, {8, 4}, RotationKind::kHadamard, 2, {});
  EXPECT_EQ(had.rotation_matrix, hadamard_rotation(d, 2));
}

TEST(PqTrain, ReproducibleForASeed) {
  const auto x = gaussian(2000, 8, 8);
  const PQCodebook a = train_pq_codebook(x.data(), 2000, 8, {4, 5}, RotationKind::kNone, 11, {});
  const PQCodebook b = train_pq_codebook(x.data(), 2000, 8, {4, 5}, RotationKind::kNone, 11, {});
  const PQCodebook c = train_pq_codebook(x.data(), 2000, 8, {4, 5}, RotationKind::kNone, 12, {});
  EXPECT_EQ(a.centroids, b.centroids);
  EXPECT_NE(a.centroids, c.centroids);
}

TEST(PqTrain, TooFewVectorsOrBadConfigIsAnError) {
  const auto x = gaussian(100, 8, 1);
  EXPECT_THROW(train_pq_codebook(x.data(), 100, 8, {4, 8}, RotationKind::kNone, 1, {}), InvalidArgumentError);
  EXPECT_THROW(train_pq_codebook(x.data(), 100, 8, {3, 4}, RotationKind::kNone, 1, {}), InvalidArgumentError);
  EXPECT_THROW(parse_pq_config("pq:M=64,nbits=9"), InvalidArgumentError);
  EXPECT_THROW(parse_pq_config("kivi"), InvalidArgumentError);
  EXPECT_EQ(parse_pq_config("pq:M=32,nbits=4"), (PQConfig{32, 4}));
  EXPECT_EQ(parse_pq_config("pq"), PQConfig{});
}

}  // namespace
}  // namespace million
