// src/eval: PPL and its 95% interval from hand-computable NLLs, log-softmax, KL divergence
// (exactly 0 for identical inputs, the closed form for two known distributions), percentiles,
// window counting with its "text too short" error, and the --save-logits file: round trip,
// exact-zero KLD against itself, mismatch errors, and refusal of truncated / corrupt files.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <random>

#include "common/test_paths.h"
#include "common/test_util.h"
#include "eval/logits_file.h"
#include "eval/perplexity.h"
#include "million/error.h"

namespace million {
namespace {

using eval::KldStats;
using eval::NllStats;

TEST(Perplexity, StatsOfKnownNlls) {
  // NLLs 1, 2, 3: mean 2, sample variance 1, standard error 1/sqrt(3).
  const NllStats s = eval::nll_stats({1.0, 2.0, 3.0});
  EXPECT_EQ(s.n, 3);
  EXPECT_DOUBLE_EQ(s.mean_nll, 2.0);
  EXPECT_NEAR(s.se_nll, 1.0 / std::sqrt(3.0), 1e-15);
  EXPECT_NEAR(s.ppl, std::exp(2.0), 1e-12);
  EXPECT_NEAR(s.ppl_low, std::exp(2.0 - 1.96 / std::sqrt(3.0)), 1e-12);
  EXPECT_NEAR(s.ppl_high, std::exp(2.0 + 1.96 / std::sqrt(3.0)), 1e-12);
  // A uniform guess over 4 tokens: PPL 4 exactly, no spread.
  const NllStats u = eval::nll_stats({std::log(4.0), std::log(4.0)});
  EXPECT_NEAR(u.ppl, 4.0, 1e-12);
  EXPECT_EQ(u.se_nll, 0.0);
  EXPECT_EQ(eval::nll_stats({}).n, 0);
}

TEST(Perplexity, LogSoftmaxAndArgmax) {
  const float logits[3] = {0.0f, std::log(3.0f), -1e30f};
  float out[3];
  EXPECT_EQ(eval::log_softmax(logits, 3, out), 1);
  EXPECT_NEAR(out[0], std::log(0.25), 1e-6);
  EXPECT_NEAR(out[1], std::log(0.75), 1e-6);
  EXPECT_LT(out[2], -1e29f);
}

TEST(Perplexity, KlOfIdenticalDistributionsIsExactlyZero) {
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0.0f, 4.0f);
  std::vector<float> a(5000);
  for (float& x : a) x = nd(rng);
  const std::vector<float> b = a;
  EXPECT_EQ(eval::kl_divergence(a.data(), b.data(), static_cast<int>(a.size())), 0.0);
}

TEST(Perplexity, KlMatchesClosedForm) {
  // P = (0.5, 0.5), Q = (0.9, 0.1): KL(P||Q) = 0.5 ln(0.5/0.9) + 0.5 ln(0.5/0.1).
  const double expected = 0.5 * std::log(0.5 / 0.9) + 0.5 * std::log(0.5 / 0.1);
  const float p[2] = {std::log(0.5f), std::log(0.5f)};
  const float q[2] = {std::log(0.9f), std::log(0.1f)};
  EXPECT_NEAR(eval::kl_divergence(p, q, 2), expected, 1e-7);
  // Logits, not log-probs: a constant shift changes nothing.
  const float p2[2] = {3.0f, 3.0f};
  const float q2[2] = {std::log(0.9f) + 7.0f, std::log(0.1f) + 7.0f};
  EXPECT_NEAR(eval::kl_divergence(p2, q2, 2), expected, 1e-6);
  // KL is not symmetric: the reverse direction has its own closed form.
  const double reverse = 0.9 * std::log(0.9 / 0.5) + 0.1 * std::log(0.1 / 0.5);
  EXPECT_NEAR(eval::kl_divergence(q, p, 2), reverse, 1e-7);
}

TEST(Perplexity, PercentilesAndKldSummary) {
  const std::vector<double> v = {1, 2, 3, 4, 5};
  EXPECT_DOUBLE_EQ(eval::percentile_sorted(v, 0.5), 3.0);
  EXPECT_DOUBLE_EQ(eval::percentile_sorted(v, 0.9), 4.6);
  EXPECT_DOUBLE_EQ(eval::percentile_sorted(v, 1.0), 5.0);
  const KldStats s = eval::kld_stats({0.0, 0.1, 0.2, 0.3}, {1, 1, 0, 1}, {1.0, 1.0, 1.0, 1.0}, {1.5, 1.5, 1.5, 1.5});
  EXPECT_NEAR(s.mean, 0.15, 1e-15);
  EXPECT_NEAR(s.median, 0.15, 1e-15);
  EXPECT_DOUBLE_EQ(s.max, 0.3);
  EXPECT_DOUBLE_EQ(s.top1_agree_pct, 75.0);
  EXPECT_NEAR(s.base.ppl, std::exp(1.0), 1e-12);
  EXPECT_NEAR(s.delta_ppl, std::exp(1.5) - std::exp(1.0), 1e-12);
  EXPECT_NEAR(s.delta_ppl_pct, 100.0 * (std::exp(0.5) - 1.0), 1e-9);
  EXPECT_NEAR(s.mean_delta_nll, 0.5, 1e-15);
}

TEST(Perplexity, CountsWindowsAndRejectsShortText) {
  eval::PerplexityOptions o;
  o.ctx = 4;
  EXPECT_EQ(eval::count_windows(11, o), 2);  // partial trailing window dropped
  o.max_windows = 1;
  EXPECT_EQ(eval::count_windows(11, o), 1);
  const std::string msg = test::throws<ContextLimitError>([&] { eval::count_windows(3, o); });
  EXPECT_HAS(msg, "3 tokens");
  EXPECT_HAS(msg, "one window of 4 tokens");
  o.ctx = 1;
  test::throws<InvalidArgumentError>([&] { eval::count_windows(100, o); });
  o.ctx = 8;
  o.chunk = 2;
  o.prefill = 8;
  test::throws<InvalidArgumentError>([&] { eval::count_windows(100, o); });
}

TEST(Perplexity, TokenHashSeesEveryToken) {
  const std::vector<int> a = {1, 2, 3, 4}, b = {1, 2, 3, 5};
  EXPECT_EQ(eval::hash_tokens(a, 3), eval::hash_tokens(b, 3));
  EXPECT_NE(eval::hash_tokens(a, 4), eval::hash_tokens(b, 4));
}

// --- the logits file -------------------------------------------------------------------------

constexpr int kVocab = 16;
constexpr int kCtx = 5;
constexpr int kWindows = 2;

struct FakeRun {
  std::vector<float> logits;  // [windows * (ctx-1), vocab]
  std::vector<int> targets, argmax;
  std::vector<double> nll;
};

FakeRun fake_run(unsigned seed) {
  FakeRun r;
  const int n = kWindows * (kCtx - 1);
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 2.0f);
  r.logits.resize(static_cast<std::size_t>(n) * kVocab);
  for (float& x : r.logits) x = nd(rng);
  std::vector<float> lp(kVocab);
  for (int i = 0; i < n; ++i) {
    r.targets.push_back((i * 7) % kVocab);
    r.argmax.push_back(eval::log_softmax(r.logits.data() + i * kVocab, kVocab, lp.data()));
    r.nll.push_back(-static_cast<double>(lp[static_cast<std::size_t>(r.targets.back())]));
  }
  return r;
}

eval::ScoredWindow window_of(const FakeRun& r, int w) {
  eval::ScoredWindow s;
  const int n = kCtx - 1;
  s.index = w;
  s.n = n;
  s.vocab = kVocab;
  s.targets = r.targets.data() + w * n;
  s.logits = r.logits.data() + static_cast<std::size_t>(w) * n * kVocab;
  s.nll = r.nll.data() + w * n;
  s.argmax = r.argmax.data() + w * n;
  return s;
}

eval::LogitsFileHeader header() {
  eval::LogitsFileHeader h;
  h.model.architecture = "test";
  h.model.n_layers = 2;
  h.model.n_kv_heads = 1;
  h.model.head_dim = 8;
  h.model.hidden_size = 8;
  h.model.vocab_size = kVocab;
  h.model.config_hash = 42;
  h.ctx = kCtx;
  h.windows = kWindows;
  h.tokens_scored = kWindows * (kCtx - 1);
  h.tokens_hash = 1234;
  h.kv = "f32";
  h.mode = "prefill";
  return h;
}

std::string write_file(const FakeRun& r) {
  const std::string path = test::temp_dir() + "/base.logits";
  eval::LogitsFileWriter w(path, header());
  for (int i = 0; i < kWindows; ++i) w.add_window(window_of(r, i));
  w.finish();
  return path;
}

TEST(LogitsFile, RoundTripAndZeroKldAgainstItself) {
  const FakeRun r = fake_run(1);
  const std::string path = write_file(r);
  eval::LogitsFileReader f(path);
  EXPECT_EQ(f.header().model, header().model);
  EXPECT_EQ(f.header().ctx, kCtx);
  EXPECT_EQ(f.header().tokens_hash, 1234u);
  EXPECT_EQ(f.header().mode, "prefill");
  f.check_compatible(header());
  std::vector<float> lp(kVocab), back(kVocab);
  for (int t = 0; t < kWindows * (kCtx - 1); ++t) {
    EXPECT_EQ(f.nll(t), r.nll[static_cast<std::size_t>(t)]);  // stored exactly (f64)
    EXPECT_EQ(f.argmax(t), r.argmax[static_cast<std::size_t>(t)]);
    eval::log_softmax(r.logits.data() + t * kVocab, kVocab, lp.data());
    f.logprobs(t, back.data());
    for (int j = 0; j < kVocab; ++j) EXPECT_NEAR(back[static_cast<std::size_t>(j)], lp[static_cast<std::size_t>(j)], 2e-2);
  }

  eval::KldAccumulator same(f);
  for (int i = 0; i < kWindows; ++i) same.add_window(window_of(r, i));
  const KldStats s = same.finish();
  EXPECT_EQ(s.n, kWindows * (kCtx - 1));
  EXPECT_EQ(s.mean, 0.0);
  EXPECT_EQ(s.max, 0.0);
  EXPECT_EQ(s.top1_agree_pct, 100.0);
  EXPECT_EQ(s.delta_ppl, 0.0);

  // A different run: positive KLD close to the exact one, computed from the f32 logits.
  const FakeRun o = fake_run(2);
  eval::KldAccumulator other(f);
  for (int i = 0; i < kWindows; ++i) other.add_window(window_of(o, i));
  const KldStats d = other.finish();
  double exact = 0.0;
  for (int t = 0; t < kWindows * (kCtx - 1); ++t) {
    exact += eval::kl_divergence(r.logits.data() + t * kVocab, o.logits.data() + t * kVocab, kVocab);
  }
  exact /= kWindows * (kCtx - 1);
  EXPECT_GT(d.mean, 0.1);
  EXPECT_NEAR(d.mean, exact, 1e-3 * exact);
  EXPECT_LT(d.top1_agree_pct, 100.0);
}

TEST(LogitsFile, MismatchedRunsAreRefusedWithTheReason) {
  const std::string path = write_file(fake_run(1));
  eval::LogitsFileReader f(path);
  eval::LogitsFileHeader h = header();
  h.model.config_hash = 43;
  EXPECT_HAS(test::throws<InvalidArgumentError>([&] { f.check_compatible(h); }), "different model");
  h = header();
  h.ctx = 6;
  EXPECT_HAS(test::throws<InvalidArgumentError>([&] { f.check_compatible(h); }), "--ctx 5");
  h = header();
  h.windows = 3;
  EXPECT_HAS(test::throws<InvalidArgumentError>([&] { f.check_compatible(h); }), "holds 2 windows");
  h = header();
  h.tokens_hash = 1;
  EXPECT_HAS(test::throws<InvalidArgumentError>([&] { f.check_compatible(h); }), "different tokens");
}

TEST(LogitsFile, TruncatedOrCorruptFilesAreRefused) {
  const std::string path = write_file(fake_run(1));
  const std::string bytes = test::slurp(path);
  const std::string dir = test::temp_dir();
  auto reject = [&](const std::string& content, const char* needle) {
    const std::string p = dir + "/bad.logits";
    test::write_file(p, content);
    EXPECT_HAS(test::throws<FormatError>([&] { eval::LogitsFileReader r(p); }), needle) << content.size() << " bytes";
  };
  reject("", "not a million logits file");
  reject("hello world, not logits", "not a million logits file");
  for (std::size_t cut : {std::size_t{10}, std::size_t{30}, std::size_t{100}, bytes.size() - 200, bytes.size() - 1}) {
    reject(bytes.substr(0, cut), "truncated");
  }
  reject(bytes + "x", "trailing");
  std::string flipped = bytes;
  flipped[bytes.size() / 2] = static_cast<char>(flipped[bytes.size() / 2] ^ 0x40);
  reject(flipped, "checksum");
  std::string version = bytes;
  version[8] = 9;
  reject(version, "version");
}

}  // namespace
}  // namespace million
