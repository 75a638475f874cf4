// Scalar reference for weight-matrix products (double accumulation) and the dtype helpers.
#include <cstring>

#include "core/half.h"
#include "kernels/matmul.h"

namespace million {

const char* weight_dtype_name(WeightDType dtype) {
  switch (dtype) {
    case WeightDType::kF32: return "f32";
    case WeightDType::kF16: return "f16";
    case WeightDType::kBF16: return "bf16";
  }
  return "?";
}

int weight_dtype_size(WeightDType dtype) { return dtype == WeightDType::kF32 ? 4 : 2; }

namespace {
double element(const WeightMatrix& w, std::int64_t i) {
  switch (w.dtype) {
    case WeightDType::kF32: return static_cast<const float*>(w.data)[i];
    case WeightDType::kF16: return f16_to_f32(static_cast<const std::uint16_t*>(w.data)[i]);
    case WeightDType::kBF16: return bf16_to_f32(static_cast<const std::uint16_t*>(w.data)[i]);
  }
  return 0.0;
}
}  // namespace

void matmul_ref(const WeightMatrix& w, const float* x, int n, float* y, float beta) {
  for (int t = 0; t < n; ++t) {
    for (std::int64_t r = 0; r < w.rows; ++r) {
      double acc = 0.0;
      for (std::int64_t c = 0; c < w.cols; ++c) acc += static_cast<double>(x[t * w.cols + c]) * element(w, r * w.cols + c);
      float& out = y[t * w.rows + r];
      out = static_cast<float>(acc + (beta != 0.0f ? static_cast<double>(beta) * out : 0.0));
    }
  }
}

}  // namespace million
