// KVCache base-class helpers and the cache factory.
#include "model/kv/kv_cache.h"

#include <fmt/format.h>

#include "core/memory.h"
#include "million/error.h"
#include "model/kv/dense_cache.h"

namespace million {

std::string KVCacheShape::describe() const {
  return fmt::format("{} layers x {} kv heads x head_dim {}, capacity {} tokens", n_layers, n_kv_heads, head_dim,
                     capacity);
}

KVCache::KVCache(const KVCacheShape& shape) : shape_(shape), simd_(active_simd_level()) {
  if (shape.n_layers <= 0 || shape.n_kv_heads <= 0 || shape.head_dim <= 0 || shape.capacity <= 0 ||
      shape.n_heads <= 0 || shape.n_heads % shape.n_kv_heads != 0) {
    throw InvalidArgumentError("KV cache: invalid shape " + shape.describe());
  }
}

double KVCache::bits_per_element() const {
  return bytes_per_token() * 8.0 / (2.0 * shape_.n_layers * shape_.n_kv_heads * shape_.head_dim);
}

void KVCache::check_range(int layer, std::int64_t pos0, int n) const {
  if (layer < 0 || layer >= shape_.n_layers) throw InvalidArgumentError(fmt::format("KV cache: layer {} out of range", layer));
  if (n <= 0 || pos0 < 0) throw InvalidArgumentError(fmt::format("KV cache: bad token range {} + {}", pos0, n));
  if (pos0 + n > shape_.capacity) {
    throw ContextLimitError(fmt::format("KV cache: positions up to {} exceed its capacity of {} tokens (--ctx)",
                                        pos0 + n, shape_.capacity));
  }
}

std::string kv_cache_names() { return "f32, f16"; }

std::unique_ptr<KVCache> make_kv_cache(const std::string& spec, const KVCacheShape& shape) {
  KVDType dtype;
  if (spec == "f32") {
    dtype = KVDType::kF32;
  } else if (spec == "f16") {
    dtype = KVDType::kF16;
  } else {
    throw InvalidArgumentError(fmt::format("unknown KV cache '{}' (known: {})", spec, kv_cache_names()));
  }
  require_memory(DenseKVCache::storage_bytes(shape, dtype), fmt::format("the {} KV cache ({})", spec, shape.describe()));
  return std::make_unique<DenseKVCache>(shape, dtype);
}

}  // namespace million
