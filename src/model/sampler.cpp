// Greedy / temperature / top-k / top-p sampling.
#include "model/sampler.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "million/error.h"

namespace million {

void SamplerOptions::validate() const {
  if (!(temperature >= 0.0f) || !std::isfinite(temperature)) {
    throw InvalidArgumentError(fmt::format("--temp {} must be >= 0", temperature));
  }
  if (top_k < 0) throw InvalidArgumentError(fmt::format("--top-k {} must be >= 0", top_k));
  if (!(top_p > 0.0f && top_p <= 1.0f)) throw InvalidArgumentError(fmt::format("--top-p {} must be in (0, 1]", top_p));
}

int argmax(const float* logits, int n) {
  if (n <= 0) throw InvalidArgumentError(fmt::format("cannot pick a token from {} logits", n));
  int best = 0;
  for (int i = 0; i < n; ++i) {
    if (std::isnan(logits[i])) throw InvalidArgumentError(fmt::format("logit {} is NaN", i));
    if (logits[i] > logits[best]) best = i;
  }
  return best;
}

Sampler::Sampler(const SamplerOptions& options) : opt_(options), rng_(options.seed) { opt_.validate(); }

int Sampler::sample(const float* logits, int n) {
  if (opt_.temperature == 0.0f || n <= 0) return argmax(logits, n);
  cand_.resize(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) {
    // A NaN would break the sort's ordering (undefined behaviour) and the softmax.
    if (std::isnan(logits[i])) throw InvalidArgumentError(fmt::format("logit {} is NaN", i));
    cand_[static_cast<std::size_t>(i)] = {logits[i], i};
  }
  auto by_logit = [](const auto& a, const auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); };
  std::size_t keep = cand_.size();
  if (opt_.top_k > 0 && static_cast<std::size_t>(opt_.top_k) < keep) {
    keep = static_cast<std::size_t>(opt_.top_k);
    std::partial_sort(cand_.begin(), cand_.begin() + static_cast<std::ptrdiff_t>(keep), cand_.end(), by_logit);
  } else {
    std::sort(cand_.begin(), cand_.end(), by_logit);
  }
  // Softmax over the kept candidates at this temperature (max first, so exp never overflows).
  const double max_logit = cand_[0].first;
  std::vector<double> p(keep);
  double sum = 0.0;
  for (std::size_t i = 0; i < keep; ++i) {
    p[i] = std::exp((cand_[i].first - max_logit) / opt_.temperature);
    sum += p[i];
  }
  // Nucleus: smallest prefix whose probability reaches top_p.
  std::size_t nucleus = keep;
  if (opt_.top_p < 1.0f) {
    double acc = 0.0;
    for (std::size_t i = 0; i < keep; ++i) {
      acc += p[i] / sum;
      if (acc >= opt_.top_p) {
        nucleus = i + 1;
        break;
      }
    }
  }
  double total = 0.0;
  for (std::size_t i = 0; i < nucleus; ++i) total += p[i];
  std::uniform_real_distribution<double> uni(0.0, total);
  double r = uni(rng_);
  for (std::size_t i = 0; i < nucleus; ++i) {
    r -= p[i];
    if (r < 0.0) return cand_[i].second;
  }
  return cand_[nucleus - 1].second;
}

}  // namespace million
