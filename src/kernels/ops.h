// Small per-token operations of the forward pass: RMSNorm, RoPE, SwiGLU, bulk dtype
// conversion. Each is a plain loop (the compiler vectorises them); they are a few percent of
// a forward pass, so they have no hand-written SIMD variants. tests/unit/test_kernels.cpp
// checks them against double-precision formulas.
#pragma once

#include <cstdint>
#include <vector>

#include "model/config.h"

namespace million {

/// out[i, :] = x[i, :] / sqrt(mean(x[i, :]^2) + eps) * weight, for n rows of `dim` values.
/// out may alias x.
void rmsnorm(const float* x, const float* weight, float* out, int n, int dim, float eps);

/// cos/sin of every (position, frequency) pair for positions pos0..pos0+n-1: tables of
/// [n, head_dim/2] floats. Angles are computed as float(inv_freq) * float(pos) in float, as
/// Hugging Face and llama2.c do, so long contexts round the same way as the references.
struct RopeTable {
  std::vector<float> cos, sin;
  int half = 0;
  void compute(const std::vector<float>& inv_freq, std::int64_t pos0, int n);
};

/// Rotates `n_heads` heads of `head_dim` for each of n tokens in place: x [n, n_heads, head_dim].
void rope_apply(float* x, int n, int n_heads, int head_dim, RopeLayout layout, const RopeTable& table);

/// gate[i] = silu(gate[i]) * up[i] for count values.
void swiglu(float* gate, const float* up, std::int64_t count);

}  // namespace million
