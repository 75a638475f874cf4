// KVCache base-class helpers and the cache factory.
#include "model/kv/kv_cache.h"

#include <fmt/format.h>

#include <charconv>
#include <map>
#include <sstream>
#include <type_traits>

#include "core/memory.h"
#include "million/error.h"
#include "model/kv/dense_cache.h"
#include "model/kv/pq_store.h"
#include "pq/codebook_file.h"

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

std::string kv_cache_names() {
  return "f32, f16, pq[:window=128,batch=32,sinks=0,async=1] (needs --codebook), pq-paper (needs a shared --codebook)";
}

namespace {

// "name:key=value,..." -> name and options; values are integers.
std::pair<std::string, std::map<std::string, long long>> parse_spec(const std::string& spec) {
  const std::size_t colon = spec.find(':');
  std::pair<std::string, std::map<std::string, long long>> out{spec.substr(0, colon), {}};
  if (colon == std::string::npos) return out;
  std::stringstream ss(spec.substr(colon + 1));
  std::string item;
  while (std::getline(ss, item, ',')) {
    const std::size_t eq = item.find('=');
    long long value = 0;
    if (eq == std::string::npos || item.size() == eq + 1) {
      throw InvalidArgumentError(fmt::format("KV cache option '{}' in '{}' is not key=value", item, spec));
    }
    const std::string v = item.substr(eq + 1);
    auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), value);
    if (ec != std::errc() || p != v.data() + v.size()) {
      throw InvalidArgumentError(fmt::format("KV cache option '{}' in '{}' needs an integer", item, spec));
    }
    out.second[item.substr(0, eq)] = value;
  }
  return out;
}

std::unique_ptr<KVCache> make_pq(const std::string& name, std::map<std::string, long long> opts,
                                 const KVCacheShape& shape, const KVCacheResources& res) {
  if (res.codebook_path.empty()) {
    throw InvalidArgumentError(fmt::format("--kv {} needs --codebook FILE (make one with `million calibrate`)", name));
  }
  auto set = std::make_shared<const CodebookSet>(load_codebooks(res.codebook_path));
  if (res.model != nullptr) check_codebooks_match(*set, *res.model, res.codebook_path);
  const bool paper = name == "pq-paper";
  if (paper && set->granularity != Granularity::kShared) {
    throw InvalidArgumentError(fmt::format("--kv pq-paper needs a codebook calibrated with --granularity shared, but "
                                           "{} is {}",
                                           res.codebook_path, granularity_name(set->granularity)));
  }
  QuantizedCacheOptions o;
  o.window = 128;
  o.batch = paper ? 128 : 32;
  auto take = [&](const char* key, auto& field) {
    if (auto it = opts.find(key); it != opts.end()) {
      if (it->second < 0 || it->second > (1LL << 30)) {
        throw InvalidArgumentError(fmt::format("KV cache option {}={} is out of range", key, it->second));
      }
      field = static_cast<std::remove_reference_t<decltype(field)>>(it->second);
      opts.erase(it);
    }
  };
  take("window", o.window);
  take("batch", o.batch);
  take("sinks", o.sinks);
  take("async", o.async);
  if (!opts.empty()) {
    throw InvalidArgumentError(fmt::format("unknown option '{}' for --kv {} (known: window, batch, sinks, async)",
                                           opts.begin()->first, name));
  }
  if (o.batch < 1) throw InvalidArgumentError("KV cache option batch must be at least 1");
  auto cache = make_pq_cache(shape, set, o, name);
  require_memory(cache->bytes_allocated(), fmt::format("the {} KV cache ({})", name, shape.describe()));
  return cache;
}

}  // namespace

std::unique_ptr<KVCache> make_kv_cache(const std::string& spec, const KVCacheShape& shape,
                                       const KVCacheResources& resources) {
  auto [name, opts] = parse_spec(spec);
  if (name == "pq" || name == "pq-paper") return make_pq(name, opts, shape, resources);
  KVDType dtype;
  if (name == "f32") {
    dtype = KVDType::kF32;
  } else if (name == "f16") {
    dtype = KVDType::kF16;
  } else {
    throw InvalidArgumentError(fmt::format("unknown KV cache '{}' (known: {})", spec, kv_cache_names()));
  }
  if (!opts.empty()) throw InvalidArgumentError(fmt::format("the {} cache takes no options ('{}')", name, spec));
  require_memory(DenseKVCache::storage_bytes(shape, dtype), fmt::format("the {} KV cache ({})", spec, shape.describe()));
  return std::make_unique<DenseKVCache>(shape, dtype);
}

}  // namespace million
