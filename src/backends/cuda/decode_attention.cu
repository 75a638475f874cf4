// CUDA decode attention kernels (see cuda_attention.h): dense fp16 and PQ on CUDA cores (the
// PQ tensor-core variant is pq_decode_tc.cu), one thread block per (sequence split, kv head,
// sequence) — dense 256 threads and 256-token tiles, PQ 512 and 512 — with an online softmax
// over the tiles, then a merge kernel over the splits.
//  - key phase: one thread per token of the tile computes the scores of the group's G query
//    heads (queries broadcast from shared memory): dense rows read as 16-byte fp16 chunks; PQ
//    codes read as 16-byte chunks and each subspace's centroid looked up in the key codebook,
//    held in shared memory as fp16 [M][ksub][dsub] (dsub = 2: one half2 per lookup).
//  - softmax: block-wide max per head through warp shuffles, p = exp(s - max) into shared
//    memory, running sums and accumulators rescaled by exp(old max - new max).
//  - value phase: dense: one thread per (8-dim chunk, token group), 16-byte fp16 loads; PQ: one
//    thread per (subspace, token group), the tile's value codes staged in shared memory, the
//    centroid looked up in the value codebook (transposed to [ksub][M][dsub]: the 32 subspaces
//    of a warp fall in distinct banks) and weighted by the G heads' probabilities.
//  - the block's accumulators are reduced over token groups in shared memory and written as a
//    partial (acc[head_dim], max, sum) per (sequence, head, split); merge_kernel combines them.
// Accumulation is f32 throughout; exp is __expf.
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <type_traits>

#include "backends/cuda/cuda_attention.h"
#include "backends/cuda/decode_common.cuh"
#include "million/error.h"

namespace million::cuda {

void check(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return;
  const std::string msg = std::string(what) + ": " + cudaGetErrorString(err);
  if (err == cudaErrorMemoryAllocation) throw ResourceError(msg);
  throw Error(ErrorKind::kUnsupported, msg);
}

namespace {

using namespace detail;

constexpr int kThreads = 256;    // dense kernel
constexpr int kTile = 256;       // dense kernel: tokens per tile, one per thread in the key phase
constexpr int kWarps = kThreads / 32;
constexpr int kPQThreads = 512;  // PQ kernel: its codebooks (128 KiB at head_dim 128) allow one block per SM
constexpr int kSplitTile = 512;  // choose_splits: splits of whole tiles of either kernel

// Folds this thread's scores s[j] (-inf for no token) into the running max m_run[j] (the same
// in every thread), writes p = exp(s - max) to sP[j][t], returns the rescale factors alpha[j].

// Folds this thread's scores s[j] (-inf for no token) into the running max m_run[j] and sum
// l_run[j] (the same in every thread), writes p = exp(s - max) to sP[t][G] and returns the
// factors alpha[j] = exp(old max - new max) that rescale the accumulators. sRed: 2 x [warps][G].
template <int G, int THREADS>
__device__ inline void tile_softmax(const float (&s)[G], float (&m_run)[G], float (&l_run)[G], float (&alpha)[G],
                                    float* sP, float* sRed) {
  constexpr int kW = THREADS / 32;
  const int t = threadIdx.x, lane = t & 31, warp = t >> 5;
#pragma unroll
  for (int j = 0; j < G; ++j) {
    const float w = warp_max(s[j]);
    if (lane == 0) sRed[warp * G + j] = w;
  }
  __syncthreads();
  float p[G];
#pragma unroll
  for (int j = 0; j < G; ++j) {
    float mx = sRed[j];
    for (int w = 1; w < kW; ++w) mx = fmaxf(mx, sRed[w * G + j]);
    const float m_new = fmaxf(m_run[j], mx);
    alpha[j] = m_run[j] == -INFINITY ? 0.0f : __expf(m_run[j] - m_new);
    m_run[j] = m_new;
    p[j] = s[j] == -INFINITY ? 0.0f : __expf(s[j] - m_new);
    sP[t * G + j] = p[j];
    const float ws = warp_sum(p[j]);
    if (lane == 0) sRed[(kW + warp) * G + j] = ws;
  }
  __syncthreads();
#pragma unroll
  for (int j = 0; j < G; ++j) {
    float sum = 0.0f;
    for (int w = 0; w < kW; ++w) sum += sRed[(kW + w) * G + j];
    l_run[j] = l_run[j] * alpha[j] + sum;
  }
}

// Reduces acc[G][W] (W values at dims c0 .. c0 + W of this thread) over the `groups` token
// groups through sAcc [groups][G][D], and writes the partial of this (sequence, kv head, split).
template <int D, int G, int W, int THREADS>
__device__ inline void write_partial(const float (&acc)[G][W], const float (&l_run)[G], const float (&m_run)[G], int grp,
                                     int groups, int c0, float* sAcc, float* ws, int splits, int n_heads) {
  __syncthreads();
#pragma unroll
  for (int j = 0; j < G; ++j) {
#pragma unroll
    for (int e = 0; e < W; ++e) sAcc[(grp * G + j) * D + c0 + e] = acc[j][e];
  }
  __syncthreads();
  const int b = blockIdx.z, h = blockIdx.y;
  for (int i = threadIdx.x; i < G * (D + 2); i += THREADS) {
    const int j = i / (D + 2), c = i % (D + 2);
    float v;
    if (c < D) {
      v = 0.0f;
      for (int g = 0; g < groups; ++g) v += sAcc[(g * G + j) * D + c];
    } else if (c == D) {
      v = m_run[j];
    } else {
      v = l_run[j];
    }
    const std::int64_t head = static_cast<std::int64_t>(b) * n_heads + static_cast<std::int64_t>(h) * G + j;
    ws[(head * splits + blockIdx.x) * (D + 2) + c] = v;
  }
}

// KSUB: the codebook size when known at compile time (256, 16), 0 = read from p.ksub.
template <int D, int DSUB, int G, int KSUB>
__global__ void __launch_bounds__(kPQThreads, 1) pq_decode_kernel(PQParams p) {
  constexpr int M = D / DSUB;
  constexpr int T = kPQThreads;  // also the tile: one token per thread in the key phase
  constexpr int kGroups = T / M;
  // Shared memory: fixed-size parts first (compile-time offsets, so vector loads are provably
  // aligned), then the two codebooks (size depends on ksub), then the staged value codes.
  extern __shared__ __align__(16) unsigned char smem[];
  float* sQ = reinterpret_cast<float*>(smem);  // [M][G][DSUB]: a subspace's G heads contiguous
  float* sP = sQ + D * G;                      // [T][G]: a token's G probabilities contiguous
  float* sRed = sP + T * G;                    // [2][T / 32][G]
  __half* cbK = reinterpret_cast<__half*>(sRed + 2 * (T / 32) * G);  // [M][ksub][DSUB]
  float* sAcc = reinterpret_cast<float*>(cbK);  // [kGroups][G][D], reuses the codebooks' space at the end
  const int ksub = KSUB > 0 ? KSUB : p.ksub;
  const int cb_elems = M * ksub * DSUB;
  __half* cbV = cbK + cb_elems;  // [ksub][M][DSUB]: a warp's subspaces of one token in distinct banks
  std::uint8_t* sCodes = reinterpret_cast<std::uint8_t*>(cbV + cb_elems);  // [T][M]

  const int t = threadIdx.x, h = blockIdx.y, b = blockIdx.z;
  const std::int64_t seq = static_cast<std::int64_t>(b) * p.n_kv_heads + h;
  {
    const uint4* srcK = reinterpret_cast<const uint4*>(p.cb_k + h * p.cb_k_stride);
    uint4* dstK = reinterpret_cast<uint4*>(cbK);
    for (int i = t; i < cb_elems / 8; i += T) dstK[i] = srcK[i];
    using Entry = std::conditional_t<DSUB == 2, unsigned, uint2>;  // one centroid: DSUB halves
    const Entry* srcV = reinterpret_cast<const Entry*>(p.cb_v + h * p.cb_v_stride);
    Entry* dstV = reinterpret_cast<Entry*>(cbV);
    for (int i = t; i < M * ksub; i += T) dstV[(i % ksub) * M + i / ksub] = srcV[i];
    const float* q = p.q + (static_cast<std::int64_t>(b) * p.n_heads + static_cast<std::int64_t>(h) * G) * D;
    for (int i = t; i < G * D; i += T) {
      const int j = i / D, c = i % D;
      sQ[((c / DSUB) * G + j) * DSUB + c % DSUB] = q[i];
    }
  }
  std::int64_t tile_lo, tile_hi;
  split_tiles(p.n_tokens, T, p.splits, tile_lo, tile_hi);

  const int mV = t % M, grp = t / M;
  float m_run[G], l_run[G], acc[G][DSUB];
#pragma unroll
  for (int j = 0; j < G; ++j) {
    m_run[j] = -INFINITY;
    l_run[j] = 0.0f;
#pragma unroll
    for (int e = 0; e < DSUB; ++e) acc[j][e] = 0.0f;
  }
  const std::uint8_t* codes_k = p.codes_k + seq * p.capacity * M;
  const std::uint8_t* codes_v = p.codes_v + seq * p.capacity * M;
  const int kmask = ksub - 1;

  for (std::int64_t tile = tile_lo; tile < tile_hi; ++tile) {
    const std::int64_t base = tile * T;
    const int n_valid = static_cast<int>(p.n_tokens - base < T ? p.n_tokens - base : T);
    __syncthreads();  // the previous tile's readers of sCodes / sP are done
    {
      const uint4* src = reinterpret_cast<const uint4*>(codes_v + base * M);
      uint4* dst = reinterpret_cast<uint4*>(sCodes);
      const int chunks = n_valid * M / 16;
      for (int i = t; i < T * M / 16; i += T) dst[i] = i < chunks ? src[i] : make_uint4(0, 0, 0, 0);
    }
    float s[G];
#pragma unroll
    for (int j = 0; j < G; ++j) s[j] = 0.0f;
    if (t < n_valid) {
      const uint4* ck = reinterpret_cast<const uint4*>(codes_k + (base + t) * M);
#pragma unroll 1
      for (int m0 = 0; m0 < M; m0 += 16) {
        const uint4 raw = ck[m0 / 16];
        const std::uint8_t* cc = reinterpret_cast<const std::uint8_t*>(&raw);
#pragma unroll
        for (int k = 0; k < 16; ++k) {
          const int m = m0 + k;
          float c[DSUB];
          load_centroid<DSUB>(cbK + (m * ksub + (cc[k] & kmask)) * DSUB, c);
          const float* qm = sQ + m * G * DSUB;
#pragma unroll
          for (int j = 0; j < G; ++j) {
#pragma unroll
            for (int e = 0; e < DSUB; ++e) s[j] = fmaf(qm[j * DSUB + e], c[e], s[j]);
          }
        }
      }
#pragma unroll
      for (int j = 0; j < G; ++j) s[j] *= p.scale;
    } else {
#pragma unroll
      for (int j = 0; j < G; ++j) s[j] = -INFINITY;
    }
    float alpha[G];
    tile_softmax<G, T>(s, m_run, l_run, alpha, sP, sRed);
#pragma unroll
    for (int j = 0; j < G; ++j) {
#pragma unroll
      for (int e = 0; e < DSUB; ++e) acc[j][e] *= alpha[j];
    }
#pragma unroll 2
    for (int tt = grp; tt < n_valid; tt += kGroups) {
      float c[DSUB];
      load_centroid<DSUB>(cbV + ((sCodes[tt * M + mV] & kmask) * M + mV) * DSUB, c);
      const float* pt = sP + tt * G;
#pragma unroll
      for (int j = 0; j < G; ++j) {
        const float pj = pt[j];
#pragma unroll
        for (int e = 0; e < DSUB; ++e) acc[j][e] = fmaf(pj, c[e], acc[j][e]);
      }
    }
  }
  write_partial<D, G, DSUB, T>(acc, l_run, m_run, grp, kGroups, mV * DSUB, sAcc, p.ws, p.splits, p.n_heads);
}

struct DenseParams {
  const __half* k;
  const __half* v;
  const float* q;
  float* ws;
  std::int64_t n_tokens, capacity;
  int n_heads, n_kv_heads, splits;
  float scale;
};

template <int D, int G>
__global__ void __launch_bounds__(kThreads, 1) dense_decode_kernel(DenseParams p) {
  constexpr int kChunks = D / 8;  // 16-byte chunks per row
  constexpr int kGroups = kThreads / kChunks;
  extern __shared__ __align__(16) unsigned char smem[];
  float* sQ = reinterpret_cast<float*>(smem);  // [D][G]
  float* sP = sQ + D * G;                      // [kTile][G]
  float* sRed = sP + G * kTile;                // [2][kWarps][G]
  float* sAcc = sRed + 2 * kWarps * G;         // [kGroups][G][D]

  const int t = threadIdx.x, h = blockIdx.y, b = blockIdx.z;
  const std::int64_t seq = static_cast<std::int64_t>(b) * p.n_kv_heads + h;
  const float* q = p.q + (static_cast<std::int64_t>(b) * p.n_heads + static_cast<std::int64_t>(h) * G) * D;
  for (int i = t; i < G * D; i += kThreads) sQ[(i % D) * G + i / D] = q[i];
  std::int64_t tile_lo, tile_hi;
  split_tiles(p.n_tokens, kTile, p.splits, tile_lo, tile_hi);
  const __half* K = p.k + seq * p.capacity * D;
  const __half* V = p.v + seq * p.capacity * D;

  const int chunk = t % kChunks, grp = t / kChunks;
  float m_run[G], l_run[G], acc[G][8];
#pragma unroll
  for (int j = 0; j < G; ++j) {
    m_run[j] = -INFINITY;
    l_run[j] = 0.0f;
#pragma unroll
    for (int e = 0; e < 8; ++e) acc[j][e] = 0.0f;
  }
  for (std::int64_t tile = tile_lo; tile < tile_hi; ++tile) {
    const std::int64_t base = tile * kTile;
    const int n_valid = static_cast<int>(p.n_tokens - base < kTile ? p.n_tokens - base : kTile);
    __syncthreads();
    float s[G];
#pragma unroll
    for (int j = 0; j < G; ++j) s[j] = 0.0f;
    if (t < n_valid) {
      const uint4* row = reinterpret_cast<const uint4*>(K + (base + t) * D);
#pragma unroll 4
      for (int c8 = 0; c8 < kChunks; ++c8) {
        const uint4 raw = row[c8];
        const __half2* hv = reinterpret_cast<const __half2*>(&raw);
#pragma unroll
        for (int k2 = 0; k2 < 4; ++k2) {
          const float2 f = __half22float2(hv[k2]);
          const float* q0 = sQ + (c8 * 8 + 2 * k2) * G;
#pragma unroll
          for (int j = 0; j < G; ++j) s[j] = fmaf(q0[j], f.x, fmaf(q0[G + j], f.y, s[j]));
        }
      }
#pragma unroll
      for (int j = 0; j < G; ++j) s[j] *= p.scale;
    } else {
#pragma unroll
      for (int j = 0; j < G; ++j) s[j] = -INFINITY;
    }
    float alpha[G];
    tile_softmax<G, kThreads>(s, m_run, l_run, alpha, sP, sRed);
#pragma unroll
    for (int j = 0; j < G; ++j) {
#pragma unroll
      for (int e = 0; e < 8; ++e) acc[j][e] *= alpha[j];
    }
    for (int tt = grp; tt < n_valid; tt += kGroups) {
      const uint4 raw = reinterpret_cast<const uint4*>(V + (base + tt) * D)[chunk];
      const __half2* hv = reinterpret_cast<const __half2*>(&raw);
      float v[8];
#pragma unroll
      for (int k2 = 0; k2 < 4; ++k2) {
        const float2 f = __half22float2(hv[k2]);
        v[2 * k2] = f.x;
        v[2 * k2 + 1] = f.y;
      }
#pragma unroll
      for (int j = 0; j < G; ++j) {
        const float pj = sP[tt * G + j];
#pragma unroll
        for (int e = 0; e < 8; ++e) acc[j][e] = fmaf(pj, v[e], acc[j][e]);
      }
    }
  }
  write_partial<D, G, 8, kThreads>(acc, l_run, m_run, grp, kGroups, chunk * 8, sAcc, p.ws, p.splits, p.n_heads);
}

// out[b, h, :] = sum_s e^{m_s - M} acc_s / sum_s e^{m_s - M} l_s; one block per (head, sequence).
__global__ void merge_kernel(const float* ws, int splits, int D, int n_heads, float* out) {
  const std::int64_t head = static_cast<std::int64_t>(blockIdx.y) * n_heads + blockIdx.x;
  const float* part = ws + head * splits * (D + 2);
  float mx = -INFINITY;
  for (int s = 0; s < splits; ++s) mx = fmaxf(mx, part[s * (D + 2) + D]);
  for (int c = threadIdx.x; c < D; c += blockDim.x) {
    float num = 0.0f, den = 0.0f;
    for (int s = 0; s < splits; ++s) {
      const float m = part[s * (D + 2) + D];
      if (m == -INFINITY) continue;
      const float w = __expf(m - mx);
      num += w * part[s * (D + 2) + c];
      den += w * part[s * (D + 2) + D + 1];
    }
    out[head * D + c] = num / den;
  }
}

void validate(const DecodeShape& s, int splits, int tile) {
  if (s.batch < 1 || s.n_kv_heads < 1 || s.n_heads % s.n_kv_heads != 0) {
    throw InvalidArgumentError("CUDA decode attention: bad batch or head counts");
  }
  const int G = s.group();
  if (G != 1 && G != 2 && G != 4 && G != 8) {
    throw InvalidArgumentError("CUDA decode attention: query heads per kv head must be 1, 2, 4 or 8, got " +
                               std::to_string(G));
  }
  if (s.head_dim != 64 && s.head_dim != 128) {
    throw InvalidArgumentError("CUDA decode attention: head_dim must be 64 or 128, got " + std::to_string(s.head_dim));
  }
  if (s.n_tokens < 1 || s.n_tokens > s.capacity) throw InvalidArgumentError("CUDA decode attention: n_tokens out of range");
  const std::int64_t tiles = (s.n_tokens + tile - 1) / tile;
  if (splits < 1 || splits > tiles) {
    throw InvalidArgumentError("CUDA decode attention: splits must be in [1, " + std::to_string(tiles) + "]");
  }
}

template <typename Kernel, typename Params>
void launch(Kernel kernel, const Params& params, int threads, std::size_t smem, const DecodeShape& s, int splits,
            cudaStream_t stream) {
  check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)),
        "cudaFuncSetAttribute(max dynamic shared memory)");
  kernel<<<dim3(splits, s.n_kv_heads, s.batch), threads, smem, stream>>>(params);
  check(cudaGetLastError(), "decode attention kernel launch");
}

void merge(const DecodeShape& s, const float* ws, int splits, float* out, cudaStream_t stream) {
  merge_kernel<<<dim3(s.n_heads, s.batch), s.head_dim, 0, stream>>>(ws, splits, s.head_dim, s.n_heads, out);
  check(cudaGetLastError(), "decode attention merge launch");
}

template <int D, int DSUB, int G, int KSUB>
void run_pq(const PQParams& params, const DecodeShape& s, cudaStream_t stream) {
  constexpr int M = D / DSUB, T = kPQThreads;
  const std::size_t tables = 2u * M * params.ksub * DSUB * sizeof(__half) + static_cast<std::size_t>(T) * M;
  const std::size_t smem = sizeof(float) * (D * G + T * G + 2 * (T / 32) * G) +
                           std::max(tables, sizeof(float) * (T / M) * G * D);
  launch(pq_decode_kernel<D, DSUB, G, KSUB>, params, T, smem, s, params.splits, stream);
}

template <int D, int DSUB, int KSUB>
void run_pq_k(const PQParams& params, const DecodeShape& s, cudaStream_t stream) {
  switch (s.group()) {
    case 1: return run_pq<D, DSUB, 1, KSUB>(params, s, stream);
    case 2: return run_pq<D, DSUB, 2, KSUB>(params, s, stream);
    case 4: return run_pq<D, DSUB, 4, KSUB>(params, s, stream);
    default: return run_pq<D, DSUB, 8, KSUB>(params, s, stream);
  }
}

template <int D, int DSUB>
void run_pq_g(const PQParams& params, const DecodeShape& s, cudaStream_t stream) {
  if (params.ksub == 256) return run_pq_k<D, DSUB, 256>(params, s, stream);
  if (params.ksub == 16) return run_pq_k<D, DSUB, 16>(params, s, stream);
  run_pq_k<D, DSUB, 0>(params, s, stream);
}

template <int D, int G>
void run_dense(const DenseParams& params, const DecodeShape& s, cudaStream_t stream) {
  constexpr int kGroups = kThreads / (D / 8);
  const std::size_t smem = sizeof(float) * (D * G + G * kTile + 2 * kWarps * G + kGroups * G * D);
  launch(dense_decode_kernel<D, G>, params, kThreads, smem, s, params.splits, stream);
}

template <int D>
void run_dense_g(const DenseParams& params, const DecodeShape& s, cudaStream_t stream) {
  switch (s.group()) {
    case 1: return run_dense<D, 1>(params, s, stream);
    case 2: return run_dense<D, 2>(params, s, stream);
    case 4: return run_dense<D, 4>(params, s, stream);
    default: return run_dense<D, 8>(params, s, stream);
  }
}

}  // namespace

int choose_splits(const DecodeShape& s, int sm_count) {
  const std::int64_t tiles = (s.n_tokens + kSplitTile - 1) / kSplitTile;
  const std::int64_t pairs = static_cast<std::int64_t>(s.batch) * s.n_kv_heads;
  const std::int64_t want = (2 * static_cast<std::int64_t>(sm_count) + pairs - 1) / pairs;
  return static_cast<int>(std::max<std::int64_t>(1, std::min(want, tiles)));
}

std::size_t decode_workspace_floats(const DecodeShape& s, int splits) {
  return static_cast<std::size_t>(s.batch) * s.n_heads * splits * (s.head_dim + 2);
}

void dense_decode_attention(const DenseDecodeArgs& a, float* workspace, int splits, cudaStream_t stream) {
  validate(a.shape, splits, kTile);
  DenseParams p{static_cast<const __half*>(a.k), static_cast<const __half*>(a.v), a.q, workspace, a.shape.n_tokens,
                a.shape.capacity, a.shape.n_heads, a.shape.n_kv_heads, splits, a.scale};
  if (a.shape.head_dim == 128) {
    run_dense_g<128>(p, a.shape, stream);
  } else {
    run_dense_g<64>(p, a.shape, stream);
  }
  merge(a.shape, workspace, splits, a.out, stream);
}

void pq_decode_attention(const PQDecodeArgs& a, float* workspace, int splits, cudaStream_t stream) {
  validate(a.shape, splits, kPQThreads);
  if (a.M < 1 || a.shape.head_dim % a.M != 0) throw InvalidArgumentError("CUDA PQ attention: M must divide head_dim");
  const int dsub = a.shape.head_dim / a.M;
  if (dsub != 2 && dsub != 4) throw InvalidArgumentError("CUDA PQ attention: dsub must be 2 or 4, got " + std::to_string(dsub));
  if (a.ksub < 8 || a.ksub > 256 || (a.ksub & (a.ksub - 1)) != 0) {
    throw InvalidArgumentError("CUDA PQ attention: ksub must be a power of two in [8, 256]");
  }
  PQParams p{a.codes_k, a.codes_v, static_cast<const __half*>(a.cb_k), static_cast<const __half*>(a.cb_v),
             a.cb_k_head_stride, a.cb_v_head_stride, a.q, workspace, a.shape.n_tokens, a.shape.capacity,
             a.shape.n_heads, a.shape.n_kv_heads, a.ksub, splits, a.scale};
  const int D = a.shape.head_dim;
  if (a.tensor_cores) {
    launch_pq_tc(p, D, dsub, a.shape.group(), a.shape.batch, a.shape.n_kv_heads, stream);
    merge(a.shape, workspace, splits, a.out, stream);
    return;
  }
  if (D == 128 && dsub == 2) run_pq_g<128, 2>(p, a.shape, stream);
  if (D == 128 && dsub == 4) run_pq_g<128, 4>(p, a.shape, stream);
  if (D == 64 && dsub == 2) run_pq_g<64, 2>(p, a.shape, stream);
  if (D == 64 && dsub == 4) run_pq_g<64, 4>(p, a.shape, stream);
  merge(a.shape, workspace, splits, a.out, stream);
}

}  // namespace million::cuda
