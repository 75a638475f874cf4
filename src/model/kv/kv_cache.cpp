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
#include "model/kv/block_quant_store.h"
#include "model/kv/dense_store.h"
#include "model/kv/kivi_store.h"
#include "model/kv/pq_store.h"
#include "model/kv/quantized_cache.h"
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
  return "f32, f16, q8_0, q4_0, q4_0-hadamard, kivi-4, kivi-2, pq (needs --codebook), pq-paper (needs a shared "
         "--codebook); options name:window=128,batch=32,sinks=0,async=1 for the quantized ones (pq with a "
         "normalised codebook: sinks=" + std::to_string(kPqNormDefaultSinks) + "), plus group=32 (kivi) and seed=0 "
         "(q4_0-hadamard)";
}

namespace {

using Options = std::map<std::string, long long>;

// "name:key=value,..." -> name and options; values are integers.
std::pair<std::string, Options> parse_spec(const std::string& spec) {
  const std::size_t colon = spec.find(':');
  std::pair<std::string, Options> out{spec.substr(0, colon), {}};
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
    if (ec != std::errc() || p != v.data() + v.size() || value < 0 || value > (1LL << 30)) {
      throw InvalidArgumentError(fmt::format("KV cache option '{}' in '{}' needs an integer in 0..2^30", item, spec));
    }
    out.second[item.substr(0, eq)] = value;
  }
  return out;
}

bool is_dense(const std::string& name) { return name == "f32" || name == "f16"; }
bool is_pq(const std::string& name) { return name == "pq" || name == "pq-paper"; }

void check_name(const std::string& name, const std::string& spec) {
  static const char* known[] = {"f32", "f16", "q8_0", "q4_0", "q4_0-hadamard", "kivi-4", "kivi-2", "pq", "pq-paper"};
  for (const char* k : known) {
    if (name == k) return;
  }
  throw InvalidArgumentError(fmt::format("unknown KV cache '{}' (known: {})", spec, kv_cache_names()));
}

// Takes `key` out of `opts` into `field` if present.
template <class T>
void take(Options& opts, const char* key, T& field) {
  if (auto it = opts.find(key); it != opts.end()) {
    field = static_cast<T>(it->second);
    opts.erase(it);
  }
}

// Builds the stores of one kind for every layer.
struct StoreBuilder {
  std::string name;
  Options opts;  // store options left after the cache's own (window, batch, sinks, async)
  std::shared_ptr<const CodebookSet> codebooks;
  long long group = 32, seed = 0;

  void finish_options(const std::string& spec) {
    if (name.rfind("kivi", 0) == 0) take(opts, "group", group);
    if (name == "q4_0-hadamard") take(opts, "seed", seed);
    if (!opts.empty()) throw InvalidArgumentError(fmt::format("unknown option '{}' in --kv '{}'", opts.begin()->first, spec));
  }
  int bits() const { return name == "kivi-2" ? 2 : 4; }

  std::unique_ptr<KeyStore> keys(const KVCacheShape& s, int layer) const {
    if (is_dense(name)) return make_dense_key_store(name == "f16", s.n_kv_heads, s.head_dim, s.capacity);
    if (name.rfind("kivi", 0) == 0) return make_kivi_key_store(bits(), static_cast<int>(group), s.n_kv_heads, s.head_dim, s.capacity);
    if (is_pq(name)) return std::make_unique<PQKeyStore>(codebooks, pq_books(s, layer, KVKind::kKey), s.capacity);
    return make_block_quant_key_store(name, s.n_kv_heads, s.head_dim, s.capacity, static_cast<std::uint64_t>(seed));
  }
  std::unique_ptr<ValueStore> values(const KVCacheShape& s, int layer) const {
    if (is_dense(name)) return make_dense_value_store(name == "f16", s.n_kv_heads, s.head_dim, s.capacity);
    if (name.rfind("kivi", 0) == 0) return make_kivi_value_store(bits(), static_cast<int>(group), s.n_kv_heads, s.head_dim, s.capacity);
    if (is_pq(name)) return std::make_unique<PQValueStore>(codebooks, pq_books(s, layer, KVKind::kValue), s.capacity);
    return make_block_quant_value_store(name, s.n_kv_heads, s.head_dim, s.capacity, static_cast<std::uint64_t>(seed));
  }
  std::vector<const PQCodebook*> pq_books(const KVCacheShape& s, int layer, KVKind kind) const {
    std::vector<const PQCodebook*> books;
    for (int h = 0; h < s.n_kv_heads; ++h) books.push_back(&codebooks->get(layer, h, kind));
    return books;
  }
};

// A normalised codebook (channel-group keys and/or token-norm values: the pq-norm variant)
// defaults the cache to exact sinks: a model's first tokens are attention sinks with outlying
// keys, and coded, the first one stretches the min/max of the whole first key group
// (docs/pq-research.md, "Attention sinks").
bool codebooks_normalised(const CodebookSet& set) {
  return set.k_norm != VectorNorm::kNone || set.v_norm != VectorNorm::kNone;
}

std::shared_ptr<const CodebookSet> load_pq_codebooks(const std::string& name, const KVCacheShape& shape,
                                                     const KVCacheResources& res) {
  if (res.codebook_path.empty()) {
    throw InvalidArgumentError(fmt::format("--kv {} needs --codebook FILE (make one with `million calibrate`)", name));
  }
  auto set = std::make_shared<const CodebookSet>(load_codebooks(res.codebook_path));
  if (res.model != nullptr) check_codebooks_match(*set, *res.model, res.codebook_path);
  const ModelFingerprint& m = set->model;
  if (m.n_layers != shape.n_layers || m.n_kv_heads != shape.n_kv_heads || m.head_dim != shape.head_dim) {
    throw FormatError(fmt::format("{} was made for {} layers x {} kv heads x head_dim {}, but the model has {} x {} x "
                                  "{}; re-run `million calibrate` for this model",
                                  res.codebook_path, m.n_layers, m.n_kv_heads, m.head_dim, shape.n_layers,
                                  shape.n_kv_heads, shape.head_dim));
  }
  if (name == "pq-paper" && set->granularity != Granularity::kShared) {
    throw InvalidArgumentError(fmt::format("--kv pq-paper needs a codebook calibrated with --granularity shared, but "
                                           "{} is {}",
                                           res.codebook_path, granularity_name(set->granularity)));
  }
  return set;
}

}  // namespace

std::unique_ptr<KVCache> make_kv_cache(const std::string& spec, const KVCacheShape& shape,
                                       const KVCacheResources& resources) {
  return make_kv_cache(spec, spec, shape, resources);
}

std::unique_ptr<KVCache> make_kv_cache(const std::string& k_spec, const std::string& v_spec, const KVCacheShape& shape,
                                       const KVCacheResources& resources) {
  auto [k_name, k_opts] = parse_spec(k_spec);
  auto [v_name, v_opts] = parse_spec(v_spec);
  check_name(k_name, k_spec);
  check_name(v_name, v_spec);
  if (k_name == v_name && is_dense(k_name) && k_opts.empty() && v_opts.empty()) {
    const KVDType dtype = k_name == "f32" ? KVDType::kF32 : KVDType::kF16;
    require_memory(DenseKVCache::storage_bytes(shape, dtype), fmt::format("the {} KV cache ({})", k_name, shape.describe()));
    return std::make_unique<DenseKVCache>(shape, dtype);
  }
  // Cache options may be given on either spec; given on both, they must agree.
  QuantizedCacheOptions o;
  const bool paper = k_name == "pq-paper" || v_name == "pq-paper";
  o.batch = paper ? 128 : 32;
  bool sinks_given = false;
  for (const char* key : {"window", "batch", "sinks", "async"}) {
    const auto ki = k_opts.find(key), vi = v_opts.find(key);
    if (std::string(key) == "sinks") sinks_given = ki != k_opts.end() || vi != v_opts.end();
    if (ki != k_opts.end() && vi != v_opts.end() && ki->second != vi->second && k_spec != v_spec) {
      throw InvalidArgumentError(fmt::format("--kv-k and --kv-v disagree on {} ({} vs {})", key, ki->second, vi->second));
    }
    Options& from = ki != k_opts.end() ? k_opts : v_opts;
    if (std::string(key) == "window") take(from, key, o.window);
    if (std::string(key) == "batch") take(from, key, o.batch);
    if (std::string(key) == "sinks") take(from, key, o.sinks);
    if (std::string(key) == "async") take(from, key, o.async);
    k_opts.erase(key);
    v_opts.erase(key);
  }
  if (o.batch < 1) throw InvalidArgumentError("KV cache option batch must be at least 1");
  StoreBuilder kb{k_name, k_opts, nullptr}, vb{v_name, v_opts, nullptr};
  kb.finish_options(k_spec);
  vb.finish_options(v_spec);
  if (is_pq(k_name) || is_pq(v_name)) {
    auto set = load_pq_codebooks(is_pq(k_name) ? k_name : v_name, shape, resources);
    kb.codebooks = vb.codebooks = set;
    if (!sinks_given && codebooks_normalised(*set)) o.sinks = kPqNormDefaultSinks;
  }
  std::vector<std::unique_ptr<KeyStore>> keys;
  std::vector<std::unique_ptr<ValueStore>> values;
  for (int l = 0; l < shape.n_layers; ++l) {
    keys.push_back(kb.keys(shape, l));
    values.push_back(vb.values(shape, l));
  }
  const std::string name = k_spec == v_spec ? k_spec : "k=" + k_spec + ",v=" + v_spec;
  auto cache = std::make_unique<QuantizedKVCache>(shape, o, name, std::move(keys), std::move(values));
  require_memory(cache->bytes_allocated(), fmt::format("the {} KV cache ({})", name, shape.describe()));
  return cache;
}

}  // namespace million
