// The KV-cache interface the model talks to, and the factory that builds a cache from its
// command-line name ("f32", "f16"; quantized variants plug in here later).
//
// Protocol per forward step over positions [pos0, pos0 + n):
//   for each layer: append(layer, pos0, n, k, v); attend(layer, pos0, n, q, out);
//   then once: commit(pos0 + n).
// A cache may keep the newest tokens in full precision and move them into its compact form in
// commit() (possibly on a background thread); attend() must see every appended token, so what
// a cache stores and when it encodes is its own business and the model code never changes.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "million/simd.h"

namespace million {

struct KVCacheShape {
  int n_layers = 0;
  int n_heads = 0;     ///< query heads (for attention)
  int n_kv_heads = 0;
  int head_dim = 0;
  std::int64_t capacity = 0;  ///< most tokens the cache will hold (the context limit)
  int sliding_window = 0;     ///< 0: full attention; W: each query sees its W newest keys
  std::string describe() const;
};

class KVCache {
 public:
  virtual ~KVCache() = default;

  /// Command-line name with options ("f16").
  virtual std::string name() const = 0;
  const KVCacheShape& shape() const { return shape_; }

  /// Stores keys (after RoPE) and values of positions [pos0, pos0 + n) for `layer`.
  /// k, v: [n, n_kv_heads, head_dim] f32. pos0 must equal the number of tokens already held
  /// by this layer (positions are appended in order); pos0 + n <= capacity.
  virtual void append(int layer, std::int64_t pos0, int n, const float* k, const float* v) = 0;

  /// Causal attention for n queries at positions pos0..pos0+n-1 over every key of `layer`
  /// appended so far (query at p sees keys [0, p], or its sliding window).
  /// q, out: [n, n_heads, head_dim] f32. Must follow append() of the same positions.
  virtual void attend(int layer, std::int64_t pos0, int n, const float* q, float* out) = 0;

  /// All layers have processed positions [0, n_tokens). Default: nothing to do.
  virtual void commit(std::int64_t n_tokens) { (void)n_tokens; }

  /// Forget every token (the storage stays allocated).
  virtual void clear() = 0;
  /// Tokens held (after commit).
  virtual std::int64_t n_tokens() const = 0;

  /// Bytes of storage allocated for K/V (not counting small scratch).
  virtual std::int64_t bytes_allocated() const = 0;
  /// Bytes of K/V storage per token, summed over layers and kv heads, every overhead included.
  virtual double bytes_per_token() const = 0;
  /// Bits per stored K/V element (bytes_per_token * 8 / (2 * layers * kv_heads * head_dim)).
  double bits_per_element() const;
  /// Bits per element of the coded format alone (codes, scales, norms), without the exact
  /// tokens a quantized cache also holds (sinks, window, a partial block); dense: as above.
  virtual double coded_bits_per_element() const { return bits_per_element(); }

  /// SIMD level for this cache's kernels (default: active_simd_level() at creation).
  void set_simd_level(SimdLevel level) { simd_ = level; }
  SimdLevel simd_level() const { return simd_; }

 protected:
  explicit KVCache(const KVCacheShape& shape);
  /// Throws InvalidArgumentError unless 0 <= layer < n_layers, n > 0, pos0 + n <= capacity.
  void check_range(int layer, std::int64_t pos0, int n) const;

  KVCacheShape shape_;
  SimdLevel simd_;
};

struct ModelFingerprint;

/// What some caches need beyond their name: the codebook file of `pq` / `pq-paper`, and the
/// model's fingerprint to check it against (may be null: no check).
struct KVCacheResources {
  std::string codebook_path;
  const ModelFingerprint* model = nullptr;
};

/// Builds a cache from its command-line spec "name[:key=value,...]": "f32", "f16" (dense);
/// "q8_0", "q4_0", "q4_0-hadamard", "kivi-4", "kivi-2", "pq", "pq-paper" (quantized: sinks,
/// coded tokens and an exact window, options window, batch, sinks, async; pq needs
/// resources.codebook_path). See kv_cache_names(). sinks defaults to 0, except for pq with a
/// normalised codebook (k-norm or v-norm not none, the pq-norm variant): kPqNormDefaultSinks.
/// Unknown names or options throw InvalidArgumentError listing the known ones. Refuses
/// (ResourceError) a cache whose storage for `shape.capacity` tokens would not fit in memory.
std::unique_ptr<KVCache> make_kv_cache(const std::string& spec, const KVCacheShape& shape,
                                       const KVCacheResources& resources = {});
/// Keys and values in different formats (--kv-k, --kv-v); the same spec twice is the above.
std::unique_ptr<KVCache> make_kv_cache(const std::string& k_spec, const std::string& v_spec, const KVCacheShape& shape,
                                       const KVCacheResources& resources = {});

/// Exact first positions of a pq cache whose codebook normalises K or V, unless `sinks` is given.
inline constexpr int kPqNormDefaultSinks = 4;

/// The names make_kv_cache accepts, for --help texts.
std::string kv_cache_names();

}  // namespace million
