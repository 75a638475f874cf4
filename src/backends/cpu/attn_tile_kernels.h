// Per-ISA building blocks of decode attention over tiles of exact rows: scores of G query heads
// against a run of key rows, the softmax's max and exp, and the weighted sum of value rows.
// Used by the dense decode path (attention_cpu.cpp) and by the exact sink/window tokens of the
// quantized caches. Rows are f32 or f16, row t at rows + t * ldr (elements). Not here: the
// compressed formats (PQ codes, q8_0/q4_0 blocks, KIVI), which bring their own kernels.
// One table per ISA, fetched once per call with attn_tile_kernels(level); the scalar table is
// the reference the SIMD ones are tested against.
#pragma once

#include <cstdint>

#include "million/simd.h"

namespace million {

struct AttnTileKernels {
  SimdLevel level;
  /// max_i x[i]; -infinity for n = 0.
  float (*max)(const float* x, std::int64_t n);
  /// x[i] = exp(x[i] - shift) in place; returns sum_i x[i]. SIMD levels use a polynomial exp
  /// (relative error <= 2e-7 against std::exp); arguments below -87.3 give 0.
  float (*exp_sum)(float* x, std::int64_t n, float shift);
  /// s[j * lds + t] = sum_c q[j * d + c] * row_t[c] for j < G, t < nt.
  void (*dot_rows_f32)(const float* q, int G, int d, const float* rows, std::int64_t ldr, int nt, float* s,
                       std::int64_t lds);
  void (*dot_rows_f16)(const float* q, int G, int d, const std::uint16_t* rows, std::int64_t ldr, int nt, float* s,
                       std::int64_t lds);
  /// acc[j * d + c] += sum_t p[j * ldp + t] * row_t[c] for j < G, t < nt.
  void (*axpy_rows_f32)(const float* p, std::int64_t ldp, int G, int d, const float* rows, std::int64_t ldr, int nt,
                        float* acc);
  void (*axpy_rows_f16)(const float* p, std::int64_t ldp, int G, int d, const std::uint16_t* rows, std::int64_t ldr,
                        int nt, float* acc);
};

/// The table for `level`; throws InvalidArgumentError if this CPU cannot run it.
const AttnTileKernels& attn_tile_kernels(SimdLevel level);

namespace detail {
extern const AttnTileKernels kAttnTileScalar;
extern const AttnTileKernels kAttnTileAvx2;
extern const AttnTileKernels kAttnTileAvx512;
}  // namespace detail

}  // namespace million
