// Helpers shared by end-to-end tests: greedy generation through the library and a
// teacher-forced logits pass with a chosen prefill chunking.
#pragma once

#include <string>
#include <vector>

#include "model/generate.h"
#include "model/model.h"

namespace million::test {

/// Greedy continuation of `prompt` (n tokens, stopping at the model's EOS ids) with cache `kv`.
inline std::vector<int> greedy(Model& model, const std::vector<int>& prompt, int n, const std::string& kv = "f32",
                               SimdLevel level = active_simd_level()) {
  auto cache = make_kv_cache(kv, model.cache_shape(static_cast<std::int64_t>(prompt.size()) + n));
  cache->set_simd_level(level);
  GenerateOptions opt;
  opt.n_predict = n;
  opt.sampler.temperature = 0.0f;
  opt.stop_ids = model.config().eos_ids;
  std::vector<int> out;
  generate(model, *cache, prompt, opt, [&](int id) {
    out.push_back(id);
    return true;
  });
  return out;
}

/// Logits at every position of `ids` ([n, vocab]), feeding the tokens in chunks of `chunk`.
inline std::vector<float> all_logits(Model& model, const std::vector<int>& ids, int chunk, const std::string& kv = "f32") {
  auto cache = make_kv_cache(kv, model.cache_shape(static_cast<std::int64_t>(ids.size())));
  const int vocab = model.config().vocab_size;
  std::vector<float> logits(ids.size() * static_cast<std::size_t>(vocab));
  for (std::size_t i = 0; i < ids.size(); i += static_cast<std::size_t>(chunk)) {
    const int n = static_cast<int>(std::min<std::size_t>(static_cast<std::size_t>(chunk), ids.size() - i));
    model.forward(ids.data() + i, n, static_cast<std::int64_t>(i), *cache, logits.data() + i * static_cast<std::size_t>(vocab),
                  /*all_logits=*/true);
  }
  return logits;
}

}  // namespace million::test
