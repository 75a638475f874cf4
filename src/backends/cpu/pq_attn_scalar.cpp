// Scalar PQ attention kernels (see pq_attn_kernels.h): the plain loops the SIMD tables are
// tested against, and the dispatch for pq_attn_kernels().
#include <fmt/format.h>

#include "backends/cpu/pq_attn_kernels.h"
#include "million/error.h"

namespace million {
namespace {

inline const float* centroid(const PQKernelCodebook& cb, const std::uint8_t* codes, std::int64_t b, int m, int lane) {
  return cb.centroids + (static_cast<std::int64_t>(m) * cb.ksub + codes[(b * cb.M + m) * kPQBlockTokens + lane]) * cb.dsub;
}

void scores_scalar(const PQKernelCodebook& cb, const std::uint8_t* codes, std::int64_t b0, std::int64_t b1,
                   const float* q, int G, float* s, std::int64_t lds) {
  const int d = cb.head_dim();
  for (std::int64_t b = b0; b < b1; ++b) {
    for (int lane = 0; lane < kPQBlockTokens; ++lane) {
      for (int j = 0; j < G; ++j) {
        float acc = 0.0f;
        for (int m = 0; m < cb.M; ++m) {
          const float* c = centroid(cb, codes, b, m, lane);
          for (int e = 0; e < cb.dsub; ++e) acc += q[j * d + m * cb.dsub + e] * c[e];
        }
        s[j * lds + (b - b0) * kPQBlockTokens + lane] = acc;
      }
    }
  }
}

void accumulate_scalar(const PQKernelCodebook& cb, const std::uint8_t* codes, std::int64_t b0, std::int64_t b1,
                       const float* p, std::int64_t ldp, int G, float* acc) {
  const int d = cb.head_dim();
  for (std::int64_t b = b0; b < b1; ++b) {
    for (int lane = 0; lane < kPQBlockTokens; ++lane) {
      for (int j = 0; j < G; ++j) {
        const float w = p[j * ldp + (b - b0) * kPQBlockTokens + lane];
        for (int m = 0; m < cb.M; ++m) {
          const float* c = centroid(cb, codes, b, m, lane);
          for (int e = 0; e < cb.dsub; ++e) acc[j * d + m * cb.dsub + e] += w * c[e];
        }
      }
    }
  }
}

bool cpu_has_vbmi() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512vbmi") != 0;
  }();
  return has;
}

void check_level(SimdLevel level) {
  if (!simd_level_supported(level)) {
    throw InvalidArgumentError(fmt::format("SIMD level '{}' is not supported by this CPU", simd_level_name(level)));
  }
}

}  // namespace

namespace detail {
const PQAttnKernels kPQAttnScalar = {"scalar", scores_scalar, accumulate_scalar};
}

std::vector<const PQAttnKernels*> pq_attn_kernel_variants(SimdLevel level) {
  check_level(level);
  if (level == SimdLevel::kAvx512 && cpu_has_vbmi()) return {&detail::kPQAttnAvx512Vbmi, &detail::kPQAttnAvx512};
  return {&pq_attn_kernels(level)};
}

// Called per tile by the stores: no allocation, the VBMI check is cached.
const PQAttnKernels& pq_attn_kernels(SimdLevel level) {
  check_level(level);
  switch (level) {
    case SimdLevel::kAvx2: return detail::kPQAttnAvx2;
    case SimdLevel::kAvx512: return cpu_has_vbmi() ? detail::kPQAttnAvx512Vbmi : detail::kPQAttnAvx512;
    default: return detail::kPQAttnScalar;
  }
}

}  // namespace million
