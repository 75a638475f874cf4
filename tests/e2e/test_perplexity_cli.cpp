// `million perplexity` run as a user runs it, on the bundled stories260K model: a finite PPL on a
// short story (text and --json output), f32 vs f16 caches compared through --save-logits /
// --kl-base (small KLD, high top-1 agreement), chunked decoding that reads coded history, and
// one-line errors for truncated / corrupt / mismatched logits files, text shorter than one
// window and missing files. With gutenberg-23m present: the first held-out book's PPL at ctx
// 1024 matches the Hugging Face transformers reference in eval.json.
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/cli_run.h"
#include "common/test_paths.h"
#include "common/test_util.h"

namespace million {
namespace {

using Result = test::CliResult;
Result run(const std::string& args) { return test::run_cli(MILLION_BIN, args); }

nlohmann::json run_json(const std::string& args) {
  const Result r = run(args + " --json -q");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.err, "") << "-q keeps stderr quiet";
  try {
    return nlohmann::json::parse(r.out);
  } catch (const std::exception& e) {
    ADD_FAILURE() << "not JSON: " << e.what() << "\n" << r.out;
    return {};
  }
}

constexpr const char* kStory =
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her "
    "friends. One day, Lily saw a big red ball under a tree. She wanted to play with it, but it was too high. "
    "Lily asked her mom for help. Her mom smiled and said, \"Let's get the ball together.\" They got the ball "
    "and played all day. Lily was very happy. She said, \"Thank you, mom!\" Her mom gave her a big hug.\n\n"
    "Once upon a time, there was a small dog named Max. Max liked to run and jump. One day, Max found a shiny "
    "stone in the garden. He took it to his friend, the cat. The cat looked at the stone and said, \"It is "
    "very pretty!\" Max and the cat played with the stone until the sun went down. Then they went home and "
    "slept. The next day, they played again, and they were best friends forever.\n";

class PerplexityCli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = test::temp_dir();
    text_ = dir_ + "/story.txt";
    test::write_file(text_, kStory);
  }
  std::string base(const std::string& extra = "") const { return "perplexity -t 1 --text '" + text_ + "' --ctx 64 " + extra; }
  std::string dir_, text_;
};

TEST_F(PerplexityCli, HelpListsTheOptions) {
  const Result r = run("perplexity --help");
  EXPECT_EQ(r.code, 0);
  for (const char* opt : {"--model", "--text", "--tokens", "--ctx", "--kv", "--kv-k", "--kv-v", "--codebook", "--chunk",
                          "--threads", "--max-windows", "--json", "--save-logits", "--kl-base"}) {
    EXPECT_HAS(r.out, opt);
  }
}

TEST_F(PerplexityCli, PrintsAFinitePerplexity) {
  const Result r = run(base());
  ASSERT_EQ(r.code, 0) << r.err;
  ASSERT_EQ(r.out.rfind("perplexity: ", 0), 0u) << r.out;
  const double ppl = std::stod(r.out.substr(12));
  EXPECT_TRUE(std::isfinite(ppl));
  EXPECT_GT(ppl, 1.0);
  EXPECT_LT(ppl, 100.0) << "a story in the model's own domain; the vocabulary is 512";
  EXPECT_HAS(r.out, "95% CI");
  EXPECT_HAS(r.out, "tok/s");
  EXPECT_HAS(r.err, "window ") << "progress line on stderr";

  const nlohmann::json j = run_json(base());
  ASSERT_TRUE(j.is_object());
  EXPECT_NEAR(j["ppl"].get<double>(), ppl, 1e-3 * ppl);
  const std::int64_t windows = j["windows"].get<std::int64_t>();
  EXPECT_GE(windows, 3);
  EXPECT_EQ(j["tokens_scored"].get<std::int64_t>(), windows * 63);
  EXPECT_LT(j["ppl_ci95"][0].get<double>(), ppl);
  EXPECT_GT(j["ppl_ci95"][1].get<double>(), ppl);
  EXPECT_EQ(run_json(base("--max-windows 2"))["windows"].get<int>(), 2);

  // A directory: each *.txt file is a document (BOS + text), in sorted order; others ignored.
  test::write_file(dir_ + "/books/a.txt", kStory);
  test::write_file(dir_ + "/books/b.txt", kStory);
  test::write_file(dir_ + "/books/notes.md", kStory);
  const nlohmann::json d = run_json("perplexity -t 1 --ctx 64 --text '" + dir_ + "/books'");
  EXPECT_HAS(d["source"].get<std::string>(), "2 documents");
  EXPECT_GE(d["windows"].get<std::int64_t>(), 2 * windows);
}

TEST_F(PerplexityCli, F16CacheIsCloseToF32ByKld) {
  const std::string logits = dir_ + "/f32.logits";
  const nlohmann::json b = run_json(base("--kv f32 --save-logits '" + logits + "'"));
  ASSERT_TRUE(std::filesystem::exists(logits));
  EXPECT_FALSE(std::filesystem::exists(logits + ".tmp"));

  const nlohmann::json self = run_json(base("--kv f32 --kl-base '" + logits + "'"));
  EXPECT_EQ(self["kl_base"]["mean_kld"].get<double>(), 0.0) << "the same run again";
  EXPECT_EQ(self["kl_base"]["top1_agreement_pct"].get<double>(), 100.0);

  const nlohmann::json j = run_json(base("--kv f16 --kl-base '" + logits + "'"));
  const nlohmann::json& k = j["kl_base"];
  EXPECT_GT(k["mean_kld"].get<double>(), 0.0) << "f16 rounding changes something";
  EXPECT_LT(k["mean_kld"].get<double>(), 1e-3);
  EXPECT_LT(k["max_kld"].get<double>(), 1e-1);
  EXPECT_GE(k["top1_agreement_pct"].get<double>(), 97.0);
  EXPECT_NEAR(k["base"]["ppl"].get<double>(), b["ppl"].get<double>(), 1e-9 * b["ppl"].get<double>());
  EXPECT_LT(std::abs(k["delta_ppl_pct"].get<double>()), 1.0);

  // Human-readable form of the same comparison.
  const Result r = run(base("--kv f16 -q --kl-base '" + logits + "'"));
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_HAS(r.out, "mean KLD");
  EXPECT_HAS(r.out, "top-1 agreement");
  EXPECT_HAS(r.out, "delta PPL");
}

TEST_F(PerplexityCli, ChunkedDecodeReadsCodedHistory) {
  // stories260K has head_dim 8, so KIVI with groups of 8 is the quantized cache here. With its
  // default exact window (128 tokens > ctx 64) every query reads exact K/V, so 4 and 2 bits give
  // the same logits. Fed token by token with an exact window of 8, later tokens read coded K/V
  // and 2 bits drift much further than 4.
  const std::string logits = dir_ + "/f32c.logits";
  run_json(base("--chunk 1 --save-logits '" + logits + "'"));
  auto kld = [&](const std::string& opts) {
    const nlohmann::json j = run_json(base(opts + " --kl-base '" + logits + "'"));
    return j.contains("kl_base") ? j["kl_base"]["mean_kld"].get<double>() : -1.0;
  };
  const double p4 = kld("--kv kivi-4:group=8"), p2 = kld("--kv kivi-2:group=8");
  EXPECT_EQ(p4, p2);
  EXPECT_LT(p4, 1e-6);
  const double c4 = kld("--chunk 1 --kv kivi-4:group=8,window=8,batch=8");
  const double c2 = kld("--chunk 1 --kv kivi-2:group=8,window=8,batch=8");
  EXPECT_GT(c4, 100.0 * p4);
  EXPECT_GT(c2, 3.0 * c4);
  EXPECT_LT(c4, 0.05);
  // Chunks of 16 after a prefill of 32 sit in between: fewer tokens read coded history.
  const double m4 = kld("--chunk 16 --prefill 32 --kv kivi-4:group=8,window=8,batch=8");
  EXPECT_GT(m4, 10.0 * p4);
}

TEST_F(PerplexityCli, BadLogitsFilesGiveClearErrors) {
  const std::string logits = dir_ + "/base.logits";
  run_json(base("--save-logits '" + logits + "'"));
  const std::string bytes = test::slurp(logits);

  test::write_file(dir_ + "/cut.logits", bytes.substr(0, bytes.size() / 2));
  Result r = run(base("--kl-base '" + dir_ + "/cut.logits'"));
  EXPECT_EQ(r.code, 1);
  EXPECT_HAS(r.err, "truncated");
  EXPECT_EQ(r.out, "");

  std::string flipped = bytes;
  flipped[bytes.size() - 100] = static_cast<char>(flipped[bytes.size() - 100] ^ 1);
  test::write_file(dir_ + "/flip.logits", flipped);
  r = run(base("--kl-base '" + dir_ + "/flip.logits'"));
  EXPECT_EQ(r.code, 1);
  EXPECT_HAS(r.err, "checksum");

  test::write_file(dir_ + "/text.logits", kStory);
  r = run(base("--kl-base '" + dir_ + "/text.logits'"));
  EXPECT_EQ(r.code, 1);
  EXPECT_HAS(r.err, "not a million logits file");

  r = run(base("--kl-base '" + dir_ + "/missing.logits'"));
  EXPECT_EQ(r.code, 1);
  EXPECT_HAS(r.err, "missing.logits");

  // A valid file from another setting.
  r = run("perplexity --text '" + text_ + "' --ctx 32 --kl-base '" + logits + "'");
  EXPECT_EQ(r.code, 1);
  EXPECT_HAS(r.err, "--ctx 64");
  r = run(base("--max-windows 1 --kl-base '" + logits + "'"));
  EXPECT_EQ(r.code, 1);
  EXPECT_HAS(r.err, "windows");
  test::write_file(dir_ + "/other.txt", std::string(kStory).replace(0, 4, "Long"));
  r = run("perplexity --text '" + dir_ + "/other.txt' --ctx 64 --kl-base '" + logits + "'");
  EXPECT_EQ(r.code, 1);
  EXPECT_HAS(r.err, "different tokens");
}

TEST_F(PerplexityCli, ShortTextAndMissingFilesGiveClearErrors) {
  test::write_file(dir_ + "/short.txt", "Once upon a time.");
  Result r = run("perplexity --text '" + dir_ + "/short.txt' --ctx 64 -q");
  EXPECT_EQ(r.code, 1);
  EXPECT_HAS(r.err, "fewer than one window of 64 tokens");
  EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << "one line: " << r.err;

  r = run("perplexity --text '" + dir_ + "/nothing.txt'");
  EXPECT_EQ(r.code, 1);
  EXPECT_HAS(r.err, "does not exist");
  r = run("perplexity --tokens '" + dir_ + "/nothing.bin'");
  EXPECT_EQ(r.code, 1);
  EXPECT_HAS(r.err, "does not exist");
  test::write_file(dir_ + "/odd.bin", "abc");
  r = run("perplexity --tokens '" + dir_ + "/odd.bin'");
  EXPECT_EQ(r.code, 1);
  EXPECT_HAS(r.err, "uint16");
  r = run("perplexity");
  EXPECT_EQ(r.code, 1);
  EXPECT_HAS(r.err, "--text");
  r = run("perplexity --text '" + text_ + "' --ctx 100000");
  EXPECT_EQ(r.code, 1);
  EXPECT_HAS(r.err, "maximum context");
}

TEST(PerplexityGutenberg, FirstHeldoutBookMatchesTransformers) {
  const std::string dir = test::shared_dir() + "/models/gutenberg-23m";
  const std::string tokens = dir + "/eval-tokens/heldout_eval.bin";
  if (!std::filesystem::exists(tokens)) GTEST_SKIP() << "gutenberg-23m eval tokens not found at " << tokens;
  // eval.json: Lord Jim (the first 16 windows of ctx 1024), PPL 33.82392526745408, 16368 tokens.
  const nlohmann::json j = run_json("perplexity -m '" + dir + "' --tokens '" + tokens + "' --ctx 1024 --max-windows 16");
  EXPECT_EQ(j["tokens_scored"].get<int>(), 16368);
  EXPECT_NEAR(j["ppl"].get<double>(), 33.82392526745408, 2e-3);
}

}  // namespace
}  // namespace million
