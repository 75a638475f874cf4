// RMSNorm, RoPE and SwiGLU: plain loops, the only implementation (see ops.h).
#include <cmath>

#include "kernels/ops.h"

namespace million {

void rmsnorm(const float* x, const float* weight, float* out, int n, int dim, float eps) {
  for (int i = 0; i < n; ++i) {
    const float* xr = x + static_cast<std::int64_t>(i) * dim;
    float* o = out + static_cast<std::int64_t>(i) * dim;
    double ss = 0.0;
    for (int c = 0; c < dim; ++c) ss += static_cast<double>(xr[c]) * xr[c];
    const float inv = static_cast<float>(1.0 / std::sqrt(ss / dim + static_cast<double>(eps)));
    for (int c = 0; c < dim; ++c) o[c] = xr[c] * inv * weight[c];
  }
}

void RopeTable::compute(const std::vector<float>& inv_freq, std::int64_t pos0, int n) {
  half = static_cast<int>(inv_freq.size());
  cos.resize(static_cast<std::size_t>(n) * half);
  sin.resize(static_cast<std::size_t>(n) * half);
  for (int i = 0; i < n; ++i) {
    const float pos = static_cast<float>(pos0 + i);
    for (int j = 0; j < half; ++j) {
      const float angle = inv_freq[static_cast<std::size_t>(j)] * pos;
      cos[static_cast<std::size_t>(i) * half + j] = static_cast<float>(std::cos(static_cast<double>(angle)));
      sin[static_cast<std::size_t>(i) * half + j] = static_cast<float>(std::sin(static_cast<double>(angle)));
    }
  }
}

void rope_apply(float* x, int n, int n_heads, int head_dim, RopeLayout layout, const RopeTable& table) {
  const int half = head_dim / 2;
  for (int i = 0; i < n; ++i) {
    const float* cs = table.cos.data() + static_cast<std::size_t>(i) * half;
    const float* sn = table.sin.data() + static_cast<std::size_t>(i) * half;
    for (int h = 0; h < n_heads; ++h) {
      float* v = x + (static_cast<std::int64_t>(i) * n_heads + h) * head_dim;
      for (int j = 0; j < half; ++j) {
        const int a = layout == RopeLayout::kHalf ? j : 2 * j;
        const int b = layout == RopeLayout::kHalf ? j + half : 2 * j + 1;
        const float x0 = v[a], x1 = v[b];
        v[a] = x0 * cs[j] - x1 * sn[j];
        v[b] = x1 * cs[j] + x0 * sn[j];
      }
    }
  }
}

void swiglu(float* gate, const float* up, std::int64_t count) {
  for (std::int64_t i = 0; i < count; ++i) {
    const float g = gate[i];
    gate[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

}  // namespace million
