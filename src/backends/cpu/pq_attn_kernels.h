// Per-ISA kernels of PQ decode attention (src/model/kv/pq_store.cpp): scores of the G query
// heads of one kv head against coded keys, and the probability-weighted sum of coded values.
// Both decode each token's centroids and multiply them with the (rotated) query heads or the
// probabilities: exactly dense attention over the decoded vectors up to float summation order,
// and a decoded element is shared by the G heads of the group (a lookup table per query head
// would need G x M lookups per token instead of head_dim).
//
// Two ways to decode 64 tokens' centroid coordinate at once:
//  - gathers (AVX2, AVX-512): one 16-lane (8-lane) gather from the f32 centroids per
//    (subspace, coordinate, 16 tokens). Bound by gather throughput (~3.5 ns per 16 elements
//    measured on the development Xeon).
//  - byte planes (AVX-512 VBMI): every centroid coordinate is held as f16, split into a low-
//    and a high-byte plane of 256 entries each (4 zmm per plane); vpermi2b looks up 64 tokens'
//    bytes per plane half, a blend on the code's top bit picks the half, and the two planes
//    interleave into 64 f16 values (4 x vcvtph2ps). ~16 vector ops per 64 lookups.
// Centroids are f16-rounded once when a store is built (pq_store.h), so both ways and the
// reference decode see identical values.
//
// Codes layout: blocks of kPQBlockTokens = 64 tokens, subspace-major inside a block:
// codes[(block * M + m) * 64 + lane] is token (block * 64 + lane)'s code in subspace m.
// Kernels work on whole blocks [b0, b1); callers pad probabilities of tokens past the end with
// zeros and ignore scores past the end (codes there are stale but valid indices).
#pragma once

#include <cstdint>
#include <vector>

#include "million/simd.h"

namespace million {

inline constexpr int kPQBlockTokens = 64;        // one zmm of 8-bit codes per (block, subspace)
inline constexpr int kPQTableBytes = 24 * 1024;  // decode tables a score pass keeps hot in L1

/// What the kernels need of a codebook. planes may be null (then only gathers work).
struct PQKernelCodebook {
  int M = 0, ksub = 0, dsub = 0;
  const float* centroids = nullptr;    ///< [M, ksub, dsub] f32 (f16-representable values)
  const std::uint8_t* planes = nullptr;  ///< [M * dsub][2][256]: low then high bytes of the f16 coordinate
  int head_dim() const { return M * dsub; }
};

struct PQAttnKernels {
  const char* name;
  /// s[j * lds + (b - b0) * 64 + lane] = sum_{m, e} q[j * head_dim + m * dsub + e] * C[m][code(b, m, lane)][e]
  /// for blocks [b0, b1) and heads j < G.
  void (*scores)(const PQKernelCodebook& cb, const std::uint8_t* codes, std::int64_t b0, std::int64_t b1,
                 const float* q, int G, float* s, std::int64_t lds);
  /// acc[j * head_dim + m * dsub + e] += sum_{tokens} p[j * ldp + (b - b0) * 64 + lane] * C[m][code][e].
  void (*accumulate)(const PQKernelCodebook& cb, const std::uint8_t* codes, std::int64_t b0, std::int64_t b1,
                     const float* p, std::int64_t ldp, int G, float* acc);
};

/// The fastest table this CPU runs at `level` (AVX-512: byte planes when VBMI is present,
/// gathers otherwise); throws InvalidArgumentError if the CPU cannot run the level.
const PQAttnKernels& pq_attn_kernels(SimdLevel level);
/// Every table runnable at `level` (tests compare each one with the scalar table).
std::vector<const PQAttnKernels*> pq_attn_kernel_variants(SimdLevel level);

namespace detail {
extern const PQAttnKernels kPQAttnScalar;
extern const PQAttnKernels kPQAttnAvx2;
extern const PQAttnKernels kPQAttnAvx512;      // gathers
extern const PQAttnKernels kPQAttnAvx512Vbmi;  // byte planes
}  // namespace detail

}  // namespace million
