// SmolLM2-135M-Instruct (Q4_1 GGUF, scripts/fetch-smollm2.sh) against Hugging Face transformers
// loading the same file in float32 (tests/data/smollm2/reference.json, written by
// scripts/fixtures/make_smollm2_reference.py): for three prompts, the prompt's token ids from our
// GGUF tokenizer, the last-position logits (top 64 and 256 fixed probe ids; mean, std, logsumexp
// of all of them; argmax) and a 16-token greedy continuation, compared while the reference's
// top-1 margin exceeds twice the logit bound. Weights dequantized to f32 (--weights f32: exact
// dequantization, only summation order differs) and to f16 (the default: each weight rounded
// once more) have separate bounds. Measured (transformers 5.24, torch 2.15, AVX-512): f32 max
// |diff| 2.3e-5, statistics within 1.1e-5; f16 max |diff| 0.0145, statistics within 0.0053; all 16
// greedy tokens equal for every prompt. Bounds: f32 2e-4 / 1e-4, f16 0.05 / 0.02. Skips, saying
// why, when the model file is absent.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/model_runner.h"
#include "common/test_paths.h"
#include "model/gguf_model.h"

namespace million {
namespace {

constexpr const char* kFile = "SmolLM2-135M-Instruct.Q4_1.gguf";

std::string model_path() {
  for (const std::string& dir : {test::source_dir() + "/models/smollm2-135m", test::shared_dir() + "/models/smollm2-135m"}) {
    if (std::filesystem::exists(dir + "/" + kFile)) return dir + "/" + kFile;
  }
  return "";
}

nlohmann::json reference() {
  std::ifstream in(test::data_path("smollm2/reference.json"));
  return nlohmann::json::parse(in);
}

struct Bounds {
  bool to_f32;
  double max_abs;    // any compared logit
  double stat;       // mean, std and logsumexp of all logits
};

class SmolLM2 : public testing::TestWithParam<Bounds> {};

TEST_P(SmolLM2, LogitsAndGreedyMatchTransformers) {
  const std::string path = model_path();
  if (path.empty()) {
    GTEST_SKIP() << "models/smollm2-135m/" << kFile << " is absent: run scripts/fetch-smollm2.sh";
  }
  const Bounds b = GetParam();
  const auto t0 = std::chrono::steady_clock::now();
  Model model(load_gguf_weights(path, {.to_f32 = b.to_f32}));
  const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const auto tok = load_gguf_tokenizer(path);
  const nlohmann::json ref = reference();
  ASSERT_EQ(model.config().vocab_size, ref.at("vocab_size").get<int>());
  std::printf("%s weights: loaded in %.2f s\n", b.to_f32 ? "f32" : "f16", load_s);

  for (const auto& c : ref.at("cases")) {
    const std::string prompt = c.at("prompt").get<std::string>();
    SCOPED_TRACE(prompt);
    const auto ids = c.at("ids").get<std::vector<int>>();
    EXPECT_EQ(tok->encode(prompt, /*add_bos=*/true), ids);  // add_bos_token is false in this file

    const std::vector<float> all = test::all_logits(model, ids, 64);
    const float* last = all.data() + (ids.size() - 1) * static_cast<std::size_t>(model.config().vocab_size);
    double max_abs = 0;
    for (const char* which : {"top", "probe"}) {
      const auto vid = c.at(std::string(which) + "_ids").get<std::vector<int>>();
      const auto val = c.at(std::string(which) + "_logits").get<std::vector<double>>();
      for (std::size_t i = 0; i < vid.size(); ++i) max_abs = std::max(max_abs, std::fabs(last[vid[i]] - val[i]));
    }
    const int V = model.config().vocab_size;
    double sum = 0, sq = 0, mx = -INFINITY;
    int argmax = 0;
    for (int i = 0; i < V; ++i) {
      sum += last[i];
      if (last[i] > mx) mx = last[i], argmax = i;
    }
    const double mean = sum / V;
    double lse = 0;
    for (int i = 0; i < V; ++i) sq += (last[i] - mean) * (last[i] - mean), lse += std::exp(last[i] - mx);
    const auto& s = c.at("stats");
    EXPECT_LE(max_abs, b.max_abs);
    EXPECT_NEAR(mean, s.at("mean").get<double>(), b.stat);
    EXPECT_NEAR(std::sqrt(sq / V), s.at("std").get<double>(), b.stat);
    EXPECT_NEAR(mx + std::log(lse), s.at("logsumexp").get<double>(), b.stat);
    EXPECT_EQ(argmax, s.at("argmax").get<int>());
    std::printf("%-40.40s max |logit diff| %.3g (top-64 + 256 probes), mean diff %.2g\n",
                nlohmann::json(prompt).dump().c_str(), max_abs, std::fabs(mean - s.at("mean").get<double>()));

    // Greedy continuation (no EOS stop: the reference generated a fixed count).
    const auto want = c.at("greedy").get<std::vector<int>>();
    const auto margins = c.at("greedy_margins").get<std::vector<double>>();
    auto cache = make_kv_cache("f32", model.cache_shape(static_cast<std::int64_t>(ids.size() + want.size())));
    GenerateOptions opt;
    opt.n_predict = static_cast<int>(want.size());
    opt.sampler.temperature = 0.0f;
    std::vector<int> got;
    generate(model, *cache, ids, opt, [&](int id) {
      got.push_back(id);
      return true;
    });
    ASSERT_EQ(got.size(), want.size());
    std::size_t checked = 0;
    for (; checked < want.size() && margins[checked] > 2 * b.max_abs; ++checked) {
      ASSERT_EQ(got[checked], want[checked]) << "greedy step " << checked;
    }
    std::printf("  greedy: %zu of %zu tokens compared (margin > %.2g), %s\n", checked, want.size(), 2 * b.max_abs,
                nlohmann::json(tok->decode(got)).dump().c_str());
  }
}

INSTANTIATE_TEST_SUITE_P(Weights, SmolLM2, testing::Values(Bounds{true, 2e-4, 1e-4}, Bounds{false, 5e-2, 2e-2}),
                         [](const auto& p) { return std::string(p.param.to_f32 ? "f32" : "f16"); });

}  // namespace
}  // namespace million
