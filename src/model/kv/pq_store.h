// MILLION's product-quantized key and value stores: per kv head, the codes of every coded token
// and a pointer to the codebook that made them (per (layer, head), per layer or shared).
// Keys: scores by decoding each token's centroids and multiplying with the rotated query heads
// of the group (pq_attn_kernels.h says why not a lookup table per head). Values: the centroids
// of each token are gathered, weighted by the probabilities, and rotated back once at the end.
// Codes layout: per kv head, blocks of 64 tokens, subspace-major inside a block:
// [ceil(capacity / 64), M, 64] u8 (src/backends/cpu/pq_attn_kernels.h), one byte per code
// whatever nbits is (codes under 8 bits are not packed yet; bits_per_element() reports bytes).
// Normalised codebooks (pq/normalize.h) add per kv head: token norms [capacity] f16, or per
// channel-group [ceil(capacity / group), 2, head_dim] f16 (min row, then range row), both in the
// rotated space. Token norms scale scores / probabilities; channel-groups fold into the query
// (q * range, plus the bias q . min) once per group and into the value sum once per group.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "backends/cpu/pq_attn_kernels.h"
#include "model/kv/kv_store.h"
#include "model/kv/quantized_cache.h"
#include "pq/codebook.h"
#include "pq/encode.h"

namespace million {

/// Rounds every centroid coordinate to the nearest f16 value (kept as f32); throws FormatError
/// for a value outside the f16 range.
void round_centroids_to_f16(PQCodebook& cb);
/// The byte planes the VBMI kernels decode from (pq_attn_kernels.h): [head_dim][2][256], the
/// low then high bytes of each coordinate's f16 bits, entries past ksub zero.
std::vector<std::uint8_t> pq_byte_planes(const PQCodebook& cb);

/// Shared by the key and value stores: codes and codebooks of one kind of one layer.
/// The store holds its own copy of each distinct codebook with every centroid coordinate
/// rounded to f16 (the byte-plane kernels decode f16; rounding once keeps every path, the
/// encoder and decode() on identical values; the error, 2^-11 relative, is ~100x below PQ's
/// own), plus the byte planes of those f16 values for the kernels.
class PQCodes {
 public:
  /// codebooks[h] is kv head h's codebook (entries may repeat under coarser granularities);
  /// every one must have the same head_dim, M and nbits. Throws FormatError for a centroid
  /// outside the f16 range.
  PQCodes(std::shared_ptr<const CodebookSet> owner, std::vector<const PQCodebook*> codebooks, std::int64_t capacity);

  /// x [n, n_kv_heads, head_dim]; with channel-group normalisation n and size() must be
  /// multiples of the group (block_tokens()).
  void append(const float* x, int n);
  /// What these n tokens x [n, n_kv_heads, head_dim] decode to when encoded on their own (a
  /// channel-group's parameters from just these n): out [n, n_kv_heads, head_dim].
  void roundtrip(const float* x, int n, float* out) const;
  int block_tokens() const { return norm_ == VectorNorm::kChannelGroup ? group_ : 1; }
  VectorNorm norm() const { return norm_; }
  int norm_group() const { return group_; }
  /// Token t's norm (token normalisation).
  float token_norm(int h, std::int64_t t) const;
  /// Channel-group g's parameters in the rotated space (f16 values as f32): mn, rg [head_dim].
  void group_params(int h, std::int64_t g, float* mn, float* rg) const;
  int n_kv_heads() const { return static_cast<int>(head_book_.size()); }
  std::int64_t size() const { return size_; }
  void clear() { size_ = 0; }
  /// Head h's codebook as the store uses it (f16-rounded centroids).
  const PQCodebook& codebook(int h) const { return *book(h).cb; }
  const PQKernelCodebook& kernel_codebook(int h) const { return book(h).kernel; }
  const std::uint8_t* codes(int h) const { return codes_[static_cast<std::size_t>(h)].data(); }  // [blocks, M, 64]
  std::uint8_t code(int h, std::int64_t t, int m) const {
    return codes_[static_cast<std::size_t>(h)][static_cast<std::size_t>(((t / kPQBlockTokens) * M_ + m) * kPQBlockTokens +
                                                                        t % kPQBlockTokens)];
  }
  int M() const { return M_; }
  int head_dim() const { return head_dim_; }
  double bits_per_element() const { return 8.0 * M_ / head_dim_ + vector_norm_bits(norm_, head_dim_, group_); }
  /// Decoded tokens [t0, t1) of head h: out [t1 - t0, head_dim], in the original space, or with
  /// unrotate = false in the codebook's rotated space (denormalised either way).
  void decode(int h, std::int64_t t0, std::int64_t t1, float* out, bool unrotate = true) const;

 private:
  struct Book {
    std::unique_ptr<PQCodebook> cb;     // f16-rounded copy
    std::unique_ptr<PQEncoder> encoder;  // over *cb
    std::vector<std::uint8_t> planes;    // [M * dsub][2][256]
    PQKernelCodebook kernel;
  };
  const Book& book(int h) const { return books_[static_cast<std::size_t>(head_book_[static_cast<std::size_t>(h)])]; }

  // rotated -> normalised -> codes of n tokens of head h ([n, d] in, [n, M] token-major out);
  // params as stored: token [n] or channel-group [2, d] (the n tokens form one group).
  void encode_head(int h, const float* x, int n, std::uint16_t* params, std::uint8_t* codes) const;
  // codes [n, M] -> normalised centroids -> denormalised -> unrotated, params as above.
  void decode_head(int h, const std::uint8_t* codes, const std::uint16_t* params, int n, float* out,
                   bool unrotate = true) const;

  std::shared_ptr<const CodebookSet> owner_;
  std::vector<Book> books_;
  std::vector<int> head_book_;                     // head -> index into books_
  std::vector<std::vector<std::uint8_t>> codes_;  // per head [ceil(capacity / 64), M, 64]
  std::vector<std::vector<std::uint16_t>> params_;  // per head: token norms or channel-group min/range (above)
  std::int64_t capacity_;
  std::int64_t size_ = 0;
  int M_, head_dim_;
  VectorNorm norm_ = VectorNorm::kNone;
  int group_ = 0;
};

class PQKeyStore final : public KeyStore {
 public:
  PQKeyStore(std::shared_ptr<const CodebookSet> owner, std::vector<const PQCodebook*> codebooks, std::int64_t capacity)
      : codes_(std::move(owner), std::move(codebooks), capacity) {}
  int block_tokens() const override { return codes_.block_tokens(); }
  void append(const float* x, int n) override;
  void roundtrip(const float* x, int n, float* out) const override { codes_.roundtrip(x, n, out); }
  std::int64_t size() const override { return codes_.size(); }
  void clear() override { codes_.clear(); }
  std::unique_ptr<PreparedQueries> prepare(int kv_head, const float* q, int G, SimdLevel level) const override;
  void scores(int kv_head, const PreparedQueries& prep, std::int64_t t0, std::int64_t t1, float* s, std::int64_t ld,
              SimdLevel level) const override;
  void decode(int kv_head, std::int64_t t0, std::int64_t t1, float* out) const override {
    codes_.decode(kv_head, t0, t1, out);
  }
  bool decodes_in_score_space() const override { return true; }
  void decode_score_space(int kv_head, std::int64_t t0, std::int64_t t1, float* out) const override {
    codes_.decode(kv_head, t0, t1, out, false);
  }
  const float* prepared_vectors(const PreparedQueries& prep) const override;
  double bits_per_element() const override { return codes_.bits_per_element(); }

 private:
  // Scores of the G queries q [G, head_dim] (rotated space) against the codes as stored.
  void raw_scores(int kv_head, const float* q, int G, std::int64_t t0, std::int64_t t1, float* s, std::int64_t ld,
                  SimdLevel level) const;
  PQCodes codes_;
};

class PQValueStore final : public ValueStore {
 public:
  PQValueStore(std::shared_ptr<const CodebookSet> owner, std::vector<const PQCodebook*> codebooks, std::int64_t capacity)
      : codes_(std::move(owner), std::move(codebooks), capacity) {}
  int block_tokens() const override { return codes_.block_tokens(); }
  void append(const float* x, int n) override;
  void roundtrip(const float* x, int n, float* out) const override { codes_.roundtrip(x, n, out); }
  std::int64_t size() const override { return codes_.size(); }
  void clear() override { codes_.clear(); }
  /// [G, head_dim]: the weighted sum of decoded values in the codebook's (rotated) space.
  std::int64_t accumulator_floats(int G) const override;
  void accumulate(int kv_head, const float* p, std::int64_t ldp, int G, std::int64_t t0, std::int64_t t1, float* acc,
                  SimdLevel level) const override;
  void finish(int kv_head, const float* acc, int G, float* out, SimdLevel level) const override;
  void decode(int kv_head, std::int64_t t0, std::int64_t t1, float* out) const override {
    codes_.decode(kv_head, t0, t1, out);
  }
  bool decodes_in_accumulator_space() const override { return true; }
  void decode_accumulator_space(int kv_head, std::int64_t t0, std::int64_t t1, float* out) const override {
    codes_.decode(kv_head, t0, t1, out, false);
  }
  double bits_per_element() const override { return codes_.bits_per_element(); }

 private:
  // acc += sum_t p_t * centroids_t (the stored, normalised vectors) for tokens [t0, t1).
  void raw_accumulate(int kv_head, const float* p, std::int64_t ldp, int G, std::int64_t t0, std::int64_t t1,
                      float* acc, SimdLevel level) const;
  PQCodes codes_;
};

/// The PQ cache for a model: per layer a PQKeyStore and PQValueStore over the set's codebooks.
/// Throws FormatError if the set does not fit the shape (layers, kv heads, head_dim).
std::unique_ptr<KVCache> make_pq_cache(const KVCacheShape& shape, std::shared_ptr<const CodebookSet> codebooks,
                                       const QuantizedCacheOptions& options, const std::string& name);

}  // namespace million
