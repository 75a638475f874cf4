// Dense KV caches: every token stored exactly as f32, or rounded to f16.
// Storage per layer: k, v  [n_kv_heads, capacity, head_dim] of f32 or f16 (u16 bits),
// kv-head-major so one head's keys are contiguous for the attention kernels.
#pragma once

#include <vector>

#include "kernels/dense_attention.h"
#include "model/kv/kv_cache.h"

namespace million {

class DenseKVCache final : public KVCache {
 public:
  DenseKVCache(const KVCacheShape& shape, KVDType dtype);

  std::string name() const override { return dtype_ == KVDType::kF32 ? "f32" : "f16"; }
  void append(int layer, std::int64_t pos0, int n, const float* k, const float* v) override;
  void attend(int layer, std::int64_t pos0, int n, const float* q, float* out) override;
  void commit(std::int64_t n_tokens) override;
  void clear() override;
  std::int64_t n_tokens() const override { return n_tokens_; }
  std::int64_t bytes_allocated() const override;
  double bytes_per_token() const override;

  /// Storage bytes this cache would allocate for `shape`.
  static std::int64_t storage_bytes(const KVCacheShape& shape, KVDType dtype);

 private:
  DenseAttentionArgs args_for(int layer, std::int64_t pos0, int n, const float* q, float* out) const;

  KVDType dtype_;
  int elem_bytes_;
  std::vector<std::vector<std::uint8_t>> k_, v_;  // per layer, see file header for layout
  std::vector<std::int64_t> layer_tokens_;        // tokens appended per layer
  std::int64_t n_tokens_ = 0;
};

}  // namespace million
