// The Llama-family forward pass on the CPU: embedding, RMSNorm, RoPE, grouped-query attention
// through a KVCache, SwiGLU MLP, final norm, logits. Chunks of several tokens go through BLAS
// GEMM, single tokens through GEMV; attention belongs to the cache. Not here: sampling
// (sampler.h), the generation loop (generate.h), tokenization.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "model/kv/kv_cache.h"
#include "model/weights.h"

namespace million {

class Model {
 public:
  explicit Model(ModelWeights weights);

  const ModelConfig& config() const { return weights_.config; }
  const ModelWeights& weights() const { return weights_; }

  /// Shape of a cache that can hold `capacity` tokens for this model.
  KVCacheShape cache_shape(std::int64_t capacity) const;

  /// Runs tokens at positions [pos0, pos0 + n) (pos0 = tokens the cache already holds).
  /// logits: [vocab] for the last position, or [n, vocab] when all_logits; nullptr skips the
  /// output layer (K/V capture needs no logits). Token ids out of range throw
  /// InvalidArgumentError; positions past the cache's capacity ContextLimitError.
  void forward(const int* tokens, int n, std::int64_t pos0, KVCache& cache, float* logits, bool all_logits = false);

  /// Called in forward() with each layer's keys before RoPE: (layer, pos0, n, k) with k
  /// [n, n_kv_heads, head_dim] f32. For analysis tools; empty function to remove.
  using KeyObserver = std::function<void(int, std::int64_t, int, const float*)>;
  void set_pre_rope_key_observer(KeyObserver observer) { key_observer_ = std::move(observer); }

  /// Prefills `tokens` at positions starting from cache.n_tokens() in chunks of at most
  /// `chunk` tokens; writes the last position's logits.
  void prefill(const std::vector<int>& tokens, KVCache& cache, float* last_logits, int chunk = 512);

 private:
  void ensure_scratch(int n);

  ModelWeights weights_;
  SimdLevel simd_ = SimdLevel::kScalar;
  KeyObserver key_observer_;
  std::vector<float> inv_freq_;  // RoPE inverse frequencies, head_dim/2
  // Scratch, sized for the largest chunk seen: [n, dim] row-major each.
  int scratch_tokens_ = 0;
  std::vector<float> x_, xn_, q_, k_, v_, att_, gate_, up_;
};

}  // namespace million
