// PQ encoding on the device (contract in cuda_attention.h): the nearest centroid's index of each
// (sequence x kv head, token, subspace), written into the cache's code buffer at the position its
// code order gives (token-major, or the mma kernel's interleaved key / value layouts). Two
// kernels with the same arithmetic (f32 distances summed with fmaf in subspace order; ties to the
// lower index; NaN never wins; code 0 when nothing is finite): a block per (row, subspace) for
// the few rows of a decode step, a thread per (row, subspace) for bulk encoding (a prefill chunk,
// a completed key group). What it does not do: rotation and normalisation
// (the caller's kernels), packing 4-bit codes.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "backends/cuda/cuda_attention.h"
#include "million/error.h"

namespace million::cuda {
namespace {

constexpr int kThreads = 256;

// Byte of subspace m in a token's M codes for each order.
__device__ __forceinline__ int code_pos(int m, int M, PQCodeOrder order) {
  if (order == PQCodeOrder::kMmaKeys) return (m % 4) * (M / 4) + m / 4;
  if (order == PQCodeOrder::kMmaValues) return (m % 8) * (M / 8) + m / 8;
  return m;
}

// A block per (sequence x kv head, token, subspace) at a time, one thread per centroid: the distances
// in parallel (coalesced centroid loads), then an argmin over the block (ties and NaN as the
// reference: the lowest index among the smallest finite distances, code 0 when none is).
// A decode step encodes a handful of rows: this keeps it at one short launch instead of a
// thread walking 256 centroids through cache misses.
template <int DSUB>
__global__ void __launch_bounds__(kThreads) pq_encode_kernel(PQEncodeArgs a) {
  __shared__ float sd[kThreads / 32];
  __shared__ int si[kThreads / 32];
  const std::int64_t eff = a.len_device ? *a.len_device - a.len_offset : 0;  // coded tokens once these are
  if (a.len_device && eff < a.n_tokens) return;            // sinks: never coded
  if (a.every > 0 && eff % a.every != 0) return;           // the whole block: no group completed
  const std::int64_t total = static_cast<std::int64_t>(a.n_seq_heads) * a.n_tokens * a.M;
  for (std::int64_t blk = blockIdx.x; blk < total; blk += gridDim.x) {  // (row, m)
    const int m = static_cast<int>(blk % a.M);
    const std::int64_t row = blk / a.M;  // (sequence x kv head) * n_tokens + token
    const int sh = static_cast<int>(row / a.n_tokens), tok = static_cast<int>(row % a.n_tokens);
    const int c = threadIdx.x;
    float d = INFINITY;
    if (c < a.ksub) {
      const float* cen = a.centroids + (sh % a.n_kv_heads) * a.cb_head_stride +
                         (static_cast<std::int64_t>(m) * a.ksub + c) * DSUB;
      const float* x = a.x + row * a.head_dim + m * DSUB;
      d = 0.0f;
#pragma unroll
      for (int j = 0; j < DSUB; ++j) {
        const float t = x[j] - cen[j];
        d = fmaf(t, t, d);
      }
      if (!(d <= INFINITY)) d = INFINITY;  // NaN never wins
    }
    int idx = c;
    for (int o = 16; o > 0; o >>= 1) {
      const float d2 = __shfl_xor_sync(0xffffffffu, d, o);
      const int i2 = __shfl_xor_sync(0xffffffffu, idx, o);
      if (d2 < d || (d2 == d && i2 < idx)) d = d2, idx = i2;
    }
    const int warp = threadIdx.x >> 5;
    if ((threadIdx.x & 31) == 0) sd[warp] = d, si[warp] = idx;
    __syncthreads();
    if (threadIdx.x == 0) {
      float best = sd[0];
      int best_c = si[0];
      for (int w = 1; w < kThreads / 32; ++w) {
        if (sd[w] < best || (sd[w] == best && si[w] < best_c)) best = sd[w], best_c = si[w];
      }
      if (best == INFINITY) best_c = 0;  // every distance NaN or infinite: code 0, as the reference
      const std::int64_t pos0 = a.len_device ? eff - a.n_tokens : a.pos0;
      a.codes[(static_cast<std::int64_t>(sh) * a.capacity + pos0 + tok) * a.M + code_pos(m, a.M, a.order)] =
          static_cast<std::uint8_t>(best_c);
    }
    __syncthreads();  // sd / si are reused by the next (row, m)
  }
}

// Bulk: a block per (256 tokens, subspace, sequence x kv head) with the subspace's codebook in
// shared memory; each thread walks the ksub centroids for its token (broadcast reads).
template <int DSUB>
__global__ void __launch_bounds__(kThreads) pq_encode_bulk_kernel(PQEncodeArgs a) {
  __shared__ float sc[256 * DSUB];
  const std::int64_t eff = a.len_device ? *a.len_device - a.len_offset : 0;
  if (a.len_device && eff < a.n_tokens) return;
  if (a.every > 0 && eff % a.every != 0) return;
  const int m = blockIdx.y, sh = blockIdx.z;
  const float* cen = a.centroids + (sh % a.n_kv_heads) * a.cb_head_stride + static_cast<std::int64_t>(m) * a.ksub * DSUB;
  for (int i = threadIdx.x; i < a.ksub * DSUB; i += blockDim.x) sc[i] = cen[i];
  __syncthreads();
  const int tok = blockIdx.x * blockDim.x + threadIdx.x;
  if (tok >= a.n_tokens) return;
  const float* x = a.x + (static_cast<std::int64_t>(sh) * a.n_tokens + tok) * a.head_dim + m * DSUB;
  float xv[DSUB];
#pragma unroll
  for (int j = 0; j < DSUB; ++j) xv[j] = x[j];
  float best = INFINITY;
  int best_c = 0;
  for (int c = 0; c < a.ksub; ++c) {
    float d = 0.0f;
#pragma unroll
    for (int j = 0; j < DSUB; ++j) {
      const float t = xv[j] - sc[c * DSUB + j];
      d = fmaf(t, t, d);
    }
    if (d < best) best = d, best_c = c;  // strict: ties keep the lower index; NaN never wins
  }
  const std::int64_t pos0 = a.len_device ? eff - a.n_tokens : a.pos0;
  a.codes[(static_cast<std::int64_t>(sh) * a.capacity + pos0 + tok) * a.M + code_pos(m, a.M, a.order)] =
      static_cast<std::uint8_t>(best_c);
}

}  // namespace

void pq_encode(const PQEncodeArgs& a, cudaStream_t stream) {
  if (a.n_seq_heads < 1 || a.n_kv_heads < 1 || a.n_seq_heads % a.n_kv_heads != 0) {
    throw InvalidArgumentError("CUDA PQ encode: bad sequence / kv head counts");
  }
  if (a.M < 1 || a.head_dim % a.M != 0) throw InvalidArgumentError("CUDA PQ encode: M must divide head_dim");
  const int dsub = a.head_dim / a.M;
  if (dsub != 1 && dsub != 2 && dsub != 4 && dsub != 8) {
    throw InvalidArgumentError("CUDA PQ encode: dsub must be 1, 2, 4 or 8, got " + std::to_string(dsub));
  }
  if (a.ksub < 2 || a.ksub > 256 || (a.ksub & (a.ksub - 1)) != 0) {
    throw InvalidArgumentError("CUDA PQ encode: ksub must be a power of two in [2, 256]");
  }
  if (a.every < 0 || (a.every > 0 && !a.len_device)) {
    throw InvalidArgumentError("CUDA PQ encode: `every` needs len_device");
  }
  if (a.order != PQCodeOrder::kTokenMajor && a.M % 8 != 0) {
    throw InvalidArgumentError("CUDA PQ encode: the mma code orders need M a multiple of 8");
  }
  if (a.n_tokens < 0 || a.n_tokens > a.capacity || (!a.len_device && (a.pos0 < 0 || a.pos0 + a.n_tokens > a.capacity))) {
    throw InvalidArgumentError("CUDA PQ encode: tokens " + std::to_string(a.pos0) + " .. " +
                               std::to_string(a.pos0 + a.n_tokens) + " past the capacity " + std::to_string(a.capacity));
  }
  const std::int64_t total = static_cast<std::int64_t>(a.n_seq_heads) * a.n_tokens * a.M;  // blocks
  if (total == 0) return;
  if (a.n_tokens >= 32 && a.M <= 65535 && a.n_seq_heads <= 65535) {  // bulk: a thread per (row, subspace)
    const dim3 grid(static_cast<unsigned>((a.n_tokens + kThreads - 1) / kThreads), static_cast<unsigned>(a.M),
                    static_cast<unsigned>(a.n_seq_heads));
    switch (dsub) {
      case 1: pq_encode_bulk_kernel<1><<<grid, kThreads, 0, stream>>>(a); break;
      case 2: pq_encode_bulk_kernel<2><<<grid, kThreads, 0, stream>>>(a); break;
      case 4: pq_encode_bulk_kernel<4><<<grid, kThreads, 0, stream>>>(a); break;
      default: pq_encode_bulk_kernel<8><<<grid, kThreads, 0, stream>>>(a); break;
    }
    check(cudaGetLastError(), "PQ encode kernel launch");
    return;
  }
  // At most 4096 blocks, each looping over its (row, subspace) pairs: a group encoder that runs
  // every step but works only when a group completes (`every`) costs a short launch otherwise.
  const dim3 grid(static_cast<unsigned>(std::min<std::int64_t>(total, 4096)));
  switch (dsub) {
    case 1: pq_encode_kernel<1><<<grid, kThreads, 0, stream>>>(a); break;
    case 2: pq_encode_kernel<2><<<grid, kThreads, 0, stream>>>(a); break;
    case 4: pq_encode_kernel<4><<<grid, kThreads, 0, stream>>>(a); break;
    default: pq_encode_kernel<8><<<grid, kThreads, 0, stream>>>(a); break;
  }
  check(cudaGetLastError(), "PQ encode kernel launch");
}

}  // namespace million::cuda
