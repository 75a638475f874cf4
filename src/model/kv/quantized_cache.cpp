// QuantizedKVCache: sinks + coded + window bookkeeping, background encoding, and the attention
// driver over the three parts (see quantized_cache.h). The driver is flash-decoding shaped:
// one PreparedQueries per (query, kv head) (GQA: the group of query heads reads its kv head's
// codes once), work items = (query, kv head, split of the coded range) so one long sequence
// keeps every core busy, each item folds tiles of kTileTokens scores into an online softmax
// and the weighted values, and the splits are merged with log-sum-exp weights at the end.
#include "model/kv/quantized_cache.h"

#include <fmt/format.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "backends/cpu/attn_tile_kernels.h"
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

double QuantizedKVCache::coded_bits_per_element() const {
  return (layers_[0].keys->bits_per_element() + layers_[0].values->bits_per_element()) / 2.0;
}

std::int64_t QuantizedKVCache::bytes_allocated() const {
  return static_cast<std::int64_t>(bytes_per_token() * static_cast<double>(shape_.capacity));
}

namespace {

constexpr std::int64_t kTileTokens = 1024;     // coded tokens per softmax tile: codes 64 KiB at M = 64, scores 4G KiB
constexpr std::int64_t kMinSplitTokens = 1024;  // no sequence split shorter than this

// Online-softmax state of the G heads of one work item (flash-decoding): running max and sum
// per head, and two unnormalised accumulators: coded tokens in the value store's space (PQ:
// rotated), exact sink/window tokens in the model's space.
struct ItemState {
  std::vector<float> max, sum, coded, exact;
  void reset(int G, std::int64_t coded_floats, int d) {
    max.assign(static_cast<std::size_t>(G), -std::numeric_limits<float>::infinity());
    sum.assign(static_cast<std::size_t>(G), 0.0f);
    coded.assign(static_cast<std::size_t>(coded_floats), 0.0f);
    exact.assign(static_cast<std::size_t>(G) * d, 0.0f);
  }
};

}  // namespace

const std::vector<float>& QuantizedKVCache::window_rows(const Layer& L, bool keys, std::vector<float>& scratch) const {
  const std::vector<float>& rows = keys ? L.exact_k : L.exact_v;
  if (opt_.window > 0 || rows.empty()) return rows;
  // Stress mode with stores that encode whole blocks (KIVI key groups, channel-group PQ): the
  // partial block is read as the store would give it back if it were encoded now, its group
  // statistics taken from the tokens it has so far (within one forward chunk that includes the
  // chunk's later tokens, as a complete group's statistics include all of its tokens).
  scratch.resize(rows.size());
  const int n = static_cast<int>(static_cast<std::int64_t>(rows.size()) / row());
  if (keys) {
    L.keys->roundtrip(rows.data(), n, scratch.data());
  } else {
    L.values->roundtrip(rows.data(), n, scratch.data());
  }
  return scratch;
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
  const AttnTileKernels& tk = attn_tile_kernels(level);
  const std::int64_t acc_floats = L.values->accumulator_floats(G);
  std::vector<float> prov_k, prov_v;
  const std::vector<float>& win_k = window_rows(L, true, prov_k);
  const std::vector<float>& win_v = window_rows(L, false, prov_v);

  // Query i sees n_sink sink tokens, coded tokens [0, n_coded) and window tokens [0, n_win).
  auto coded_seen = [&](int i) { return std::clamp<std::int64_t>(pos0 + i + 1 - opt_.sinks, 0, coded); };
  // Several queries (a prefill chunk) with stores that can decode tiles in their own space:
  // each coded tile is decoded once for all queries ("batched"), instead of every query
  // decoding it again inside the stores' kernels (the single-query decode path).
  const bool batched = n > 1 && L.keys->decodes_in_score_space() && L.values->decodes_in_accumulator_space() &&
                       acc_floats == static_cast<std::int64_t>(G) * d;
  // Work items: (query, kv head, split of the coded range); split 0 also takes the exact tokens.
  // Splits only when there are fewer (query, kv head) pairs than threads want. Batched: items
  // are (kv head, split), each running every query over its tiles.
  const std::int64_t pairs = static_cast<std::int64_t>(n) * H;
  const int threads = omp_get_max_threads();
  const std::int64_t coded_tiles = (coded_seen(n - 1) + kTileTokens - 1) / kTileTokens;
  std::int64_t n_splits;
  if (batched) {
    n_splits = std::clamp<std::int64_t>((2 * threads + H - 1) / H, 1, std::max<std::int64_t>(1, coded_tiles));
  } else {
    n_splits = std::max<std::int64_t>(1, (4 * threads + pairs - 1) / pairs);
    n_splits = std::min(n_splits, std::max<std::int64_t>(1, coded_seen(0) / kMinSplitTokens));
  }
  const std::int64_t n_items = batched ? H * n_splits : pairs * n_splits;

  std::vector<std::unique_ptr<PreparedQueries>> prepared(static_cast<std::size_t>(pairs));
  std::vector<ItemState> states(static_cast<std::size_t>(pairs * n_splits));

#pragma omp parallel
  {
#pragma omp for schedule(static)
    for (std::int64_t pair = 0; pair < pairs; ++pair) {
      const int i = static_cast<int>(pair / H), g = static_cast<int>(pair % H);
      if (coded_seen(i) == 0) continue;
      prepared[static_cast<std::size_t>(pair)] =
          L.keys->prepare(g, q + (static_cast<std::int64_t>(i) * shape_.n_heads + static_cast<std::int64_t>(g) * G) * d,
                          G, level);
    }

    std::vector<float> s(static_cast<std::size_t>(G) * kTileTokens);
    std::vector<float> tile_k, tile_v;  // batched: one decoded tile [kTileTokens, d] of K and V

    // One tile of nt scores per head in s[j * ld]: fold into the running softmax state, then
    // weight the tile's values (`accumulate` gets the probabilities).
    auto fold = [&](ItemState& st, std::int64_t nt, std::int64_t ld, auto&& accumulate) {
      for (int j = 0; j < G; ++j) {
        float* sj = s.data() + j * ld;
        for (std::int64_t t = 0; t < nt; ++t) sj[t] *= scale;
        const float m_new = std::max(st.max[static_cast<std::size_t>(j)], tk.max(sj, nt));
        const float m_old = st.max[static_cast<std::size_t>(j)];
        if (m_new > m_old && st.sum[static_cast<std::size_t>(j)] > 0.0f) {
          const float w = std::exp(m_old - m_new);
          st.sum[static_cast<std::size_t>(j)] *= w;
          const std::int64_t per_head = acc_floats / G;
          for (std::int64_t c = 0; c < per_head; ++c) st.coded[static_cast<std::size_t>(j * per_head + c)] *= w;
          for (int c = 0; c < d; ++c) st.exact[static_cast<std::size_t>(j * d + c)] *= w;
        }
        st.max[static_cast<std::size_t>(j)] = m_new;
        st.sum[static_cast<std::size_t>(j)] += tk.exp_sum(sj, nt, m_new);
      }
      accumulate();
    };
    // Sinks and window (exact f32 rows, or their stress-mode roundtrip) for query i, head g.
    auto exact_part = [&](ItemState& st, int i, int g) {
      const std::int64_t p = pos0 + i;
      const float* qg = q + (static_cast<std::int64_t>(i) * shape_.n_heads + static_cast<std::int64_t>(g) * G) * d;
      const std::int64_t n_sink = std::min(sinks_held, p + 1);
      const std::int64_t n_win = std::max<std::int64_t>(0, std::min(L.appended, p + 1) - L.exact_begin);
      auto exact_rows = [&](const std::vector<float>& keys, const std::vector<float>& values, std::int64_t count) {
        for (std::int64_t t0 = 0; t0 < count; t0 += kTileTokens) {
          const int nt = static_cast<int>(std::min(kTileTokens, count - t0));
          const float* kr = keys.data() + t0 * r + static_cast<std::int64_t>(g) * d;
          const float* vr = values.data() + t0 * r + static_cast<std::int64_t>(g) * d;
          tk.dot_rows_f32(qg, G, d, kr, r, nt, s.data(), nt);
          fold(st, nt, nt, [&] { tk.axpy_rows_f32(s.data(), nt, G, d, vr, r, nt, st.exact.data()); });
        }
      };
      exact_rows(L.sink_k, L.sink_v, n_sink);
      exact_rows(win_k, win_v, n_win);
    };

    if (batched) {
#pragma omp for schedule(dynamic, 1)
      for (std::int64_t item = 0; item < n_items; ++item) {
        const int g = static_cast<int>(item / n_splits);
        const std::int64_t split = item % n_splits;
        for (int i = 0; i < n; ++i) {
          ItemState& st = states[static_cast<std::size_t>((static_cast<std::int64_t>(i) * H + g) * n_splits + split)];
          st.reset(G, acc_floats, d);
          if (split == 0) exact_part(st, i, g);
        }
        const std::int64_t c_max = coded_seen(n - 1);
        const std::int64_t c0 = std::min(c_max, coded_tiles * split / n_splits * kTileTokens);
        const std::int64_t c1 = std::min(c_max, coded_tiles * (split + 1) / n_splits * kTileTokens);
        tile_k.resize(static_cast<std::size_t>(kTileTokens * d));
        tile_v.resize(tile_k.size());
        for (std::int64_t t0 = c0; t0 < c1; t0 += kTileTokens) {
          const std::int64_t t1 = std::min(c1, t0 + kTileTokens);
          L.keys->decode_score_space(g, t0, t1, tile_k.data());
          L.values->decode_accumulator_space(g, t0, t1, tile_v.data());
          for (int i = 0; i < n; ++i) {
            const std::int64_t nt = std::min(t1, coded_seen(i)) - t0;
            if (nt <= 0) continue;
            const std::int64_t pair = static_cast<std::int64_t>(i) * H + g;
            ItemState& st = states[static_cast<std::size_t>(pair * n_splits + split)];
            const float* qv = L.keys->prepared_vectors(*prepared[static_cast<std::size_t>(pair)]);
            const int nti = static_cast<int>(nt);
            tk.dot_rows_f32(qv, G, d, tile_k.data(), d, nti, s.data(), nti);
            fold(st, nt, nt, [&] { tk.axpy_rows_f32(s.data(), nti, G, d, tile_v.data(), d, nti, st.coded.data()); });
          }
        }
      }
    } else {
#pragma omp for schedule(dynamic, 1)
      for (std::int64_t item = 0; item < n_items; ++item) {
        const std::int64_t pair = item / n_splits, split = item % n_splits;
        const int i = static_cast<int>(pair / H), g = static_cast<int>(pair % H);
        ItemState& st = states[static_cast<std::size_t>(item)];
        st.reset(G, acc_floats, d);
        if (split == 0) exact_part(st, i, g);
        const std::int64_t n_coded = coded_seen(i);
        if (n_coded > 0) {
          // Split boundaries on whole tiles so stores see aligned ranges.
          const std::int64_t tiles = (n_coded + kTileTokens - 1) / kTileTokens;
          const std::int64_t c0 = std::min(n_coded, tiles * split / n_splits * kTileTokens);
          const std::int64_t c1 = std::min(n_coded, tiles * (split + 1) / n_splits * kTileTokens);
          const PreparedQueries& prep = *prepared[static_cast<std::size_t>(pair)];
          for (std::int64_t t0 = c0; t0 < c1; t0 += kTileTokens) {
            const std::int64_t t1 = std::min(c1, t0 + kTileTokens), nt = t1 - t0;
            L.keys->scores(g, prep, t0, t1, s.data(), nt, level);
            fold(st, nt, nt, [&] { L.values->accumulate(g, s.data(), nt, G, t0, t1, st.coded.data(), level); });
          }
        }
      }
    }

    // Merge the splits of each (query, kv head): weights e^{max_s - max} for every split's sums
    // and accumulators; the coded accumulator goes through the value store's finish() once.
#pragma omp for schedule(static)
    for (std::int64_t pair = 0; pair < pairs; ++pair) {
      const int i = static_cast<int>(pair / H), g = static_cast<int>(pair % H);
      float* og = out + (static_cast<std::int64_t>(i) * shape_.n_heads + static_cast<std::int64_t>(g) * G) * d;
      const ItemState* parts = states.data() + pair * n_splits;
      std::vector<float> coded_acc(static_cast<std::size_t>(acc_floats), 0.0f), total(static_cast<std::size_t>(G), 0.0f);
      std::fill(og, og + static_cast<std::int64_t>(G) * d, 0.0f);
      const std::int64_t per_head = acc_floats / G;
      for (int j = 0; j < G; ++j) {
        float m = -std::numeric_limits<float>::infinity();
        for (std::int64_t sp = 0; sp < n_splits; ++sp) m = std::max(m, parts[sp].max[static_cast<std::size_t>(j)]);
        for (std::int64_t sp = 0; sp < n_splits; ++sp) {
          const ItemState& st = parts[sp];
          if (st.sum[static_cast<std::size_t>(j)] == 0.0f) continue;
          const float w = std::exp(st.max[static_cast<std::size_t>(j)] - m);
          total[static_cast<std::size_t>(j)] += w * st.sum[static_cast<std::size_t>(j)];
          for (std::int64_t c = 0; c < per_head; ++c) {
            coded_acc[static_cast<std::size_t>(j * per_head + c)] += w * st.coded[static_cast<std::size_t>(j * per_head + c)];
          }
          for (int c = 0; c < d; ++c) og[j * d + c] += w * st.exact[static_cast<std::size_t>(j * d + c)];
        }
      }
      if (coded_seen(i) > 0) L.values->finish(g, coded_acc.data(), G, og, level);
      for (int j = 0; j < G; ++j) {
        const float inv = 1.0f / total[static_cast<std::size_t>(j)];
        for (int c = 0; c < d; ++c) og[j * d + c] *= inv;
      }
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
  std::vector<float> prov_k, prov_v;
  const std::vector<float>& win_k = window_rows(L, true, prov_k);
  const std::vector<float>& win_v = window_rows(L, false, prov_v);
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
      std::copy_n(win_k.data() + (t - L.exact_begin) * r + h * d, d, kh + t * d);
      std::copy_n(win_v.data() + (t - L.exact_begin) * r + h * d, d, vh + t * d);
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
