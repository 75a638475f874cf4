// stories260K end to end: greedy generation from BOS for 256 steps must print exactly the text
// in models/stories260K/README.md (the fixture's published golden output, read from the README
// at run time), and the "dragon" prompt must give the README's first line; for every SIMD level
// and for the f16 cache (whose output on this model is checked against the same golden text).
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "common/model_runner.h"
#include "common/test_paths.h"
#include "model/tokenizer.h"

namespace million {
namespace {

// The n-th ``` block after `heading` in the README.
std::string readme_block(const std::string& heading, int n) {
  std::ifstream in(test::source_dir() + "/models/stories260K/README.md");
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string s = ss.str();
  std::size_t p = s.find(heading);
  EXPECT_NE(p, std::string::npos);
  for (int i = 0; i <= n; ++i) {
    p = s.find("```\n", p);
    if (i < n) p = s.find("```", p + 4) + 3;
  }
  const std::size_t begin = p + 4, end = s.find("\n```", begin);
  return s.substr(begin, end - begin);
}

class Stories260K : public testing::Test {
 protected:
  void SetUp() override {
    const std::string dir = test::source_dir() + "/models/stories260K/";
    model_ = std::make_unique<Model>(load_weights(dir + "stories260K.bin"));
    tok_ = load_llama2c_tokenizer(dir + "tok512.bin", model_->config().vocab_size);
  }
  std::string run(const std::string& prompt, int steps, const std::string& kv, SimdLevel level) {
    std::vector<int> ids = tok_->encode(prompt, true);
    std::vector<int> gen = test::greedy(*model_, ids, steps - static_cast<int>(ids.size()) + 1, kv, level);
    ids.insert(ids.end(), gen.begin(), gen.end());
    return tok_->decode(ids);
  }
  std::unique_ptr<Model> model_;
  std::unique_ptr<Tokenizer> tok_;
};

TEST_F(Stories260K, GreedyFromBosMatchesGoldenText) {
  const std::string golden = readme_block("## Golden output", 0);
  ASSERT_GT(golden.size(), 500u);
  for (SimdLevel level : supported_simd_levels()) {
    EXPECT_EQ(run("", 256, "f32", level), golden) << "simd " << simd_level_name(level);
  }
}

TEST_F(Stories260K, DragonPromptFirstLineMatchesGolden) {
  const std::string first_line = readme_block("## Golden output", 1);
  ASSERT_NE(first_line.find("dragon"), std::string::npos);
  const std::string text = run("Once upon a time, there was a dragon", 256, "f32", active_simd_level());
  EXPECT_EQ(text.substr(0, text.find('\n')), first_line);
}

TEST_F(Stories260K, F16CacheGivesTheSameGoldenText) {
  EXPECT_EQ(run("", 256, "f16", active_simd_level()), readme_block("## Golden output", 0));
}

}  // namespace
}  // namespace million
