// Dense KV caches behind the KVCache interface: appending in chunks then attending must equal
// the scalar reference over the K/V as stored (f32 exactly, f16 after rounding), with the same
// tolerances as test_kernels (NMSE <= 1e-10, max-abs <= 2e-5); protocol errors (out-of-order
// appends, attending unappended positions, capacity) are typed errors; sizes are reported right.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "common/compare.h"
#include "core/half.h"
#include "kernels/dense_attention.h"
#include "million/error.h"
#include "model/kv/dense_cache.h"
#include "model/kv/kv_cache.h"

namespace million {
namespace {

std::vector<float> random_floats(std::int64_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(static_cast<std::size_t>(n));
  for (auto& x : v) x = dist(rng);
  return v;
}

KVCacheShape small_shape(std::int64_t capacity, int window = 0) {
  KVCacheShape s;
  s.n_layers = 2;
  s.n_heads = 4;
  s.n_kv_heads = 2;
  s.head_dim = 32;
  s.capacity = capacity;
  s.sliding_window = window;
  return s;
}

// Appends `total` tokens in the given chunk sizes to layer 1, attending after each chunk, and
// compares each attention output with the reference computed from a copy of what was appended.
void check_cache(const std::string& name, int window, const std::vector<int>& chunks) {
  std::int64_t total = 0;
  for (int c : chunks) total += c;
  const KVCacheShape s = small_shape(total + 5, window);
  auto cache = make_kv_cache(name, s);
  const int d = s.head_dim, kvh = s.n_kv_heads;
  const std::int64_t cap = s.capacity;
  // Reference store in [kv_head, capacity, head_dim] f32 (rounded through f16 for the f16 cache).
  std::vector<float> kref(static_cast<std::size_t>(kvh * cap * d)), vref(kref.size());
  std::int64_t pos = 0;
  std::uint32_t seed = 1;
  for (int n : chunks) {
    SCOPED_TRACE(testing::Message() << name << " window=" << window << " chunk at " << pos << " n=" << n);
    auto k = random_floats(static_cast<std::int64_t>(n) * kvh * d, seed++);
    auto v = random_floats(static_cast<std::int64_t>(n) * kvh * d, seed++);
    auto q = random_floats(static_cast<std::int64_t>(n) * s.n_heads * d, seed++);
    for (int t = 0; t < n; ++t) {
      for (int h = 0; h < kvh; ++h) {
        for (int c = 0; c < d; ++c) {
          const std::size_t src = static_cast<std::size_t>((t * kvh + h) * d + c);
          const std::size_t dst = static_cast<std::size_t>((h * cap + pos + t) * d + c);
          kref[dst] = name == "f16" ? f16_to_f32(f32_to_f16(k[src])) : k[src];
          vref[dst] = name == "f16" ? f16_to_f32(f32_to_f16(v[src])) : v[src];
        }
      }
    }
    cache->append(0, pos, n, k.data(), v.data());  // layer 0 gets the same tokens (layers are independent)
    cache->append(1, pos, n, k.data(), v.data());
    test::GuardedBuffer out(static_cast<std::int64_t>(n) * s.n_heads * d);
    cache->attend(1, pos, n, q.data(), out.data());
    cache->commit(pos + n);

    DenseAttentionArgs a;
    a.n_queries = n;
    a.pos0 = pos;
    a.n_heads = s.n_heads;
    a.n_kv_heads = kvh;
    a.head_dim = d;
    a.sliding_window = window;
    a.scale = static_cast<float>(1.0 / std::sqrt(d));
    a.q = q.data();
    a.k = kref.data();
    a.v = vref.data();
    a.kv_head_stride = cap * d;
    std::vector<float> ref(static_cast<std::size_t>(out.size()));
    a.out = ref.data();
    dense_attention_ref(a);
    const auto r = test::compare(out.data(), ref.data(), out.size());
    EXPECT_EQ(r.nonfinite_mismatch, 0);
    EXPECT_LE(r.nmse, 1e-10);
    EXPECT_LE(r.max_abs, 2e-5);
    EXPECT_TRUE(out.guards_intact());
    pos += n;
    EXPECT_EQ(cache->n_tokens(), pos);
  }
}

TEST(DenseCache, F32AndF16MatchReferenceAcrossChunkings) {
  for (const std::string name : {"f32", "f16"}) {
    for (int window : {0, 5}) {
      check_cache(name, window, {1, 1, 1});
      check_cache(name, window, {9, 1, 1, 20, 1, 64, 3});
      check_cache(name, window, {130, 1, 2});
    }
  }
}

TEST(DenseCache, SizesAreReported) {
  const KVCacheShape s = small_shape(100);
  auto f32 = make_kv_cache("f32", s);
  auto f16 = make_kv_cache("f16", s);
  EXPECT_EQ(f32->name(), "f32");
  EXPECT_EQ(f16->name(), "f16");
  // per token: 2 (K,V) x 2 layers x 2 kv heads x 32 dims x bytes
  EXPECT_DOUBLE_EQ(f32->bytes_per_token(), 2.0 * 2 * 2 * 32 * 4);
  EXPECT_DOUBLE_EQ(f16->bytes_per_token(), 2.0 * 2 * 2 * 32 * 2);
  EXPECT_DOUBLE_EQ(f32->bits_per_element(), 32.0);
  EXPECT_DOUBLE_EQ(f16->bits_per_element(), 16.0);
  EXPECT_EQ(f32->bytes_allocated(), static_cast<std::int64_t>(f32->bytes_per_token() * 100));
}

TEST(DenseCache, ProtocolErrorsAreTyped) {
  const KVCacheShape s = small_shape(8);
  auto cache = make_kv_cache("f32", s);
  std::vector<float> buf(static_cast<std::size_t>(16 * s.n_heads * s.head_dim), 0.5f);
  EXPECT_THROW(cache->append(0, 1, 1, buf.data(), buf.data()), InvalidArgumentError);  // gap
  EXPECT_THROW(cache->append(2, 0, 1, buf.data(), buf.data()), InvalidArgumentError);  // no layer 2
  EXPECT_THROW(cache->attend(0, 0, 1, buf.data(), buf.data()), InvalidArgumentError);  // nothing appended
  EXPECT_THROW(cache->append(0, 0, 9, buf.data(), buf.data()), ContextLimitError);     // over capacity
  cache->append(0, 0, 8, buf.data(), buf.data());
  EXPECT_THROW(cache->append(0, 8, 1, buf.data(), buf.data()), ContextLimitError);
  cache->clear();
  EXPECT_EQ(cache->n_tokens(), 0);
  EXPECT_NO_THROW(cache->append(0, 0, 1, buf.data(), buf.data()));
}

TEST(DenseCache, FactoryRejectsUnknownNamesAndHugeCaches) {
  try {
    make_kv_cache("q3_k", small_shape(8));
    FAIL() << "expected an error";
  } catch (const InvalidArgumentError& e) {
    EXPECT_NE(std::string(e.what()).find("f16"), std::string::npos) << "message should list known caches";
  }
  KVCacheShape huge = small_shape(std::int64_t{1} << 40);  // 2^40 tokens x 1 KiB: far beyond any machine
  EXPECT_THROW(make_kv_cache("f16", huge), ResourceError);
}

}  // namespace
}  // namespace million
