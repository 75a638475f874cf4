// Products with weight matrices stored in their file's dtype (f32, f16 or bf16), row-major
// [rows = out_features, cols = in_features]. One token (decode) goes through our GEMV, which
// reads each weight once in its stored width (decode is memory-bound: bf16 halves the bytes);
// several tokens (prefill) go through BLAS SGEMM on f32 tiles of rows converted on the fly.
// The scalar reference (double accumulation) is the specification of both.
#pragma once

#include <cstdint>

#include "million/simd.h"

namespace million {

enum class WeightDType { kF32, kF16, kBF16 };

const char* weight_dtype_name(WeightDType dtype);
int weight_dtype_size(WeightDType dtype);

/// A view of a weight matrix; the storage belongs to someone else (ModelWeights).
struct WeightMatrix {
  std::int64_t rows = 0;
  std::int64_t cols = 0;
  WeightDType dtype = WeightDType::kF32;
  const void* data = nullptr;  ///< rows * cols elements of dtype, 2-byte aligned at least
  std::int64_t bytes() const { return rows * cols * weight_dtype_size(dtype); }
  bool empty() const { return data == nullptr; }
};

/// y[n, rows] = x[n, cols] W^T + beta * y, beta 0 or 1 (1 fuses a residual add).
/// x and y must not overlap.
void matmul(const WeightMatrix& w, const float* x, int n, float* y, float beta, SimdLevel level);

/// Scalar reference of matmul: double accumulation, no BLAS.
void matmul_ref(const WeightMatrix& w, const float* x, int n, float* y, float beta);

/// out[0, cols) = row `row` of W as f32 (embedding lookup).
void weight_row_f32(const WeightMatrix& w, std::int64_t row, float* out, SimdLevel level);

}  // namespace million
