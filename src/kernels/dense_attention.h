// Causal attention over a dense (f32 or f16) K/V store: the argument struct, the scalar
// reference (double accumulation; the specification) and the fast CPU entry point.
// Not here: quantized caches (each brings its own kernels) and the QKV projections.
#pragma once

#include <cstdint>

#include "million/simd.h"

namespace million {

enum class KVDType { kF32, kF16 };

struct DenseAttentionArgs {
  int n_queries = 0;       ///< tokens in this call; query i sits at position pos0 + i
  std::int64_t pos0 = 0;   ///< position of query 0; keys [0, pos0 + n_queries) must be stored
  int n_heads = 0;         ///< query heads; head h reads kv head h / (n_heads / n_kv_heads)
  int n_kv_heads = 0;
  int head_dim = 0;
  int sliding_window = 0;  ///< 0: all earlier keys; W > 0: query at p sees keys (p - W, p]
  float scale = 0.0f;      ///< score multiplier, 1/sqrt(head_dim)
  const float* q = nullptr;      ///< [n_queries, n_heads, head_dim] f32, after RoPE
  const void* k = nullptr;       ///< [n_kv_heads, kv_head_stride / head_dim, head_dim], kv_dtype
  const void* v = nullptr;       ///< same layout as k
  std::int64_t kv_head_stride = 0;  ///< elements from one kv head's token 0 to the next head's
  KVDType kv_dtype = KVDType::kF32;
  float* out = nullptr;          ///< [n_queries, n_heads, head_dim] f32

  /// Throws InvalidArgumentError describing the first inconsistent field.
  void validate() const;
  std::int64_t n_keys() const { return pos0 + n_queries; }
  /// First key position query i may see.
  std::int64_t first_key(int i) const {
    const std::int64_t p = pos0 + i;
    return sliding_window > 0 && p - sliding_window + 1 > 0 ? p - sliding_window + 1 : 0;
  }
};

/// Scalar reference: per query and head, scores in double, softmax in double, output in double.
void dense_attention_ref(const DenseAttentionArgs& args);

/// Fast path: SIMD dot/axpy for short query batches (split over the sequence and merged),
/// BLAS GEMM tiles for prefill chunks; OpenMP over heads, query blocks and key splits.
void dense_attention(const DenseAttentionArgs& args, SimdLevel level);

}  // namespace million
