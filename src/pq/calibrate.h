// `million calibrate` as a library call: run the model over calibration documents in windows,
// capture K/V samples, train one PQ codebook per group (granularity) and kind, and measure
// each layer's relative reconstruction error on held-out vectors.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "model/model.h"
#include "pq/codebook.h"
#include "pq/train.h"

namespace million {

struct CalibrateProgress {
  const char* stage;      ///< "moments" (qpca's first pass), "capture" or "train"
  std::int64_t done = 0;  ///< tokens (capture) or codebooks (train) finished
  std::int64_t total = 0;
  double elapsed_s = 0.0;
};

struct CalibrateOptions {
  PQConfig k_config, v_config;
  Granularity granularity = Granularity::kLayerHead;
  RotationKind rotation = RotationKind::kNone;
  /// Normalisations between rotation and PQ (pq/normalize.h); channel-group over norm_group
  /// consecutive tokens (a multiple of 64). Need rotation none or hadamard.
  VectorNorm k_norm = VectorNorm::kNone, v_norm = VectorNorm::kNone;
  int norm_group = 128;
  std::int64_t samples = 0;   ///< training vectors per (layer, kv head, kind); 0 = 64 per centroid
  int ctx = 0;                ///< window length; 0 = the model's context, at most 4096
  std::int64_t max_tokens = 0;  ///< tokens to run; 0 = just enough for `samples`
  std::uint64_t seed = 0;
  KMeansOptions kmeans;
  std::function<void(const CalibrateProgress&)> progress;
};

struct LayerError {
  /// sqrt(sum ||x - x_hat||^2 / sum ||x||^2) over held-out keys of all kv heads; for normalised
  /// codebooks measured in the normalised space (what k-means saw)
  double k = 0.0;
  double v = 0.0;
};

struct CalibrateReport {
  std::int64_t tokens = 0;
  std::int64_t windows = 0;
  std::int64_t train_vectors = 0;    ///< per (layer, kv head, kind), smallest over all
  std::int64_t heldout_vectors = 0;  ///< likewise
  double capture_seconds = 0.0;
  double train_seconds = 0.0;
  std::vector<LayerError> layers;
};

/// The fingerprint codebook files carry: architecture fields of `config` and FNV-1a of the
/// model's config.json (directory) or its 28-byte header (llama2.c file).
ModelFingerprint model_fingerprint(const std::string& model_path, const ModelConfig& config);

/// Runs calibration. `documents`: token ids of each calibration text (BOS first). Throws
/// InvalidArgumentError for bad options or too little text.
CodebookSet calibrate(Model& model, const ModelFingerprint& fingerprint, const std::vector<std::vector<int>>& documents,
                      const CalibrateOptions& options, CalibrateReport* report);

/// sqrt(sum ||x - decode(encode(R x))||^2 / sum ||x||^2) over n vectors x [n, head_dim].
double relative_error(const PQCodebook& cb, const float* x, std::int64_t n);

}  // namespace million
