// q8_0 / q4_0 / q4_0-hadamard / KIVI key and value stores at every SIMD level against decode() + double math:
// scores within 1e-5 |q||k| each; accumulate+finish within 1e-5 (max|out0| + sum_t |p_t||v_t|) per head (float
// sums over <= 1024 tokens stay near 1e-6 of these), in guarded buffers with NaN padding. Also llama.cpp's exact
// Q8_0/Q4_0 semantics and round-trip quality on N(0,1) (limits q8_0 0.01, q4_0 0.15, kivi-4 0.12, kivi-2 0.5;
// measured 0.005, 0.086, 0.078 (0.10 at group 128), 0.39).
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "common/compare.h"
#include "core/half.h"
#include "million/error.h"
#include "million/simd.h"
#include "model/kv/block_quant_store.h"
#include "model/kv/kivi_store.h"
#include "pq/rotation.h"

namespace million {
namespace {

constexpr double kRelTol = 1e-5;  // see the file comment

std::vector<float> gaussian(std::int64_t n, std::uint32_t seed, float sigma = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, sigma);
  std::vector<float> v(static_cast<std::size_t>(n));
  for (auto& x : v) x = dist(rng);
  return v;
}

// One format under test: a block format name, or KIVI with bits and group.
struct StoreFormat {
  std::string name;  // "q8_0", "q4_0", "q4_0-hadamard", "kivi"
  int bits = 0;      // KIVI only
  int group = 0;     // KIVI only
  std::string label() const {
    return name == "kivi" ? "kivi" + std::to_string(bits) + "_g" + std::to_string(group) : name;
  }
  bool kivi() const { return name == "kivi"; }
  /// Whether the format takes this shape (KIVI: channel groups divide head_dim, whole token groups).
  bool supports(int head_dim, std::int64_t n_tokens) const {
    return !kivi() || (head_dim % group == 0 && n_tokens % group == 0);
  }
  std::unique_ptr<KeyStore> keys(int n_kv_heads, int head_dim, std::int64_t capacity) const {
    return kivi() ? make_kivi_key_store(bits, group, n_kv_heads, head_dim, capacity)
                  : make_block_quant_key_store(name, n_kv_heads, head_dim, capacity, 1234);
  }
  std::unique_ptr<ValueStore> values(int n_kv_heads, int head_dim, std::int64_t capacity) const {
    return kivi() ? make_kivi_value_store(bits, group, n_kv_heads, head_dim, capacity)
                  : make_block_quant_value_store(name, n_kv_heads, head_dim, capacity, 1234);
  }
};

void PrintTo(const StoreFormat& f, std::ostream* os) { *os << f.label(); }

const std::vector<StoreFormat>& all_formats() {
  static const std::vector<StoreFormat> formats = {{"q8_0"},        {"q4_0"},        {"q4_0-hadamard"},
                                                   {"kivi", 4, 32}, {"kivi", 2, 32}, {"kivi", 2, 128}};
  return formats;
}

// Appends x [n, n_kv_heads, head_dim] in two chunks (the first a whole number of block_tokens
// that is not a multiple of 32 where the store allows it), after filling and clearing the store
// with other data so stale storage cannot pass for fresh.
template <class Store>
void fill(Store& store, const std::vector<float>& x, int n_kv_heads, int head_dim, std::int64_t n) {
  const int bt = store.block_tokens();
  const auto junk = gaussian(static_cast<std::int64_t>(bt) * n_kv_heads * head_dim, 99, 5.0f);
  store.append(junk.data(), bt);
  store.clear();
  ASSERT_EQ(store.size(), 0);
  const int first = bt == 1 ? 7 : bt;
  store.append(x.data(), first);
  store.append(x.data() + static_cast<std::int64_t>(first) * n_kv_heads * head_dim, static_cast<int>(n - first));
  ASSERT_EQ(store.size(), n);
}

struct Range {
  std::int64_t t0, t1;
};
// The whole store, and one range that starts and ends inside 32-token blocks / groups.
std::vector<Range> ranges(std::int64_t n) { return {{0, n}, {5, n - 3}}; }

std::string describe(const StoreFormat& f, int head_dim, int n_kv_heads, std::int64_t n, int G, SimdLevel level,
                     Range r) {
  return f.label() + "(head_dim=" + std::to_string(head_dim) + ",n_kv_heads=" + std::to_string(n_kv_heads) +
         ",n_tokens=" + std::to_string(n) + ",G=" + std::to_string(G) + ",level=" + simd_level_name(level) +
         ",range=[" + std::to_string(r.t0) + "," + std::to_string(r.t1) + "))";
}

class KVStoreSweep : public testing::TestWithParam<StoreFormat> {};

TEST_P(KVStoreSweep, ScoresMatchDecodedKeys) {
  const StoreFormat& f = GetParam();
  for (int head_dim : {64, 128}) {
    for (int n_kv_heads : {1, 2}) {
      for (std::int64_t n : {std::int64_t{32}, std::int64_t{96}, f.kivi() ? std::int64_t{1024} : std::int64_t{1000}}) {
        if (!f.supports(head_dim, n)) continue;
        auto ks = f.keys(n_kv_heads, head_dim, n + 40);
        const auto x = gaussian(n * n_kv_heads * head_dim, static_cast<std::uint32_t>(n + head_dim + n_kv_heads));
        fill(*ks, x, n_kv_heads, head_dim, n);
        for (int h = 0; h < n_kv_heads; ++h) {
          std::vector<float> dec(static_cast<std::size_t>(n * head_dim));  // [n, head_dim] f32
          ks->decode(h, 0, n, dec.data());
          for (int G : {1, 4, 8}) {
            const auto q = gaussian(static_cast<std::int64_t>(G) * head_dim, static_cast<std::uint32_t>(7 * G + h));
            for (SimdLevel level : supported_simd_levels()) {
              auto prep = ks->prepare(h, q.data(), G, level);
              for (Range r : ranges(n)) {
                SCOPED_TRACE(describe(f, head_dim, n_kv_heads, n, G, level, r) + " kv_head=" + std::to_string(h));
                const std::int64_t len = r.t1 - r.t0, ld = len + 3;  // 3 NaN padding columns per row
                test::GuardedBuffer s(G * ld);
                ks->scores(h, *prep, r.t0, r.t1, s.data(), ld, level);
                EXPECT_TRUE(s.guards_intact());
                std::int64_t bad = 0;
                std::string first_bad;
                for (int j = 0; j < G; ++j) {
                  const float* qj = q.data() + static_cast<std::int64_t>(j) * head_dim;
                  for (std::int64_t t = r.t0; t < r.t1; ++t) {
                    const float* kt = dec.data() + t * head_dim;
                    double ref = 0, qn = 0, kn = 0;
                    for (int c = 0; c < head_dim; ++c) {
                      ref += static_cast<double>(qj[c]) * kt[c];
                      qn += static_cast<double>(qj[c]) * qj[c];
                      kn += static_cast<double>(kt[c]) * kt[c];
                    }
                    const double got = s.data()[j * ld + (t - r.t0)];
                    if (!(std::abs(got - ref) <= kRelTol * std::sqrt(qn * kn) + 1e-30)) {
                      if (bad++ == 0)
                        first_bad = "j=" + std::to_string(j) + " t=" + std::to_string(t) +
                                    " got=" + std::to_string(got) + " want=" + std::to_string(ref);
                    }
                  }
                  for (std::int64_t c = len; c < ld; ++c) {
                    if (!std::isnan(s.data()[j * ld + c])) ++bad;  // padding written
                  }
                }
                EXPECT_EQ(bad, 0) << first_bad;
                if (bad != 0) return;
              }
            }
          }
        }
      }
    }
  }
}

TEST_P(KVStoreSweep, AccumulateFinishMatchDecodedValues) {
  const StoreFormat& f = GetParam();
  for (int head_dim : {64, 128}) {
    for (int n_kv_heads : {1, 2}) {
      for (std::int64_t n : {std::int64_t{32}, std::int64_t{96}, f.kivi() ? std::int64_t{1024} : std::int64_t{1000}}) {
        if (!f.supports(head_dim, n)) continue;
        auto vs = f.values(n_kv_heads, head_dim, n + 40);
        const auto x = gaussian(n * n_kv_heads * head_dim, static_cast<std::uint32_t>(3 * n + head_dim + n_kv_heads));
        fill(*vs, x, n_kv_heads, head_dim, n);
        for (int h = 0; h < n_kv_heads; ++h) {
          std::vector<float> dec(static_cast<std::size_t>(n * head_dim));  // [n, head_dim] f32
          vs->decode(h, 0, n, dec.data());
          for (int G : {1, 4, 8}) {
            ASSERT_EQ(vs->accumulator_floats(G), static_cast<std::int64_t>(G) * head_dim);
            for (SimdLevel level : supported_simd_levels()) {
              for (Range r : ranges(n)) {
                SCOPED_TRACE(describe(f, head_dim, n_kv_heads, n, G, level, r) + " kv_head=" + std::to_string(h));
                // p [G, ldp]: weights in [0, 1) for the range, NaN in 5 padding columns (never read).
                const std::int64_t len = r.t1 - r.t0, ldp = len + 5;
                std::mt19937 rng(static_cast<std::uint32_t>(G * 31 + h));
                std::uniform_real_distribution<float> unif(0.0f, 1.0f);
                std::vector<float> p(static_cast<std::size_t>(G * ldp), std::nanf(""));
                for (int j = 0; j < G; ++j) {
                  for (std::int64_t i = 0; i < len; ++i) p[static_cast<std::size_t>(j * ldp + i)] = unif(rng);
                }
                // Two accumulate calls split mid-block, as the cache's sequence splits do.
                test::GuardedBuffer acc(vs->accumulator_floats(G), 0.0f);
                const std::int64_t mid = r.t0 + len / 2 + 1 > r.t1 ? r.t1 : r.t0 + len / 2 + 1;
                vs->accumulate(h, p.data(), ldp, G, r.t0, mid, acc.data(), level);
                vs->accumulate(h, p.data() + (mid - r.t0), ldp, G, mid, r.t1, acc.data(), level);
                EXPECT_TRUE(acc.guards_intact());
                const auto out0 = gaussian(static_cast<std::int64_t>(G) * head_dim, 5);
                test::GuardedBuffer out(static_cast<std::int64_t>(G) * head_dim);
                std::copy(out0.begin(), out0.end(), out.data());
                vs->finish(h, acc.data(), G, out.data(), level);
                EXPECT_TRUE(out.guards_intact());
                std::int64_t bad = 0;
                std::string first_bad;
                for (int j = 0; j < G; ++j) {
                  std::vector<double> ref(static_cast<std::size_t>(head_dim));
                  double bound = 0;
                  for (int c = 0; c < head_dim; ++c) {
                    ref[static_cast<std::size_t>(c)] = out0[static_cast<std::size_t>(j * head_dim + c)];
                    bound = std::max(bound, std::abs(ref[static_cast<std::size_t>(c)]));
                  }
                  for (std::int64_t t = r.t0; t < r.t1; ++t) {
                    const double pt = p[static_cast<std::size_t>(j * ldp + (t - r.t0))];
                    double vn = 0;
                    for (int c = 0; c < head_dim; ++c) {
                      const double v = dec[static_cast<std::size_t>(t * head_dim + c)];
                      ref[static_cast<std::size_t>(c)] += pt * v;
                      vn += v * v;
                    }
                    bound += std::abs(pt) * std::sqrt(vn);
                  }
                  for (int c = 0; c < head_dim; ++c) {
                    const double got = out.data()[j * head_dim + c];
                    if (!(std::abs(got - ref[static_cast<std::size_t>(c)]) <= kRelTol * bound)) {
                      if (bad++ == 0)
                        first_bad = "j=" + std::to_string(j) + " c=" + std::to_string(c) +
                                    " got=" + std::to_string(got) +
                                    " want=" + std::to_string(ref[static_cast<std::size_t>(c)]);
                    }
                  }
                }
                EXPECT_EQ(bad, 0) << first_bad;
                if (bad != 0) return;
              }
            }
          }
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Formats, KVStoreSweep, testing::ValuesIn(all_formats()),
                         [](const testing::TestParamInfo<StoreFormat>& param_info) {
                           std::string s = param_info.param.label();
                           for (char& c : s) {
                             if (c == '-') c = '_';
                           }
                           return s;
                         });

// --- quantization quality and exact bit costs ------------------------------------------------

double round_trip_error(const StoreFormat& f, bool keys, const std::vector<float>& x, int n_kv_heads, int head_dim,
                        std::int64_t n) {
  std::vector<float> dec(static_cast<std::size_t>(n * head_dim));
  double num = 0, den = 0;
  auto accumulate_error = [&](int h) {
    for (std::int64_t t = 0; t < n; ++t) {
      for (int c = 0; c < head_dim; ++c) {
        const double want = x[static_cast<std::size_t>((t * n_kv_heads + h) * head_dim + c)];
        const double d = dec[static_cast<std::size_t>(t * head_dim + c)] - want;
        num += d * d;
        den += want * want;
      }
    }
  };
  if (keys) {
    auto ks = f.keys(n_kv_heads, head_dim, n);
    ks->append(x.data(), static_cast<int>(n));
    for (int h = 0; h < n_kv_heads; ++h) {
      ks->decode(h, 0, n, dec.data());
      accumulate_error(h);
    }
  } else {
    auto vs = f.values(n_kv_heads, head_dim, n);
    vs->append(x.data(), static_cast<int>(n));
    for (int h = 0; h < n_kv_heads; ++h) {
      vs->decode(h, 0, n, dec.data());
      accumulate_error(h);
    }
  }
  return std::sqrt(num / den);
}

TEST(KVStoreQuality, RoundTripRelativeError) {
  struct Case {
    StoreFormat f;
    double limit;
  };
  const std::vector<Case> cases = {{{"q8_0"}, 0.01},        {{"q4_0"}, 0.15},         {{"q4_0-hadamard"}, 0.15},
                                   {{"kivi", 4, 32}, 0.12}, {{"kivi", 4, 128}, 0.12}, {{"kivi", 2, 32}, 0.5}};
  const int n_kv_heads = 2, head_dim = 128;
  const std::int64_t n = 256;
  const auto x = gaussian(n * n_kv_heads * head_dim, 42);
  for (const Case& c : cases) {
    for (bool keys : {true, false}) {
      const double err = round_trip_error(c.f, keys, x, n_kv_heads, head_dim, n);
      EXPECT_LT(err, c.limit) << c.f.label() << (keys ? " keys" : " values");
      EXPECT_GT(err, 0.0) << c.f.label() << (keys ? " keys" : " values");
    }
  }
}

// The rotation spreads a per-block outlier over all channels: q4_0-hadamard must beat q4_0 on
// vectors with one large channel (and would not if R were not orthogonal, since decode = R^T Q(R x)).
TEST(KVStoreQuality, HadamardHelpsOutliers) {
  const int n_kv_heads = 1, head_dim = 128;
  const std::int64_t n = 128;
  auto x = gaussian(n * head_dim, 11);
  for (std::int64_t t = 0; t < n; ++t) x[static_cast<std::size_t>(t * head_dim + 3)] *= 30.0f;
  const double plain = round_trip_error({"q4_0"}, true, x, n_kv_heads, head_dim, n);
  const double rotated = round_trip_error({"q4_0-hadamard"}, true, x, n_kv_heads, head_dim, n);
  EXPECT_LT(rotated, 0.15);
  EXPECT_LT(rotated, plain);
  // Different seeds give different rotations (so different codes), both valid.
  auto a = make_block_quant_key_store("q4_0-hadamard", 1, head_dim, 1, 1);
  auto b = make_block_quant_key_store("q4_0-hadamard", 1, head_dim, 1, 2);
  a->append(x.data(), 1);
  b->append(x.data(), 1);
  std::vector<float> da(head_dim), db(head_dim);
  a->decode(0, 0, 1, da.data());
  b->decode(0, 0, 1, db.data());
  EXPECT_NE(da, db);
}

// The store's rotation is hadamard_rotation(head_dim, seed): x = R^T y with y exactly
// representable in q4_0 (multiples of 0.5 in [-4, 3.5], -4 in every block, so y * id + 8.5 sits
// 0.5 from every rounding edge) must come back from decode() up to float rotation error; another
// rotation would quantize R' x with errors of order d = 0.5.
TEST(KVStoreQuality, HadamardIsTheSharedRotation) {
  const int head_dim = 128;
  const std::uint64_t seed = 77;
  std::vector<float> y(head_dim);
  std::mt19937 rng(5);
  std::uniform_int_distribution<int> code(0, 15);
  for (int c = 0; c < head_dim; ++c)
    y[static_cast<std::size_t>(c)] = c % 32 == 0 ? -4.0f : 0.5f * static_cast<float>(code(rng) - 8);
  const std::vector<float> R = hadamard_rotation(head_dim, seed);
  std::vector<float> x(head_dim), dk(head_dim), dv(head_dim);
  unrotate_vectors(R, head_dim, y.data(), 1, x.data());
  auto ks = make_block_quant_key_store("q4_0-hadamard", 1, head_dim, 1, seed);
  auto vs = make_block_quant_value_store("q4_0-hadamard", 1, head_dim, 1, seed);
  ks->append(x.data(), 1);
  vs->append(x.data(), 1);
  ks->decode(0, 0, 1, dk.data());
  vs->decode(0, 0, 1, dv.data());
  const test::CompareResult rk = test::compare(dk.data(), x.data(), head_dim);
  const test::CompareResult rv = test::compare(dv.data(), x.data(), head_dim);
  EXPECT_LT(rk.max_abs, 1e-5);
  EXPECT_LT(rv.max_abs, 1e-5);
  EXPECT_EQ(rk.nonfinite_mismatch + rv.nonfinite_mismatch, 0);
}

TEST(KVStoreQuality, BitsPerElement) {
  EXPECT_EQ(make_block_quant_key_store("q8_0", 2, 128, 8, 0)->bits_per_element(), 8.5);
  EXPECT_EQ(make_block_quant_value_store("q8_0", 2, 128, 8, 0)->bits_per_element(), 8.5);
  EXPECT_EQ(make_block_quant_key_store("q4_0", 2, 128, 8, 0)->bits_per_element(), 4.5);
  EXPECT_EQ(make_block_quant_value_store("q4_0", 2, 128, 8, 0)->bits_per_element(), 4.5);
  EXPECT_EQ(make_block_quant_key_store("q4_0-hadamard", 2, 128, 8, 0)->bits_per_element(), 4.5);
  EXPECT_EQ(make_block_quant_value_store("q4_0-hadamard", 2, 128, 8, 0)->bits_per_element(), 4.5);
  EXPECT_EQ(make_kivi_key_store(4, 128, 2, 128, 256)->bits_per_element(), 4.25);
  EXPECT_EQ(make_kivi_value_store(4, 128, 2, 128, 256)->bits_per_element(), 4.25);
  EXPECT_EQ(make_kivi_key_store(4, 32, 2, 128, 256)->bits_per_element(), 5.0);
  EXPECT_EQ(make_kivi_value_store(4, 32, 2, 128, 256)->bits_per_element(), 5.0);
  EXPECT_EQ(make_kivi_key_store(2, 128, 2, 128, 256)->bits_per_element(), 2.25);
  EXPECT_EQ(make_kivi_value_store(2, 128, 2, 128, 256)->bits_per_element(), 2.25);
  EXPECT_EQ(make_kivi_key_store(2, 32, 2, 128, 256)->block_tokens(), 32);
  EXPECT_EQ(make_kivi_value_store(2, 32, 2, 128, 256)->block_tokens(), 1);
  EXPECT_EQ(make_block_quant_key_store("q4_0", 2, 128, 8, 0)->block_tokens(), 1);
}

// --- llama.cpp semantics -----------------------------------------------------------------------

// x = -4, -3.5, ..., 3.5 then 3.5, 3, ..., -4: the largest magnitude is -4 (element 0), so
// d = -4 / -8 = 0.5, id = 2, and x * id + 8.5 truncates to q[j] = j, q[16 + j] = 15 - j.
// llama.cpp packs byte j = q[j] | q[j + 16] << 4.
TEST(KVStoreLlamaCpp, Q4_0NibbleLayout) {
  float x[32];
  for (int j = 0; j < 16; ++j) {
    x[j] = static_cast<float>(j - 8) * 0.5f;
    x[16 + j] = static_cast<float>(7 - j) * 0.5f;
  }
  BlockQ4_0 b;
  quantize_row_q4_0(x, &b, 32);
  EXPECT_EQ(b.d, 0x3800);  // f16 0.5
  for (int j = 0; j < 16; ++j) EXPECT_EQ(b.qs[j], static_cast<std::uint8_t>(j | ((15 - j) << 4))) << "byte " << j;
  EXPECT_EQ(b.qs[0], 0xF0);
  EXPECT_EQ(b.qs[15], 0x0F);
  // Every value is a multiple of d in [-8d, 7d]: the store decodes it exactly, at every level.
  auto ks = make_block_quant_key_store("q4_0", 1, 32, 4, 0);
  ks->append(x, 1);
  float dec[32];
  ks->decode(0, 0, 1, dec);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(dec[j], x[j]) << j;
}

// The largest magnitude keeps its sign: a negative maximum gives d > 0 and code 0 (-8 d = max,
// exact), a positive one d < 0 and code 0 again (-8 d = max); the other end clips at 7 |d|.
TEST(KVStoreLlamaCpp, Q4_0SignedMax) {
  for (float sign : {-1.0f, 1.0f}) {
    SCOPED_TRACE(sign < 0 ? "negative max" : "positive max");
    std::vector<float> x(32);
    std::mt19937 rng(3);
    std::uniform_real_distribution<float> unif(-1.0f, 1.0f);
    for (auto& v : x) v = unif(rng);
    x[5] = 3.0f * sign;    // largest magnitude
    x[20] = -2.9f * sign;  // opposite sign, beyond 7/8 of it: clips
    BlockQ4_0 b;
    quantize_row_q4_0(x.data(), &b, 32);
    const float d = f16_to_f32(b.d);
    EXPECT_EQ(d, -sign * 0.375f);
    EXPECT_EQ(b.qs[5] & 0x0F, 0);
    EXPECT_EQ(b.qs[4] >> 4, 15);  // element 20 is the high nibble of byte 4
    float y[32];
    dequantize_row_q4_0(&b, y, 32);
    EXPECT_EQ(y[5], x[5]);
    EXPECT_EQ(y[20], -sign * 7.0f * 0.375f);
    for (int j = 0; j < 32; ++j) {
      if (j != 20) {
        EXPECT_LE(std::abs(y[j] - x[j]), 0.5f * 0.375f + 1e-6f) << j;
      }
    }
  }
}

// Q8_0: d = max|x| / 127, q = roundf(x / d) (halves away from zero), an all-zero block gives d = 0.
TEST(KVStoreLlamaCpp, Q8_0RoundingAndZeroBlock) {
  float x[64] = {};
  x[0] = 127.0f;  // d = 1
  x[1] = -63.5f;  // roundf -> -64
  x[2] = 2.5f;    // roundf -> 3 (not banker's 2)
  x[3] = -0.4f;
  BlockQ8_0 b[2];
  quantize_row_q8_0(x, b, 64);
  EXPECT_EQ(f16_to_f32(b[0].d), 1.0f);
  EXPECT_EQ(b[0].qs[0], 127);
  EXPECT_EQ(b[0].qs[1], -64);
  EXPECT_EQ(b[0].qs[2], 3);
  EXPECT_EQ(b[0].qs[3], 0);
  EXPECT_EQ(b[1].d, 0);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(b[1].qs[j], 0);
  float y[64];
  dequantize_row_q8_0(b, y, 64);
  for (int j = 32; j < 64; ++j) EXPECT_EQ(y[j], 0.0f);
}

// A constant KIVI group has scale 0 and decodes to its value exactly (when f16 holds it).
TEST(KVStoreKivi, ConstantGroupsDecodeExactly) {
  const int head_dim = 64, group = 32;
  std::vector<float> x(static_cast<std::size_t>(group * head_dim));
  for (int t = 0; t < group; ++t) {
    for (int c = 0; c < head_dim; ++c)
      x[static_cast<std::size_t>(t * head_dim + c)] = 0.25f * static_cast<float>(c - 20);
  }
  auto ks = make_kivi_key_store(2, group, 1, head_dim, group);
  auto vs = make_kivi_value_store(2, group, 1, head_dim, group);
  ks->append(x.data(), group);
  vs->append(x.data(), group);
  std::vector<float> dk(x.size()), dv(x.size());
  ks->decode(0, 0, group, dk.data());
  vs->decode(0, 0, group, dv.data());
  EXPECT_EQ(dk, x);  // keys: every channel is constant over the token group
  // values: each token's channel groups vary, but their minima (code 0) decode to f16(min) exactly.
  for (int c : {0, 32}) EXPECT_EQ(dv[static_cast<std::size_t>(c)], x[static_cast<std::size_t>(c)]) << c;
}

// --- errors --------------------------------------------------------------------------------------

TEST(KVStoreErrors, ShapesAndNames) {
  EXPECT_THROW(make_block_quant_key_store("q8_0", 1, 48, 8, 0), UnsupportedError);
  EXPECT_THROW(make_block_quant_value_store("q4_0", 1, 80, 8, 0), UnsupportedError);
  EXPECT_THROW(make_block_quant_key_store("q4_0-hadamard", 1, 96, 8, 0), UnsupportedError);
  EXPECT_THROW(make_block_quant_key_store("q5_0", 1, 64, 8, 0), InvalidArgumentError);
  EXPECT_THROW(make_block_quant_value_store("q8_0", 0, 64, 8, 0), InvalidArgumentError);
  EXPECT_THROW(make_kivi_key_store(3, 32, 1, 64, 64), InvalidArgumentError);
  EXPECT_THROW(make_kivi_value_store(4, 0, 1, 64, 64), InvalidArgumentError);
  EXPECT_THROW(make_kivi_value_store(4, 128, 1, 64, 64), UnsupportedError);
  try {
    make_block_quant_key_store("q8_0", 1, 48, 8, 0);
  } catch (const UnsupportedError& e) {
    EXPECT_NE(std::string(e.what()).find("multiple of 32"), std::string::npos) << e.what();
  }
  // Appending past the capacity or a partial KIVI key group is a bug in the caller.
  auto ks = make_kivi_key_store(4, 32, 1, 64, 64);
  std::vector<float> x(64 * 64);
  EXPECT_THROW(ks->append(x.data(), 16), InternalError);
  auto vs = make_block_quant_value_store("q8_0", 1, 64, 8, 0);
  EXPECT_THROW(vs->append(x.data(), 9), InternalError);
}

}  // namespace
}  // namespace million
