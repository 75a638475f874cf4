// Device helpers shared by the CUDA attention kernels (decode_attention.cu, pq_decode_mma.cu,
// prefill_attention.cu): warp reductions, the split of a sequence into tiles, the PQ kernels'
// parameters and centroid loads. Internal to src/backends/cuda.
#pragma once

#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "backends/cuda/cuda_attention.h"

namespace million::cuda::detail {

__device__ inline float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

__device__ inline float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Tiles [tile_lo, tile_hi) of this split.
__device__ inline void split_tiles(std::int64_t n_tokens, int tile, int splits, std::int64_t& lo, std::int64_t& hi) {
  const std::int64_t tiles = (n_tokens + tile - 1) / tile;
  lo = tiles * blockIdx.x / splits;
  hi = tiles * (blockIdx.x + 1) / splits;
}

struct PQParams {
  const std::uint8_t* codes_k;
  const std::uint8_t* codes_v;
  const __half* cb_k;
  const __half* cb_v;
  std::int64_t cb_k_stride, cb_v_stride;
  const float* q;
  float* ws;
  std::int64_t n_tokens, capacity;
  int n_heads, n_kv_heads, ksub, splits;
  float scale;
  // Normalisations (PQDecodeArgs; null = none): token norms [batch * n_kv_heads, capacity],
  // channel-group parameters [batch * n_kv_heads, n_groups, 2, head_dim].
  const __half* k_norm = nullptr;
  const __half* v_norm = nullptr;
  const __half* k_gp = nullptr;
  const __half* v_gp = nullptr;
  std::int64_t n_groups = 0;  // ceil(capacity / norm_group)
  int norm_group = 0;
  int norm_slots = 0;  // most channel-groups one tile touches (the scaled queries' shared-memory slots)
  const std::int64_t* n_tokens_dev = nullptr;  // mma kernel: n_tokens read on the device (graphs) ...
  std::int64_t n_dev_minus = 0;                // ... as max(0, *n_tokens_dev - n_dev_minus)
  int ws_splits = 0;                           // mma kernel: partials per head in the workspace (0: splits)
};

// D += A B, m16n8k16, fp16 inputs, f32 accumulators (the PTX ISA's fragment layouts).
__device__ __forceinline__ void mma16816(float (&d)[4], unsigned a0, unsigned a1, unsigned a2, unsigned a3,
                                         unsigned b0, unsigned b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

template <int DSUB>
__device__ inline void load_centroid(const __half* cen, float (&c)[DSUB]) {
  if constexpr (DSUB == 2) {
    const float2 f = __half22float2(*reinterpret_cast<const __half2*>(cen));
    c[0] = f.x;
    c[1] = f.y;
  } else {
    const uint2 raw = *reinterpret_cast<const uint2*>(cen);
    const float2 a = __half22float2(*reinterpret_cast<const __half2*>(&raw.x));
    const float2 b = __half22float2(*reinterpret_cast<const __half2*>(&raw.y));
    c[0] = a.x;
    c[1] = a.y;
    c[2] = b.x;
    c[3] = b.y;
  }
}

// pq_decode_mma.cu: the tensor-core kernel (p.splits blocks per sequence and kv head).
void launch_pq_mma(const PQParams& p, int head_dim, int dsub, int batch, int n_kv_heads, cudaStream_t stream);
// Its dynamic shared memory per block.
std::size_t pq_mma_smem(int head_dim, int M, int ksub, bool norm);

}  // namespace million::cuda::detail
