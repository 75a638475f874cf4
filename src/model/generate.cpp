// Generation loop (see generate.h).
#include "model/generate.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>

#include "million/error.h"

namespace million {

GenerateStats generate(Model& model, KVCache& cache, const std::vector<int>& prompt, const GenerateOptions& options,
                       const std::function<bool(int)>& on_token) {
  using clock = std::chrono::steady_clock;
  if (prompt.empty()) throw InvalidArgumentError("generate: the prompt has no tokens (not even BOS)");
  if (options.n_predict < 0) throw InvalidArgumentError("generate: -n must be >= 0");
  const std::int64_t capacity = cache.shape().capacity;
  // The last sampled token is never fed back, so prompt + n_predict - 1 positions are run.
  const std::int64_t needed = static_cast<std::int64_t>(prompt.size()) + std::max(options.n_predict - 1, 0);
  if (needed > capacity) {
    throw ContextLimitError(fmt::format(
        "the prompt ({} tokens) plus {} generated tokens needs {} positions but the context is {} tokens; "
        "shorten the prompt, lower -n or raise --ctx (up to the model's maximum)",
        prompt.size(), options.n_predict, needed, capacity));
  }
  cache.clear();
  Sampler sampler(options.sampler);
  const int vocab = model.config().vocab_size;
  std::vector<float> logits(static_cast<std::size_t>(vocab));
  GenerateStats stats;
  stats.prompt_tokens = static_cast<std::int64_t>(prompt.size());

  auto t0 = clock::now();
  model.prefill(prompt, cache, logits.data(), options.prefill_chunk);
  auto t1 = clock::now();
  stats.prefill_seconds = std::chrono::duration<double>(t1 - t0).count();

  std::int64_t pos = static_cast<std::int64_t>(prompt.size());
  for (int i = 0; i < options.n_predict; ++i) {
    const int next = sampler.sample(logits.data(), vocab);
    if (std::find(options.stop_ids.begin(), options.stop_ids.end(), next) != options.stop_ids.end()) {
      stats.stopped_by_token = true;
      break;
    }
    ++stats.generated_tokens;
    if (!on_token(next)) break;
    if (i + 1 == options.n_predict) break;
    model.forward(&next, 1, pos, cache, logits.data());
    ++pos;
  }
  stats.decode_seconds = std::chrono::duration<double>(clock::now() - t1).count();
  return stats;
}

}  // namespace million
