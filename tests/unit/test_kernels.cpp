// Kernel tests: every SIMD level of the CPU primitives, weight-matrix products (f32/f16/bf16,
// GEMV and GEMM paths) and dense attention against the
// scalar references (double accumulation), over a sweep of shapes that hits the decode path
// (< 8 queries, split over the sequence) and the prefill path (GEMM tiles), GQA, sliding
// windows and f16 storage. Tolerances: f32 accumulation of ~head_dim-term dot products vs
// double gives relative errors ~1e-6, so attention must reach NMSE <= 1e-10 and max-abs
// <= 2e-5 on outputs of magnitude ~1; outputs are checked for NaN/Inf agreement and guard
// regions for out-of-bounds writes.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "backends/cpu/cpu_kernels.h"
#include "common/compare.h"
#include "core/half.h"
#include "kernels/dense_attention.h"
#include "kernels/matmul.h"
#include "kernels/ops.h"
#include "million/error.h"

namespace million {
namespace {

using test::compare;
using test::GuardedBuffer;

std::vector<float> random_floats(std::int64_t n, std::uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(static_cast<std::size_t>(n));
  for (auto& x : v) x = dist(rng);
  return v;
}

// ---- CPU primitives ------------------------------------------------------------------------

TEST(CpuPrimitives, EveryLevelMatchesDoubleReference) {
  for (SimdLevel level : supported_simd_levels()) {
    const CpuKernels& k = cpu_kernels(level);
    EXPECT_EQ(k.level, level);
    for (int n : {0, 1, 7, 8, 15, 16, 17, 31, 32, 33, 64, 127, 128, 129, 1000}) {
      SCOPED_TRACE(testing::Message() << "level=" << simd_level_name(level) << " n=" << n);
      auto a = random_floats(n, 1 + n), b = random_floats(n, 2 + n);
      std::vector<std::uint16_t> bh(static_cast<std::size_t>(n));
      for (int i = 0; i < n; ++i) bh[static_cast<std::size_t>(i)] = f32_to_f16(b[static_cast<std::size_t>(i)]);
      double ref = 0.0, ref_h = 0.0, mag = 0.0;
      for (int i = 0; i < n; ++i) {
        ref += static_cast<double>(a[static_cast<std::size_t>(i)]) * b[static_cast<std::size_t>(i)];
        ref_h += static_cast<double>(a[static_cast<std::size_t>(i)]) * f16_to_f32(bh[static_cast<std::size_t>(i)]);
        mag += std::abs(static_cast<double>(a[static_cast<std::size_t>(i)]) * b[static_cast<std::size_t>(i)]);
      }
      const double tol = 1e-6 * (mag + 1.0);  // f32 accumulation error bound ~ n * eps * sum|a_i b_i|
      EXPECT_NEAR(k.dot_f32(a.data(), b.data(), n), ref, tol);
      EXPECT_NEAR(k.dot_f16(a.data(), bh.data(), n), ref_h, tol);
      std::vector<std::uint16_t> bb(static_cast<std::size_t>(n) + 1, 0xBEEF);
      double ref_b = 0.0;
      for (int i = 0; i < n; ++i) {
        bb[static_cast<std::size_t>(i)] = f32_to_bf16(b[static_cast<std::size_t>(i)]);
        ref_b += static_cast<double>(a[static_cast<std::size_t>(i)]) * bf16_to_f32(bb[static_cast<std::size_t>(i)]);
      }
      EXPECT_NEAR(k.dot_bf16(a.data(), bb.data(), n), ref_b, tol);
      std::vector<float> bf(static_cast<std::size_t>(n) + 1, -9.0f);
      k.bf16_to_f32(bb.data(), bf.data(), n);
      for (int i = 0; i < n; ++i) ASSERT_EQ(bf[static_cast<std::size_t>(i)], bf16_to_f32(bb[static_cast<std::size_t>(i)]));
      EXPECT_EQ(bf[static_cast<std::size_t>(n)], -9.0f);

      GuardedBuffer y(n, 0.5f), yh(n, 0.5f);
      k.axpy_f32(0.75f, a.data(), y.data(), n);
      k.axpy_f16(-1.5f, bh.data(), yh.data(), n);
      for (int i = 0; i < n; ++i) {
        EXPECT_NEAR(y.data()[i], 0.5 + 0.75 * a[static_cast<std::size_t>(i)], 1e-6);
        EXPECT_NEAR(yh.data()[i], 0.5 - 1.5 * f16_to_f32(bh[static_cast<std::size_t>(i)]), 1e-6);
      }
      EXPECT_TRUE(y.guards_intact());
      EXPECT_TRUE(yh.guards_intact());

      // Conversions must be bit-exact with the scalar round-to-nearest-even reference.
      std::vector<std::uint16_t> h(static_cast<std::size_t>(n) + 1, 0xBEEF);
      std::vector<float> back(static_cast<std::size_t>(n) + 1, -7.0f);
      k.f32_to_f16(a.data(), h.data(), n);
      k.f16_to_f32(h.data(), back.data(), n);
      for (int i = 0; i < n; ++i) {
        ASSERT_EQ(h[static_cast<std::size_t>(i)], f32_to_f16(a[static_cast<std::size_t>(i)])) << i;
        ASSERT_EQ(back[static_cast<std::size_t>(i)], f16_to_f32(h[static_cast<std::size_t>(i)])) << i;
      }
      EXPECT_EQ(h[static_cast<std::size_t>(n)], 0xBEEF);  // one past the end untouched
      EXPECT_EQ(back[static_cast<std::size_t>(n)], -7.0f);
    }
  }
}

// ---- weight-matrix products -----------------------------------------------------------------
// Tolerance: f32 accumulation over `cols` terms vs double; relative error ~cols * 2^-24, so
// NMSE <= 1e-11 and max-abs <= 1e-4 for outputs of magnitude ~sqrt(cols).

TEST(Matmul, EveryDtypeLevelAndBatchMatchesReference) {
  for (WeightDType dtype : {WeightDType::kF32, WeightDType::kF16, WeightDType::kBF16}) {
    for (auto [rows, cols] : std::vector<std::pair<int, int>>{{1, 1}, {17, 33}, {300, 512}, {513, 100}}) {
      auto wf = random_floats(static_cast<std::int64_t>(rows) * cols, 21 + rows);
      std::vector<std::uint16_t> wh(wf.size());
      for (std::size_t i = 0; i < wf.size(); ++i) wh[i] = dtype == WeightDType::kF16 ? f32_to_f16(wf[i]) : f32_to_bf16(wf[i]);
      WeightMatrix w{rows, cols, dtype, dtype == WeightDType::kF32 ? static_cast<const void*>(wf.data()) : wh.data()};
      for (int n : {1, 2, 9}) {
        for (float beta : {0.0f, 1.0f}) {
          auto x = random_floats(static_cast<std::int64_t>(n) * cols, 31 + n);
          auto y0 = random_floats(static_cast<std::int64_t>(n) * rows, 41 + n);
          std::vector<float> ref = y0;
          matmul_ref(w, x.data(), n, ref.data(), beta);
          for (SimdLevel level : supported_simd_levels()) {
            SCOPED_TRACE(testing::Message() << "matmul(" << weight_dtype_name(dtype) << ", rows=" << rows << ", cols=" << cols
                                            << ", n=" << n << ", beta=" << beta << ") level=" << simd_level_name(level));
            GuardedBuffer y(static_cast<std::int64_t>(n) * rows);
            std::copy(y0.begin(), y0.end(), y.data());
            matmul(w, x.data(), n, y.data(), beta, level);
            const auto r = compare(y.data(), ref.data(), y.size());
            EXPECT_EQ(r.nonfinite_mismatch, 0);
            EXPECT_LE(r.nmse, 1e-11);
            EXPECT_LE(r.max_abs, 1e-4);
            EXPECT_TRUE(y.guards_intact());
          }
        }
      }
      // Row lookup (embedding) is exact.
      for (SimdLevel level : supported_simd_levels()) {
        std::vector<float> row(static_cast<std::size_t>(cols) + 1, -3.0f);
        weight_row_f32(w, rows - 1, row.data(), level);
        for (int c = 0; c < cols; ++c) {
          const std::size_t i = static_cast<std::size_t>((rows - 1) * cols + c);
          const float want = dtype == WeightDType::kF32 ? wf[i] : dtype == WeightDType::kF16 ? f16_to_f32(wh[i]) : bf16_to_f32(wh[i]);
          ASSERT_EQ(row[static_cast<std::size_t>(c)], want);
        }
        EXPECT_EQ(row[static_cast<std::size_t>(cols)], -3.0f);
      }
    }
  }
}

// ---- small ops -------------------------------------------------------------------------------

TEST(Ops, RmsNormMatchesFormula) {
  const int n = 3, dim = 37;
  auto x = random_floats(n * dim, 5, 3.0f), w = random_floats(dim, 6);
  std::vector<float> out(static_cast<std::size_t>(n * dim));
  rmsnorm(x.data(), w.data(), out.data(), n, dim, 1e-5f);
  for (int i = 0; i < n; ++i) {
    double ss = 0;
    for (int c = 0; c < dim; ++c) ss += std::pow(x[static_cast<std::size_t>(i * dim + c)], 2);
    const double inv = 1.0 / std::sqrt(ss / dim + 1e-5);
    for (int c = 0; c < dim; ++c) {
      EXPECT_NEAR(out[static_cast<std::size_t>(i * dim + c)], x[static_cast<std::size_t>(i * dim + c)] * inv * w[static_cast<std::size_t>(c)], 1e-5);
    }
  }
}

TEST(Ops, RopeBothLayoutsMatchRotationFormula) {
  const int head_dim = 16, n_heads = 3, n = 5;
  const std::int64_t pos0 = 1000;
  std::vector<float> inv_freq(head_dim / 2);
  for (int j = 0; j < head_dim / 2; ++j) inv_freq[static_cast<std::size_t>(j)] = static_cast<float>(std::pow(10000.0, -2.0 * j / head_dim));
  RopeTable table;
  table.compute(inv_freq, pos0, n);
  for (RopeLayout layout : {RopeLayout::kHalf, RopeLayout::kInterleaved}) {
    auto x = random_floats(n * n_heads * head_dim, 9);
    auto y = x;
    rope_apply(y.data(), n, n_heads, head_dim, layout, table);
    for (int i = 0; i < n; ++i) {
      for (int h = 0; h < n_heads; ++h) {
        const float* xv = x.data() + (i * n_heads + h) * head_dim;
        const float* yv = y.data() + (i * n_heads + h) * head_dim;
        for (int j = 0; j < head_dim / 2; ++j) {
          const int a = layout == RopeLayout::kHalf ? j : 2 * j;
          const int b = layout == RopeLayout::kHalf ? j + head_dim / 2 : 2 * j + 1;
          const double ang = static_cast<double>(static_cast<float>(inv_freq[static_cast<std::size_t>(j)] * static_cast<float>(pos0 + i)));
          EXPECT_NEAR(yv[a], xv[a] * std::cos(ang) - xv[b] * std::sin(ang), 1e-5);
          EXPECT_NEAR(yv[b], xv[b] * std::cos(ang) + xv[a] * std::sin(ang), 1e-5);
        }
      }
    }
    // A rotation keeps every pair's norm.
    double nx = 0, ny = 0;
    for (std::size_t i = 0; i < x.size(); ++i) {
      nx += static_cast<double>(x[i]) * x[i];
      ny += static_cast<double>(y[i]) * y[i];
    }
    EXPECT_NEAR(nx, ny, 1e-4 * nx);
  }
}

TEST(Ops, SwigluMatchesFormula) {
  auto g = random_floats(100, 11, 4.0f), u = random_floats(100, 12);
  auto out = g;
  swiglu(out.data(), u.data(), 100);
  for (int i = 0; i < 100; ++i) {
    const double x = g[static_cast<std::size_t>(i)];
    EXPECT_NEAR(out[static_cast<std::size_t>(i)], x / (1 + std::exp(-x)) * u[static_cast<std::size_t>(i)], 1e-5);
  }
}

// ---- dense attention -------------------------------------------------------------------------

struct AttnCase {
  int head_dim, n_heads, n_kv_heads, n_queries;
  std::int64_t pos0;
  int window;
  KVDType dtype;
  std::string str() const {
    return "dense_attention(head_dim=" + std::to_string(head_dim) + ",heads=" + std::to_string(n_heads) + "/" +
           std::to_string(n_kv_heads) + ",queries=" + std::to_string(n_queries) + ",pos0=" + std::to_string(pos0) +
           ",window=" + std::to_string(window) + ",kv=" + (dtype == KVDType::kF32 ? "f32" : "f16") + ")";
  }
};

void run_case(const AttnCase& c, std::uint32_t seed) {
  const std::int64_t capacity = c.pos0 + c.n_queries + 3;  // slack: kernels must not read it
  const std::int64_t kv_elems = c.n_kv_heads * capacity * c.head_dim;
  auto q = random_floats(static_cast<std::int64_t>(c.n_queries) * c.n_heads * c.head_dim, seed);
  auto kf = random_floats(kv_elems, seed + 1), vf = random_floats(kv_elems, seed + 2);
  // Make scores peaky in places so softmax is not uniform: scale some keys up.
  for (std::int64_t t = 0; t < kv_elems; t += 97 * c.head_dim) kf[static_cast<std::size_t>(t)] *= 8.0f;
  std::vector<std::uint16_t> kh(static_cast<std::size_t>(kv_elems)), vh(static_cast<std::size_t>(kv_elems));
  for (std::int64_t i = 0; i < kv_elems; ++i) {
    kh[static_cast<std::size_t>(i)] = f32_to_f16(kf[static_cast<std::size_t>(i)]);
    vh[static_cast<std::size_t>(i)] = f32_to_f16(vf[static_cast<std::size_t>(i)]);
  }
  DenseAttentionArgs a;
  a.n_queries = c.n_queries;
  a.pos0 = c.pos0;
  a.n_heads = c.n_heads;
  a.n_kv_heads = c.n_kv_heads;
  a.head_dim = c.head_dim;
  a.sliding_window = c.window;
  a.scale = static_cast<float>(1.0 / std::sqrt(c.head_dim));
  a.q = q.data();
  a.k = c.dtype == KVDType::kF32 ? static_cast<const void*>(kf.data()) : kh.data();
  a.v = c.dtype == KVDType::kF32 ? static_cast<const void*>(vf.data()) : vh.data();
  a.kv_head_stride = capacity * c.head_dim;
  a.kv_dtype = c.dtype;
  const std::int64_t n_out = static_cast<std::int64_t>(c.n_queries) * c.n_heads * c.head_dim;
  std::vector<float> ref(static_cast<std::size_t>(n_out));
  a.out = ref.data();
  dense_attention_ref(a);
  for (SimdLevel level : supported_simd_levels()) {
    SCOPED_TRACE(c.str() + " level=" + simd_level_name(level));
    GuardedBuffer out(n_out);
    a.out = out.data();
    dense_attention(a, level);
    const auto r = compare(out.data(), ref.data(), n_out);
    EXPECT_EQ(r.nonfinite_mismatch, 0);
    EXPECT_LE(r.nmse, 1e-10);
    EXPECT_LE(r.max_abs, 2e-5);
    EXPECT_TRUE(out.guards_intact()) << "write outside the output";
  }
}

TEST(DenseAttention, FastPathsMatchReferenceOverShapeSweep) {
  std::uint32_t seed = 100;
  for (KVDType dtype : {KVDType::kF32, KVDType::kF16}) {
    for (auto [hd, nh, nkv] : std::vector<std::tuple<int, int, int>>{{64, 1, 1}, {128, 4, 2}, {128, 8, 1}, {8, 8, 4}, {64, 16, 2}}) {
      for (int nq : {1, 3, 7, 8, 65}) {
        for (std::int64_t pos0 : {0, 1, 127, 128, 129, 1000}) {
          for (int window : {0, 16}) {
            if (nq == 65 && pos0 == 1000 && nh == 16) continue;  // keep the double reference quick
            run_case({hd, nh, nkv, nq, pos0, window, dtype}, seed++);
          }
        }
      }
    }
  }
}

TEST(DenseAttention, LongContextDecode) {
  // 4099 keys: several sequence splits with an uneven last one.
  run_case({128, 4, 2, 1, 4098, 0, KVDType::kF16}, 7);
  run_case({128, 8, 2, 2, 4097, 0, KVDType::kF32}, 8);
  run_case({64, 4, 4, 1, 4098, 1000, KVDType::kF32}, 9);
}

TEST(DenseAttention, SingleKeyReturnsItsValue) {
  // With one visible key the softmax weight is exactly 1: out == v (independent of q, k).
  const int d = 16;
  auto q = random_floats(d, 1), k = random_floats(d, 2), v = random_floats(d, 3);
  DenseAttentionArgs a;
  a.n_queries = 1;
  a.n_heads = a.n_kv_heads = 1;
  a.head_dim = d;
  a.scale = 0.25f;
  a.q = q.data();
  a.k = k.data();
  a.v = v.data();
  a.kv_head_stride = d;
  for (SimdLevel level : supported_simd_levels()) {
    std::vector<float> out(d, 0.0f);
    a.out = out.data();
    dense_attention(a, level);
    for (int c = 0; c < d; ++c) EXPECT_FLOAT_EQ(out[static_cast<std::size_t>(c)], v[static_cast<std::size_t>(c)]);
  }
}

TEST(DenseAttention, InvalidArgumentsAreRejected) {
  std::vector<float> buf(64);
  DenseAttentionArgs a;
  a.n_queries = 1;
  a.n_heads = 3;
  a.n_kv_heads = 2;  // 3 is not a multiple of 2
  a.head_dim = 8;
  a.q = a.out = buf.data();
  a.k = a.v = buf.data();
  a.kv_head_stride = 8;
  EXPECT_THROW(dense_attention(a, SimdLevel::kScalar), InvalidArgumentError);
  a.n_heads = 2;
  a.pos0 = 5;  // needs 6 keys, stride holds 1
  EXPECT_THROW(dense_attention(a, SimdLevel::kScalar), InvalidArgumentError);
  EXPECT_THROW(dense_attention_ref(a), InvalidArgumentError);
}

}  // namespace
}  // namespace million
