// The qpca key transform (see query_pca.h).
#include "pq/query_pca.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "million/error.h"
#include "pq/linalg.h"

namespace million {

KeyQueryMoments::KeyQueryMoments(int dim)
    : d(dim),
      qq(static_cast<std::size_t>(dim) * static_cast<std::size_t>(dim), 0.0),
      kk(qq.size(), 0.0),
      k(static_cast<std::size_t>(dim), 0.0) {}

namespace {
void add_outer(std::vector<double>& acc, const float* x, int d) {
  for (int i = 0; i < d; ++i) {
    const double xi = x[i];
    double* row = acc.data() + static_cast<std::size_t>(i) * static_cast<std::size_t>(d);
    for (int j = 0; j < d; ++j) row[j] += xi * x[j];
  }
}
}  // namespace

void KeyQueryMoments::add_query(const float* q) {
  add_outer(qq, q, d);
  ++n_q;
}

void KeyQueryMoments::add_key(const float* x) {
  add_outer(kk, x, d);
  for (int i = 0; i < d; ++i) k[static_cast<std::size_t>(i)] += x[i];
  ++n_k;
}

void KeyQueryMoments::merge(const KeyQueryMoments& o) {
  if (o.d != d) throw InvalidArgumentError("KeyQueryMoments::merge: dimensions differ");
  for (std::size_t i = 0; i < qq.size(); ++i) {
    qq[i] += o.qq[i];
    kk[i] += o.kk[i];
  }
  for (std::size_t i = 0; i < k.size(); ++i) k[i] += o.k[i];
  n_q += o.n_q;
  n_k += o.n_k;
}

QueryPcaTransform query_pca_transform(const KeyQueryMoments& m, int M, double regularise) {
  const int d = m.d;
  if (d <= 0 || M <= 0 || d % M != 0) {
    throw InvalidArgumentError(fmt::format("qpca transform: M = {} must divide head_dim {}", M, d));
  }
  if (m.n_q < 2 || m.n_k < 2) {
    throw InvalidArgumentError(fmt::format("qpca transform: {} queries and {} keys are too few", m.n_q, m.n_k));
  }
  const auto dd = static_cast<std::size_t>(d);
  auto idx = [dd](int i, int j) { return static_cast<std::size_t>(i) * dd + static_cast<std::size_t>(j); };
  // S = E[q q^T] + eps * mean eigenvalue * I, and its symmetric square root and inverse root.
  std::vector<double> S(dd * dd);
  double trace = 0.0;
  for (std::size_t i = 0; i < S.size(); ++i) S[i] = m.qq[i] / static_cast<double>(m.n_q);
  for (int i = 0; i < d; ++i) trace += S[idx(i, i)];
  for (int i = 0; i < d; ++i) S[idx(i, i)] += regularise * std::max(trace, 1e-30) / d;
  for (int i = 0; i < d; ++i) {  // exact symmetry for the eigen-solver (sums are symmetric up to rounding)
    for (int j = i + 1; j < d; ++j) S[idx(i, j)] = S[idx(j, i)] = 0.5 * (S[idx(i, j)] + S[idx(j, i)]);
  }
  std::vector<double> e, V;
  symmetric_eigen(S, d, e, V);
  std::vector<double> root(dd * dd, 0.0), inv_root(dd * dd, 0.0);
  for (int i = 0; i < d; ++i) {
    for (int j = 0; j < d; ++j) {
      double r = 0.0, ir = 0.0;
      for (int k = 0; k < d; ++k) {
        const double ek = std::max(e[static_cast<std::size_t>(k)], 1e-300);
        r += V[idx(i, k)] * std::sqrt(ek) * V[idx(j, k)];
        ir += V[idx(i, k)] / std::sqrt(ek) * V[idx(j, k)];
      }
      root[idx(i, j)] = r;
      inv_root[idx(i, j)] = ir;
    }
  }
  // C = S^1/2 Cov(k) S^1/2 and its principal axes.
  std::vector<double> cov(dd * dd), tmp(dd * dd, 0.0), C(dd * dd, 0.0);
  const double nk = static_cast<double>(m.n_k);
  for (int i = 0; i < d; ++i) {
    for (int j = 0; j < d; ++j) {
      cov[idx(i, j)] = m.kk[idx(i, j)] / nk - (m.k[static_cast<std::size_t>(i)] / nk) * (m.k[static_cast<std::size_t>(j)] / nk);
    }
  }
  for (int i = 0; i < d; ++i) {
    for (int k = 0; k < d; ++k) {
      const double a = root[idx(i, k)];
      for (int j = 0; j < d; ++j) tmp[idx(i, j)] += a * cov[idx(k, j)];
    }
  }
  for (int i = 0; i < d; ++i) {
    for (int k = 0; k < d; ++k) {
      const double a = tmp[idx(i, k)];
      for (int j = 0; j < d; ++j) C[idx(i, j)] += a * root[idx(k, j)];
    }
  }
  for (int i = 0; i < d; ++i) {
    for (int j = i + 1; j < d; ++j) C[idx(i, j)] = C[idx(j, i)] = 0.5 * (C[idx(i, j)] + C[idx(j, i)]);
  }
  std::vector<double> lam, U;
  symmetric_eigen(C, d, lam, U);
  // Deal the eigen-directions (largest first) to the subspace with the smallest log-product of
  // lambdas so far that still has room.
  const int dsub = d / M;
  std::vector<std::vector<int>> bucket(static_cast<std::size_t>(M));
  std::vector<double> logp(static_cast<std::size_t>(M), 0.0);
  for (int i = 0; i < d; ++i) {
    int best = -1;
    for (int b = 0; b < M; ++b) {
      if (static_cast<int>(bucket[static_cast<std::size_t>(b)].size()) == dsub) continue;
      if (best < 0 || logp[static_cast<std::size_t>(b)] < logp[static_cast<std::size_t>(best)]) best = b;
    }
    bucket[static_cast<std::size_t>(best)].push_back(i);
    logp[static_cast<std::size_t>(best)] += std::log(std::max(lam[static_cast<std::size_t>(i)], 1e-30));
  }
  QueryPcaTransform out;
  out.forward.resize(dd * dd);
  out.inverse.resize(dd * dd);
  out.eigenvalues.resize(dd);
  int row = 0;
  for (const auto& b : bucket) {
    for (int src : b) {
      out.eigenvalues[static_cast<std::size_t>(row)] = lam[static_cast<std::size_t>(src)];
      // row of T: u_src^T S^1/2; column of T^-1: S^-1/2 u_src
      for (int j = 0; j < d; ++j) {
        double f = 0.0, g = 0.0;
        for (int k = 0; k < d; ++k) {
          f += U[idx(k, src)] * root[idx(k, j)];
          g += inv_root[idx(j, k)] * U[idx(k, src)];
        }
        out.forward[idx(row, j)] = static_cast<float>(f);
        out.inverse[idx(j, row)] = static_cast<float>(g);
      }
      ++row;
    }
  }
  return out;
}

}  // namespace million
