// Perplexity and KL-divergence evaluation (docs: ../shared/docs/EVALUATION.md, "Quality").
//
// What this does: cuts a token stream into non-overlapping windows of `ctx` tokens (a partial
// trailing window is dropped), runs each window from an empty cache, and scores every token of
// the window except the first (its prediction has no context). A window goes through the model
// either in one forward pass (every query reads exact K/V of its own pass: the "prefill" mode)
// or as a prefill of its first tokens followed by chunks (later tokens read the cache's stored,
// possibly quantized, history: the "chunked" mode; chunk 1 = pure decode). It also holds the
// small statistics: PPL with a 95% confidence interval from the per-token NLL standard error,
// and per-token KL divergence with its summary (mean, percentiles, top-1 agreement, ΔPPL).
//
// What it does not do: tokenize text, read files, print, or keep any logits beyond the window
// being scored (the on_window callback sees them; logits_file.h stores them for --kl-base).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "model/model.h"

namespace million::eval {

/// exp(mean NLL) with a 95% confidence interval exp(mean ± 1.96 se), se = sample standard
/// deviation / sqrt(n). (Neighbouring tokens are correlated, so the interval is optimistic; it
/// is the one llama.cpp reports.)
struct NllStats {
  std::int64_t n = 0;
  double mean_nll = 0.0;
  double se_nll = 0.0;  ///< standard error of mean_nll (0 when n < 2)
  double ppl = 0.0;
  double ppl_low = 0.0, ppl_high = 0.0;  ///< 95% interval
};
NllStats nll_stats(const std::vector<double>& nll);

/// Natural-log softmax of one row: out[i] = logits[i] - logsumexp(logits). Returns the index
/// of the largest logit (the first one on ties).
int log_softmax(const float* logits, int vocab, float* out);

/// KL(P || Q) in nats for two distributions given as logits or (unnormalised) log-probs of
/// `vocab` entries each; both are renormalised in double. Identical inputs give exactly 0.
double kl_divergence(const float* p_logits, const float* q_logits, int vocab);

/// Summary of per-token KL divergences and paired NLLs of a run against a base run.
struct KldStats {
  std::int64_t n = 0;
  double mean = 0.0, se = 0.0;  ///< mean KLD and its standard error
  double median = 0.0, p90 = 0.0, p99 = 0.0, max = 0.0;
  double top1_agree_pct = 0.0;  ///< % of tokens where both argmaxes agree
  NllStats base, current;
  double delta_ppl = 0.0, delta_ppl_pct = 0.0;       ///< current.ppl - base.ppl, in % of base.ppl
  double mean_delta_nll = 0.0, se_delta_nll = 0.0;   ///< paired per-token NLL difference
};
/// kld, top1_same, base_nll and nll are per token, all of the same length.
KldStats kld_stats(const std::vector<double>& kld, const std::vector<std::uint8_t>& top1_same,
                   const std::vector<double>& base_nll, const std::vector<double>& nll);

/// Linear-interpolation percentile (q in [0, 1]) of an ascending-sorted, non-empty vector.
double percentile_sorted(const std::vector<double>& sorted, double q);

struct PerplexityOptions {
  std::int64_t ctx = 0;          ///< window length (>= 2; the cache must hold this many tokens)
  int chunk = 0;                 ///< 0: one forward pass per window; N: chunks of N after the prefill
  int prefill = 0;               ///< chunked mode: tokens in the first pass (0: ctx / 2)
  std::int64_t max_windows = 0;  ///< 0: every whole window of the stream
};

/// One scored window as the callback sees it: row i of `logits` ([n, vocab], raw) predicts
/// targets[i]; nll[i] = -log softmax(logits row i)[targets[i]]; argmax[i] = the row's top token.
struct ScoredWindow {
  std::int64_t index = 0;
  int n = 0;
  int vocab = 0;
  const int* targets = nullptr;
  const float* logits = nullptr;
  const double* nll = nullptr;
  const int* argmax = nullptr;
};

struct PerplexityResult {
  NllStats stats;
  std::int64_t windows = 0;
  std::int64_t tokens_scored = 0;
  double seconds = 0.0;
  std::vector<double> nll;  ///< per scored token, in order
  std::vector<int> argmax;  ///< per scored token, in order
};

/// Number of whole windows (capped by max_windows) that `n_tokens` tokens give. Throws
/// InvalidArgumentError (ctx < 2, a bad chunk / prefill) and ContextLimitError when the text
/// is shorter than one window, saying how many tokens there are and how many are needed.
std::int64_t count_windows(std::int64_t n_tokens, const PerplexityOptions& options);

/// FNV-1a 64 of the token ids the run will read (the first windows * ctx tokens), as uint32 LE.
std::uint64_t hash_tokens(const std::vector<int>& tokens, std::int64_t n);

/// Runs the evaluation. `cache` must hold at least options.ctx tokens; it is cleared before
/// each window. on_window (may be empty) is called after each window; on_progress (may be
/// empty) with (windows done, windows total, seconds so far, mean NLL so far).
PerplexityResult compute_perplexity(Model& model, KVCache& cache, const std::vector<int>& tokens,
                                    const PerplexityOptions& options,
                                    const std::function<void(const ScoredWindow&)>& on_window = {},
                                    const std::function<void(std::int64_t, std::int64_t, double, double)>& on_progress = {});

}  // namespace million::eval
