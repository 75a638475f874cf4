// QuantizedKVCache: sinks + coded + window bookkeeping, background encoding, and the attention
// driver over the three parts (see quantized_cache.h). The driver works per (query, kv head):
// one PreparedQueries per group of query heads (GQA: the group reads its kv head's codes once),
// scores for sinks / coded / window tokens into one row per head, softmax in place, then the
// weighted values: exact rows directly, coded ones through the value store's accumulator.
#include "model/kv/quantized_cache.h"

#include <fmt/format.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "kernels/dense_attention.h"
#include "million/error.h"

namespace million {

// ---- background worker ---------------------------------------------------------------------

EncodeWorker::EncodeWorker() : thread_([this] { run(); }) {}

EncodeWorker::~EncodeWorker() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void EncodeWorker::submit(std::function<void()> job) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    jobs_.push_back(std::move(job));
  }
  cv_.notify_all();
}

void EncodeWorker::wait_all() {
  std::unique_lock<std::mutex> lock(mutex_);
  idle_cv_.wait(lock, [this] { return jobs_.empty() && !busy_; });
}

void EncodeWorker::run() {
  omp_set_num_threads(1);  // the main thread's kernels own the cores' OpenMP teams
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    cv_.wait(lock, [this] { return stop_ || !jobs_.empty(); });
    if (jobs_.empty()) return;  // stop requested and nothing left
    std::function<void()> job = std::move(jobs_.front());
    jobs_.pop_front();
    busy_ = true;
    lock.unlock();
    job();  // jobs catch their own exceptions
    lock.lock();
    busy_ = false;
    idle_cv_.notify_all();
  }
}

// ---- cache ------------------------------------------------------------------------------------

QuantizedKVCache::QuantizedKVCache(const KVCacheShape& shape, const QuantizedCacheOptions& options, std::string name,
                                   std::vector<std::unique_ptr<KeyStore>> keys,
                                   std::vector<std::unique_ptr<ValueStore>> values)
    : KVCache(shape), opt_(options), name_(std::move(name)) {
  if (opt_.window < 0 || opt_.batch < 1 || opt_.sinks < 0) {
    throw InvalidArgumentError(fmt::format("{}: window, batch and sinks must be >= 0, >= 1, >= 0", name_));
  }
  if (shape.sliding_window > 0) {
    throw UnsupportedError(fmt::format("the {} cache does not support sliding-window attention models", name_));
  }
  MILLION_ASSERT(keys.size() == static_cast<std::size_t>(shape.n_layers) && values.size() == keys.size());
  layers_.resize(static_cast<std::size_t>(shape.n_layers));
  for (std::size_t l = 0; l < layers_.size(); ++l) {
    layers_[l].keys = std::move(keys[l]);
    layers_[l].values = std::move(values[l]);
    layers_[l].exact_begin = opt_.sinks;
  }
  // The batch must be a whole number of the stores' blocks (KIVI groups keys by tokens).
  const int blk = token_block();
  opt_.batch = (opt_.batch + blk - 1) / blk * blk;
  if (opt_.async && opt_.window > 0) worker_ = std::make_unique<EncodeWorker>();
}

QuantizedKVCache::~QuantizedKVCache() {
  if (worker_) worker_->wait_all();
}

int QuantizedKVCache::token_block() const {
  const int kb = layers_[0].keys->block_tokens(), vb = layers_[0].values->block_tokens();
  return std::lcm(kb, vb);
}

void QuantizedKVCache::wait_layer(int layer) {
  std::unique_lock<std::mutex> lock(pending_mutex_);
  pending_cv_.wait(lock, [&] { return !layers_[static_cast<std::size_t>(layer)].pending; });
}

std::int64_t QuantizedKVCache::coded_tokens(int layer) {
  wait_layer(layer);
  return layers_[static_cast<std::size_t>(layer)].keys->size();
}

void QuantizedKVCache::encode_oldest(Layer& L, std::int64_t n) {
  const std::size_t count = static_cast<std::size_t>(n * row());
  L.keys->append(L.exact_k.data(), static_cast<int>(n));
  L.values->append(L.exact_v.data(), static_cast<int>(n));
  L.exact_k.erase(L.exact_k.begin(), L.exact_k.begin() + static_cast<std::ptrdiff_t>(count));
  L.exact_v.erase(L.exact_v.begin(), L.exact_v.begin() + static_cast<std::ptrdiff_t>(count));
  L.exact_begin += n;
}

void QuantizedKVCache::append(int layer, std::int64_t pos0, int n, const float* k, const float* v) {
  check_range(layer, pos0, n);
  wait_layer(layer);
  Layer& L = layers_[static_cast<std::size_t>(layer)];
  if (pos0 != L.appended) {
    throw InvalidArgumentError(
        fmt::format("KV cache: layer {} holds {} tokens, cannot append at position {}", layer, L.appended, pos0));
  }
  const std::int64_t r = row();
  for (int t = 0; t < n; ++t) {
    const std::int64_t pos = pos0 + t;
    const float* kt = k + t * r;
    const float* vt = v + t * r;
    if (pos < opt_.sinks) {
      L.sink_k.insert(L.sink_k.end(), kt, kt + r);
      L.sink_v.insert(L.sink_v.end(), vt, vt + r);
    } else {
      L.exact_k.insert(L.exact_k.end(), kt, kt + r);
      L.exact_v.insert(L.exact_v.end(), vt, vt + r);
    }
  }
  L.appended = pos0 + n;
  if (opt_.window == 0) {  // stress mode: everything is read back from its coded form
    const std::int64_t exact = static_cast<std::int64_t>(L.exact_k.size()) / r;
    const std::int64_t whole = exact / token_block() * token_block();
    if (whole > 0) encode_oldest(L, whole);
  }
}

void QuantizedKVCache::commit(std::int64_t n_tokens) {
  n_tokens_ = n_tokens;
  if (opt_.window == 0) return;
  const std::int64_t r = row();
  for (std::size_t l = 0; l < layers_.size(); ++l) {
    Layer& L = layers_[l];
    const std::int64_t exact = static_cast<std::int64_t>(L.exact_k.size()) / r;
    const std::int64_t excess = exact - opt_.window;
    if (excess < opt_.batch) continue;
    const std::int64_t n = excess / opt_.batch * opt_.batch;
    if (!worker_) {
      encode_oldest(L, n);
      continue;
    }
    // Hand the oldest n tokens to the worker in their own buffers: the main thread keeps
    // appending to the window meanwhile; attend(l) waits until they are coded.
    auto job_k = std::make_shared<std::vector<float>>(L.exact_k.begin(), L.exact_k.begin() + n * r);
    auto job_v = std::make_shared<std::vector<float>>(L.exact_v.begin(), L.exact_v.begin() + n * r);
    L.exact_k.erase(L.exact_k.begin(), L.exact_k.begin() + n * r);
    L.exact_v.erase(L.exact_v.begin(), L.exact_v.begin() + n * r);
    L.exact_begin += n;
    {
      std::lock_guard<std::mutex> lock(pending_mutex_);
      L.pending = true;
    }
    worker_->submit([this, &L, job_k, job_v, n] {
      L.keys->append(job_k->data(), static_cast<int>(n));
      L.values->append(job_v->data(), static_cast<int>(n));
      {
        std::lock_guard<std::mutex> lock(pending_mutex_);
        L.pending = false;
      }
      pending_cv_.notify_all();
    });
  }
}

void QuantizedKVCache::clear() {
  if (worker_) worker_->wait_all();
  for (Layer& L : layers_) {
    L.keys->clear();
    L.values->clear();
    L.sink_k.clear();
    L.sink_v.clear();
    L.exact_k.clear();
    L.exact_v.clear();
    L.exact_begin = opt_.sinks;
    L.appended = 0;
    L.pending = false;
  }
  n_tokens_ = 0;
}

double QuantizedKVCache::bytes_per_token() const {
  // Coded bytes per token plus the most exact f32 tokens the cache holds after a commit (sinks,
  // window and a batch short of one; in stress mode only a store block short of one) amortised
  // over the cache's capacity (the context it was sized for).
  const double elems = static_cast<double>(shape_.n_layers) * shape_.n_kv_heads * shape_.head_dim;
  const double coded = elems * (layers_[0].keys->bits_per_element() + layers_[0].values->bits_per_element()) / 8.0;
  const double held = opt_.sinks + (opt_.window > 0 ? opt_.window + opt_.batch - 1 : token_block() - 1);
  const double exact_tokens = std::min<double>(static_cast<double>(shape_.capacity), held);
  return coded + exact_tokens * elems * 2.0 * 4.0 / static_cast<double>(shape_.capacity);
}

std::int64_t QuantizedKVCache::bytes_allocated() const {
  return static_cast<std::int64_t>(bytes_per_token() * static_cast<double>(shape_.capacity));
}

void QuantizedKVCache::attend(int layer, std::int64_t pos0, int n, const float* q, float* out) {
  check_range(layer, pos0, n);
  wait_layer(layer);
  const Layer& L = layers_[static_cast<std::size_t>(layer)];
  if (pos0 + n > L.appended) throw InvalidArgumentError("KV cache: attend before append");
  const int d = shape_.head_dim, G = shape_.n_heads / shape_.n_kv_heads, H = shape_.n_kv_heads;
  const std::int64_t r = row();
  const std::int64_t sinks_held = static_cast<std::int64_t>(L.sink_k.size()) / r;
  const std::int64_t coded = L.keys->size();
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
  const SimdLevel level = simd_;
  const std::int64_t n_items = static_cast<std::int64_t>(n) * H;

#pragma omp parallel for schedule(dynamic, 1)
  for (std::int64_t item = 0; item < n_items; ++item) {
    const int i = static_cast<int>(item / H), g = static_cast<int>(item % H);
    const std::int64_t p = pos0 + i;
    const std::int64_t n_sink = std::min(sinks_held, p + 1);
    const std::int64_t n_coded = std::clamp<std::int64_t>(p + 1 - opt_.sinks, 0, coded);
    const std::int64_t n_win = std::max<std::int64_t>(0, std::min(L.appended, p + 1) - L.exact_begin);
    const std::int64_t T = n_sink + n_coded + n_win;
    const float* qg = q + (static_cast<std::int64_t>(i) * shape_.n_heads + static_cast<std::int64_t>(g) * G) * d;
    float* og = out + (static_cast<std::int64_t>(i) * shape_.n_heads + static_cast<std::int64_t>(g) * G) * d;
    std::vector<float> s(static_cast<std::size_t>(G * T));  // [G, T]: sinks | coded | window

    auto exact_dot = [&](const float* rows, std::int64_t t, int j) {
      const float* kt = rows + t * r + static_cast<std::int64_t>(g) * d;
      const float* qj = qg + static_cast<std::int64_t>(j) * d;
      float acc = 0.0f;
      for (int c = 0; c < d; ++c) acc += qj[c] * kt[c];
      return acc;
    };
    for (int j = 0; j < G; ++j) {
      for (std::int64_t t = 0; t < n_sink; ++t) s[static_cast<std::size_t>(j * T + t)] = exact_dot(L.sink_k.data(), t, j);
      for (std::int64_t t = 0; t < n_win; ++t) {
        s[static_cast<std::size_t>(j * T + n_sink + n_coded + t)] = exact_dot(L.exact_k.data(), t, j);
      }
    }
    if (n_coded > 0) {
      auto prep = L.keys->prepare(g, qg, G, level);
      L.keys->scores(g, *prep, 0, n_coded, s.data() + n_sink, T, level);
    }
    std::vector<float> sums(static_cast<std::size_t>(G));
    for (int j = 0; j < G; ++j) {
      float* sj = s.data() + static_cast<std::size_t>(j) * T;
      float m = -std::numeric_limits<float>::infinity();
      for (std::int64_t t = 0; t < T; ++t) m = std::max(m, sj[t] *= scale);
      float sum = 0.0f;
      for (std::int64_t t = 0; t < T; ++t) sum += (sj[t] = std::exp(sj[t] - m));
      sums[static_cast<std::size_t>(j)] = sum;
    }
    std::fill(og, og + static_cast<std::int64_t>(G) * d, 0.0f);
    if (n_coded > 0) {
      std::vector<float> acc(static_cast<std::size_t>(L.values->accumulator_floats(G)), 0.0f);
      L.values->accumulate(g, s.data() + n_sink, T, G, 0, n_coded, acc.data(), level);
      L.values->finish(g, acc.data(), G, og, level);
    }
    for (int j = 0; j < G; ++j) {
      float* oj = og + static_cast<std::int64_t>(j) * d;
      const float* sj = s.data() + static_cast<std::size_t>(j) * T;
      auto add_rows = [&](const float* rows, std::int64_t count, std::int64_t s_off) {
        for (std::int64_t t = 0; t < count; ++t) {
          const float w = sj[s_off + t];
          const float* vt = rows + t * r + static_cast<std::int64_t>(g) * d;
          for (int c = 0; c < d; ++c) oj[c] += w * vt[c];
        }
      };
      add_rows(L.sink_v.data(), n_sink, 0);
      add_rows(L.exact_v.data(), n_win, n_sink + n_coded);
      const float inv = 1.0f / sums[static_cast<std::size_t>(j)];
      for (int c = 0; c < d; ++c) oj[c] *= inv;
    }
  }
}

void QuantizedKVCache::attend_reference(int layer, std::int64_t pos0, int n, const float* q, float* out) {
  check_range(layer, pos0, n);
  wait_layer(layer);
  const Layer& L = layers_[static_cast<std::size_t>(layer)];
  const int d = shape_.head_dim, H = shape_.n_kv_heads;
  const std::int64_t r = row(), total = L.appended;
  const std::int64_t sinks_held = static_cast<std::int64_t>(L.sink_k.size()) / r;
  const std::int64_t coded = L.keys->size();
  // Assemble [H, total, d] f32 K and V: sinks, decoded codes, window; then dense attention.
  std::vector<float> K(static_cast<std::size_t>(H * total * d)), V(K.size()), dec(static_cast<std::size_t>(coded * d));
  for (int h = 0; h < H; ++h) {
    float* kh = K.data() + static_cast<std::int64_t>(h) * total * d;
    float* vh = V.data() + static_cast<std::int64_t>(h) * total * d;
    for (std::int64_t t = 0; t < sinks_held; ++t) {
      std::copy_n(L.sink_k.data() + t * r + h * d, d, kh + t * d);
      std::copy_n(L.sink_v.data() + t * r + h * d, d, vh + t * d);
    }
    if (coded > 0) {
      L.keys->decode(h, 0, coded, dec.data());
      std::copy(dec.begin(), dec.end(), kh + opt_.sinks * d);
      L.values->decode(h, 0, coded, dec.data());
      std::copy(dec.begin(), dec.end(), vh + opt_.sinks * d);
    }
    for (std::int64_t t = L.exact_begin; t < total; ++t) {
      std::copy_n(L.exact_k.data() + (t - L.exact_begin) * r + h * d, d, kh + t * d);
      std::copy_n(L.exact_v.data() + (t - L.exact_begin) * r + h * d, d, vh + t * d);
    }
  }
  DenseAttentionArgs a;
  a.n_queries = n;
  a.pos0 = pos0;
  a.n_heads = shape_.n_heads;
  a.n_kv_heads = H;
  a.head_dim = d;
  a.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)));
  a.q = q;
  a.k = K.data();
  a.v = V.data();
  a.kv_head_stride = total * d;
  a.out = out;
  dense_attention_ref(a);
}

}  // namespace million
