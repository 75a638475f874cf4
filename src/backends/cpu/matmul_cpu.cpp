// Fast weight-matrix products (contract in kernels/matmul.h).
// Decode (one token): our GEMV, OpenMP over blocks of rows, each row one SIMD dot product in
// the stored dtype, so bf16/f16 weights are read at 2 bytes each. Prefill: f32 weights go to
// SGEMM directly; f16/bf16 weights are converted kTileRows rows at a time into an f32 tile that
// SGEMM consumes (conversion costs one pass over the weights per chunk, vs 2 * n flops per
// weight of GEMM work).
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <vector>

#include "backends/cpu/cpu_kernels.h"
#include "kernels/matmul.h"

namespace million {

namespace {

constexpr std::int64_t kTileRows = 256;  // f32 tile: 256 rows x 4096 cols x 4 B = 4 MiB at Llama-8B width
constexpr std::int64_t kGemvRowBlock = 16;

void gemv(const WeightMatrix& w, const float* x, float* y, float beta, const CpuKernels& k) {
  const int cols = static_cast<int>(w.cols);
  const std::int64_t n_blocks = (w.rows + kGemvRowBlock - 1) / kGemvRowBlock;
#pragma omp parallel for schedule(static)
  for (std::int64_t b = 0; b < n_blocks; ++b) {
    const std::int64_t r1 = std::min(w.rows, (b + 1) * kGemvRowBlock);
    for (std::int64_t r = b * kGemvRowBlock; r < r1; ++r) {
      float v;
      switch (w.dtype) {
        case WeightDType::kF32: v = k.dot_f32(x, static_cast<const float*>(w.data) + r * w.cols, cols); break;
        case WeightDType::kF16: v = k.dot_f16(x, static_cast<const std::uint16_t*>(w.data) + r * w.cols, cols); break;
        default: v = k.dot_bf16(x, static_cast<const std::uint16_t*>(w.data) + r * w.cols, cols); break;
      }
      y[r] = beta != 0.0f ? v + beta * y[r] : v;
    }
  }
}

void convert_rows(const WeightMatrix& w, std::int64_t r0, std::int64_t nr, float* out, const CpuKernels& k) {
  const auto* src = static_cast<const std::uint16_t*>(w.data) + r0 * w.cols;
#pragma omp parallel for schedule(static)
  for (std::int64_t r = 0; r < nr; ++r) {
    if (w.dtype == WeightDType::kF16) {
      k.f16_to_f32(src + r * w.cols, out + r * w.cols, w.cols);
    } else {
      k.bf16_to_f32(src + r * w.cols, out + r * w.cols, w.cols);
    }
  }
}

}  // namespace

void matmul(const WeightMatrix& w, const float* x, int n, float* y, float beta, SimdLevel level) {
  const CpuKernels& k = cpu_kernels(level);
  if (n == 1) {
    gemv(w, x, y, beta, k);
    return;
  }
  const int m = static_cast<int>(w.rows), kk = static_cast<int>(w.cols);
  if (w.dtype == WeightDType::kF32) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, m, kk, 1.0f, x, kk, static_cast<const float*>(w.data), kk,
                beta, y, m);
    return;
  }
  thread_local std::vector<float> tile;
  tile.resize(static_cast<std::size_t>(std::min(kTileRows, w.rows) * w.cols));
  for (std::int64_t r0 = 0; r0 < w.rows; r0 += kTileRows) {
    const std::int64_t nr = std::min(kTileRows, w.rows - r0);
    convert_rows(w, r0, nr, tile.data(), k);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, static_cast<int>(nr), kk, 1.0f, x, kk, tile.data(), kk,
                beta, y + r0, m);
  }
}

void weight_row_f32(const WeightMatrix& w, std::int64_t row, float* out, SimdLevel level) {
  const CpuKernels& k = cpu_kernels(level);
  switch (w.dtype) {
    case WeightDType::kF32:
      std::copy_n(static_cast<const float*>(w.data) + row * w.cols, w.cols, out);
      break;
    case WeightDType::kF16: k.f16_to_f32(static_cast<const std::uint16_t*>(w.data) + row * w.cols, out, w.cols); break;
    case WeightDType::kBF16: k.bf16_to_f32(static_cast<const std::uint16_t*>(w.data) + row * w.cols, out, w.cols); break;
  }
}

}  // namespace million
