// Capture of per-channel moments and consecutive-token runs for `million analyze` (see
// analyze_capture.h).
#include "eval/analyze_capture.h"

#include <algorithm>

#include "million/error.h"

namespace million {

const char* analyze_kind_name(AnalyzeKind kind) {
  switch (kind) {
    case AnalyzeKind::kKeyPreRope: return "k_pre";
    case AnalyzeKind::kKey: return "k";
    case AnalyzeKind::kValue: return "v";
  }
  return "?";
}

AnalysisCapture::AnalysisCapture(const KVCacheShape& shape, std::int64_t run_capacity, std::uint64_t seed)
    : KVCache(shape), inner_(make_kv_cache("f32", shape)) {
  if (run_capacity < 1) throw InvalidArgumentError("analyze: the run sample must hold at least one run");
  const std::size_t slots = static_cast<std::size_t>(shape.n_layers) * kAnalyzeKinds;
  moments_.resize(slots * static_cast<std::size_t>(shape.n_kv_heads) * static_cast<std::size_t>(shape.head_dim));
  const int run_floats = kRunTokens * shape.n_kv_heads * shape.head_dim;
  runs_.reserve(slots);
  for (std::size_t i = 0; i < slots; ++i) {
    // One seed for all: Algorithm R's choices depend only on the seed and the item count, and every
    // (layer, kind) sees the same sequence of runs, so all of them keep the same text positions.
    runs_.emplace_back(run_floats, run_capacity, seed);
  }
  pending_.assign(slots, std::vector<float>(static_cast<std::size_t>(run_floats)));
}

AnalysisCapture::~AnalysisCapture() {
  if (model_ != nullptr) model_->set_pre_rope_key_observer({});
}

void AnalysisCapture::attach(Model& model) {
  model_ = &model;
  model.set_pre_rope_key_observer([this](int layer, std::int64_t pos0, int n, const float* k) {
    observe(layer, pos0, n, k, AnalyzeKind::kKeyPreRope);
  });
}

std::size_t AnalysisCapture::slot(int layer, AnalyzeKind kind) const {
  return static_cast<std::size_t>(layer) * kAnalyzeKinds + static_cast<std::size_t>(kind);
}

const Moments& AnalysisCapture::moments(int layer, int kv_head, AnalyzeKind kind, int channel) const {
  const std::size_t i =
      (slot(layer, kind) * static_cast<std::size_t>(shape_.n_kv_heads) + static_cast<std::size_t>(kv_head)) *
          static_cast<std::size_t>(shape_.head_dim) +
      static_cast<std::size_t>(channel);
  return moments_.at(i);
}

const Reservoir& AnalysisCapture::runs(int layer, AnalyzeKind kind) const { return runs_.at(slot(layer, kind)); }

void AnalysisCapture::observe(int layer, std::int64_t pos0, int n, const float* x, AnalyzeKind kind) {
  const int H = shape_.n_kv_heads, d = shape_.head_dim;
  const std::size_t s = slot(layer, kind);
  Moments* mom = moments_.data() + s * static_cast<std::size_t>(H) * static_cast<std::size_t>(d);
  std::vector<float>& run = pending_[s];
  const std::size_t row = static_cast<std::size_t>(H) * static_cast<std::size_t>(d);
  for (int t = 0; t < n; ++t) {
    const float* tok = x + static_cast<std::size_t>(t) * row;  // [n_kv_heads, head_dim]
    for (std::size_t i = 0; i < row; ++i) mom[i].add(tok[i]);
    // Runs are aligned to positions: tokens [r * kRunTokens, (r + 1) * kRunTokens) of a window.
    const std::int64_t pos = pos0 + t;
    const std::size_t in_run = static_cast<std::size_t>(pos % kRunTokens);
    std::copy(tok, tok + row, run.begin() + static_cast<std::ptrdiff_t>(in_run * row));
    if (in_run + 1 == kRunTokens) runs_[s].add(run.data());
  }
}

void AnalysisCapture::append(int layer, std::int64_t pos0, int n, const float* k, const float* v) {
  inner_->append(layer, pos0, n, k, v);
  observe(layer, pos0, n, k, AnalyzeKind::kKey);
  observe(layer, pos0, n, v, AnalyzeKind::kValue);
}

void AnalysisCapture::attend(int layer, std::int64_t pos0, int n, const float* q, float* out) {
  inner_->set_simd_level(simd_level());
  inner_->attend(layer, pos0, n, q, out);
}

void AnalysisCapture::clear() {
  inner_->clear();  // a partly filled run is dropped: the next window starts at position 0
}

}  // namespace million
