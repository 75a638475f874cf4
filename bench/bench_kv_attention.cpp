// Decode attention for one layer (one query token, 32 query heads / 8 kv heads, head_dim 128 —
// the Llama-3-8B shape) over every KV cache variant at several context lengths and thread
// counts, beside this machine's memcpy bandwidth measured in the same run. Quantized caches run
// in stress mode (window 0) so every token is read from its compact form; PQ uses random
// codebooks (speed does not depend on the values). Prints a markdown table; not a test.
//   bench_kv_attention [--contexts 1024,4096,...] [--threads 1,2] [--reps N] [--variants a,b]
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "core/threads.h"
#include "model/kv/kv_cache.h"
#include "model/kv/pq_store.h"
#include "pq/rotation.h"

using namespace million;

namespace {

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) out.push_back(item);
  return out;
}

// pq-norm: Hadamard rotation, keys per channel-group of 128 tokens, values per-token norms.
std::shared_ptr<CodebookSet> random_codebooks(const KVCacheShape& s, PQConfig pc, bool norm) {
  auto set = std::make_shared<CodebookSet>();
  set->model = {"bench", s.n_layers, s.n_kv_heads, s.head_dim, 4096, 128256, 0};
  set->k_config = set->v_config = pc;
  if (norm) {
    set->rotation = RotationKind::kHadamard;
    set->k_norm = VectorNorm::kChannelGroup;
    set->v_norm = VectorNorm::kToken;
    set->norm_group = 128;
  }
  std::mt19937 rng(1);
  std::normal_distribution<float> dist;
  for (int i = 0; i < 2 * s.n_layers * s.n_kv_heads; ++i) {
    PQCodebook cb;
    cb.head_dim = s.head_dim;
    cb.M = pc.M;
    cb.nbits = pc.nbits;
    if (norm) {
      cb.rotation = RotationKind::kHadamard;
      cb.rotation_matrix = hadamard_rotation(s.head_dim, static_cast<std::uint64_t>(i));
      cb.norm = i % 2 == 0 ? VectorNorm::kChannelGroup : VectorNorm::kToken;
      cb.norm_group = i % 2 == 0 ? 128 : 0;
    }
    cb.centroids.resize(static_cast<std::size_t>(pc.M) * pc.ksub() * cb.dsub());
    for (auto& c : cb.centroids) c = dist(rng);
    set->entries.push_back(std::move(cb));
  }
  return set;
}

std::unique_ptr<KVCache> make(const std::string& variant, const KVCacheShape& s) {
  if (variant.rfind("pq-", 0) == 0) {  // pq-4bit, pq-2bit, pq-norm-4bit, pq-norm-2bit
    QuantizedCacheOptions o;
    o.window = 0;
    o.batch = 1;
    const bool norm = variant.rfind("pq-norm-", 0) == 0;
    const bool four = variant.find("4bit") != std::string::npos;
    return make_pq_cache(s, random_codebooks(s, {four ? 64 : 32, 8}, norm), o, variant);
  }
  if (variant == "f32" || variant == "f16") return make_kv_cache(variant, s);
  return make_kv_cache(variant + ":window=0", s);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::int64_t> contexts{1024, 4096, 16384, 32768};
  std::vector<int> threads{1, 2};
  std::vector<std::string> variants{"f32",    "f16",    "q8_0",           "q4_0",   "kivi-4",
                                    "kivi-2", "pq-4bit", "pq-2bit", "pq-norm-4bit", "pq-norm-2bit"};
  int reps = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i], v = argv[i + 1];
    if (a == "--contexts") {
      contexts.clear();
      for (const auto& c : split(v)) contexts.push_back(std::stoll(c));
    } else if (a == "--threads") {
      threads.clear();
      for (const auto& t : split(v)) threads.push_back(std::stoi(t));
    } else if (a == "--variants") {
      variants = split(v);
    } else if (a == "--reps") {
      reps = std::stoi(v);
    }
  }
  KVCacheShape shape;
  shape.n_layers = 1;
  shape.n_heads = 32;
  shape.n_kv_heads = 8;
  shape.head_dim = 128;
  const std::int64_t row = shape.n_kv_heads * shape.head_dim;

  // Baseline: memcpy of 256 MiB (bytes read + written per second).
  std::vector<char> src(256 << 20, 1), dst(256 << 20, 0);
  std::vector<double> ct;
  for (int r = 0; r < 5; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    std::memcpy(dst.data(), src.data(), src.size());
    ct.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  fmt::print("memcpy bandwidth (256 MiB, read + write): {:.1f} GB/s\n\n", 2.0 * src.size() / median(ct) / 1e9);
  fmt::print("| variant | bits/elem | context | threads | time (us) | K/V bytes read (MiB) | GB/s |\n");
  fmt::print("|---|---:|---:|---:|---:|---:|---:|\n");
  std::mt19937 rng(5);
  std::normal_distribution<float> dist;
  for (std::int64_t ctx : contexts) {
    shape.capacity = ctx;
    std::vector<float> k(static_cast<std::size_t>(4096 * row)), v(k.size());
    for (auto& x : k) x = dist(rng);
    for (auto& x : v) x = dist(rng);
    std::vector<float> q(static_cast<std::size_t>(shape.n_heads * shape.head_dim)), out(q.size());
    for (auto& x : q) x = dist(rng);
    for (const std::string& variant : variants) {
      std::unique_ptr<KVCache> cache = make(variant, shape);
      for (std::int64_t pos = 0; pos < ctx;) {
        const int n = static_cast<int>(std::min<std::int64_t>(4096, ctx - pos));
        cache->append(0, pos, n, k.data(), v.data());
        pos += n;
        cache->commit(pos);
      }
      const double bits = variant == "f32" ? 32 : variant == "f16" ? 16 : cache->bits_per_element();
      const double bytes = static_cast<double>(ctx) * row * 2 * bits / 8;
      for (int th : threads) {
        set_num_threads(th);
        std::vector<double> times;
        for (int r = 0; r < reps + 1; ++r) {
          auto t0 = std::chrono::steady_clock::now();
          cache->attend(0, ctx - 1, 1, q.data(), out.data());
          const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
          if (r > 0) times.push_back(t);
        }
        const double t = median(times);
        fmt::print("| {} | {:.2f} | {} | {} | {:.0f} | {:.1f} | {:.1f} |\n", variant, bits, ctx, th, t * 1e6,
                   bytes / (1 << 20), bytes / t / 1e9);
        std::fflush(stdout);
      }
    }
  }
  return 0;
}
