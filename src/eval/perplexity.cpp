// Perplexity windows, NLL / KLD statistics (see perplexity.h).
#include "eval/perplexity.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>

#include "million/error.h"

namespace million::eval {

namespace {

struct MeanSe {
  double mean = 0.0, se = 0.0;
};

MeanSe mean_se(const std::vector<double>& x) {
  MeanSe r;
  if (x.empty()) return r;
  double sum = 0.0;
  for (double v : x) sum += v;
  r.mean = sum / static_cast<double>(x.size());
  if (x.size() < 2) return r;
  double ss = 0.0;
  for (double v : x) ss += (v - r.mean) * (v - r.mean);
  const double var = ss / static_cast<double>(x.size() - 1);
  r.se = std::sqrt(var / static_cast<double>(x.size()));
  return r;
}

double logsumexp(const float* x, int n) {
  double m = -std::numeric_limits<double>::infinity();
  for (int i = 0; i < n; ++i) m = std::max(m, static_cast<double>(x[i]));
  double s = 0.0;
  for (int i = 0; i < n; ++i) s += std::exp(static_cast<double>(x[i]) - m);
  return m + std::log(s);
}

}  // namespace

NllStats nll_stats(const std::vector<double>& nll) {
  NllStats s;
  s.n = static_cast<std::int64_t>(nll.size());
  if (nll.empty()) return s;
  const MeanSe m = mean_se(nll);
  s.mean_nll = m.mean;
  s.se_nll = m.se;
  s.ppl = std::exp(m.mean);
  s.ppl_low = std::exp(m.mean - 1.96 * m.se);
  s.ppl_high = std::exp(m.mean + 1.96 * m.se);
  return s;
}

int log_softmax(const float* logits, int vocab, float* out) {
  int best = 0;
  for (int i = 1; i < vocab; ++i) {
    if (logits[i] > logits[best]) best = i;
  }
  const double lse = logsumexp(logits, vocab);
  for (int i = 0; i < vocab; ++i) out[i] = static_cast<float>(static_cast<double>(logits[i]) - lse);
  return best;
}

double kl_divergence(const float* p_logits, const float* q_logits, int vocab) {
  const double lp = logsumexp(p_logits, vocab), lq = logsumexp(q_logits, vocab);
  double kl = 0.0;
  for (int i = 0; i < vocab; ++i) {
    const double a = static_cast<double>(p_logits[i]) - lp;
    const double b = static_cast<double>(q_logits[i]) - lq;
    const double p = std::exp(a);
    if (p > 0.0) kl += p * (a - b);
  }
  return kl;
}

double percentile_sorted(const std::vector<double>& sorted, double q) {
  MILLION_ASSERT(!sorted.empty());
  const double pos = std::clamp(q, 0.0, 1.0) * static_cast<double>(sorted.size() - 1);
  const auto lo = static_cast<std::size_t>(std::floor(pos));
  const std::size_t hi = std::min(lo + 1, sorted.size() - 1);
  const double f = pos - static_cast<double>(lo);
  return sorted[lo] + f * (sorted[hi] - sorted[lo]);
}

KldStats kld_stats(const std::vector<double>& kld, const std::vector<std::uint8_t>& top1_same,
                   const std::vector<double>& base_nll, const std::vector<double>& nll) {
  MILLION_ASSERT(kld.size() == top1_same.size() && kld.size() == base_nll.size() && kld.size() == nll.size());
  KldStats s;
  s.n = static_cast<std::int64_t>(kld.size());
  if (kld.empty()) return s;
  const MeanSe m = mean_se(kld);
  s.mean = m.mean;
  s.se = m.se;
  std::vector<double> sorted = kld;
  std::sort(sorted.begin(), sorted.end());
  s.median = percentile_sorted(sorted, 0.5);
  s.p90 = percentile_sorted(sorted, 0.9);
  s.p99 = percentile_sorted(sorted, 0.99);
  s.max = sorted.back();
  std::int64_t same = 0;
  for (std::uint8_t t : top1_same) same += t ? 1 : 0;
  s.top1_agree_pct = 100.0 * static_cast<double>(same) / static_cast<double>(s.n);
  s.base = nll_stats(base_nll);
  s.current = nll_stats(nll);
  s.delta_ppl = s.current.ppl - s.base.ppl;
  s.delta_ppl_pct = 100.0 * s.delta_ppl / s.base.ppl;
  std::vector<double> diff(nll.size());
  for (std::size_t i = 0; i < nll.size(); ++i) diff[i] = nll[i] - base_nll[i];
  const MeanSe d = mean_se(diff);
  s.mean_delta_nll = d.mean;
  s.se_delta_nll = d.se;
  return s;
}

std::int64_t count_windows(std::int64_t n_tokens, const PerplexityOptions& o) {
  if (o.ctx < 2) throw InvalidArgumentError(fmt::format("--ctx must be at least 2 tokens (got {})", o.ctx));
  if (o.chunk < 0) throw InvalidArgumentError(fmt::format("--chunk must be positive (got {})", o.chunk));
  if (o.prefill < 0 || (o.chunk > 0 && o.prefill >= o.ctx)) {
    throw InvalidArgumentError(fmt::format("--prefill must be between 1 and ctx - 1 = {} (got {})", o.ctx - 1, o.prefill));
  }
  if (o.max_windows < 0) throw InvalidArgumentError("--max-windows must not be negative");
  if (n_tokens < o.ctx) {
    throw ContextLimitError(fmt::format(
        "the text has {} tokens, fewer than one window of {} tokens (--ctx); give a longer text or lower --ctx "
        "(at least 2)",
        n_tokens, o.ctx));
  }
  std::int64_t w = n_tokens / o.ctx;
  if (o.max_windows > 0) w = std::min(w, o.max_windows);
  return w;
}

std::uint64_t hash_tokens(const std::vector<int>& tokens, std::int64_t n) {
  std::uint64_t h = 14695981039346656037ull;
  for (std::int64_t i = 0; i < n && i < static_cast<std::int64_t>(tokens.size()); ++i) {
    const auto v = static_cast<std::uint32_t>(tokens[static_cast<std::size_t>(i)]);
    for (int b = 0; b < 4; ++b) {
      h ^= (v >> (8 * b)) & 0xffu;
      h *= 1099511628211ull;
    }
  }
  return h;
}

PerplexityResult compute_perplexity(Model& model, KVCache& cache, const std::vector<int>& tokens,
                                    const PerplexityOptions& options,
                                    const std::function<void(const ScoredWindow&)>& on_window,
                                    const std::function<void(std::int64_t, std::int64_t, double, double)>& on_progress) {
  using clock = std::chrono::steady_clock;
  const std::int64_t windows = count_windows(static_cast<std::int64_t>(tokens.size()), options);
  const std::int64_t ctx = options.ctx;
  if (cache.shape().capacity < ctx) {
    throw InvalidArgumentError(fmt::format("the cache holds {} tokens, fewer than the window of {}",
                                           cache.shape().capacity, ctx));
  }
  const int vocab = model.config().vocab_size;
  const int n = static_cast<int>(ctx - 1);  // scored tokens = tokens run per window
  const int prefill = options.chunk > 0 ? std::min(n, options.prefill > 0 ? options.prefill : std::max(1, static_cast<int>(ctx / 2))) : n;

  PerplexityResult r;
  r.windows = windows;
  r.nll.reserve(static_cast<std::size_t>(windows * n));
  r.argmax.reserve(static_cast<std::size_t>(windows * n));
  std::vector<float> logits(static_cast<std::size_t>(n) * static_cast<std::size_t>(vocab));
  std::vector<double> nll(static_cast<std::size_t>(n));
  std::vector<int> argmax(static_cast<std::size_t>(n));
  const auto t0 = clock::now();
  double nll_sum = 0.0;

  for (std::int64_t w = 0; w < windows; ++w) {
    const int* win = tokens.data() + w * ctx;
    cache.clear();
    // Tokens 0..n-1 are run; row i predicts token i + 1.
    int done = 0;
    while (done < n) {
      const int step = done == 0 ? std::min(prefill, n) : std::min(options.chunk, n - done);
      model.forward(win + done, step, done, cache, logits.data() + static_cast<std::size_t>(done) * vocab, true);
      done += step;
    }
    for (int i = 0; i < n; ++i) {
      const float* row = logits.data() + static_cast<std::size_t>(i) * vocab;
      const int target = win[i + 1];
      int best = 0;
      for (int j = 1; j < vocab; ++j) {
        if (row[j] > row[best]) best = j;
      }
      nll[static_cast<std::size_t>(i)] = logsumexp(row, vocab) - static_cast<double>(row[target]);
      argmax[static_cast<std::size_t>(i)] = best;
    }
    for (int i = 0; i < n; ++i) nll_sum += nll[static_cast<std::size_t>(i)];
    r.nll.insert(r.nll.end(), nll.begin(), nll.end());
    r.argmax.insert(r.argmax.end(), argmax.begin(), argmax.end());
    if (on_window) {
      ScoredWindow sw;
      sw.index = w;
      sw.n = n;
      sw.vocab = vocab;
      sw.targets = win + 1;
      sw.logits = logits.data();
      sw.nll = nll.data();
      sw.argmax = argmax.data();
      on_window(sw);
    }
    if (on_progress) {
      on_progress(w + 1, windows, std::chrono::duration<double>(clock::now() - t0).count(),
                  nll_sum / static_cast<double>(r.nll.size()));
    }
  }
  r.seconds = std::chrono::duration<double>(clock::now() - t0).count();
  r.tokens_scored = static_cast<std::int64_t>(r.nll.size());
  r.stats = nll_stats(r.nll);
  return r;
}

}  // namespace million::eval
