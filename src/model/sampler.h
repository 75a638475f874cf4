// Next-token sampling from logits: greedy (temperature 0), or temperature with optional
// top-k and top-p (nucleus) filtering, from a seeded generator so runs are reproducible.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

namespace million {

struct SamplerOptions {
  float temperature = 0.8f;  ///< 0 = greedy argmax
  int top_k = 40;            ///< 0 = no top-k filtering
  float top_p = 0.95f;       ///< 1 = no nucleus filtering
  std::uint64_t seed = 0;
  /// Throws InvalidArgumentError for out-of-range values.
  void validate() const;
};

/// Index of the largest value; the lowest index wins ties. NaN logits are an error.
int argmax(const float* logits, int n);

class Sampler {
 public:
  explicit Sampler(const SamplerOptions& options);
  int sample(const float* logits, int n);

 private:
  SamplerOptions opt_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, int>> cand_;
};

}  // namespace million
