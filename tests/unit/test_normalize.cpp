// The K/V normalisations of pq/normalize.h on hand-computed cases: channel-group min/range
// (f16-rounded, range stepped up so the maximum maps to u <= 1), token norms, round trips, and
// the bits they cost.
#include <gtest/gtest.h>

#include <cmath>

#include "core/half.h"
#include "million/error.h"
#include "pq/normalize.h"

namespace million {
namespace {

TEST(Normalize, ChannelGroupParamsAndRoundTrip) {
  // 3 tokens x 2 channels; channel 0 in [-1, 3], channel 1 constant 0.5.
  const float x[] = {-1.0f, 0.5f, 3.0f, 0.5f, 1.0f, 0.5f};
  float mn[2], rg[2], u[6], back[6];
  channel_group_params(x, 3, 2, mn, rg);
  EXPECT_EQ(mn[0], -1.0f);
  EXPECT_EQ(rg[0], 4.0f);
  EXPECT_EQ(mn[1], 0.5f);
  EXPECT_EQ(rg[1], 0.0f);
  channel_group_normalize(x, 3, 2, mn, rg, u);
  const float want[] = {0.0f, 0.0f, 1.0f, 0.0f, 0.5f, 0.0f};
  for (int i = 0; i < 6; ++i) EXPECT_EQ(u[i], want[i]) << i;
  channel_group_denormalize(u, 3, 2, mn, rg, back);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(back[i], x[i]) << i;
}

TEST(Normalize, ChannelGroupParamsAreF16AndCoverTheMaximum) {
  // 0.1 and 1000.3 are not f16 values: min rounds to the nearest f16, range steps up if needed.
  const float x[] = {0.1f, 1000.3f};
  float mn, rg;
  channel_group_params(x, 2, 1, &mn, &rg);
  EXPECT_EQ(mn, f16_to_f32(f32_to_f16(0.1f)));
  EXPECT_EQ(rg, f16_to_f32(f32_to_f16(rg)));
  EXPECT_GE(mn + rg, 1000.3f);
  EXPECT_LT(mn + rg, 1000.3f + 1.0f);  // one f16 step at ~1000 is 0.5
}

TEST(Normalize, TokenNormsAndBits) {
  const float x[] = {3.0f, 4.0f, 0.0f, 0.0f};
  float norms[2] = {token_norm_f16(x, 2), token_norm_f16(x + 2, 2)};
  EXPECT_EQ(norms[0], 5.0f);
  EXPECT_EQ(norms[1], 0.0f);
  float u[4];
  token_normalize(x, 2, 2, norms, u);
  EXPECT_FLOAT_EQ(u[0], 0.6f);
  EXPECT_FLOAT_EQ(u[1], 0.8f);
  EXPECT_EQ(u[2], 0.0f);  // a zero vector stays zero (no division by zero)
  EXPECT_EQ(u[3], 0.0f);
  EXPECT_DOUBLE_EQ(vector_norm_bits(VectorNorm::kToken, 128, 0), 0.125);
  EXPECT_DOUBLE_EQ(vector_norm_bits(VectorNorm::kChannelGroup, 128, 128), 0.25);
  EXPECT_DOUBLE_EQ(vector_norm_bits(VectorNorm::kNone, 128, 128), 0.0);
  EXPECT_EQ(parse_vector_norm("channel-group"), VectorNorm::kChannelGroup);
  EXPECT_THROW(parse_vector_norm("l2"), InvalidArgumentError);
}

}  // namespace
}  // namespace million
