// Orthogonal rotations applied to K/V vectors before product quantization (DESIGN.md §2):
// the randomized Walsh-Hadamard transform and applying a stored rotation matrix.
// OPQ rotations are learned by FAISS in pq/train.cpp and stored in the same matrix form.
#pragma once

#include <cstdint>
#include <vector>

namespace million {

/// R = H diag(s) / sqrt(d) as a [d, d] row-major matrix, H the Sylvester Hadamard matrix and
/// s_i = +-1 drawn from `seed`. Orthogonal. d must be a power of two (InvalidArgumentError).
std::vector<float> hadamard_rotation(int d, std::uint64_t seed);

/// y = R x for n vectors (x, y: [n, d]; must not overlap).
void rotate_vectors(const std::vector<float>& R, int d, const float* x, std::int64_t n, float* y);

/// y = R^T x for n vectors (undoes rotate_vectors; x, y must not overlap).
void unrotate_vectors(const std::vector<float>& R, int d, const float* x, std::int64_t n, float* y);

}  // namespace million
