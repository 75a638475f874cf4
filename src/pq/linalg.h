// Small dense linear algebra in double precision for calibration-time transforms (d <= 512):
// the eigen-decomposition of a symmetric matrix (cyclic Jacobi) and the inverse of a square
// matrix (Gauss-Jordan with partial pivoting). Matrices are row-major [d, d].
// Not here: anything on the decode path (the transforms these build are applied in float by
// pq/rotation.h), general or large problems (use LAPACK for those).
#pragma once

#include <vector>

namespace million {

/// Eigen-decomposition A = V diag(w) V^T of a symmetric [d, d] matrix: eigenvalues w [d] in
/// descending order, V [d, d] with eigenvector i in column i. Throws InvalidArgumentError if A
/// is not square, not symmetric (relative 1e-9) or not finite.
void symmetric_eigen(const std::vector<double>& A, int d, std::vector<double>& w, std::vector<double>& V);

/// Inverse of a square [d, d] matrix. Throws InvalidArgumentError if it is singular or so badly
/// conditioned that a pivot falls under 1e-12 of the largest entry.
std::vector<double> invert_matrix(const std::vector<double>& A, int d);

}  // namespace million
