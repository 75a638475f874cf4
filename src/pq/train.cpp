// PQ codebook training (see train.h). FAISS provides k-means (initialisation, iterations,
// empty-cluster splitting, subsampling) and OPQ; the assignment step inside k-means is our PQ
// encoder through a FAISS index whose search() calls it: with dsub = 2 and 256 centroids the
// BLAS route FAISS would take is dominated by writing the n x 256 distance matrix.
#include "pq/train.h"

#include <faiss/Clustering.h>
#include <faiss/IndexFlat.h>
#include <faiss/VectorTransform.h>
#include <faiss/impl/FaissException.h>
#include <faiss/impl/ProductQuantizer.h>
#include <fmt/format.h>

#include <algorithm>
#include <exception>
#include <limits>
#include <random>
#include <mutex>
#include <vector>

#include "million/error.h"
#include "million/log.h"
#include "pq/encode.h"
#include "pq/rotation.h"

namespace million {

namespace {

using idx_t = faiss::Index::idx_t;

// k-means assignment through PQEncoder: nearest of the (2^nbits) centroids, k = 1 only.
class EncoderAssignIndex final : public faiss::IndexFlatL2 {
 public:
  EncoderAssignIndex(int dim, int nbits) : faiss::IndexFlatL2(dim), nbits_(nbits) {}

  void search(idx_t n, const float* x, idx_t k, float* distances, idx_t* labels,
              const faiss::SearchParameters* params = nullptr) const override {
    if (k != 1 || ntotal != (idx_t{1} << nbits_)) {
      faiss::IndexFlatL2::search(n, x, k, distances, labels, params);
      return;
    }
    PQCodebook cb;
    cb.head_dim = static_cast<int>(d);
    cb.M = 1;
    cb.nbits = nbits_;
    cb.centroids.assign(get_xb(), get_xb() + ntotal * d);
    const PQEncoder enc(cb);
    std::vector<std::uint8_t> assign(static_cast<std::size_t>(n));
    enc.encode(x, n, assign.data(), active_simd_level());
    for (idx_t i = 0; i < n; ++i) {
      const float* c = cb.centroids.data() + static_cast<std::size_t>(assign[static_cast<std::size_t>(i)]) * d;
      float dist = 0.0f;
      for (idx_t j = 0; j < d; ++j) dist += (x[i * d + j] - c[j]) * (x[i * d + j] - c[j]);
      distances[i] = dist;
      labels[i] = assign[static_cast<std::size_t>(i)];
    }
  }

 private:
  int nbits_;
};

// k-means++ seeding (Arthur & Vassilvitskii 2007) on a subsample: each next centroid is drawn
// with probability proportional to its squared distance from the nearest centroid so far.
// Random-point seeding leaves well-separated clusters split or merged far more often.
std::vector<float> kmeanspp(const float* x, std::int64_t n, int dim, int k, int points_per_centroid, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  const std::int64_t m = std::min<std::int64_t>(n, static_cast<std::int64_t>(k) * points_per_centroid);
  std::vector<std::int64_t> idx(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) idx[static_cast<std::size_t>(i)] = i;
  for (std::int64_t i = 0; i < m; ++i) {  // partial Fisher-Yates: the first m are a uniform subsample
    std::uniform_int_distribution<std::int64_t> pick(i, n - 1);
    std::swap(idx[static_cast<std::size_t>(i)], idx[static_cast<std::size_t>(pick(rng))]);
  }
  auto point = [&](std::int64_t i) { return x + idx[static_cast<std::size_t>(i)] * dim; };
  std::vector<float> centroids(static_cast<std::size_t>(k) * dim);
  std::vector<double> d2(static_cast<std::size_t>(m), std::numeric_limits<double>::infinity());
  std::int64_t chosen = std::uniform_int_distribution<std::int64_t>(0, m - 1)(rng);
  for (int c = 0; c < k; ++c) {
    std::copy(point(chosen), point(chosen) + dim, centroids.begin() + static_cast<std::ptrdiff_t>(c) * dim);
    double total = 0.0;
    for (std::int64_t i = 0; i < m; ++i) {
      double dd = 0.0;
      for (int j = 0; j < dim; ++j) {
        const double diff = static_cast<double>(point(i)[j]) - centroids[static_cast<std::size_t>(c * dim + j)];
        dd += diff * diff;
      }
      d2[static_cast<std::size_t>(i)] = std::min(d2[static_cast<std::size_t>(i)], dd);
      total += d2[static_cast<std::size_t>(i)];
    }
    if (c + 1 == k) break;
    if (total <= 0.0) {  // fewer distinct points than centroids: repeat points; FAISS splits empty clusters
      chosen = std::uniform_int_distribution<std::int64_t>(0, m - 1)(rng);
      continue;
    }
    double r = std::uniform_real_distribution<double>(0.0, total)(rng);
    chosen = m - 1;
    for (std::int64_t i = 0; i < m; ++i) {
      r -= d2[static_cast<std::size_t>(i)];
      if (r < 0.0) {
        chosen = i;
        break;
      }
    }
  }
  return centroids;
}

std::vector<float> learn_opq(const float* x, std::int64_t n, int d, const PQConfig& config, const KMeansOptions& opt) {
  faiss::ProductQuantizer pq(static_cast<std::size_t>(d), static_cast<std::size_t>(config.M),
                             static_cast<std::size_t>(config.nbits));
  EncoderAssignIndex assign(d / config.M, config.nbits);  // PQ training inside OPQ uses our encoder too
  pq.assign_index = &assign;
  faiss::OPQMatrix opq(d, config.M);
  opq.pq = &pq;
  opq.niter = opt.opq_iterations;
  opq.niter_pq = 4;
  opq.niter_pq_0 = 10;
  // The rotation needs far fewer points than the final k-means: 64 per centroid keeps OPQ's
  // per-iteration encode + Procrustes pass affordable.
  opq.max_train_points = static_cast<std::size_t>(64) << config.nbits;
  opq.verbose = false;
  opq.train(n, x);
  return opq.A;  // [d, d] row-major; FAISS applies xt = A x
}

}  // namespace

PQCodebook train_pq_codebook(const float* x, std::int64_t n, int head_dim, const PQConfig& config,
                             RotationKind rotation, std::uint64_t seed, const KMeansOptions& options) {
  config.validate(head_dim);
  const int ksub = config.ksub();
  if (n < ksub) {
    throw InvalidArgumentError(fmt::format("{} training vectors cannot train {} centroids per subspace; use more "
                                           "calibration text or fewer bits",
                                           n, ksub));
  }
  PQCodebook cb;
  cb.head_dim = head_dim;
  cb.M = config.M;
  cb.nbits = config.nbits;
  cb.rotation = rotation;
  cb.n_samples = static_cast<std::uint64_t>(n);
  const int dsub = cb.dsub();

  std::vector<float> rotated;
  const float* xs = x;
  try {
    if (rotation == RotationKind::kHadamard) cb.rotation_matrix = hadamard_rotation(head_dim, seed);
    if (rotation == RotationKind::kOpq) cb.rotation_matrix = learn_opq(x, n, head_dim, config, options);
  } catch (const faiss::FaissException& e) {
    throw InvalidArgumentError(std::string("OPQ training failed: ") + e.what());
  }
  if (rotation != RotationKind::kNone) {
    rotated.resize(static_cast<std::size_t>(n) * head_dim);
    rotate_vectors(cb.rotation_matrix, head_dim, x, n, rotated.data());
    xs = rotated.data();
  }

  cb.centroids.assign(static_cast<std::size_t>(config.M) * ksub * dsub, 0.0f);
  std::exception_ptr error;
  std::mutex error_mutex;
#pragma omp parallel for schedule(dynamic, 1)
  for (int m = 0; m < config.M; ++m) {
    try {
      std::vector<float> sub(static_cast<std::size_t>(n) * dsub);  // [n, dsub] slice of subspace m
      for (std::int64_t i = 0; i < n; ++i) {
        for (int j = 0; j < dsub; ++j) sub[static_cast<std::size_t>(i * dsub + j)] = xs[i * head_dim + m * dsub + j];
      }
      faiss::ClusteringParameters cp;
      cp.niter = options.niter;
      cp.seed = static_cast<int>((seed * 1000003ULL + static_cast<std::uint64_t>(m)) & 0x7fffffff);
      cp.max_points_per_centroid = options.max_points_per_centroid;
      cp.min_points_per_centroid = 1;  // we warn ourselves (calibrate), FAISS would print
      cp.verbose = false;
      faiss::Clustering clus(dsub, ksub, cp);
      if (options.kmeanspp_init) {
        clus.centroids = kmeanspp(sub.data(), n, dsub, ksub, options.kmeanspp_points_per_centroid,
                                  static_cast<std::uint64_t>(cp.seed));
      }
      EncoderAssignIndex index(dsub, config.nbits);
      clus.train(n, sub.data(), index);
      std::copy(clus.centroids.begin(), clus.centroids.end(),
                cb.centroids.begin() + static_cast<std::ptrdiff_t>(m) * ksub * dsub);
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::current_exception();
    }
  }
  if (error) {
    try {
      std::rethrow_exception(error);
    } catch (const faiss::FaissException& e) {
      throw InvalidArgumentError(std::string("k-means failed: ") + e.what());
    }
  }
  return cb;
}

}  // namespace million
