// Sampler tests (src/model/sampler.cpp): argmax ties and NaN, greedy and top-k=1 equal argmax,
// seeding, option validation, and the sampled distribution against softmax(logits / T) computed
// here in double (also after top-k and top-p filtering) over 200,000 draws. Frequencies must be
// within 5 standard deviations per token (binomial sigma = sqrt(p(1-p)/N), a false-failure rate
// below 1e-6 per token) and a chi-square statistic below the 1e-6 upper quantile.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "common/test_util.h"
#include "million/error.h"
#include "model/sampler.h"

namespace million {
namespace {

using test::throws;



SamplerOptions opts(float temperature, int top_k = 0, float top_p = 1.0f, std::uint64_t seed = 1) {
  SamplerOptions o;
  o.temperature = temperature;
  o.top_k = top_k;
  o.top_p = top_p;
  o.seed = seed;
  return o;
}

/// The first index of the largest value (written independently of million::argmax).
int first_max(const std::vector<float>& v) {
  return static_cast<int>(std::max_element(v.begin(), v.end()) - v.begin());
}

std::vector<float> random_logits(std::mt19937& rng, int n, bool with_ties) {
  std::normal_distribution<float> d(0.0f, 3.0f);
  std::vector<float> v(static_cast<std::size_t>(n));
  for (float& x : v) x = with_ties ? std::round(d(rng)) : d(rng);
  return v;
}

// --- argmax ---------------------------------------------------------------------------------------

TEST(Argmax, LowestIndexWinsTies) {
  const std::vector<float> a = {1.0f, 3.0f, 3.0f, 2.0f, 3.0f};
  EXPECT_EQ(argmax(a.data(), 5), 1);
  const std::vector<float> same(7, -2.5f);
  EXPECT_EQ(argmax(same.data(), 7), 0);
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<float> b = {-inf, -inf, -1e30f, -inf};
  EXPECT_EQ(argmax(b.data(), 4), 2);
  const std::vector<float> c = {0.0f, inf, 5.0f, inf};
  EXPECT_EQ(argmax(c.data(), 4), 1);
  std::mt19937 rng(3);
  for (int t = 0; t < 1000; ++t) {
    const std::vector<float> v = random_logits(rng, 1 + t % 50, /*with_ties=*/true);
    ASSERT_EQ(argmax(v.data(), static_cast<int>(v.size())), first_max(v));
  }
}

TEST(Argmax, NaNOrEmptyIsAnError) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (int pos : {0, 2, 4}) {
    std::vector<float> v = {1.0f, 2.0f, 3.0f, 2.0f, 1.0f};
    v[static_cast<std::size_t>(pos)] = nan;
    EXPECT_HAS(throws<InvalidArgumentError>([&] { argmax(v.data(), 5); }), "NaN");
  }
  const float one = 1.0f;
  throws<InvalidArgumentError>([&] { argmax(&one, 0); });
}

// --- options ----------------------------------------------------------------------------------------

TEST(SamplerOptions, InvalidValuesThrow) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  for (float t : {-0.1f, -1.0f, nan, inf}) {
    SCOPED_TRACE(t);
    throws<InvalidArgumentError>([&] { opts(t).validate(); });
    throws<InvalidArgumentError>([&] { Sampler s(opts(t)); });
  }
  for (float p : {0.0f, -0.5f, 1.0001f, 2.0f, nan}) {
    SCOPED_TRACE(p);
    throws<InvalidArgumentError>([&] { Sampler s(opts(1.0f, 0, p)); });
  }
  for (int k : {-1, -100}) {
    EXPECT_HAS(throws<InvalidArgumentError>([&] { Sampler s(opts(1.0f, k)); }), "top-k");
  }
  EXPECT_NO_THROW(Sampler(opts(0.0f, 0, 1.0f)));
  EXPECT_NO_THROW(Sampler(opts(2.0f, 1, 1e-6f)));
  EXPECT_NO_THROW(SamplerOptions{}.validate());
}

TEST(Sampler, NaNOrEmptyLogitsThrowAtAnyTemperature) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (float t : {0.0f, 0.5f, 1.0f}) {
    for (int k : {0, 1, 3}) {
      std::vector<float> v = {1.0f, 2.0f, nan, 0.5f, -1.0f};
      Sampler s(opts(t, k, 0.9f));
      EXPECT_HAS(throws<InvalidArgumentError>([&] { s.sample(v.data(), 5); }), "NaN");
      throws<InvalidArgumentError>([&] { s.sample(v.data(), 0); });
    }
  }
}

// --- greedy and top-k = 1 ----------------------------------------------------------------------------

TEST(Sampler, TemperatureZeroIsArgmax) {
  std::mt19937 rng(11);
  for (int k : {0, 1, 5}) {
    Sampler s(opts(0.0f, k, 0.5f, 99));
    for (int t = 0; t < 500; ++t) {
      const std::vector<float> v = random_logits(rng, 2 + t % 40, /*with_ties=*/t % 2 == 0);
      ASSERT_EQ(s.sample(v.data(), static_cast<int>(v.size())), first_max(v));
    }
  }
}

TEST(Sampler, TopK1IsArgmaxAtAnyTemperature) {
  std::mt19937 rng(12);
  for (float temp : {0.1f, 1.0f, 10.0f, 1000.0f}) {
    Sampler s(opts(temp, 1, 1.0f, 5));
    for (int t = 0; t < 500; ++t) {
      const std::vector<float> v = random_logits(rng, 2 + t % 40, /*with_ties=*/t % 2 == 0);
      ASSERT_EQ(s.sample(v.data(), static_cast<int>(v.size())), first_max(v)) << "temperature " << temp;
    }
  }
}

// --- seeding -------------------------------------------------------------------------------------------

std::vector<int> draw(std::uint64_t seed, int count) {
  const std::vector<float> v(32, 0.0f);  // uniform over 32 tokens
  Sampler s(opts(1.0f, 0, 1.0f, seed));
  std::vector<int> out;
  for (int i = 0; i < count; ++i) out.push_back(s.sample(v.data(), 32));
  return out;
}

TEST(Sampler, SeedDeterminesTheSequence) {
  EXPECT_EQ(draw(42, 1000), draw(42, 1000));
  EXPECT_EQ(draw(0, 1000), draw(0, 1000));
  // Two independent uniform sequences of 1000 draws over 32 tokens agree with probability 32^-1000.
  EXPECT_NE(draw(42, 1000), draw(43, 1000));
  EXPECT_NE(draw(0, 1000), draw(1, 1000));
  // And the draws are not constant.
  const std::vector<int> d = draw(7, 1000);
  EXPECT_GT(std::count(d.begin(), d.end(), d[0]), 0);
  EXPECT_LT(std::count(d.begin(), d.end(), d[0]), 200);
}

// --- distributions -----------------------------------------------------------------------------------

/// softmax(logits / T) restricted to the top_k highest logits (ties to the lower index) and then
/// to the smallest prefix of those, by descending probability, whose mass reaches top_p;
/// renormalised. Tokens outside get probability exactly 0.
std::vector<double> reference_probs(const std::vector<float>& logits, double temp, int top_k, double top_p) {
  const std::size_t n = logits.size();
  std::vector<std::size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return logits[a] > logits[b]; });
  const std::size_t k = top_k > 0 ? std::min<std::size_t>(static_cast<std::size_t>(top_k), n) : n;
  std::vector<double> e(n, 0.0);
  double z = 0.0;
  for (std::size_t r = 0; r < k; ++r) {
    e[order[r]] = std::exp(static_cast<double>(logits[order[r]]) / temp);
    z += e[order[r]];
  }
  std::vector<double> p(n, 0.0);
  double mass = 0.0, kept = 0.0;
  for (std::size_t r = 0; r < k; ++r) {
    p[order[r]] = e[order[r]] / z;
    mass += p[order[r]];
    kept += p[order[r]];
    if (mass >= top_p) break;
  }
  for (double& x : p) x /= kept;
  return p;
}

/// Draws `draws` tokens and checks frequencies against `want` (see the header for the bounds).
void check_distribution(const std::vector<float>& logits, const SamplerOptions& o, const std::vector<double>& want,
                        int draws = 200'000) {
  Sampler s(o);
  std::vector<int> count(logits.size(), 0);
  for (int i = 0; i < draws; ++i) {
    const int t = s.sample(logits.data(), static_cast<int>(logits.size()));
    ASSERT_GE(t, 0);
    ASSERT_LT(t, static_cast<int>(logits.size()));
    ++count[static_cast<std::size_t>(t)];
  }
  double chi2 = 0.0;
  int dof = -1;
  for (std::size_t i = 0; i < logits.size(); ++i) {
    const double p = want[i];
    if (p == 0.0) {
      EXPECT_EQ(count[i], 0) << "token " << i << " is outside the allowed set but was drawn";
      continue;
    }
    const double f = static_cast<double>(count[i]) / draws;
    const double sigma = std::sqrt(p * (1.0 - p) / draws);
    EXPECT_LT(std::fabs(f - p), 5.0 * sigma) << "token " << i << ": frequency " << f << ", probability " << p;
    const double expected = p * draws;
    chi2 += (count[i] - expected) * (count[i] - expected) / expected;
    ++dof;
  }
  // 24 + 2.5 dof is above the upper 1e-6 quantile of chi-square for 1..9 dof (9 dof: 44.8).
  if (dof > 0) {
    EXPECT_LT(chi2, 24.0 + 2.5 * dof) << "chi-square with " << dof << " degrees of freedom";
  }
}

const std::vector<float> kLogits = {1.0f, 2.0f, 0.5f, -1.0f, 1.5f, 0.0f, 2.0f, -3.0f};

TEST(SamplerDistribution, MatchesSoftmaxAtTemperature) {
  for (float temp : {1.0f, 0.7f, 2.5f}) {
    SCOPED_TRACE(temp);
    const std::vector<double> want = reference_probs(kLogits, temp, 0, 1.0);
    check_distribution(kLogits, opts(temp, 0, 1.0f, 1234), want);
  }
}

TEST(SamplerDistribution, TopKRenormalisesOverTheKHighest) {
  // Logits 2.0 at 1 and 6, then 1.5 at 4: top-3 is {1, 6, 4}.
  const std::vector<double> want = reference_probs(kLogits, 0.8, 3, 1.0);
  ASSERT_GT(want[4], 0.0);
  ASSERT_EQ(want[0], 0.0);
  check_distribution(kLogits, opts(0.8f, 3, 1.0f, 77), want);
  // top_k larger than the vocabulary is no filter.
  check_distribution(kLogits, opts(0.8f, 100, 1.0f, 78), reference_probs(kLogits, 0.8, 0, 1.0));
}

TEST(SamplerDistribution, TopPKeepsOnlyTheNucleus) {
  // Probabilities at T=1 sorted: 0.295, 0.295, 0.179, 0.109, 0.066, ...; cumulative 0.295,
  // 0.590, 0.769, 0.878, 0.944, ... so top_p 0.6 keeps exactly three tokens and 0.9 five.
  for (float top_p : {0.6f, 0.9f}) {
    SCOPED_TRACE(top_p);
    const std::vector<double> want = reference_probs(kLogits, 1.0, 0, top_p);
    const auto nucleus = std::count_if(want.begin(), want.end(), [](double p) { return p > 0; });
    EXPECT_EQ(nucleus, top_p < 0.7f ? 3 : 5);
    check_distribution(kLogits, opts(1.0f, 0, top_p, 555), want);
  }
  // top_k then top_p over the renormalised top-k.
  const std::vector<double> want = reference_probs(kLogits, 1.0, 4, 0.7);
  check_distribution(kLogits, opts(1.0f, 4, 0.7f, 556), want);
  // A tiny top_p keeps only the most likely token (the first of the tied pair).
  Sampler s(opts(1.0f, 0, 1e-3f, 557));
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(s.sample(kLogits.data(), static_cast<int>(kLogits.size())), 1);
}

TEST(SamplerDistribution, MinusInfinityIsNeverDrawn) {
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<float> v = {-inf, 0.5f, -inf, 0.0f, -inf};
  check_distribution(v, opts(1.0f, 0, 1.0f, 9), reference_probs(v, 1.0, 0, 1.0), 20'000);
}

}  // namespace
}  // namespace million
