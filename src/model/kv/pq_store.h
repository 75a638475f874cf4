// MILLION's product-quantized key and value stores: per kv head, the codes of every coded token
// and a pointer to the codebook that made them (per (layer, head), per layer or shared).
// Keys: attention scores through a lookup table per query head, LUT[m][c] = q_m . C[m][c], so a
// token's score is the sum of M table entries (DESIGN.md §2). Values: the centroids of each
// token are gathered, weighted, and rotated back once at the end.
// Codes layout: per kv head, blocks of 16 tokens, subspace-major inside a block:
// [ceil(capacity / 16), M, 16] u8 (src/backends/cpu/pq_attn_kernels.h), one byte per code
// whatever nbits is (4-bit codes are not packed yet; bits_per_element() reports the bytes).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "model/kv/kv_store.h"
#include "model/kv/quantized_cache.h"
#include "pq/codebook.h"
#include "pq/encode.h"

namespace million {

/// Shared by the key and value stores: codes and codebooks of one kind of one layer.
class PQCodes {
 public:
  /// codebooks[h] is kv head h's codebook (entries may repeat under coarser granularities);
  /// every one must have the same head_dim, M and nbits. `owner` keeps them alive.
  PQCodes(std::shared_ptr<const CodebookSet> owner, std::vector<const PQCodebook*> codebooks, std::int64_t capacity);

  void append(const float* x, int n);  // x [n, n_kv_heads, head_dim]
  int n_kv_heads() const { return static_cast<int>(codebooks_.size()); }
  std::int64_t size() const { return size_; }
  void clear() { size_ = 0; }
  const PQCodebook& codebook(int h) const { return *codebooks_[static_cast<std::size_t>(h)]; }
  const std::uint8_t* codes(int h) const { return codes_[static_cast<std::size_t>(h)].data(); }  // [blocks, M, 16]
  std::uint8_t code(int h, std::int64_t t, int m) const {
    return codes_[static_cast<std::size_t>(h)][static_cast<std::size_t>(((t / 16) * M_ + m) * 16 + t % 16)];
  }
  int M() const { return M_; }
  int head_dim() const { return head_dim_; }
  double bits_per_element() const { return 8.0 * M_ / head_dim_; }
  /// Decoded tokens [t0, t1) of head h in the original (unrotated) space: out [t1 - t0, head_dim].
  void decode(int h, std::int64_t t0, std::int64_t t1, float* out) const;

 private:
  std::shared_ptr<const CodebookSet> owner_;
  std::vector<const PQCodebook*> codebooks_;
  std::vector<PQEncoder> encoders_;
  std::vector<std::vector<std::uint8_t>> codes_;  // per head [ceil(capacity / 16), M, 16]
  std::int64_t capacity_;
  std::int64_t size_ = 0;
  int M_, head_dim_;
};

class PQKeyStore final : public KeyStore {
 public:
  PQKeyStore(std::shared_ptr<const CodebookSet> owner, std::vector<const PQCodebook*> codebooks, std::int64_t capacity)
      : codes_(std::move(owner), std::move(codebooks), capacity) {}
  void append(const float* x, int n) override;
  std::int64_t size() const override { return codes_.size(); }
  void clear() override { codes_.clear(); }
  std::unique_ptr<PreparedQueries> prepare(int kv_head, const float* q, int G, SimdLevel level) const override;
  void scores(int kv_head, const PreparedQueries& prep, std::int64_t t0, std::int64_t t1, float* s, std::int64_t ld,
              SimdLevel level) const override;
  void decode(int kv_head, std::int64_t t0, std::int64_t t1, float* out) const override {
    codes_.decode(kv_head, t0, t1, out);
  }
  double bits_per_element() const override { return codes_.bits_per_element(); }

 private:
  PQCodes codes_;
};

/// How PQValueStore aggregates values: gather each token's centroids into a [G, head_dim]
/// accumulator (cost per token ~ head_dim), or add each token's weight to W[M, ksub, G] and
/// combine W with the centroids once in finish() (cost per token ~ M, plus ksub * head_dim
/// once): the second wins once a call covers more than a few hundred tokens.
enum class PQValueAggregation { kGather, kSparse };

class PQValueStore final : public ValueStore {
 public:
  PQValueStore(std::shared_ptr<const CodebookSet> owner, std::vector<const PQCodebook*> codebooks, std::int64_t capacity,
               PQValueAggregation aggregation = PQValueAggregation::kSparse)
      : codes_(std::move(owner), std::move(codebooks), capacity), aggregation_(aggregation) {}
  void append(const float* x, int n) override;
  std::int64_t size() const override { return codes_.size(); }
  void clear() override { codes_.clear(); }
  /// kGather: [G, head_dim] in the rotated space; kSparse: [M, ksub, G] weights per centroid.
  std::int64_t accumulator_floats(int G) const override;
  void accumulate(int kv_head, const float* p, std::int64_t ldp, int G, std::int64_t t0, std::int64_t t1, float* acc,
                  SimdLevel level) const override;
  void finish(int kv_head, const float* acc, int G, float* out, SimdLevel level) const override;
  void decode(int kv_head, std::int64_t t0, std::int64_t t1, float* out) const override {
    codes_.decode(kv_head, t0, t1, out);
  }
  double bits_per_element() const override { return codes_.bits_per_element(); }

 private:
  PQCodes codes_;
  PQValueAggregation aggregation_;
};

/// The PQ cache for a model: per layer a PQKeyStore and PQValueStore over the set's codebooks.
/// Throws FormatError if the set does not fit the shape (layers, kv heads, head_dim).
std::unique_ptr<KVCache> make_pq_cache(const KVCacheShape& shape, std::shared_ptr<const CodebookSet> codebooks,
                                       const QuantizedCacheOptions& options, const std::string& name,
                                       PQValueAggregation aggregation = PQValueAggregation::kSparse);

}  // namespace million
