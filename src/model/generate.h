// The generation loop: prefill a prompt, then sample and feed one token at a time, calling
// back with each new token. Timing is measured here so every front end reports it the same way.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "model/model.h"
#include "model/sampler.h"

namespace million {

struct GenerateOptions {
  int n_predict = 256;       ///< tokens to generate (fewer if a stop token comes)
  SamplerOptions sampler;
  int prefill_chunk = 512;   ///< prompt tokens per forward call
  std::vector<int> stop_ids; ///< generation ends when one of these is sampled (not emitted)
};

struct GenerateStats {
  std::int64_t prompt_tokens = 0;
  std::int64_t generated_tokens = 0;
  double prefill_seconds = 0.0;
  double decode_seconds = 0.0;
  bool stopped_by_token = false;
};

/// Runs the prompt (non-empty) from an empty cache and generates. on_token returns false to
/// stop early. Throws ContextLimitError before doing any work if prompt + n_predict tokens
/// exceed the cache capacity.
GenerateStats generate(Model& model, KVCache& cache, const std::vector<int>& prompt, const GenerateOptions& options,
                       const std::function<bool(int)>& on_token);

}  // namespace million
