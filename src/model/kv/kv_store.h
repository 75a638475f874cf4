// The compressed half of a quantized KV cache: stores that hold one kind (keys or values) of
// one layer for all kv heads, in some compact format, and do the two things attention needs
// from them. QuantizedKVCache (quantized_cache.h) owns a KeyStore and a ValueStore per layer, the
// full-precision sink and window tokens, and the attention driver (online softmax, splits over
// the sequence, GQA); so K and V can use different formats (--kv-k, --kv-v).
//
// Token indices here are store-local: token 0 is the first token the store encoded (the first
// token after the sinks).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "million/simd.h"

// Every store is built for a fixed shape: n_kv_heads, head_dim and a capacity in tokens; append
// past the capacity is an internal error (the cache checks capacity first).

namespace million {

/// Per-call state a key store derives from a group of query vectors (e.g. PQ lookup tables).
struct PreparedQueries {
  virtual ~PreparedQueries() = default;
};

class KeyStore {
 public:
  virtual ~KeyStore() = default;
  /// Appends come in multiples of this many tokens (e.g. KIVI's key groups); 1 = any count.
  virtual int block_tokens() const { return 1; }
  /// Appends n tokens: x [n, n_kv_heads, head_dim] f32 (keys after RoPE).
  virtual void append(const float* x, int n) = 0;
  /// out [n, n_kv_heads, head_dim] = x as this store gives it back when these n tokens are
  /// encoded on their own (n may be fewer than block_tokens(): a group's statistics then come
  /// from just these n). Stress mode reads a partial block through this (QuantizedKVCache).
  virtual void roundtrip(const float* x, int n, float* out) const = 0;
  virtual std::int64_t size() const = 0;
  virtual void clear() = 0;

  /// Prepares the G query heads that read kv head `kv_head`: q [G, head_dim] f32 (after RoPE).
  virtual std::unique_ptr<PreparedQueries> prepare(int kv_head, const float* q, int G, SimdLevel level) const = 0;
  /// s[j * ld + (t - t0)] = q_j . k_t (unscaled) for tokens t in [t0, t1), j < G.
  virtual void scores(int kv_head, const PreparedQueries& prep, std::int64_t t0, std::int64_t t1, float* s,
                      std::int64_t ld, SimdLevel level) const = 0;
  /// The stored (decoded) keys of tokens [t0, t1): out [t1 - t0, head_dim] (tests, references).
  virtual void decode(int kv_head, std::int64_t t0, std::int64_t t1, float* out) const = 0;

  // Batched queries (a prefill chunk): a store whose scores are dot products of prepared query
  // vectors with decodable key vectors can decode a tile once for all queries instead of each
  // query decoding it again. Such a store returns true here and implements the two below.
  virtual bool decodes_in_score_space() const { return false; }
  /// out [t1 - t0, head_dim]: keys in the space prepare() maps queries into (PQ: rotated), so
  /// scores(...) = prepared_vectors(prep)[j] . out[t] up to float rounding.
  virtual void decode_score_space(int kv_head, std::int64_t t0, std::int64_t t1, float* out) const {
    (void)kv_head, (void)t0, (void)t1, (void)out;
  }
  /// The G prepared query vectors [G, head_dim] in that space.
  virtual const float* prepared_vectors(const PreparedQueries& prep) const {
    (void)prep;
    return nullptr;
  }
  /// Bits per stored element with every overhead (scales, codes; codebooks not counted).
  virtual double bits_per_element() const = 0;
};

class ValueStore {
 public:
  virtual ~ValueStore() = default;
  virtual int block_tokens() const { return 1; }
  virtual void append(const float* x, int n) = 0;  ///< x [n, n_kv_heads, head_dim] f32
  virtual void roundtrip(const float* x, int n, float* out) const = 0;  ///< as KeyStore::roundtrip
  virtual std::int64_t size() const = 0;
  virtual void clear() = 0;

  /// Floats of one accumulator for G heads (G * head_dim for a gather, or e.g. G * M * ksub for
  /// PQ's per-centroid weights). Accumulators are linear in p, so partial ones merge by scaling.
  virtual std::int64_t accumulator_floats(int G) const = 0;
  /// acc += sum_t p[j * ldp + (t - t0)] * v_t, for tokens t in [t0, t1) of kv head `kv_head`.
  virtual void accumulate(int kv_head, const float* p, std::int64_t ldp, int G, std::int64_t t0, std::int64_t t1,
                          float* acc, SimdLevel level) const = 0;
  /// out[j, :] += the vectors acc stands for (G heads, [G, head_dim]).
  virtual void finish(int kv_head, const float* acc, int G, float* out, SimdLevel level) const = 0;
  virtual void decode(int kv_head, std::int64_t t0, std::int64_t t1, float* out) const = 0;
  virtual double bits_per_element() const = 0;

  // Batched queries (see KeyStore): a store whose accumulator is [G, head_dim] sums of decodable
  // vectors returns true and decodes tiles in the accumulator's space (PQ: rotated), so that
  // accumulate(...) = sum_t p_t out[t] up to float rounding; finish() maps the sum back.
  virtual bool decodes_in_accumulator_space() const { return false; }
  virtual void decode_accumulator_space(int kv_head, std::int64_t t0, std::int64_t t1, float* out) const {
    (void)kv_head, (void)t0, (void)t1, (void)out;
  }
};

}  // namespace million
