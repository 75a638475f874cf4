// Scalar CPU primitives (no SIMD flags): the portable fallback and the baseline the SIMD
// tables are compared with.
#include "backends/cpu/cpu_kernels.h"
#include "core/half.h"

namespace million {
namespace {

float dot_f32(const float* a, const float* b, int n) {
  float s = 0.0f;
  for (int i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}
float dot_f16(const float* a, const std::uint16_t* b, int n) {
  float s = 0.0f;
  for (int i = 0; i < n; ++i) s += a[i] * f16_to_f32(b[i]);
  return s;
}
float dot_bf16(const float* a, const std::uint16_t* b, int n) {
  float s = 0.0f;
  for (int i = 0; i < n; ++i) s += a[i] * bf16_to_f32(b[i]);
  return s;
}
void bf16_to_f32_n(const std::uint16_t* src, float* dst, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(src[i]);
}
void axpy_f32(float alpha, const float* x, float* y, int n) {
  for (int i = 0; i < n; ++i) y[i] += alpha * x[i];
}
void axpy_f16(float alpha, const std::uint16_t* x, float* y, int n) {
  for (int i = 0; i < n; ++i) y[i] += alpha * f16_to_f32(x[i]);
}
void f16_to_f32_n(const std::uint16_t* src, float* dst, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) dst[i] = f16_to_f32(src[i]);
}
void f32_to_f16_n(const float* src, std::uint16_t* dst, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) dst[i] = f32_to_f16(src[i]);
}

}  // namespace

namespace detail {
const CpuKernels kScalarKernels = {SimdLevel::kScalar, dot_f32, dot_f16, dot_bf16, axpy_f32, axpy_f16, f16_to_f32_n, f32_to_f16_n, bf16_to_f32_n};
}

}  // namespace million
