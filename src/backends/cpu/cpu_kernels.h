// Table of the CPU vector primitives, one instance per instruction set (kernels_scalar.cpp,
// kernels_avx2.cpp, kernels_avx512.cpp, each compiled with its own flags). Callers fetch the
// table once per call with cpu_kernels(level) and never branch on the level inside a loop.
#pragma once

#include <cstdint>

#include "million/simd.h"

namespace million {

struct CpuKernels {
  SimdLevel level;
  /// sum_i a[i] * b[i]
  float (*dot_f32)(const float* a, const float* b, int n);
  /// sum_i a[i] * f16(b[i])
  float (*dot_f16)(const float* a, const std::uint16_t* b, int n);
  /// sum_i a[i] * bf16(b[i])
  float (*dot_bf16)(const float* a, const std::uint16_t* b, int n);
  /// y[i] += alpha * x[i]
  void (*axpy_f32)(float alpha, const float* x, float* y, int n);
  /// y[i] += alpha * f16(x[i])
  void (*axpy_f16)(float alpha, const std::uint16_t* x, float* y, int n);
  /// dst[i] = f32(src[i]) / dst[i] = f16(src[i]) (round to nearest even)
  void (*f16_to_f32)(const std::uint16_t* src, float* dst, std::int64_t n);
  void (*f32_to_f16)(const float* src, std::uint16_t* dst, std::int64_t n);
  /// dst[i] = f32(src[i]) for bf16 src (exact)
  void (*bf16_to_f32)(const std::uint16_t* src, float* dst, std::int64_t n);
};

/// The table for `level`; throws InvalidArgumentError if this CPU cannot run it.
const CpuKernels& cpu_kernels(SimdLevel level);

namespace detail {
extern const CpuKernels kScalarKernels;
extern const CpuKernels kAvx2Kernels;
extern const CpuKernels kAvx512Kernels;
}  // namespace detail

}  // namespace million
