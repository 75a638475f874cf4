// Cyclic Jacobi eigen-decomposition and Gauss-Jordan inversion (see linalg.h).
#include "pq/linalg.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "million/error.h"

namespace million {

namespace {
double at(const std::vector<double>& a, int d, int i, int j) {
  return a[static_cast<std::size_t>(i) * static_cast<std::size_t>(d) + static_cast<std::size_t>(j)];
}
double& at(std::vector<double>& a, int d, int i, int j) {
  return a[static_cast<std::size_t>(i) * static_cast<std::size_t>(d) + static_cast<std::size_t>(j)];
}
void check_square(const std::vector<double>& A, int d, const char* what) {
  if (d <= 0 || A.size() != static_cast<std::size_t>(d) * static_cast<std::size_t>(d)) {
    throw InvalidArgumentError(fmt::format("{}: expected a {}x{} matrix, got {} values", what, d, d, A.size()));
  }
  for (double x : A) {
    if (!std::isfinite(x)) throw InvalidArgumentError(fmt::format("{}: the matrix has a non-finite entry", what));
  }
}
}  // namespace

void symmetric_eigen(const std::vector<double>& A, int d, std::vector<double>& w, std::vector<double>& V) {
  check_square(A, d, "symmetric_eigen");
  double scale = 0.0;
  for (double x : A) scale = std::max(scale, std::abs(x));
  for (int i = 0; i < d; ++i) {
    for (int j = i + 1; j < d; ++j) {
      if (std::abs(at(A, d, i, j) - at(A, d, j, i)) > 1e-9 * std::max(scale, 1e-300)) {
        throw InvalidArgumentError(fmt::format("symmetric_eigen: the matrix is not symmetric at ({}, {})", i, j));
      }
    }
  }
  std::vector<double> a = A;
  V.assign(a.size(), 0.0);
  for (int i = 0; i < d; ++i) at(V, d, i, i) = 1.0;
  // Sweeps of Jacobi rotations over every off-diagonal pair until the off-diagonal mass is
  // negligible (quadratic convergence: ~6-10 sweeps at d = 128).
  for (int sweep = 0; sweep < 100; ++sweep) {
    double off = 0.0, diag = 0.0;
    for (int i = 0; i < d; ++i) {
      diag += at(a, d, i, i) * at(a, d, i, i);
      for (int j = i + 1; j < d; ++j) off += at(a, d, i, j) * at(a, d, i, j);
    }
    if (off <= 1e-30 * std::max(diag, 1e-300)) break;
    for (int p = 0; p < d - 1; ++p) {
      for (int q = p + 1; q < d; ++q) {
        const double apq = at(a, d, p, q);
        if (std::abs(apq) < 1e-300) continue;
        const double theta = (at(a, d, q, q) - at(a, d, p, p)) / (2.0 * apq);
        const double t = (theta >= 0 ? 1.0 : -1.0) / (std::abs(theta) + std::sqrt(theta * theta + 1.0));
        const double c = 1.0 / std::sqrt(t * t + 1.0), s = t * c;
        for (int k = 0; k < d; ++k) {  // columns p, q of a
          const double akp = at(a, d, k, p), akq = at(a, d, k, q);
          at(a, d, k, p) = c * akp - s * akq;
          at(a, d, k, q) = s * akp + c * akq;
        }
        for (int k = 0; k < d; ++k) {  // rows p, q of a
          const double apk = at(a, d, p, k), aqk = at(a, d, q, k);
          at(a, d, p, k) = c * apk - s * aqk;
          at(a, d, q, k) = s * apk + c * aqk;
        }
        for (int k = 0; k < d; ++k) {  // columns p, q of V
          const double vkp = at(V, d, k, p), vkq = at(V, d, k, q);
          at(V, d, k, p) = c * vkp - s * vkq;
          at(V, d, k, q) = s * vkp + c * vkq;
        }
      }
    }
  }
  std::vector<int> order(static_cast<std::size_t>(d));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int x, int y) { return at(a, d, x, x) > at(a, d, y, y); });
  w.resize(static_cast<std::size_t>(d));
  std::vector<double> sorted(V.size());
  for (int j = 0; j < d; ++j) {
    const int src = order[static_cast<std::size_t>(j)];
    w[static_cast<std::size_t>(j)] = at(a, d, src, src);
    for (int i = 0; i < d; ++i) at(sorted, d, i, j) = at(V, d, i, src);
  }
  V = std::move(sorted);
}

std::vector<double> invert_matrix(const std::vector<double>& A, int d) {
  check_square(A, d, "invert_matrix");
  double scale = 0.0;
  for (double x : A) scale = std::max(scale, std::abs(x));
  if (scale == 0.0) throw InvalidArgumentError("invert_matrix: the matrix is zero");
  std::vector<double> a = A, inv(A.size(), 0.0);
  for (int i = 0; i < d; ++i) at(inv, d, i, i) = 1.0;
  for (int col = 0; col < d; ++col) {
    int piv = col;
    for (int r = col + 1; r < d; ++r) {
      if (std::abs(at(a, d, r, col)) > std::abs(at(a, d, piv, col))) piv = r;
    }
    const double p = at(a, d, piv, col);
    if (std::abs(p) < 1e-12 * scale) {
      throw InvalidArgumentError(fmt::format("invert_matrix: the matrix is singular (pivot {:.3g} in column {})", p, col));
    }
    if (piv != col) {
      for (int k = 0; k < d; ++k) {
        std::swap(at(a, d, piv, k), at(a, d, col, k));
        std::swap(at(inv, d, piv, k), at(inv, d, col, k));
      }
    }
    for (int k = 0; k < d; ++k) {
      at(a, d, col, k) /= p;
      at(inv, d, col, k) /= p;
    }
    for (int r = 0; r < d; ++r) {
      if (r == col) continue;
      const double f = at(a, d, r, col);
      if (f == 0.0) continue;
      for (int k = 0; k < d; ++k) {
        at(a, d, r, k) -= f * at(a, d, col, k);
        at(inv, d, r, k) -= f * at(inv, d, col, k);
      }
    }
  }
  return inv;
}

}  // namespace million
