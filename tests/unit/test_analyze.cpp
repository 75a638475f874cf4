// The maths of `million analyze` on hand-computed cases: moments (mean, variance, Pearson
// kurtosis) of small samples, their pairwise merge, stability under a large offset, medians, the
// outlier-channel rule, relative error sums, histograms, uniform grids, a head's summary, and the
// calibration-window planner calibrate and analyze share. Tolerance: 1e-12 relative where the
// answer is exact in double; 1e-6 for the 1e6-offset case (the update loses ~12 of 53 bits).
#include <gtest/gtest.h>

#include <cmath>

#include "common/test_util.h"
#include "eval/analyze.h"
#include "eval/analyze_stats.h"
#include "million/error.h"
#include "pq/windows.h"

namespace million {
namespace {

Moments of(const std::vector<double>& xs) {
  Moments m;
  for (double x : xs) m.add(x);
  return m;
}

TEST(AnalyzeStats, MomentsOfOneToFive) {
  // mean 3; deviations -2..2: m2 = 10, m3 = 0, m4 = 34; variance 10 / 5 = 2; kurtosis 5 * 34 / 100 = 1.7.
  const Moments m = of({1, 2, 3, 4, 5});
  EXPECT_EQ(m.n, 5);
  EXPECT_DOUBLE_EQ(m.mean, 3.0);
  EXPECT_DOUBLE_EQ(m.m2, 10.0);
  EXPECT_NEAR(m.m3, 0.0, 1e-12);
  EXPECT_DOUBLE_EQ(m.m4, 34.0);
  EXPECT_DOUBLE_EQ(m.variance(), 2.0);
  EXPECT_DOUBLE_EQ(m.stddev(), std::sqrt(2.0));
  EXPECT_DOUBLE_EQ(m.kurtosis(), 1.7);
  EXPECT_DOUBLE_EQ(m.absmax, 5.0);
}

TEST(AnalyzeStats, KurtosisOfASpike) {
  // {0, 0, 0, 10}: mean 2.5; m2 = 3 * 6.25 + 56.25 = 75; m4 = 3 * 39.0625 + 3164.0625 = 3281.25;
  // kurtosis 4 * 3281.25 / 75^2 = 7/3, above a Gaussian's 3: one outlier among four values.
  const Moments m = of({0, 0, 0, 10});
  EXPECT_DOUBLE_EQ(m.mean, 2.5);
  EXPECT_DOUBLE_EQ(m.variance(), 18.75);
  EXPECT_NEAR(m.kurtosis(), 7.0 / 3.0, 1e-12);
  // Negative values count for the abs max; a constant has no kurtosis (0 by definition here).
  EXPECT_DOUBLE_EQ(of({-7, 1}).absmax, 7.0);
  EXPECT_EQ(of({4, 4, 4}).kurtosis(), 0.0);
  EXPECT_EQ(Moments{}.kurtosis(), 0.0);
}

TEST(AnalyzeStats, LargeOffsetDoesNotCancel) {
  // Raw power sums of 1e6 + {1..5} would lose the fourth moment; the central updates keep it.
  const Moments m = of({1e6 + 1, 1e6 + 2, 1e6 + 3, 1e6 + 4, 1e6 + 5});
  EXPECT_NEAR(m.variance(), 2.0, 1e-6);
  EXPECT_NEAR(m.kurtosis(), 1.7, 1e-6);
}

TEST(AnalyzeStats, MergeEqualsOnePass) {
  const std::vector<double> a{1, -2, 3.5}, b{10, 0.25, -4, 7, 2};
  Moments ma = of(a);
  const Moments mb = of(b);
  std::vector<double> all = a;
  all.insert(all.end(), b.begin(), b.end());
  const Moments whole = of(all);
  ma.merge(mb);
  EXPECT_EQ(ma.n, whole.n);
  EXPECT_NEAR(ma.mean, whole.mean, 1e-12);
  EXPECT_NEAR(ma.m2, whole.m2, 1e-12 * whole.m2);
  EXPECT_NEAR(ma.m3, whole.m3, 1e-12 * std::fabs(whole.m3));
  EXPECT_NEAR(ma.m4, whole.m4, 1e-12 * whole.m4);
  EXPECT_EQ(ma.absmax, 10.0);
  Moments empty;
  empty.merge(mb);  // into an empty one: a copy
  EXPECT_EQ(empty.m4, mb.m4);
}

TEST(AnalyzeStats, MedianAndOutlierRule) {
  EXPECT_EQ(median({3, 1, 2}), 2.0);
  EXPECT_EQ(median({4, 1, 3, 2}), 2.5);
  EXPECT_EQ(median({}), 0.0);
  // median abs max 1: 10 > 6 x 1 is an outlier, 6 is not (the rule is strict).
  EXPECT_EQ(outlier_channels({1, 1, 1, 1, 10}, 6.0), (std::vector<bool>{false, false, false, false, true}));
  EXPECT_EQ(outlier_channels({1, 1, 1, 1, 6}, 6.0), (std::vector<bool>(5, false)));
}

TEST(AnalyzeStats, RelativeErrorHistogramGrid) {
  const float x[] = {3, 4}, xh[] = {3, 0};
  ErrorSum e;
  e.add(x, xh, 2);  // ||x - xh||^2 = 16, ||x||^2 = 25
  EXPECT_DOUBLE_EQ(e.relative(), 0.64);
  EXPECT_EQ(ErrorSum{}.relative(), 0.0);
  // Bins [0, 0.5) and [0.5, 1]; -1 and 2 are clamped into the end bins.
  EXPECT_EQ(histogram({0, 0.5, 1, -1, 2}, 2, 0, 1), (std::vector<std::int64_t>{2, 3}));
  EXPECT_EQ(uniform_grid(0, 1.5, 4), (std::vector<double>{0, 0.5, 1, 1.5}));
  EXPECT_HAS(test::throws<InvalidArgumentError>([] { histogram({1}, 0, 0, 1); }), "bins");
}

TEST(AnalyzeStats, HeadSummaryMarksOutliers) {
  // Channel abs maxes 1, 2, 1, 20: median 1.5, so with factor 6 only channel 3 (20 > 9) is an outlier.
  std::vector<ChannelStats> ch;
  const double maxes[] = {1, 2, 1, 20};
  for (int c = 0; c < 4; ++c) {
    ch.push_back({2, 1, c, AnalyzeKind::kKey, of({-maxes[c], maxes[c], 0}), false});
  }
  const HeadSummary s = summarize_head(ch, 6.0);
  EXPECT_EQ(s.layer, 2);
  EXPECT_EQ(s.kv_head, 1);
  EXPECT_EQ(s.outliers, 1);
  EXPECT_EQ(s.channels, 4);
  EXPECT_EQ(s.absmax, 20.0);
  EXPECT_EQ(s.absmax_channel, 3);
  EXPECT_EQ(s.median_absmax, 1.5);
  EXPECT_EQ(s.offset_channels, 0);  // every channel has mean 0
  EXPECT_TRUE(ch[3].outlier);
  EXPECT_FALSE(ch[1].outlier);
  // {-a, a, 0}: kurtosis 3 * 2a^4 / (2a^2)^2 = 1.5 for every channel.
  EXPECT_NEAR(s.median_kurtosis, 1.5, 1e-12);
  EXPECT_NEAR(s.max_kurtosis, 1.5, 1e-12);
}

TEST(CalibrationWindows, CutShuffleAndBudget) {
  // Documents of 40 and 20 tokens, ctx 16: windows 16 + 16 (+ 8 dropped) and 16 (+ 4 dropped).
  const std::vector<std::vector<int>> docs{std::vector<int>(40, 1), std::vector<int>(20, 2)};
  const WindowPlan all = plan_windows(docs, 16, 1000, 3);
  EXPECT_EQ(all.windows.size(), 3u);
  EXPECT_EQ(all.tokens, 48);
  EXPECT_EQ(all.available, 48);
  // A budget of 40: two whole windows; the third would be cut to 8 tokens, and a cut window under
  // 16 tokens ends the plan (unless it is the first), so 32 tokens run.
  const WindowPlan cut = plan_windows(docs, 16, 40, 3);
  EXPECT_EQ(cut.tokens, 32);
  EXPECT_EQ(cut.windows.size(), 2u);
  // A budget of 20 with ctx 32: the first window (>= 16 tokens) is cut to exactly 20.
  const WindowPlan one = plan_windows(docs, 32, 20, 0);
  ASSERT_EQ(one.windows.size(), 1u);
  EXPECT_EQ(one.tokens, 20);
  EXPECT_EQ(window_tokens(docs, one.windows[0]).size(), 20u);
  // Same seed, same plan.
  const WindowPlan again = plan_windows(docs, 16, 1000, 3);
  for (std::size_t i = 0; i < all.windows.size(); ++i) {
    EXPECT_EQ(again.windows[i].doc, all.windows[i].doc);
    EXPECT_EQ(again.windows[i].begin, all.windows[i].begin);
  }
  EXPECT_HAS(test::throws<InvalidArgumentError>([] { plan_windows({std::vector<int>(15, 1)}, 16, 100, 0); }),
             "no window of 16 tokens");
}

}  // namespace
}  // namespace million
