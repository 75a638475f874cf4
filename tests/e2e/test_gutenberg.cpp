// gutenberg-23m against golden.json (Hugging Face transformers, float32, eager attention):
// for every prompt the last-position logits must match within 1e-4 max-abs (the issue asks for
// 1e-3; measured 1.3e-5 to 1.7e-5, of which up to 5e-6 is the reference's 5-decimal rounding and
// the rest f32 summation order), the top-10 ids must be the same in the same order, and the
// 48-token greedy continuation must be identical. The f16 cache must stay within 0.02 of the
// f32-cache logits (measured 1.4e-3 to 4.2e-3) and give the golden argmax at every teacher-forced
// step whose golden top-1 margin leaves room for that difference (>= 0.01).
// The model lives in ../shared (or $MILLION_SHARED_DIR); without it the tests are skipped.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "common/compare.h"
#include "common/model_runner.h"
#include "common/test_paths.h"
#include "model/sampler.h"
#include "model/tokenizer.h"

namespace million {
namespace {

struct Prompt {
  std::string name, text;
  std::vector<int> input_ids, greedy_ids, top10;
  std::vector<float> last_logits, margins;
};

class Gutenberg : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = test::shared_dir() + "/models/gutenberg-23m";
    if (!std::filesystem::exists(dir_ + "/golden.json")) return;
    model_ = new Model(load_hf_weights(dir_));
    std::ifstream in(dir_ + "/golden.json");
    const nlohmann::json j = nlohmann::json::parse(in);
    for (const auto& p : j.at("prompts")) {
      Prompt pr;
      pr.name = p.at("name");
      pr.text = p.at("input_text");
      pr.input_ids = p.at("input_ids").get<std::vector<int>>();
      pr.greedy_ids = p.at("greedy_ids").get<std::vector<int>>();
      pr.last_logits = p.at("last_logits").get<std::vector<float>>();
      pr.margins = p.at("greedy_top1_margins").get<std::vector<float>>();
      for (const auto& t : p.at("top10")) pr.top10.push_back(t.at("id"));
      prompts_.push_back(pr);
    }
  }
  static void TearDownTestSuite() {
    delete model_;
    model_ = nullptr;
  }
  void SetUp() override {
    if (model_ == nullptr) GTEST_SKIP() << "gutenberg-23m not found at " << dir_ << " (set MILLION_SHARED_DIR)";
  }
  std::vector<float> last_logits(const std::vector<int>& ids, const std::string& kv, int chunk) {
    auto cache = make_kv_cache(kv, model_->cache_shape(static_cast<std::int64_t>(ids.size())));
    std::vector<float> logits(static_cast<std::size_t>(model_->config().vocab_size));
    model_->prefill(ids, *cache, logits.data(), chunk);
    return logits;
  }
  static std::vector<int> top_k(const std::vector<float>& v, int k) {
    std::vector<int> idx(v.size());
    for (std::size_t i = 0; i < v.size(); ++i) idx[i] = static_cast<int>(i);
    std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](int a, int b) {
      return v[static_cast<std::size_t>(a)] > v[static_cast<std::size_t>(b)];
    });
    idx.resize(static_cast<std::size_t>(k));
    return idx;
  }

  static inline std::string dir_;
  static inline Model* model_ = nullptr;
  static inline std::vector<Prompt> prompts_;
};

TEST_F(Gutenberg, LastLogitsAndTop10MatchReference) {
  for (const Prompt& p : prompts_) {
    for (int chunk : {512, 64}) {
      SCOPED_TRACE(p.name + " chunk=" + std::to_string(chunk));
      const auto got = last_logits(p.input_ids, "f32", chunk);
      const auto c = test::compare(got.data(), p.last_logits.data(), static_cast<std::int64_t>(got.size()));
      std::printf("%s chunk %d: max abs logit diff vs transformers %.3g\n", p.name.c_str(), chunk, c.max_abs);
      EXPECT_EQ(c.nonfinite_mismatch, 0);
      EXPECT_LE(c.max_abs, 1e-4);
      EXPECT_EQ(top_k(got, 10), p.top10);
    }
  }
}

TEST_F(Gutenberg, TokenizerReproducesInputIds) {
  auto tok = load_sentencepiece_tokenizer(dir_ + "/tokenizer.model");
  for (const Prompt& p : prompts_) EXPECT_EQ(tok->encode(p.text, true), p.input_ids) << p.name;
}

TEST_F(Gutenberg, GreedyContinuationMatches) {
  for (const Prompt& p : prompts_) {
    auto got = test::greedy(*model_, p.input_ids, static_cast<int>(p.greedy_ids.size()));
    EXPECT_EQ(got, p.greedy_ids) << p.name;
  }
}

TEST_F(Gutenberg, F16CacheStaysCloseToF32) {
  for (const Prompt& p : prompts_) {
    SCOPED_TRACE(p.name);
    const auto f32 = last_logits(p.input_ids, "f32", 512);
    const auto f16 = last_logits(p.input_ids, "f16", 512);
    const auto c = test::compare(f16.data(), f32.data(), static_cast<std::int64_t>(f32.size()));
    std::printf("%s: f16 cache vs f32 cache max abs logit diff %.3g\n", p.name.c_str(), c.max_abs);
    EXPECT_LE(c.max_abs, 0.02);

    // Teacher-forced along the golden continuation: at every step whose golden top-1 margin is at
    // least 0.01 (more than twice the f16-vs-f32 logit difference measured above), the f16
    // cache's argmax must be the golden token. Steps with smaller margins may flip.
    auto cache = make_kv_cache("f16", model_->cache_shape(static_cast<std::int64_t>(p.input_ids.size() + p.greedy_ids.size())));
    std::vector<float> logits(static_cast<std::size_t>(model_->config().vocab_size));
    model_->prefill(p.input_ids, *cache, logits.data());
    int checked = 0;
    for (std::size_t i = 0; i < p.greedy_ids.size(); ++i) {
      if (p.margins[i] >= 0.01f) {
        EXPECT_EQ(argmax(logits.data(), static_cast<int>(logits.size())), p.greedy_ids[i]) << "step " << i;
        ++checked;
      }
      model_->forward(&p.greedy_ids[i], 1, static_cast<std::int64_t>(p.input_ids.size() + i), *cache, logits.data());
    }
    const auto free_run = test::greedy(*model_, p.input_ids, static_cast<int>(p.greedy_ids.size()), "f16");
    std::printf("%s: f16 argmax = golden at %d of 48 teacher-forced steps (the others have margins < 0.01); "
                "free-running f16 greedy %s\n",
                p.name.c_str(), checked, free_run == p.greedy_ids ? "identical over all 48" : "differs");
  }
}

// q8_0 (8.5 bits, default window 128: up to ~870 of the 1000 prompt tokens read from blocks):
// teacher-forced along the golden continuation, the argmax equals the golden token at every
// step whose golden margin is at least 0.05, and the free-running greedy continuation equals the
// golden one (measured: identical for all three prompts).
TEST_F(Gutenberg, Q8CacheKeepsGreedyContinuations) {
  for (const Prompt& p : prompts_) {
    SCOPED_TRACE(p.name);
    auto cache = make_kv_cache("q8_0", model_->cache_shape(static_cast<std::int64_t>(p.input_ids.size() + p.greedy_ids.size())));
    std::vector<float> logits(static_cast<std::size_t>(model_->config().vocab_size));
    model_->prefill(p.input_ids, *cache, logits.data());
    const auto f32 = last_logits(p.input_ids, "f32", 512);
    const auto c = test::compare(logits.data(), f32.data(), static_cast<std::int64_t>(f32.size()));
    std::printf("%s: q8_0 cache vs f32 cache max abs logit diff %.3g\n", p.name.c_str(), c.max_abs);
    int checked = 0;
    for (std::size_t i = 0; i < p.greedy_ids.size(); ++i) {
      if (p.margins[i] >= 0.05f) {
        EXPECT_EQ(argmax(logits.data(), static_cast<int>(logits.size())), p.greedy_ids[i]) << "step " << i;
        ++checked;
      }
      model_->forward(&p.greedy_ids[i], 1, static_cast<std::int64_t>(p.input_ids.size() + i), *cache, logits.data());
    }
    const auto free_run = test::greedy(*model_, p.input_ids, static_cast<int>(p.greedy_ids.size()), "q8_0");
    std::printf("%s: q8_0 argmax = golden at %d teacher-forced steps with margin >= 0.05; free-running greedy %s\n",
                p.name.c_str(), checked, free_run == p.greedy_ids ? "identical over all 48" : "differs");
    EXPECT_EQ(free_run, p.greedy_ids);
  }
}

}  // namespace
}  // namespace million
