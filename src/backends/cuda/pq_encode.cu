// PQ encoding on the device (contract in cuda_attention.h): one thread per (sequence x kv head,
// token, subspace) scans the subspace's ksub centroids (f32, read through the read-only cache;
// a codebook is at most 256 x dsub floats per subspace) and writes the nearest one's index
// into the cache's code buffer at the position its code order gives (token-major, or the mma
// kernel's interleaved key / value layouts). What it does not do: rotation and normalisation
// (the caller's kernels), packing 4-bit codes.
#include <cuda_runtime.h>

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

template <int DSUB>
__global__ void __launch_bounds__(kThreads) pq_encode_kernel(PQEncodeArgs a) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const std::int64_t total = static_cast<std::int64_t>(a.n_seq_heads) * a.n_tokens * a.M;
  if (i >= total) return;
  const int m = static_cast<int>(i % a.M);
  const std::int64_t row = i / a.M;  // (sequence x kv head) * n_tokens + token
  const int sh = static_cast<int>(row / a.n_tokens), tok = static_cast<int>(row % a.n_tokens);
  float x[DSUB];
#pragma unroll
  for (int j = 0; j < DSUB; ++j) x[j] = a.x[row * a.head_dim + m * DSUB + j];
  const float* cm = a.centroids + (sh % a.n_kv_heads) * a.cb_head_stride + static_cast<std::int64_t>(m) * a.ksub * DSUB;
  int best_c = 0;
  float best = INFINITY;
  for (int c = 0; c < a.ksub; ++c) {
    float d = 0.0f;
#pragma unroll
    for (int j = 0; j < DSUB; ++j) {
      const float t = x[j] - __ldg(cm + c * DSUB + j);
      d = fmaf(t, t, d);
    }
    if (d < best) {  // strict: ties keep the lower index, NaN input keeps code 0 (as the reference)
      best = d;
      best_c = c;
    }
  }
  a.codes[(static_cast<std::int64_t>(sh) * a.capacity + a.pos0 + tok) * a.M + code_pos(m, a.M, a.order)] =
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
  if (a.order != PQCodeOrder::kTokenMajor && a.M % 8 != 0) {
    throw InvalidArgumentError("CUDA PQ encode: the mma code orders need M a multiple of 8");
  }
  if (a.n_tokens < 0 || a.pos0 < 0 || a.pos0 + a.n_tokens > a.capacity) {
    throw InvalidArgumentError("CUDA PQ encode: tokens " + std::to_string(a.pos0) + " .. " +
                               std::to_string(a.pos0 + a.n_tokens) + " past the capacity " + std::to_string(a.capacity));
  }
  const std::int64_t total = static_cast<std::int64_t>(a.n_seq_heads) * a.n_tokens * a.M;
  if (total == 0) return;
  const dim3 grid(static_cast<unsigned>((total + kThreads - 1) / kThreads));
  switch (dsub) {
    case 1: pq_encode_kernel<1><<<grid, kThreads, 0, stream>>>(a); break;
    case 2: pq_encode_kernel<2><<<grid, kThreads, 0, stream>>>(a); break;
    case 4: pq_encode_kernel<4><<<grid, kThreads, 0, stream>>>(a); break;
    default: pq_encode_kernel<8><<<grid, kThreads, 0, stream>>>(a); break;
  }
  check(cudaGetLastError(), "PQ encode kernel launch");
}

}  // namespace million::cuda
