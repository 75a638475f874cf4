// Hadamard rotation construction and dense rotation application (d x d per vector: 16K
// multiply-adds at d = 128, small next to the forward pass that produced the vector).
#include "pq/rotation.h"

#include <fmt/format.h>

#include <cmath>
#include <random>

#include "million/error.h"

namespace million {

std::vector<float> hadamard_rotation(int d, std::uint64_t seed) {
  if (d <= 0 || (d & (d - 1)) != 0) {
    throw InvalidArgumentError(fmt::format("the Hadamard rotation needs a power-of-two head_dim, not {}", d));
  }
  std::mt19937_64 rng(seed);
  std::vector<float> signs(static_cast<std::size_t>(d));
  for (auto& s : signs) s = (rng() & 1) ? 1.0f : -1.0f;
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
  std::vector<float> r(static_cast<std::size_t>(d) * d);
  for (int i = 0; i < d; ++i) {
    for (int j = 0; j < d; ++j) {
      // Sylvester Hadamard entry: (-1)^popcount(i & j).
      const float h = (__builtin_popcount(static_cast<unsigned>(i & j)) & 1) ? -1.0f : 1.0f;
      r[static_cast<std::size_t>(i) * d + j] = h * signs[static_cast<std::size_t>(j)] * scale;
    }
  }
  return r;
}

void rotate_vectors(const std::vector<float>& R, int d, const float* x, std::int64_t n, float* y) {
#pragma omp parallel for schedule(static) if (n >= 64)
  for (std::int64_t t = 0; t < n; ++t) {
    const float* xv = x + t * d;
    float* yv = y + t * d;
    for (int i = 0; i < d; ++i) {
      const float* row = R.data() + static_cast<std::size_t>(i) * d;
      float acc = 0.0f;
      for (int j = 0; j < d; ++j) acc += row[j] * xv[j];
      yv[i] = acc;
    }
  }
}

void unrotate_vectors(const std::vector<float>& R, int d, const float* x, std::int64_t n, float* y) {
#pragma omp parallel for schedule(static) if (n >= 64)
  for (std::int64_t t = 0; t < n; ++t) {
    const float* xv = x + t * d;
    float* yv = y + t * d;
    for (int j = 0; j < d; ++j) yv[j] = 0.0f;
    for (int i = 0; i < d; ++i) {
      const float* row = R.data() + static_cast<std::size_t>(i) * d;
      const float xi = xv[i];
      for (int j = 0; j < d; ++j) yv[j] += row[j] * xi;
    }
  }
}

}  // namespace million
