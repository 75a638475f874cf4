// `million analyze` as a library call: run a model over calibration text in windows (as
// calibrate does), gather per-channel statistics of pre-RoPE keys, post-RoPE keys and values
// per (layer, kv head), and measure each KV-cache variant's relative reconstruction error per
// layer by encoding and decoding sampled runs of consecutive tokens with that variant's store.
// Not here: writing the report, CSVs or plots (analyze_report.h).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "eval/analyze_capture.h"
#include "eval/analyze_stats.h"
#include "model/model.h"
#include "pq/codebook.h"

namespace million {

struct AnalyzeProgress {
  const char* stage;      ///< "capture" (tokens) or "errors" (cache variants)
  std::int64_t done = 0;
  std::int64_t total = 0;
  double elapsed_s = 0.0;
};

struct AnalyzeOptions {
  int ctx = 0;                      ///< window length; 0 = the model's context, at most 4096
  std::int64_t max_tokens = 8192;   ///< tokens of text to run (a budget; less if the text is shorter)
  std::int64_t sample_tokens = 2048;  ///< tokens (in runs of kRunTokens) kept per (layer, kind) for the errors
  double outlier_factor = 6.0;      ///< outlier channel: abs max > this x the head's median channel abs max
  std::uint64_t seed = 0;           ///< window order and run sampling
  /// Optional: adds the `pq` variant (per-(layer, kv head) codebooks as the pq cache uses them).
  std::shared_ptr<const CodebookSet> codebooks;
  std::function<void(const AnalyzeProgress&)> progress;
};

/// Statistics of one channel over every token run.
struct ChannelStats {
  int layer = 0, kv_head = 0, channel = 0;
  AnalyzeKind kind = AnalyzeKind::kKey;
  Moments moments;
  bool outlier = false;
};

/// One (layer, kv head, kind) summarised over its channels.
struct HeadSummary {
  int layer = 0, kv_head = 0;
  AnalyzeKind kind = AnalyzeKind::kKey;
  double absmax = 0.0;          ///< largest channel abs max
  int absmax_channel = 0;       ///< the channel that has it
  double median_absmax = 0.0;   ///< median over channels of the channel abs max
  double median_std = 0.0;      ///< median over channels of the channel std
  double median_kurtosis = 0.0, max_kurtosis = 0.0;
  int outliers = 0, channels = 0;
  int offset_channels = 0;      ///< channels with |mean| > std (most tokens on one side of 0)
};

/// One cache variant's errors on one kind: rel_sq[layer] = sum ||x - x_hat||^2 / sum ||x||^2 over
/// the sampled runs of all kv heads of that layer.
struct MethodError {
  std::string method;           ///< "q8_0", "q4_0", "q4_0-hadamard", "kivi-4", "kivi-2", "pq"
  AnalyzeKind kind = AnalyzeKind::kKey;
  bool applicable = true;
  std::string why_not;          ///< when not applicable: the reason (the store's own error message)
  double bits_per_element = 0.0;
  std::vector<double> rel_sq;   ///< [n_layers]
};

/// Samples of one key channel with the grids that quantize it (the histogram plot).
struct ChannelSample {
  int layer = 0, kv_head = 0, channel = 0;
  AnalyzeKind kind = AnalyzeKind::kKey;
  std::vector<double> values;        ///< the channel over the sampled runs
  std::vector<double> uniform_grid;  ///< 16 levels over [min, max] of `values` (4-bit, per channel)
  std::vector<double> pq_centroids;  ///< this channel's coordinate of its subspace's centroids (may be empty)
  std::string pq_note;               ///< why pq_centroids is empty, if it is
};

struct AnalysisResult {
  KVCacheShape shape;
  std::int64_t tokens = 0, windows = 0, ctx = 0;
  std::int64_t run_tokens = 0;  ///< tokens in the sampled runs per (layer, kind)
  double outlier_factor = 0.0;
  double capture_seconds = 0.0, error_seconds = 0.0;
  std::vector<ChannelStats> channels;  ///< [layer][kind][kv_head][channel]
  std::vector<HeadSummary> heads;      ///< [layer][kind][kv_head]
  std::vector<MethodError> errors;     ///< per method, kinds k_pre, k, v
  ChannelSample sample;                ///< the post-RoPE key channel with the largest abs max / median ratio
};

/// The cache variants analyze measures, in report order ("pq" last, only when `with_pq`).
std::vector<std::string> analyze_methods(bool with_pq);

/// Runs the analysis. `documents`: token ids of each text (BOS first). Throws
/// InvalidArgumentError for bad options, text without a single run of kRunTokens tokens, or
/// codebooks that do not fit the model.
AnalysisResult analyze(Model& model, const std::vector<std::vector<int>>& documents, const AnalyzeOptions& options);

/// Summarises one head's channel statistics (the outlier rule with `outlier_factor`); also marks
/// the channels' `outlier` flags. `channels`: the head_dim channels of one (layer, kv head, kind).
HeadSummary summarize_head(std::vector<ChannelStats>& channels, double outlier_factor);

}  // namespace million
