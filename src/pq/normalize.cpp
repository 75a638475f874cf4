// Normalisations between rotation and PQ (see normalize.h).
#include "pq/normalize.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "core/half.h"
#include "million/error.h"

namespace million {

const char* vector_norm_name(VectorNorm n) {
  switch (n) {
    case VectorNorm::kNone: return "none";
    case VectorNorm::kToken: return "token";
    case VectorNorm::kChannelGroup: return "channel-group";
  }
  return "?";
}

VectorNorm parse_vector_norm(const std::string& s) {
  if (s == "none") return VectorNorm::kNone;
  if (s == "token") return VectorNorm::kToken;
  if (s == "channel-group") return VectorNorm::kChannelGroup;
  throw InvalidArgumentError(fmt::format("unknown normalisation '{}' (known: none, token, channel-group)", s));
}

bool valid_vector_norm(std::uint32_t code) { return code <= 2; }

double vector_norm_bits(VectorNorm n, int head_dim, int group) {
  switch (n) {
    case VectorNorm::kNone: return 0.0;
    case VectorNorm::kToken: return 16.0 / head_dim;
    case VectorNorm::kChannelGroup: return group > 0 ? 32.0 / group : 0.0;
  }
  return 0.0;
}

namespace {
float round_f16(float x) { return f16_to_f32(f32_to_f16(std::clamp(x, -65504.0f, 65504.0f))); }
}  // namespace

void channel_group_params(const float* x, int n, int d, float* mn, float* rg, const float* scale) {
  for (int c = 0; c < d; ++c) {
    float lo = n > 0 ? x[c] : 0.0f, hi = lo;
    for (int t = 1; t < n; ++t) {
      lo = std::min(lo, x[static_cast<std::int64_t>(t) * d + c]);
      hi = std::max(hi, x[static_cast<std::int64_t>(t) * d + c]);
    }
    const float m = round_f16(lo);
    const float s = scale != nullptr ? scale[c] : 1.0f;
    float r = round_f16(std::max(0.0f, hi - m) / s);
    // f16 rounding may leave m + r * s a little below hi: step r up once so the group's maximum
    // maps to u <= s (u slightly outside [0, s] is harmless, but this keeps it tidy).
    if (m + r * s < hi && r < 65504.0f) r = f16_to_f32(static_cast<std::uint16_t>(f32_to_f16(r) + 1));
    mn[c] = m;
    rg[c] = r;
  }
}

void channel_group_normalize(const float* x, int n, int d, const float* mn, const float* rg, float* u) {
  for (int t = 0; t < n; ++t) {
    for (int c = 0; c < d; ++c) {
      const std::int64_t i = static_cast<std::int64_t>(t) * d + c;
      u[i] = rg[c] > 0.0f ? (x[i] - mn[c]) / rg[c] : 0.0f;
    }
  }
}

void channel_group_denormalize(const float* u, int n, int d, const float* mn, const float* rg, float* x) {
  for (int t = 0; t < n; ++t) {
    for (int c = 0; c < d; ++c) {
      const std::int64_t i = static_cast<std::int64_t>(t) * d + c;
      x[i] = mn[c] + rg[c] * u[i];
    }
  }
}

float token_norm_f16(const float* x, int d) {
  double s = 0.0;
  for (int c = 0; c < d; ++c) s += static_cast<double>(x[c]) * x[c];
  return round_f16(static_cast<float>(std::sqrt(s)));
}

void token_normalize(const float* x, int n, int d, const float* norms, float* u) {
  for (int t = 0; t < n; ++t) {
    const float nrm = norms[t];
    const float inv = nrm > 0.0f ? 1.0f / nrm : 0.0f;
    for (int c = 0; c < d; ++c) u[static_cast<std::int64_t>(t) * d + c] = x[static_cast<std::int64_t>(t) * d + c] * inv;
  }
}

void normalize_block(VectorNorm norm, float* u, int n, int d, float* params, const float* channel_scale) {
  if (norm == VectorNorm::kChannelGroup) {
    channel_group_params(u, n, d, params, params + d, channel_scale);
    channel_group_normalize(u, n, d, params, params + d, u);
  } else if (norm == VectorNorm::kToken) {
    for (int t = 0; t < n; ++t) params[t] = token_norm_f16(u + static_cast<std::ptrdiff_t>(t) * d, d);
    token_normalize(u, n, d, params, u);
  }
}

}  // namespace million
