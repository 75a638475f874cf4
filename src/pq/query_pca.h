// The "qpca" key transform: a learned, invertible per-(layer, kv head) matrix T applied to keys
// before channel-group normalisation and PQ, chosen so that squared error in T-space is the
// expected squared error of attention scores, and spread so each PQ subspace gets an equal
// share of that error's variance (docs/pq-research.md, "Query-aware key transform"):
//   S = E[q q^T] over the queries that read the keys (regularised), S^{1/2} its square root;
//   C = S^{1/2} Cov(k) S^{1/2}, eigenvectors U (descending eigenvalues lambda);
//   T = P U^T S^{1/2}, P a permutation that deals the eigen-directions to the M subspaces so
//   the products of their lambdas are balanced (OPQ's eigenvalue allocation, Ge et al. 2013).
// Scores are unchanged: q . k = (T^-T q) . (T k). Queries are transformed by T^-T, decoded keys
// by T^-1. Not here: capturing the moments (pq/capture.h), applying the matrices (rotation.h).
#pragma once

#include <cstdint>
#include <vector>

namespace million {

/// Sums over calibration tokens for one (layer, kv head): what the transform is built from.
struct KeyQueryMoments {
  int d = 0;
  std::int64_t n_q = 0, n_k = 0;
  std::vector<double> qq;  ///< [d, d] sum of q q^T over every query head that reads these keys
  std::vector<double> kk;  ///< [d, d] sum of k k^T (post-RoPE keys)
  std::vector<double> k;   ///< [d] sum of k

  explicit KeyQueryMoments(int dim = 0);
  void add_query(const float* q);
  void add_key(const float* k);
  void merge(const KeyQueryMoments& o);  ///< sums of another set (coarser codebook groups)
};

struct QueryPcaTransform {
  std::vector<float> forward;       ///< T [d, d] row-major: transformed = T k
  std::vector<float> inverse;       ///< T^-1 [d, d]: k = T^-1 transformed; queries: T^-T q
  std::vector<double> eigenvalues;  ///< lambda of each transformed channel (in T's row order)
};

/// Builds T for keys split into M subspaces. `regularise`: S gets this fraction of its mean
/// eigenvalue added on the diagonal, so directions no calibration query used keep some weight.
/// Throws InvalidArgumentError with fewer than 2 queries or keys, or M not dividing d.
QueryPcaTransform query_pca_transform(const KeyQueryMoments& m, int M, double regularise = 1e-3);

}  // namespace million
