// Scalar reference for dense causal attention: the specification the fast paths are tested
// against. Double accumulation throughout; clarity over speed.
#include <cmath>
#include <vector>

#include <fmt/format.h>

#include "core/half.h"
#include "kernels/dense_attention.h"
#include "million/error.h"

namespace million {

void DenseAttentionArgs::validate() const {
  auto fail = [](const std::string& m) { throw InvalidArgumentError("dense attention: " + m); };
  if (n_queries <= 0) fail(fmt::format("n_queries {} must be positive", n_queries));
  if (pos0 < 0) fail(fmt::format("pos0 {} is negative", pos0));
  if (n_heads <= 0 || n_kv_heads <= 0 || n_heads % n_kv_heads != 0) {
    fail(fmt::format("n_heads {} must be a positive multiple of n_kv_heads {}", n_heads, n_kv_heads));
  }
  if (head_dim <= 0) fail(fmt::format("head_dim {} must be positive", head_dim));
  if (sliding_window < 0) fail("sliding_window is negative");
  if (q == nullptr || k == nullptr || v == nullptr || out == nullptr) fail("null pointer");
  if (kv_head_stride < n_keys() * head_dim) {
    fail(fmt::format("kv_head_stride {} holds fewer than the {} keys needed", kv_head_stride, n_keys()));
  }
}

namespace {
double load_kv(const void* base, KVDType dtype, std::int64_t index) {
  if (dtype == KVDType::kF32) return static_cast<const float*>(base)[index];
  return f16_to_f32(static_cast<const std::uint16_t*>(base)[index]);
}
}  // namespace

void dense_attention_ref(const DenseAttentionArgs& a) {
  a.validate();
  const int group = a.n_heads / a.n_kv_heads;
  const int d = a.head_dim;
  std::vector<double> scores;
  std::vector<double> acc(static_cast<std::size_t>(d));
  for (int i = 0; i < a.n_queries; ++i) {
    const std::int64_t last = a.pos0 + i;
    const std::int64_t first = a.first_key(i);
    for (int h = 0; h < a.n_heads; ++h) {
      const int kvh = h / group;
      const float* q = a.q + (static_cast<std::int64_t>(i) * a.n_heads + h) * d;
      const std::int64_t head_base = kvh * a.kv_head_stride;
      scores.assign(static_cast<std::size_t>(last - first + 1), 0.0);
      double max_score = -INFINITY;
      for (std::int64_t t = first; t <= last; ++t) {
        double s = 0.0;
        for (int c = 0; c < d; ++c) s += static_cast<double>(q[c]) * load_kv(a.k, a.kv_dtype, head_base + t * d + c);
        s *= a.scale;
        scores[static_cast<std::size_t>(t - first)] = s;
        max_score = std::max(max_score, s);
      }
      double sum = 0.0;
      for (double& s : scores) {
        s = std::exp(s - max_score);
        sum += s;
      }
      std::fill(acc.begin(), acc.end(), 0.0);
      for (std::int64_t t = first; t <= last; ++t) {
        const double p = scores[static_cast<std::size_t>(t - first)] / sum;
        for (int c = 0; c < d; ++c) acc[static_cast<std::size_t>(c)] += p * load_kv(a.v, a.kv_dtype, head_base + t * d + c);
      }
      float* out = a.out + (static_cast<std::int64_t>(i) * a.n_heads + h) * d;
      for (int c = 0; c < d; ++c) out[c] = static_cast<float>(acc[static_cast<std::size_t>(c)]);
    }
  }
}

}  // namespace million
