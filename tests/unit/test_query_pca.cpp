// The qpca key transform (pq/query_pca.h) and the small linear algebra under it (pq/linalg.h):
// eigen-decompositions and inverses checked by reconstruction, the transform by its defining
// properties (scores preserved, whitened error metric, balanced subspaces) on synthetic moments.
#include "pq/query_pca.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "million/error.h"
#include "pq/linalg.h"

namespace million {
namespace {

std::vector<double> random_matrix(int d, std::mt19937& rng) {
  std::normal_distribution<double> n;
  std::vector<double> a(static_cast<std::size_t>(d * d));
  for (auto& x : a) x = n(rng);
  return a;
}

std::vector<double> matmul(const std::vector<double>& a, const std::vector<double>& b, int d) {
  std::vector<double> c(a.size(), 0.0);
  for (int i = 0; i < d; ++i)
    for (int k = 0; k < d; ++k)
      for (int j = 0; j < d; ++j) c[i * d + j] += a[i * d + k] * b[k * d + j];
  return c;
}

TEST(Linalg, SymmetricEigenReconstructsAndSorts) {
  std::mt19937 rng(1);
  for (int d : {1, 2, 7, 64}) {
    const std::vector<double> b = random_matrix(d, rng);
    std::vector<double> a(b.size());
    for (int i = 0; i < d; ++i)
      for (int j = 0; j < d; ++j) a[i * d + j] = b[i * d + j] + b[j * d + i];
    std::vector<double> w, V;
    symmetric_eigen(a, d, w, V);
    ASSERT_EQ(w.size(), static_cast<std::size_t>(d));
    EXPECT_TRUE(std::is_sorted(w.rbegin(), w.rend())) << "descending";
    double worst = 0.0, ortho = 0.0;
    for (int i = 0; i < d; ++i) {
      for (int j = 0; j < d; ++j) {
        double r = 0.0, o = 0.0;
        for (int k = 0; k < d; ++k) {
          r += V[i * d + k] * w[k] * V[j * d + k];
          o += V[k * d + i] * V[k * d + j];
        }
        worst = std::max(worst, std::abs(r - a[i * d + j]));
        ortho = std::max(ortho, std::abs(o - (i == j ? 1.0 : 0.0)));
      }
    }
    EXPECT_LT(worst, 1e-9 * d) << "A = V diag(w) V^T, d=" << d;
    EXPECT_LT(ortho, 1e-12 * d) << "V orthonormal, d=" << d;
  }
  std::vector<double> w, V;
  EXPECT_THROW(symmetric_eigen({1.0, 2.0, 0.0, 1.0}, 2, w, V), InvalidArgumentError);  // not symmetric
  EXPECT_THROW(symmetric_eigen({1.0, 2.0, 3.0}, 2, w, V), InvalidArgumentError);       // not square
}

TEST(Linalg, InverseTimesMatrixIsIdentity) {
  std::mt19937 rng(2);
  for (int d : {1, 3, 128}) {
    const std::vector<double> a = random_matrix(d, rng);
    const std::vector<double> p = matmul(a, invert_matrix(a, d), d);
    double worst = 0.0;
    for (int i = 0; i < d; ++i)
      for (int j = 0; j < d; ++j) worst = std::max(worst, std::abs(p[i * d + j] - (i == j ? 1.0 : 0.0)));
    EXPECT_LT(worst, 1e-9) << "d=" << d;
  }
  EXPECT_THROW(invert_matrix({1.0, 2.0, 2.0, 4.0}, 2), InvalidArgumentError);  // singular
  EXPECT_THROW(invert_matrix({0.0, 0.0, 0.0, 0.0}, 2), InvalidArgumentError);
}

// Moments of correlated Gaussian keys and queries: k = A z + mu, q = B z'.
KeyQueryMoments synthetic_moments(int d, std::mt19937& rng, std::vector<float>* keys, std::vector<float>* queries,
                                  int n = 4000) {
  std::normal_distribution<float> nz;
  std::vector<float> A(static_cast<std::size_t>(d * d)), B(A.size()), mu(static_cast<std::size_t>(d));
  for (int i = 0; i < d; ++i) {
    mu[i] = nz(rng) * 3.0f;
    for (int j = 0; j < d; ++j) {
      A[i * d + j] = nz(rng) * (j < d / 4 ? 2.0f : 0.3f);  // a few strong key directions
      B[i * d + j] = nz(rng) * (i % 3 == 0 ? 1.5f : 0.2f);  // queries weight some channels
    }
  }
  KeyQueryMoments m(d);
  std::vector<float> z(static_cast<std::size_t>(d)), x(z.size());
  for (int t = 0; t < n; ++t) {
    for (int pass = 0; pass < 2; ++pass) {
      for (auto& v : z) v = nz(rng);
      for (int i = 0; i < d; ++i) {
        float acc = pass == 0 ? mu[i] : 0.0f;
        for (int j = 0; j < d; ++j) acc += (pass == 0 ? A : B)[i * d + j] * z[j];
        x[i] = acc;
      }
      if (pass == 0) {
        m.add_key(x.data());
        if (keys) keys->insert(keys->end(), x.begin(), x.end());
      } else {
        m.add_query(x.data());
        if (queries) queries->insert(queries->end(), x.begin(), x.end());
      }
    }
  }
  return m;
}

TEST(QueryPca, TransformPreservesScoresAndInverts) {
  std::mt19937 rng(3);
  const int d = 32, M = 8;
  std::vector<float> keys, queries;
  const KeyQueryMoments m = synthetic_moments(d, rng, &keys, &queries, 500);
  const QueryPcaTransform t = query_pca_transform(m, M);
  ASSERT_EQ(t.forward.size(), static_cast<std::size_t>(d * d));
  double worst_id = 0.0;
  for (int i = 0; i < d; ++i) {
    for (int j = 0; j < d; ++j) {
      double acc = 0.0;
      for (int k = 0; k < d; ++k) acc += static_cast<double>(t.forward[i * d + k]) * t.inverse[k * d + j];
      worst_id = std::max(worst_id, std::abs(acc - (i == j ? 1.0 : 0.0)));
    }
  }
  EXPECT_LT(worst_id, 1e-4);
  // (T^-T q) . (T k) = q . k
  double worst = 0.0, scale = 0.0;
  for (int s = 0; s < 20; ++s) {
    const float* q = queries.data() + s * d;
    const float* k = keys.data() + (s + 7) * d;
    double direct = 0.0, viaT = 0.0;
    for (int i = 0; i < d; ++i) direct += static_cast<double>(q[i]) * k[i];
    for (int r = 0; r < d; ++r) {
      double tk = 0.0, tq = 0.0;
      for (int j = 0; j < d; ++j) {
        tk += static_cast<double>(t.forward[r * d + j]) * k[j];
        tq += static_cast<double>(t.inverse[j * d + r]) * q[j];
      }
      viaT += tk * tq;
    }
    worst = std::max(worst, std::abs(direct - viaT));
    scale = std::max(scale, std::abs(direct));
  }
  EXPECT_LT(worst, 1e-4 * scale);
}

TEST(QueryPca, ErrorMetricIsTheExpectedScoreErrorAndSubspacesAreBalanced) {
  std::mt19937 rng(4);
  const int d = 16, M = 4;
  std::vector<float> queries;
  const KeyQueryMoments m = synthetic_moments(d, rng, nullptr, &queries, 6000);
  const QueryPcaTransform t = query_pca_transform(m, M, 0.0);
  // A key error e' in T-space costs E[(q . T^-1 e')^2] = |e'|^2: check on unit vectors e' = e_r
  // against the calibration queries' own second moments.
  for (int r : {0, 5, 15}) {
    double mean_sq = 0.0;
    const int nq = static_cast<int>(queries.size()) / d;
    for (int s = 0; s < nq; ++s) {
      double dot = 0.0;
      for (int j = 0; j < d; ++j) dot += static_cast<double>(queries[s * d + j]) * t.inverse[j * d + r];
      mean_sq += dot * dot;
    }
    EXPECT_NEAR(mean_sq / nq, 1.0, 1e-3) << "transformed channel " << r;
  }
  // Eigenvalues are dealt so each subspace's log-product is close to the others' (the largest
  // four land in four different subspaces).
  const int dsub = d / M;
  std::vector<double> logp(M, 0.0);
  std::vector<int> top_in(M, 0);
  std::vector<double> sorted = t.eigenvalues;
  std::sort(sorted.rbegin(), sorted.rend());
  for (int r = 0; r < d; ++r) {
    logp[r / dsub] += std::log(t.eigenvalues[r]);
    for (int k = 0; k < M; ++k) {
      if (t.eigenvalues[r] == sorted[k]) ++top_in[r / dsub];
    }
  }
  for (int b = 0; b < M; ++b) EXPECT_EQ(top_in[b], 1) << "subspace " << b;
  const auto [lo, hi] = std::minmax_element(logp.begin(), logp.end());
  const double spread_sorted = std::log(sorted[0] / sorted[d - 1]);
  EXPECT_LT(*hi - *lo, spread_sorted) << "balanced better than the plain order's extremes";
  EXPECT_THROW(query_pca_transform(m, 3), InvalidArgumentError);  // M does not divide d
  EXPECT_THROW(query_pca_transform(KeyQueryMoments(d), M), InvalidArgumentError);  // no samples
}

}  // namespace
}  // namespace million
