// Training of PQ codebooks from sample vectors: optional rotation (Hadamard or FAISS OPQ),
// then k-means per subspace through FAISS's Clustering, whose assignment step runs on our
// PQ encoder (the same nearest-centroid kernel the caches use). Seeded and reproducible.
#pragma once

#include <cstdint>

#include "pq/codebook.h"

namespace million {

struct KMeansOptions {
  int niter = 25;                      ///< k-means iterations (the paper's code uses 25)
  int max_points_per_centroid = 256;   ///< FAISS subsamples beyond ksub * this
  int opq_iterations = 8;              ///< outer OPQ iterations (rotation updates)
  bool kmeanspp_init = true;           ///< k-means++ seeding (else FAISS's random points)
  int kmeanspp_points_per_centroid = 16;  ///< k-means++ runs on a subsample of ksub * this
};

/// Trains one codebook on n vectors x [n, head_dim] f32 (the rotation, if any, is learned or
/// drawn here and stored in the codebook). Fails (InvalidArgumentError) with fewer than ksub
/// vectors. The M subspaces are trained concurrently with OpenMP.
PQCodebook train_pq_codebook(const float* x, std::int64_t n, int head_dim, const PQConfig& config,
                             RotationKind rotation, std::uint64_t seed, const KMeansOptions& options);

}  // namespace million
