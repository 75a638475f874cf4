// The PQ cache (QuantizedKVCache over PQ stores) against the invariant of DESIGN.md §2: its
// attention must equal dense attention over what it holds, sinks and window exact and coded
// tokens decoded from their codebooks (attend_reference, double accumulation). Random codebooks
// suffice: the invariant holds for any codebook. Tolerances: the fast path sums M table entries
// (each a dsub-term float dot product) in float where the reference works in double, so outputs
// of magnitude ~1 agree to NMSE <= 1e-10 and max-abs <= 2e-5. Asynchronous encoding must give
// bit-identical outputs to synchronous encoding. Guard regions catch out-of-bounds writes.
// Every case runs at every SIMD level.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "common/compare.h"
#include "common/test_paths.h"
#include "million/error.h"
#include "model/kv/pq_store.h"
#include "model/kv/quantized_cache.h"
#include "pq/codebook_file.h"
#include "pq/rotation.h"

namespace million {
namespace {

std::shared_ptr<CodebookSet> random_codebooks(int layers, int kv_heads, int head_dim, PQConfig kc, PQConfig vc,
                                              RotationKind rot, std::uint32_t seed, VectorNorm k_norm = VectorNorm::kNone,
                                              VectorNorm v_norm = VectorNorm::kNone, int group = 0) {
  auto set = std::make_shared<CodebookSet>();
  set->model = {"test", layers, kv_heads, head_dim, 64, 100, 1};
  set->granularity = Granularity::kLayerHead;
  set->k_config = kc;
  set->v_config = vc;
  set->rotation = rot;
  set->k_norm = k_norm;
  set->v_norm = v_norm;
  set->norm_group = group;
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist;
  for (int g = 0; g < layers * kv_heads; ++g) {
    for (int kind = 0; kind < 2; ++kind) {
      const PQConfig& pc = kind == 0 ? kc : vc;
      PQCodebook cb;
      cb.norm = kind == 0 ? k_norm : v_norm;
      cb.norm_group = cb.norm == VectorNorm::kChannelGroup ? group : 0;
      cb.head_dim = head_dim;
      cb.M = pc.M;
      cb.nbits = pc.nbits;
      cb.rotation = entry_rotation(rot, kind);
      if (cb.rotation == RotationKind::kHadamard) cb.rotation_matrix = hadamard_rotation(head_dim, seed + g);
      if (cb.rotation == RotationKind::kQueryPca) {
        // An invertible, non-orthogonal T = D H (rows of a Hadamard matrix scaled by 0.5..2),
        // T^-1 = H^T D^-1, and channel scales 0.5..2: what query_pca_transform's output looks like.
        std::uniform_real_distribution<float> scale(0.5f, 2.0f);
        const std::vector<float> H = hadamard_rotation(head_dim, seed + g);
        const auto d = static_cast<std::size_t>(head_dim);
        cb.rotation_matrix.resize(d * d);
        cb.inverse_matrix.resize(d * d);
        for (std::size_t i = 0; i < d; ++i) {
          const float di = scale(rng);
          for (std::size_t j = 0; j < d; ++j) {
            cb.rotation_matrix[i * d + j] = di * H[i * d + j];
            cb.inverse_matrix[j * d + i] = H[i * d + j] / di;
          }
        }
        cb.channel_scale.resize(d);
        for (auto& x : cb.channel_scale) x = scale(rng);
      }
      cb.centroids.resize(static_cast<std::size_t>(pc.M) * pc.ksub() * cb.dsub());
      for (auto& c : cb.centroids) c = dist(rng);
      set->entries.push_back(std::move(cb));
    }
  }
  set->validate("test");
  return set;
}

struct Case {
  int head_dim, M, nbits, n_heads, n_kv_heads, window, sinks;
  std::int64_t context;
  RotationKind rotation;
  VectorNorm k_norm = VectorNorm::kNone, v_norm = VectorNorm::kNone;
  int group = 0;  // channel-group tokens
  int block() const {
    return (k_norm == VectorNorm::kChannelGroup || v_norm == VectorNorm::kChannelGroup) ? group : 1;
  }
  std::string str() const {
    return "pq_cache(head_dim=" + std::to_string(head_dim) + ",M=" + std::to_string(M) + ",nbits=" +
           std::to_string(nbits) + ",heads=" + std::to_string(n_heads) + "/" + std::to_string(n_kv_heads) +
           ",window=" + std::to_string(window) + ",sinks=" + std::to_string(sinks) + ",context=" +
           std::to_string(context) + ",rotation=" + rotation_name(rotation) + ",norms=" + vector_norm_name(k_norm) +
           "/" + vector_norm_name(v_norm) + ",group=" + std::to_string(group) + ")";
  }
};

// Feeds `context` tokens (a prefill chunk of up to 64, then single tokens, with commits),
// comparing attend() to attend_reference() at several steps; returns every output for the
// sync/async comparison.
std::vector<float> run_case(const Case& c, bool async, bool check, SimdLevel level = active_simd_level()) {
  KVCacheShape shape;
  shape.n_layers = 2;
  shape.n_heads = c.n_heads;
  shape.n_kv_heads = c.n_kv_heads;
  shape.head_dim = c.head_dim;
  shape.capacity = c.context + 1;
  auto set = random_codebooks(2, c.n_kv_heads, c.head_dim, {c.M, c.nbits}, {c.M, c.nbits}, c.rotation, 7, c.k_norm,
                              c.v_norm, c.group);
  QuantizedCacheOptions opt;
  opt.window = c.window;
  opt.sinks = c.sinks;
  opt.batch = 16;
  opt.async = async;
  auto base = make_pq_cache(shape, set, opt, "pq");
  auto& cache = static_cast<QuantizedKVCache&>(*base);
  cache.set_simd_level(level);
  std::mt19937 rng(11);
  std::normal_distribution<float> dist;
  const std::int64_t kv_row = static_cast<std::int64_t>(c.n_kv_heads) * c.head_dim;
  const std::int64_t q_row = static_cast<std::int64_t>(c.n_heads) * c.head_dim;
  std::vector<float> all_out;
  std::int64_t pos = 0;
  int step = 0;
  while (pos < c.context) {
    // Prefill chunks of up to 64 tokens, single decode steps for the last 48.
    const int n = c.context - pos > 48 ? static_cast<int>(std::min<std::int64_t>(64, c.context - pos - 48))
                                       : (pos == 0 ? static_cast<int>(c.context) : 1);
    std::vector<float> k(static_cast<std::size_t>(n * kv_row)), v(k.size()), q(static_cast<std::size_t>(n * q_row));
    for (auto& x : k) x = dist(rng);
    for (auto& x : v) x = dist(rng);
    for (auto& x : q) x = dist(rng);
    // Long contexts: only the last query of a prefill chunk attends (all 64 would cost
    // context^2 / 2 query-token pairs per level); short ones attend with the whole chunk.
    const int nq = c.context > 1000 ? 1 : n;
    const std::int64_t qpos = pos + n - nq;
    const float* qp = q.data() + (n - nq) * q_row;
    for (int layer = 0; layer < 2; ++layer) {
      cache.append(layer, pos, n, k.data(), v.data());
      test::GuardedBuffer out(nq * q_row);
      cache.attend(layer, qpos, nq, qp, out.data());
      EXPECT_TRUE(out.guards_intact()) << c.str();
      const bool last = pos + n >= c.context;
      if (check && (step % 7 == 0 || last || step < 3)) {
        std::vector<float> ref(static_cast<std::size_t>(nq * q_row));
        cache.attend_reference(layer, qpos, nq, qp, ref.data());
        const auto r = test::compare(out.data(), ref.data(), out.size());
        EXPECT_EQ(r.nonfinite_mismatch, 0) << c.str() << " at position " << pos;
        EXPECT_LE(r.nmse, 1e-10) << c.str() << " at position " << pos;
        EXPECT_LE(r.max_abs, 2e-5) << c.str() << " at position " << pos;
      }
      all_out.insert(all_out.end(), out.data(), out.data() + out.size());
    }
    pos += n;
    cache.commit(pos);
    ++step;
  }
  if (check) {
    // Partition sanity: with a window, coded = context - sinks - exact (>= window once full).
    const std::int64_t coded = cache.coded_tokens(1);
    const std::int64_t after_sinks = std::max<std::int64_t>(0, c.context - c.sinks);
    if (c.window == 0) {  // everything coded but a partial block
      EXPECT_EQ(coded, after_sinks / c.block() * c.block()) << c.str();
    } else {
      EXPECT_GE(after_sinks - coded, std::min<std::int64_t>(c.window, after_sinks)) << c.str();
      EXPECT_LT(after_sinks - coded, c.window + std::max(16, c.block()) + 64) << c.str();
    }
  }
  return all_out;
}

// The sweep of the caches issue, covered pairwise rather than as a full product: every
// (head_dim, M, nbits) combination meets two context lengths, and the contexts, GQA group sizes
// (1/2/4/8), windows (stress 0 / partial 16 / full: nothing coded), sinks (0/4) and rotations
// rotate through the combinations, so each value of each factor appears several times.
std::vector<Case> sweep_cases() {
  const std::int64_t contexts[] = {1, 7, 127, 128, 129, 1000, 4099};
  const int gqa[] = {1, 2, 4, 8};
  const int windows[] = {0, 16, 8192};
  std::vector<Case> cases;
  int k = 0;
  for (int head_dim : {64, 128}) {
    for (int M : {16, 32, 64}) {
      for (int nbits : {4, 8}) {
        for (int rep = 0; rep < 2; ++rep, ++k) {
          const int G = gqa[k % 4];
          const int n_kv = G == 8 ? 1 : 2;
          Case c{head_dim, M, nbits, G * n_kv, n_kv, windows[k % 3], (k / 3) % 2 == 0 ? 0 : 4,
                 contexts[(k * 3) % 7], k % 5 == 2 ? RotationKind::kHadamard : RotationKind::kNone};
          // Normalisations (pq/normalize.h) rotate through the cases too.
          if (k % 4 == 1) c.k_norm = VectorNorm::kChannelGroup, c.v_norm = VectorNorm::kToken, c.group = 64;
          // The qpca transform (non-orthogonal keys' matrix, channel scales) on two of those.
          if (k % 4 == 1 && k % 3 == 0) c.rotation = RotationKind::kQueryPca;
          if (k % 4 == 3) c.k_norm = VectorNorm::kToken, c.v_norm = VectorNorm::kChannelGroup, c.group = 128;
          cases.push_back(c);
        }
      }
    }
  }
  return cases;
}

TEST(PqCache, AttentionEqualsDenseAttentionOverDecodedKV) {
  for (const Case& c : sweep_cases()) {
    for (SimdLevel level : supported_simd_levels()) {
      SCOPED_TRACE(c.str() + " level=" + simd_level_name(level));
      run_case(c, /*async=*/false, /*check=*/true, level);
    }
  }
}

TEST(PqCache, AsyncEncodingIsBitIdenticalToSync) {
  Case c{64, 32, 8, 8, 2, 32, 4, 400, RotationKind::kNone};
  for (int norms = 0; norms < 2; ++norms) {
    if (norms == 1) c.k_norm = VectorNorm::kChannelGroup, c.v_norm = VectorNorm::kToken, c.group = 64;
    const auto sync = run_case(c, false, false);
    const auto async = run_case(c, true, false);
    ASSERT_EQ(sync.size(), async.size());
    EXPECT_EQ(0, std::memcmp(sync.data(), async.data(), sync.size() * sizeof(float))) << c.str();
  }
}

// Stress mode reads a partial block through roundtrip(): for a whole block, that must be what
// append + decode give; for a partial one, what a block of just those tokens would give.
TEST(PqCache, RoundtripEqualsAppendThenDecode) {
  const int H = 2, d = 64, group = 64;
  auto set = random_codebooks(1, H, d, {16, 8}, {32, 8}, RotationKind::kHadamard, 5, VectorNorm::kChannelGroup,
                              VectorNorm::kToken, group);
  std::vector<const PQCodebook*> kc{&set->get(0, 0, KVKind::kKey), &set->get(0, 1, KVKind::kKey)};
  std::vector<const PQCodebook*> vc{&set->get(0, 0, KVKind::kValue), &set->get(0, 1, KVKind::kValue)};
  std::mt19937 rng(2);
  std::normal_distribution<float> dist;
  for (int n : {group, 5, 1}) {
    PQKeyStore keys(set, kc, 2 * group);
    PQValueStore values(set, vc, 2 * group);
    EXPECT_EQ(keys.block_tokens(), group);
    EXPECT_EQ(values.block_tokens(), 1);
    std::vector<float> x(static_cast<std::size_t>(group * H * d)), rk(x.size()), rv(x.size()), dec(static_cast<std::size_t>(group * d));
    for (auto& v : x) v = dist(rng) * 3.0f + 1.0f;
    keys.roundtrip(x.data(), n, rk.data());
    values.roundtrip(x.data(), n, rv.data());
    if (n == group) {
      keys.append(x.data(), n);
      values.append(x.data(), n);
    } else {  // n tokens alone: the store's values store takes them; keys get the group padded by copies
      std::vector<float> padded(x.size());
      for (int t = 0; t < group; ++t) std::copy_n(x.begin() + static_cast<std::ptrdiff_t>(t % n) * H * d, H * d, padded.begin() + static_cast<std::ptrdiff_t>(t) * H * d);
      keys.append(padded.data(), group);  // min/max over copies of the n tokens = over the n tokens
      values.append(x.data(), n);
    }
    for (int h = 0; h < H; ++h) {
      for (auto [store_is_key, r] : {std::pair{true, &rk}, std::pair{false, &rv}}) {
        if (store_is_key) keys.decode(h, 0, n, dec.data()); else values.decode(h, 0, n, dec.data());
        for (int t = 0; t < n; ++t) {
          for (int c = 0; c < d; ++c) {
            ASSERT_EQ(dec[static_cast<std::size_t>(t * d + c)], (*r)[static_cast<std::size_t>((t * H + h) * d + c)])
                << (store_is_key ? "keys" : "values") << " n=" << n << " head " << h << " token " << t;
          }
        }
      }
    }
    // The coded form is lossy: roundtrip is not the identity (else stress mode would read exact rows).
    EXPECT_NE(rk[3], x[3]);
  }
}

TEST(PqCache, ReportsBitsAndRejectsMismatchedCodebooks) {
  KVCacheShape shape;
  shape.n_layers = 2;
  shape.n_heads = 4;
  shape.n_kv_heads = 2;
  shape.head_dim = 128;
  shape.capacity = 4096;
  QuantizedCacheOptions opt;
  opt.window = 0;
  opt.batch = 1;
  auto set = random_codebooks(2, 2, 128, {64, 8}, {32, 8}, RotationKind::kNone, 1);
  auto cache = make_pq_cache(shape, set, opt, "pq");
  EXPECT_DOUBLE_EQ(cache->bits_per_element(), (4.0 + 2.0) / 2);  // K 4 bits, V 2 bits, nothing exact in stress mode
  opt.window = 128;
  opt.batch = 32;
  opt.sinks = 4;
  // 4 + 128 + 31 exact f32 tokens (32 bits per element) amortised over 4096.
  EXPECT_DOUBLE_EQ(make_pq_cache(shape, set, opt, "pq")->bits_per_element(), 3.0 + 163.0 * 32.0 / 4096.0);
  auto wrong = random_codebooks(3, 2, 128, {64, 8}, {64, 8}, RotationKind::kNone, 1);
  EXPECT_THROW(make_pq_cache(shape, wrong, opt, "pq"), FormatError);
}

// A codebook that normalises K or V (pq-norm) makes the cache keep the first
// kPqNormDefaultSinks positions exact unless `sinks` is given; other codebooks keep none. Seen
// through the coded token count in stress mode (window 0: every token past the sinks is coded
// once a store block is whole; channel-group keys code blocks of `group` tokens).
TEST(PqCache, NormalisedCodebooksDefaultToExactSinks) {
  KVCacheShape shape;
  shape.n_layers = 1;
  shape.n_heads = 2;
  shape.n_kv_heads = 1;
  shape.head_dim = 64;
  shape.capacity = 256;
  const int group = 64;
  const std::string dir = test::temp_dir();
  save_codebooks(*random_codebooks(1, 1, 64, {32, 8}, {32, 8}, RotationKind::kHadamard, 3, VectorNorm::kChannelGroup,
                                   VectorNorm::kToken, group),
                 dir + "/norm.cb");
  save_codebooks(*random_codebooks(1, 1, 64, {32, 8}, {32, 8}, RotationKind::kHadamard, 3), dir + "/plain.cb");
  save_codebooks(*random_codebooks(1, 1, 64, {32, 8}, {32, 8}, RotationKind::kNone, 3, VectorNorm::kNone,
                                   VectorNorm::kToken),
                 dir + "/vnorm.cb");
  std::mt19937 rng(4);
  std::normal_distribution<float> dist;
  std::vector<float> k(128 * 64), v(k.size());
  for (auto& x : k) x = dist(rng);
  for (auto& x : v) x = dist(rng);
  // Tokens coded after appending 128 tokens in stress mode.
  auto coded = [&](const std::string& spec, const std::string& cb) {
    auto cache = make_kv_cache(spec, shape, {dir + "/" + cb, nullptr});
    cache->append(0, 0, 128, k.data(), v.data());
    cache->commit(128);
    return dynamic_cast<QuantizedKVCache&>(*cache).coded_tokens(0);
  };
  ASSERT_EQ(kPqNormDefaultSinks, 4);
  EXPECT_EQ(coded("pq:window=0", "norm.cb"), 64);             // 4 exact, 124 left: one whole key group coded
  EXPECT_EQ(coded("pq:window=0,sinks=4", "norm.cb"), 64);
  EXPECT_EQ(coded("pq:window=0,sinks=0", "norm.cb"), 128);    // explicit 0: both groups coded
  EXPECT_EQ(coded("pq:window=0", "vnorm.cb"), 124);           // token norms only: blocks of 1 token
  EXPECT_EQ(coded("pq:window=0", "plain.cb"), 128);           // no normalisation: no sinks
  EXPECT_EQ(coded("pq:window=0,sinks=4", "plain.cb"), 124);
  // The sinks are counted as exact f32 tokens in bits_per_element, like the window.
  auto bits = [&](const std::string& spec, const std::string& cb) {
    return make_kv_cache(spec, shape, {dir + "/" + cb, nullptr})->bits_per_element();
  };
  EXPECT_DOUBLE_EQ(bits("pq", "norm.cb"), bits("pq:sinks=4", "norm.cb"));
  EXPECT_GT(bits("pq", "norm.cb"), bits("pq:sinks=0", "norm.cb"));
  EXPECT_DOUBLE_EQ(bits("pq", "plain.cb"), bits("pq:sinks=0", "plain.cb"));
  // Keys and values in different formats: the pq side's codebook decides.
  auto mixed = make_kv_cache("pq:window=0", "f16", shape, {dir + "/norm.cb", nullptr});
  mixed->append(0, 0, 128, k.data(), v.data());
  mixed->commit(128);
  EXPECT_EQ(dynamic_cast<QuantizedKVCache&>(*mixed).coded_tokens(0), 64);
}

// The baselines through the same cache: attention equals dense attention over their own
// dequantized K/V (same tolerances), in default and stress mode, with and without sinks, and
// with K and V in different formats.
TEST(QuantizedCache, BaselinesEqualDenseAttentionOverDequantizedKV) {
  KVCacheShape shape;
  shape.n_layers = 1;
  shape.n_heads = 8;
  shape.n_kv_heads = 2;
  shape.head_dim = 64;
  shape.capacity = 200;
  std::mt19937 rng(3);
  std::normal_distribution<float> dist;
  const std::int64_t kv_row = 2 * 64, q_row = 8 * 64;
  for (const std::string base : {"q8_0", "q4_0", "q4_0-hadamard", "kivi-4", "kivi-2", "f16"}) {
    for (const std::string opts : {":window=0", ":window=16,sinks=4", ":window=64,batch=8"}) {
      const std::string spec = base + opts;
      std::unique_ptr<KVCache> c = base == "f16" ? make_kv_cache("q4_0" + opts, spec, shape) : make_kv_cache(spec, shape);
      auto& cache = dynamic_cast<QuantizedKVCache&>(*c);
      std::int64_t pos = 0;
      while (pos < 180) {
        const int n = pos == 0 ? 40 : 1;
        std::vector<float> k(static_cast<std::size_t>(n * kv_row)), v(k.size()), q(static_cast<std::size_t>(n * q_row));
        for (auto& x : k) x = dist(rng);
        for (auto& x : v) x = dist(rng);
        for (auto& x : q) x = dist(rng);
        cache.append(0, pos, n, k.data(), v.data());
        test::GuardedBuffer out(n * q_row);
        cache.attend(0, pos, n, q.data(), out.data());
        if (pos % 29 == 0 || pos == 179) {
          std::vector<float> ref(static_cast<std::size_t>(n * q_row));
          cache.attend_reference(0, pos, n, q.data(), ref.data());
          const auto r = test::compare(out.data(), ref.data(), out.size());
          EXPECT_EQ(r.nonfinite_mismatch, 0) << cache.name() << " at " << pos;
          EXPECT_LE(r.nmse, 1e-10) << cache.name() << " at " << pos;
          EXPECT_LE(r.max_abs, 2e-5) << cache.name() << " at " << pos;
        }
        EXPECT_TRUE(out.guards_intact()) << cache.name();
        pos += n;
        cache.commit(pos);
      }
    }
  }
}

TEST(QuantizedCache, SpecErrorsAreClear) {
  KVCacheShape shape;
  shape.n_layers = 1;
  shape.n_heads = 2;
  shape.n_kv_heads = 1;
  shape.head_dim = 64;
  shape.capacity = 16;
  EXPECT_THROW(make_kv_cache("q3_k", shape), InvalidArgumentError);
  EXPECT_THROW(make_kv_cache("q8_0:window", shape), InvalidArgumentError);
  EXPECT_THROW(make_kv_cache("q8_0:colour=3", shape), InvalidArgumentError);
  EXPECT_THROW(make_kv_cache("q8_0:window=4", "q4_0:window=8", shape), InvalidArgumentError);
  shape.head_dim = 48;  // not a multiple of 32
  EXPECT_THROW(make_kv_cache("q4_0", shape), UnsupportedError);
}

}  // namespace
}  // namespace million
