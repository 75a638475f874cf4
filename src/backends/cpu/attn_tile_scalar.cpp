// Scalar attention tile kernels (see attn_tile_kernels.h): plain loops with std::exp, the
// reference the SIMD tables are compared with; also the dispatch for attn_tile_kernels().
#include <fmt/format.h>

#include <cmath>
#include <limits>

#include "backends/cpu/attn_tile_kernels.h"
#include "core/half.h"
#include "million/error.h"

namespace million {
namespace {

float max_scalar(const float* x, std::int64_t n) {
  float m = -std::numeric_limits<float>::infinity();
  for (std::int64_t i = 0; i < n; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

float exp_sum_scalar(float* x, std::int64_t n, float shift) {
  float sum = 0.0f;
  for (std::int64_t i = 0; i < n; ++i) sum += (x[i] = std::exp(x[i] - shift));
  return sum;
}

template <typename Row, typename Cvt>
void dot_rows(const float* q, int G, int d, const Row* rows, std::int64_t ldr, int nt, float* s, std::int64_t lds,
              Cvt cvt) {
  for (int t = 0; t < nt; ++t) {
    const Row* r = rows + t * ldr;
    for (int j = 0; j < G; ++j) {
      float acc = 0.0f;
      for (int c = 0; c < d; ++c) acc += q[j * d + c] * cvt(r[c]);
      s[j * lds + t] = acc;
    }
  }
}

template <typename Row, typename Cvt>
void axpy_rows(const float* p, std::int64_t ldp, int G, int d, const Row* rows, std::int64_t ldr, int nt, float* acc,
               Cvt cvt) {
  for (int t = 0; t < nt; ++t) {
    const Row* r = rows + t * ldr;
    for (int j = 0; j < G; ++j) {
      const float w = p[j * ldp + t];
      for (int c = 0; c < d; ++c) acc[j * d + c] += w * cvt(r[c]);
    }
  }
}

float ident(float x) { return x; }
float half(std::uint16_t x) { return f16_to_f32(x); }

void dot_rows_f32(const float* q, int G, int d, const float* rows, std::int64_t ldr, int nt, float* s, std::int64_t lds) {
  dot_rows(q, G, d, rows, ldr, nt, s, lds, ident);
}
void dot_rows_f16(const float* q, int G, int d, const std::uint16_t* rows, std::int64_t ldr, int nt, float* s,
                  std::int64_t lds) {
  dot_rows(q, G, d, rows, ldr, nt, s, lds, half);
}
void axpy_rows_f32(const float* p, std::int64_t ldp, int G, int d, const float* rows, std::int64_t ldr, int nt,
                   float* acc) {
  axpy_rows(p, ldp, G, d, rows, ldr, nt, acc, ident);
}
void axpy_rows_f16(const float* p, std::int64_t ldp, int G, int d, const std::uint16_t* rows, std::int64_t ldr, int nt,
                   float* acc) {
  axpy_rows(p, ldp, G, d, rows, ldr, nt, acc, half);
}

}  // namespace

namespace detail {
const AttnTileKernels kAttnTileScalar = {SimdLevel::kScalar, max_scalar,    exp_sum_scalar, dot_rows_f32,
                                         dot_rows_f16,       axpy_rows_f32, axpy_rows_f16};
}

const AttnTileKernels& attn_tile_kernels(SimdLevel level) {
  if (!simd_level_supported(level)) {
    throw InvalidArgumentError(fmt::format("SIMD level '{}' is not supported by this CPU", simd_level_name(level)));
  }
  switch (level) {
    case SimdLevel::kAvx2: return detail::kAttnTileAvx2;
    case SimdLevel::kAvx512: return detail::kAttnTileAvx512;
    default: return detail::kAttnTileScalar;
  }
}

}  // namespace million
