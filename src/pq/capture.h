// K/V capture for calibration: a KVCache that stores like the dense f32 cache and, as layers
// append, reservoir-samples the post-RoPE keys and the values (and, through the model's key
// observer, optionally the pre-RoPE keys) of every (layer, kv head) into bounded buffers, and
// optionally sums key and query second moments per (layer, kv head).
// Tokens are split by a hash of their global index into training and held-out samples, so the
// errors calibrate reports are measured on vectors k-means never saw.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <vector>

#include "model/kv/kv_cache.h"
#include "model/model.h"
#include "pq/query_pca.h"

namespace million {

/// Uniform sample of at most `capacity` vectors of `dim` floats from a stream (Algorithm R).
class Reservoir {
 public:
  Reservoir(int dim, std::int64_t capacity, std::uint64_t seed);
  void add(const float* v);
  std::int64_t size() const { return static_cast<std::int64_t>(data_.size()) / dim_; }
  std::int64_t seen() const { return seen_; }
  const float* data() const { return data_.data(); }  // [size, dim]
  int dim() const { return dim_; }

 private:
  int dim_;
  std::int64_t capacity_;
  std::int64_t seen_ = 0;
  std::vector<float> data_;
  std::mt19937_64 rng_;
};

enum class CaptureKind { kKey = 0, kValue = 1, kKeyPreRope = 2 };

struct CaptureOptions {
  std::int64_t train_samples = 32768;  ///< per (layer, kv head, kind)
  std::int64_t heldout_samples = 2048; ///< per (layer, kv head, kind)
  int heldout_one_in = 16;             ///< a token goes to the held-out sample with probability 1/this
  bool pre_rope_keys = false;
  std::uint64_t seed = 0;
  /// Optional, for normalised codebooks: rewrites `n` consecutive tokens x [n, head_dim] of one
  /// (layer, kv head, kind) in place before they are sampled (e.g. rotation + normalisation).
  /// Tokens reach it in blocks of transform_block[kind] consecutive positions of one window
  /// (kinds K and V only); a window's last partial block is dropped, as the cache never codes
  /// a partial block outside stress mode.
  std::function<void(int layer, int kv_head, CaptureKind kind, float* x, int n)> transform;
  int transform_block[2] = {1, 1};
  /// Accumulate, per (layer, kv head), the second moments of the post-RoPE keys and of the
  /// queries that read them (every token, training and held-out alike): what the qpca
  /// transform (pq/query_pca.h) is built from.
  bool moments = false;
};

class KVCapture final : public KVCache {
 public:
  KVCapture(const KVCacheShape& shape, const CaptureOptions& options);

  /// Hooks the model's pre-RoPE key observer (when options.pre_rope_keys); call once.
  void attach(Model& model);
  /// Global index of the token at position 0 of the current window (for the held-out split).
  void set_token_base(std::int64_t base) { token_base_ = base; }

  const Reservoir& train(int layer, int kv_head, CaptureKind kind) const;
  /// With options.moments: the sums of (layer, kv head) so far.
  const KeyQueryMoments& moments(int layer, int kv_head) const;
  const Reservoir& heldout(int layer, int kv_head, CaptureKind kind) const;

  std::string name() const override { return "capture"; }
  void append(int layer, std::int64_t pos0, int n, const float* k, const float* v) override;
  void attend(int layer, std::int64_t pos0, int n, const float* q, float* out) override;
  void commit(std::int64_t n_tokens) override { inner_->commit(n_tokens); }
  void clear() override;
  std::int64_t n_tokens() const override { return inner_->n_tokens(); }
  std::int64_t bytes_allocated() const override { return inner_->bytes_allocated(); }
  double bytes_per_token() const override { return inner_->bytes_per_token(); }

 private:
  void sample(int layer, std::int64_t pos0, int n, const float* x, CaptureKind kind);
  // With a transform: collects consecutive tokens per (layer, kv head, kind) into blocks.
  void sample_transformed(int layer, std::int64_t pos0, int n, const float* x, CaptureKind kind);
  struct Pending {
    std::vector<float> rows;            // [tokens, head_dim] of one head, consecutive positions
    std::vector<std::int64_t> globals;  // global token index of each row (held-out split)
  };
  std::vector<Pending> pending_;  // [layer][kv_head][K, V]
  bool is_heldout(std::int64_t global_token) const;
  std::size_t slot(int layer, int kv_head, CaptureKind kind) const;

  CaptureOptions opt_;
  std::unique_ptr<KVCache> inner_;
  std::int64_t token_base_ = 0;
  std::vector<Reservoir> train_, heldout_;  // [layer][kv_head][kind], kinds K, V, K pre-RoPE
  std::vector<KeyQueryMoments> moments_;    // [layer][kv_head] when options.moments
};

}  // namespace million
