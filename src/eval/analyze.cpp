// The analysis pipeline (see analyze.h): windows -> capture -> channel statistics -> errors of
// every cache variant's store on the sampled runs.
#include "eval/analyze.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cmath>

#include "million/error.h"
#include "million/log.h"
#include "model/kv/block_quant_store.h"
#include "model/kv/kivi_store.h"
#include "model/kv/pq_store.h"
#include "pq/windows.h"

namespace million {

std::vector<std::string> analyze_methods(bool with_pq) {
  std::vector<std::string> m{"q8_0", "q4_0", "q4_0-hadamard", "kivi-4", "kivi-2"};
  if (with_pq) m.push_back("pq");
  return m;
}

HeadSummary summarize_head(std::vector<ChannelStats>& channels, double outlier_factor) {
  HeadSummary s;
  if (channels.empty()) return s;
  s.layer = channels[0].layer;
  s.kv_head = channels[0].kv_head;
  s.kind = channels[0].kind;
  s.channels = static_cast<int>(channels.size());
  std::vector<double> absmax, stds, kurt;
  for (const ChannelStats& c : channels) {
    absmax.push_back(c.moments.absmax);
    stds.push_back(c.moments.stddev());
    kurt.push_back(c.moments.kurtosis());
  }
  const std::vector<bool> out = outlier_channels(absmax, outlier_factor);
  for (std::size_t c = 0; c < channels.size(); ++c) {
    channels[c].outlier = out[c];
    s.outliers += out[c] ? 1 : 0;
    s.offset_channels += std::fabs(channels[c].moments.mean) > channels[c].moments.stddev() ? 1 : 0;
    if (absmax[c] > s.absmax) {
      s.absmax = absmax[c];
      s.absmax_channel = static_cast<int>(c);
    }
  }
  s.median_absmax = median(absmax);
  s.median_std = median(stds);
  s.median_kurtosis = median(kurt);
  s.max_kurtosis = *std::max_element(kurt.begin(), kurt.end());
  return s;
}

namespace {

using clock_type = std::chrono::steady_clock;

// Appends every sampled run to a fresh store of the variant and accumulates the error of its
// decode() against the originals, over all kv heads. runs: [n_runs, kRunTokens, H, d].
template <class Store>
ErrorSum store_error(Store& store, const Reservoir& runs, int n_kv_heads, int head_dim) {
  const std::int64_t n = runs.size() * kRunTokens;
  MILLION_ASSERT(n <= INT_MAX);
  store.append(runs.data(), static_cast<int>(n));
  std::vector<float> orig(static_cast<std::size_t>(n * head_dim)), dec(orig.size());
  ErrorSum e;
  for (int h = 0; h < n_kv_heads; ++h) {
    for (std::int64_t t = 0; t < n; ++t) {
      const float* src = runs.data() + (t * n_kv_heads + h) * head_dim;
      std::copy(src, src + head_dim, orig.begin() + t * head_dim);
    }
    store.decode(h, 0, n, dec.data());
    e.add(orig.data(), dec.data(), n * head_dim);
  }
  return e;
}

std::unique_ptr<KeyStore> make_key_store(const std::string& method, int layer, const KVCacheShape& shape,
                                         std::int64_t capacity, const std::shared_ptr<const CodebookSet>& cbs) {
  if (method == "kivi-4" || method == "kivi-2") {
    return make_kivi_key_store(method == "kivi-4" ? 4 : 2, kKiviGroup, shape.n_kv_heads, shape.head_dim, capacity);
  }
  if (method == "pq") {
    std::vector<const PQCodebook*> books;
    for (int h = 0; h < shape.n_kv_heads; ++h) books.push_back(&cbs->get(layer, h, KVKind::kKey));
    return std::make_unique<PQKeyStore>(cbs, std::move(books), capacity);
  }
  return make_block_quant_key_store(method, shape.n_kv_heads, shape.head_dim, capacity, 0);
}

std::unique_ptr<ValueStore> make_value_store(const std::string& method, int layer, const KVCacheShape& shape,
                                             std::int64_t capacity, const std::shared_ptr<const CodebookSet>& cbs) {
  if (method == "kivi-4" || method == "kivi-2") {
    return make_kivi_value_store(method == "kivi-4" ? 4 : 2, kKiviGroup, shape.n_kv_heads, shape.head_dim, capacity);
  }
  if (method == "pq") {
    std::vector<const PQCodebook*> books;
    for (int h = 0; h < shape.n_kv_heads; ++h) books.push_back(&cbs->get(layer, h, KVKind::kValue));
    return std::make_unique<PQValueStore>(cbs, std::move(books), capacity);
  }
  return make_block_quant_value_store(method, shape.n_kv_heads, shape.head_dim, capacity, 0);
}

MethodError measure(const std::string& method, AnalyzeKind kind, const AnalysisCapture& cap,
                    const std::shared_ptr<const CodebookSet>& cbs) {
  const KVCacheShape& shape = cap.shape();
  MethodError r;
  r.method = method;
  r.kind = kind;
  if (method == "pq" && kind == AnalyzeKind::kKeyPreRope) {
    r.applicable = false;
    r.why_not = "PQ codebooks are trained on post-RoPE keys";
    return r;
  }
  try {
    for (int l = 0; l < shape.n_layers; ++l) {
      const Reservoir& runs = cap.runs(l, kind);
      const std::int64_t capacity = runs.size() * kRunTokens;
      ErrorSum e;
      if (kind == AnalyzeKind::kValue) {
        auto store = make_value_store(method, l, shape, capacity, cbs);
        r.bits_per_element = store->bits_per_element();
        e = store_error(*store, runs, shape.n_kv_heads, shape.head_dim);
      } else {
        auto store = make_key_store(method, l, shape, capacity, cbs);
        r.bits_per_element = store->bits_per_element();
        e = store_error(*store, runs, shape.n_kv_heads, shape.head_dim);
      }
      r.rel_sq.push_back(e.relative());
    }
  } catch (const UnsupportedError& e) {  // e.g. q8_0 needs head_dim a multiple of 32
    r.applicable = false;
    r.why_not = e.what();
    r.rel_sq.clear();
  }
  return r;
}

ChannelSample channel_sample(const AnalysisResult& res, const AnalysisCapture& cap, const CodebookSet* cbs) {
  // The post-RoPE key head whose largest channel stands out most from its median channel.
  const HeadSummary* best = nullptr;
  for (const HeadSummary& h : res.heads) {
    if (h.kind != AnalyzeKind::kKey || h.median_absmax <= 0) continue;
    if (best == nullptr || h.absmax / h.median_absmax > best->absmax / best->median_absmax) best = &h;
  }
  ChannelSample s;
  if (best == nullptr) return s;
  s.layer = best->layer;
  s.kv_head = best->kv_head;
  s.channel = best->absmax_channel;
  s.kind = AnalyzeKind::kKey;
  const Reservoir& runs = cap.runs(s.layer, s.kind);
  const int H = res.shape.n_kv_heads, d = res.shape.head_dim;
  for (std::int64_t t = 0; t < runs.size() * kRunTokens; ++t) {
    s.values.push_back(runs.data()[(t * H + s.kv_head) * d + s.channel]);
  }
  if (!s.values.empty()) {
    const auto [lo, hi] = std::minmax_element(s.values.begin(), s.values.end());
    s.uniform_grid = uniform_grid(*lo, *hi, 16);
  }
  if (cbs == nullptr) {
    s.pq_note = "no --codebook given";
  } else {
    const PQCodebook& cb = cbs->get(s.layer, s.kv_head, KVKind::kKey);
    if (cb.rotation != RotationKind::kNone) {
      s.pq_note = "the codebook is rotated: its centroids have no per-channel coordinates";
    } else {
      const int m = s.channel / cb.dsub(), e = s.channel % cb.dsub();
      for (int c = 0; c < cb.ksub(); ++c) {
        s.pq_centroids.push_back(cb.centroids[static_cast<std::size_t>((m * cb.ksub() + c) * cb.dsub() + e)]);
      }
    }
  }
  return s;
}

}  // namespace

AnalysisResult analyze(Model& model, const std::vector<std::vector<int>>& documents, const AnalyzeOptions& opt) {
  const ModelConfig& cfg = model.config();
  const int ctx = opt.ctx > 0 ? opt.ctx : static_cast<int>(std::min<std::int64_t>(cfg.max_ctx, 4096));
  if (ctx > cfg.max_ctx) throw InvalidArgumentError(fmt::format("--ctx {} exceeds the model's context {}", ctx, cfg.max_ctx));
  if (opt.max_tokens < 1) throw InvalidArgumentError("--max-tokens must be positive");
  if (opt.sample_tokens < kRunTokens) {
    throw InvalidArgumentError(fmt::format("--samples must be at least {} tokens (one run)", kRunTokens));
  }
  if (!(opt.outlier_factor > 1.0)) throw InvalidArgumentError("--outlier-factor must be above 1");
  if (opt.codebooks != nullptr) {
    const ModelFingerprint& m = opt.codebooks->model;
    if (m.n_layers != cfg.n_layers || m.n_kv_heads != cfg.n_kv_heads || m.head_dim != cfg.head_dim) {
      throw FormatError(fmt::format("the codebooks are for {} layers x {} kv heads x head_dim {}, the model has {} x {} x {}",
                                    m.n_layers, m.n_kv_heads, m.head_dim, cfg.n_layers, cfg.n_kv_heads, cfg.head_dim));
    }
  }

  const WindowPlan plan = plan_windows(documents, ctx, opt.max_tokens, opt.seed);
  if (plan.tokens < opt.max_tokens) {
    log_info("the text has {} tokens in windows, fewer than --max-tokens {}: analysing all of it", plan.available,
             opt.max_tokens);
  }
  for (const TextWindow& w : plan.windows) log_debug("window: document {} tokens [{}, {})", w.doc, w.begin, w.begin + w.length);
  AnalysisResult res;
  res.ctx = ctx;
  res.outlier_factor = opt.outlier_factor;
  AnalysisCapture cap(model.cache_shape(ctx), (opt.sample_tokens + kRunTokens - 1) / kRunTokens, opt.seed);
  res.shape = cap.shape();
  cap.attach(model);
  const auto t0 = clock_type::now();
  for (const TextWindow& w : plan.windows) {
    cap.clear();
    model.prefill(window_tokens(documents, w), cap, nullptr);
    res.tokens += static_cast<std::int64_t>(w.length);
    ++res.windows;
    if (opt.progress) {
      opt.progress({"capture", res.tokens, plan.tokens, std::chrono::duration<double>(clock_type::now() - t0).count()});
    }
  }
  const auto t1 = clock_type::now();
  res.capture_seconds = std::chrono::duration<double>(t1 - t0).count();
  res.run_tokens = cap.runs(0, AnalyzeKind::kKey).size() * kRunTokens;
  if (res.run_tokens == 0) {
    throw InvalidArgumentError(fmt::format("no window has {} consecutive tokens to measure errors on: give more text "
                                           "or a larger --ctx",
                                           kRunTokens));
  }

  const int H = res.shape.n_kv_heads, d = res.shape.head_dim;
  for (int l = 0; l < res.shape.n_layers; ++l) {
    for (int k = 0; k < kAnalyzeKinds; ++k) {
      for (int h = 0; h < H; ++h) {
        std::vector<ChannelStats> head;
        for (int c = 0; c < d; ++c) {
          head.push_back({l, h, c, static_cast<AnalyzeKind>(k), cap.moments(l, h, static_cast<AnalyzeKind>(k), c), false});
        }
        res.heads.push_back(summarize_head(head, opt.outlier_factor));
        res.channels.insert(res.channels.end(), head.begin(), head.end());
      }
    }
  }

  const std::vector<std::string> methods = analyze_methods(opt.codebooks != nullptr);
  const std::int64_t total = static_cast<std::int64_t>(methods.size()) * kAnalyzeKinds;
  for (const std::string& m : methods) {
    for (int k = 0; k < kAnalyzeKinds; ++k) {
      res.errors.push_back(measure(m, static_cast<AnalyzeKind>(k), cap, opt.codebooks));
      if (opt.progress) {
        opt.progress({"errors", static_cast<std::int64_t>(res.errors.size()), total,
                      std::chrono::duration<double>(clock_type::now() - t1).count()});
      }
    }
  }
  res.sample = channel_sample(res, cap, opt.codebooks.get());
  res.error_seconds = std::chrono::duration<double>(clock_type::now() - t1).count();
  return res;
}

}  // namespace million
