// Per-ISA kernels of the PQ key store's score accumulation (src/model/kv/pq_store.cpp).
// Codes layout they read: blocks of kPQBlockTokens tokens, subspace-major inside a block:
// codes[(block * M + m) * kPQBlockTokens + lane] is token (block * 16 + lane)'s code in subspace m.
// One table per ISA, chosen once per call; the scalar table is the plain-loop fallback.
#pragma once

#include <cstdint>

#include "million/simd.h"

namespace million {

inline constexpr int kPQBlockTokens = 16;  // one AVX-512 vector of 32-bit indices per (block, subspace)

struct PQAttnKernels {
  /// For blocks [b0, b1) and query heads j < G: s[j * ld + (b - b0) * 16 + lane] =
  /// sum_m lut[(j * M + m) * ksub + code(b, m, lane)].
  void (*scores_blocks)(const std::uint8_t* codes, std::int64_t b0, std::int64_t b1, int M, int ksub, const float* lut,
                        int G, float* s, std::int64_t ld);
};

const PQAttnKernels& pq_attn_kernels(SimdLevel level);

namespace detail {
extern const PQAttnKernels kPQAttnAvx2;
extern const PQAttnKernels kPQAttnAvx512;
}  // namespace detail

}  // namespace million
