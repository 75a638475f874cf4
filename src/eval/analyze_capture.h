// K/V capture for `million analyze`: a KVCache that stores and attends like the dense f32 cache
// and, as layers append, (1) accumulates exact per-channel moments of every token's post-RoPE
// key, pre-RoPE key (through the model's key observer) and value per (layer, kv head), and (2)
// keeps a uniform sample (Algorithm R, pq/capture.h's Reservoir) of *runs* of kRunTokens
// consecutive tokens, the same runs in every layer and kind, for measuring the caches'
// reconstruction errors: KIVI quantizes keys per channel over groups of consecutive tokens, so
// pq/capture.h's per-token samples cannot feed it. Not here: the statistics' maths
// (analyze_stats.h) or the stores (analyze.h).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "eval/analyze_stats.h"
#include "model/kv/kv_cache.h"
#include "model/model.h"
#include "pq/capture.h"

namespace million {

/// Kinds analyze looks at, in CSV order.
enum class AnalyzeKind { kKeyPreRope = 0, kKey = 1, kValue = 2 };
constexpr int kAnalyzeKinds = 3;
/// "k_pre", "k", "v".
const char* analyze_kind_name(AnalyzeKind kind);

/// Tokens per sampled run: KIVI's default key group (32 tokens), so one run is one group.
// 128: one channel-group of the normalised PQ codebooks (pq/normalize.h), four KIVI key groups.
constexpr int kRunTokens = 128;
/// KIVI's group (tokens for keys, channels for values) in the analysis: its default, 32.
constexpr int kKiviGroup = 32;

class AnalysisCapture final : public KVCache {
 public:
  /// Keeps at most `run_capacity` runs per (layer, kind) (kRunTokens * n_kv_heads * head_dim
  /// floats each), sampled with `seed`.
  AnalysisCapture(const KVCacheShape& shape, std::int64_t run_capacity, std::uint64_t seed);
  ~AnalysisCapture() override;

  /// Hooks the model's pre-RoPE key observer (unhooked by the destructor); call once.
  void attach(Model& model);

  /// Moments of channel c of (layer, kv head, kind) over every token appended so far.
  const Moments& moments(int layer, int kv_head, AnalyzeKind kind, int channel) const;
  /// The sampled runs of (layer, kind): [runs, kRunTokens, n_kv_heads, head_dim] f32, the same
  /// text positions for every layer and kind.
  const Reservoir& runs(int layer, AnalyzeKind kind) const;

  std::string name() const override { return "analysis-capture"; }
  void append(int layer, std::int64_t pos0, int n, const float* k, const float* v) override;
  void attend(int layer, std::int64_t pos0, int n, const float* q, float* out) override;
  void commit(std::int64_t n_tokens) override { inner_->commit(n_tokens); }
  void clear() override;
  std::int64_t n_tokens() const override { return inner_->n_tokens(); }
  std::int64_t bytes_allocated() const override { return inner_->bytes_allocated(); }
  double bytes_per_token() const override { return inner_->bytes_per_token(); }

 private:
  void observe(int layer, std::int64_t pos0, int n, const float* x, AnalyzeKind kind);
  std::size_t slot(int layer, AnalyzeKind kind) const;

  std::unique_ptr<KVCache> inner_;
  Model* model_ = nullptr;
  std::vector<Moments> moments_;             // [layer][kind][kv_head][channel]
  std::vector<Reservoir> runs_;              // [layer][kind]
  std::vector<std::vector<float>> pending_;  // [layer][kind]: the run being filled [kRunTokens, n_kv_heads, head_dim]
};

}  // namespace million
