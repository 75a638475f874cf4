// Prefill attention (prefill_attention.h): one online softmax per query row over the enabled
// sources, in that order: PQ codes (or their rows decoded once by pq_decode_history), the exact
// sinks + ring buffer, the dense fp16 cache, the chunk's own K/V. Two kernels share the sources'
// loaders: the tensor-core one (prefill_mma_kernel, described at its definition below) and the
// f32 CUDA-core one described here.
// CUDA-core block: 128 threads on (tile of queries, kv head, sequence); 64 query rows = QT queries x the
// G heads of the kv head (QT = 64 / G), two threads per row, each owning half of the head's
// dimensions in alternating runs of 4 (thread h of a row: dims 8c + 4h .. + 3), so that the two
// threads of a row read different banks of a broadcast key row.
// Per tile of kTK = 32 keys: every thread decodes part of the tile into shared memory
// (sK, sV [kTK][head_dim] f32, sPos [kTK] positions, INT64_MAX = absent), then each row scores
// the 32 keys (the pair of threads adds its halves with one shuffle), masks those after its own
// position, and updates max / sum / accumulator (exp2 with log2(e) folded into the query).
#include "backends/cuda/prefill_attention.h"

#include <cuda_fp16.h>

#include <algorithm>
#include <climits>
#include <string>
#include <type_traits>

#include "backends/cuda/cuda_attention.h"
#include "backends/cuda/decode_common.cuh"
#include "million/error.h"

namespace million::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kRows = kThreads / 2;
constexpr int kTK = 32;
constexpr int kMaxChunks = 16;  // float4 runs per thread: head_dim 128

struct Params {
  PrefillAttentionArgs a;
  int group, queries_per_block, dsub;
  std::int64_t n_groups;  // key channel-groups per (sequence, kv head)
};

enum Source { kCodes = 0, kRing = 1, kCache = 2, kChunk = 3 };

// Positions of a tile's TK tokens into sPos (LLONG_MAX: absent or not visible to any query).
template <int TK>
__device__ void load_positions(const PrefillAttentionArgs& a, int src, std::int64_t t0, long long* sPos) {
  for (int jj = threadIdx.x; jj < TK; jj += blockDim.x) {
    const std::int64_t t = t0 + jj;
    long long pos = LLONG_MAX;
    if (src == kCodes) {
      if (t < a.n_codes) pos = t + a.codes_offset;
    } else if (src == kCache) {
      if (t <= a.pos0 + a.n_q - 1) pos = t;
    } else if (src == kChunk) {
      if (t < a.n_q) pos = a.pos0 + t;
    } else {  // ring
      if (t < a.sinks) {
        if (t < a.pos0) pos = t;
      } else if (t < a.sinks + a.window) {
        const std::int64_t j = t - a.sinks, n = a.pos0 - 1 - a.sinks - j;
        if (n >= 0) {
          const std::int64_t p = a.sinks + j + n / a.window * a.window;
          if (p >= a.ring_min_pos) pos = p;
        }
      }
    }
    sPos[jj] = pos;
  }
  __syncthreads();
}

// A tile's positions and K/V rows (as T: f32 or fp16) into shared memory, rows `stride`
// elements apart; a thread per element (the CUDA-core kernel's loader).
template <int TK, typename T>
__device__ void load_tile(const Params& P, int src, std::int64_t t0, int b, int kv, T* sK, T* sV, int stride,
                          long long* sPos) {
  const PrefillAttentionArgs& a = P.a;
  const int hd = a.head_dim;
  const std::int64_t sh = static_cast<std::int64_t>(b) * a.n_kv_heads + kv;
  load_positions<TK>(a, src, t0, sPos);
  for (int e = threadIdx.x; e < TK * hd; e += blockDim.x) {
    const int j = e / hd, d = e % hd;
    float k = 0.0f, v = 0.0f;
    if (sPos[j] != LLONG_MAX) {
      const std::int64_t t = t0 + j;
      if (src == kCodes && t < a.decoded_n) {
        const std::int64_t i = (sh * a.decoded_capacity + t) * hd + d;
        k = __half2float(static_cast<const __half*>(a.decoded_k)[i]);
        v = __half2float(static_cast<const __half*>(a.decoded_v)[i]);
      } else if (src == kCodes) {
        const int m = d / P.dsub, M = a.M;
        const std::uint8_t* ck = a.codes_k + (sh * a.codes_capacity + t) * M;
        const std::uint8_t* cv = a.codes_v + (sh * a.codes_capacity + t) * M;
        const int kc = ck[(m % 4) * (M / 4) + m / 4], vc = cv[(m % 8) * (M / 8) + m / 8];
        const int e_in = d % P.dsub;
        k = __half2float(static_cast<const __half*>(a.cb_k)[kv * a.cb_k_head_stride + (m * 256 + kc) * P.dsub + e_in]);
        v = __half2float(static_cast<const __half*>(a.cb_v)[kv * a.cb_v_head_stride + (m * 256 + vc) * P.dsub + e_in]);
        if (a.k_group_params) {
          const __half* gp = static_cast<const __half*>(a.k_group_params) + (sh * P.n_groups + t / a.norm_group) * 2 * hd;
          k = __half2float(gp[d]) + __half2float(gp[hd + d]) * k;
        }
        if (a.v_token_norm) v *= __half2float(static_cast<const __half*>(a.v_token_norm)[sh * a.codes_capacity + t]);
      } else if (src == kCache) {
        const std::int64_t i = (sh * a.cache_capacity + t) * hd + d;
        k = __half2float(static_cast<const __half*>(a.cache_k)[i]);
        v = __half2float(static_cast<const __half*>(a.cache_v)[i]);
      } else if (src == kChunk) {
        const std::int64_t i = ((static_cast<std::int64_t>(b) * a.n_q + t) * a.n_kv_heads + kv) * hd + d;
        k = __half2float(__float2half_rn(a.chunk_k[i]));
        v = __half2float(__float2half_rn(a.chunk_v[i]));
      } else {
        const std::int64_t i = (sh * (a.sinks + a.window) + t) * hd + d;
        k = __half2float(static_cast<const __half*>(a.ring_k)[i]);
        v = __half2float(static_cast<const __half*>(a.ring_v)[i]);
      }
    }
    if constexpr (std::is_same_v<T, float>) {
      sK[j * stride + d] = k;
      sV[j * stride + d] = v;
    } else {
      sK[j * stride + d] = __float2half_rn(k);
      sV[j * stride + d] = __float2half_rn(v);
    }
  }
  __syncthreads();
}

// Tokens of source `src` a block whose last query is q_last may see (0: source absent).
__device__ std::int64_t source_tokens(const PrefillAttentionArgs& a, int src, int q_last) {
  const std::int64_t pos_last = a.pos0 + q_last;
  if (src == kCodes && a.codes_k) return a.n_codes < pos_last + 1 - a.codes_offset ? a.n_codes : pos_last + 1 - a.codes_offset;
  if (src == kRing && a.ring_k) return a.sinks + a.window;
  if (src == kCache && a.cache_k) return pos_last + 1;
  if (src == kChunk && a.chunk_k) return q_last + 1;
  return 0;
}

__global__ void __launch_bounds__(kThreads) prefill_kernel(const Params P) {
  const PrefillAttentionArgs& a = P.a;
  extern __shared__ __align__(16) unsigned char smem[];
  const int hd = a.head_dim, stride = hd + 4, nc = hd / 8;
  float* sK = reinterpret_cast<float*>(smem);
  float* sV = sK + kTK * stride;
  long long* sPos = reinterpret_cast<long long*>(sV + kTK * stride);
  const int b = blockIdx.z, kv = blockIdx.y, row = threadIdx.x >> 1, half = threadIdx.x & 1;
  const int qi = blockIdx.x * P.queries_per_block + row / P.group, g = row % P.group;
  const bool active = row < P.queries_per_block * P.group && qi < a.n_q;
  const int q_last = min(a.n_q - 1, (blockIdx.x + 1) * P.queries_per_block - 1);  // the block's last query
  const long long qpos = a.pos0 + qi;
  const std::int64_t head_row = (static_cast<std::int64_t>(b) * a.n_q + (active ? qi : 0)) * a.n_heads + kv * P.group + g;

  float4 q[kMaxChunks], acc[kMaxChunks];
  const float qs = a.scale * 1.4426950408889634f;
#pragma unroll
  for (int c = 0; c < kMaxChunks; ++c) {
    acc[c] = make_float4(0.f, 0.f, 0.f, 0.f);
    q[c] = acc[c];
    if (c < nc && active) {
      const float4 x = *reinterpret_cast<const float4*>(a.q + head_row * hd + 8 * c + 4 * half);
      q[c] = make_float4(x.x * qs, x.y * qs, x.z * qs, x.w * qs);
    }
  }
  float mx = -INFINITY, sum = 0.0f;

  for (int src = 0; src < 4; ++src) {
    const std::int64_t n = source_tokens(a, src, q_last);
    for (std::int64_t t0 = 0; t0 < n; t0 += kTK) {
      __syncthreads();  // the previous tile is consumed
      load_tile<kTK>(P, src, t0, b, kv, sK, sV, stride, sPos);
      float s[kTK];
#pragma unroll
      for (int j = 0; j < kTK; ++j) {
        float d = 0.0f;
#pragma unroll
        for (int c = 0; c < kMaxChunks; ++c) {
          if (c < nc) {
            const float4 k = *reinterpret_cast<const float4*>(sK + j * stride + 8 * c + 4 * half);
            d = fmaf(q[c].x, k.x, fmaf(q[c].y, k.y, fmaf(q[c].z, k.z, fmaf(q[c].w, k.w, d))));
          }
        }
        d += __shfl_xor_sync(0xffffffffu, d, 1);
        s[j] = sPos[j] <= qpos ? d : -INFINITY;
      }
      float tmax = mx;
#pragma unroll
      for (int j = 0; j < kTK; ++j) tmax = fmaxf(tmax, s[j]);
      if (tmax == -INFINITY) continue;  // nothing visible yet
      const float corr = exp2f(mx - tmax);
      mx = tmax;
      sum *= corr;
#pragma unroll
      for (int c = 0; c < kMaxChunks; ++c) {
        acc[c].x *= corr;
        acc[c].y *= corr;
        acc[c].z *= corr;
        acc[c].w *= corr;
      }
#pragma unroll
      for (int j = 0; j < kTK; ++j) {
        const float p = exp2f(s[j] - mx);
        sum += p;
#pragma unroll
        for (int c = 0; c < kMaxChunks; ++c) {
          if (c < nc) {
            const float4 v = *reinterpret_cast<const float4*>(sV + j * stride + 8 * c + 4 * half);
            acc[c].x = fmaf(p, v.x, acc[c].x);
            acc[c].y = fmaf(p, v.y, acc[c].y);
            acc[c].z = fmaf(p, v.z, acc[c].z);
            acc[c].w = fmaf(p, v.w, acc[c].w);
          }
        }
      }
    }
  }
  if (!active) return;
  const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
#pragma unroll
  for (int c = 0; c < kMaxChunks; ++c) {
    if (c < nc) {
      *reinterpret_cast<float4*>(a.out + head_row * hd + 8 * c + 4 * half) =
          make_float4(acc[c].x * inv, acc[c].y * inv, acc[c].z * inv, acc[c].w * inv);
    }
  }
}


// The fp16 loader of the tensor-core kernel: 8 dimensions (16 bytes) of one token a thread and
// iteration; the same values as load_tile.
__device__ __forceinline__ uint4 pack8(const float (&x)[8]) {
  uint4 r;
  unsigned* w = reinterpret_cast<unsigned*>(&r);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const __half2 h = __floats2half2_rn(x[2 * i], x[2 * i + 1]);
    w[i] = *reinterpret_cast<const unsigned*>(&h);
  }
  return r;
}

// Centroids of dimensions d0 .. d0 + 7 of code row t (8 / DSUB subspaces), keys and values.
template <int DSUB>
__device__ __forceinline__ void decode8(const PrefillAttentionArgs& a, std::int64_t sh, int kv, std::int64_t t, int d0,
                                        float (&kf)[8], float (&vf)[8]) {
  const int M = a.M;
  const std::uint8_t* ck = a.codes_k + (sh * a.codes_capacity + t) * M;
  const std::uint8_t* cv = a.codes_v + (sh * a.codes_capacity + t) * M;
  const __half* cbk = static_cast<const __half*>(a.cb_k) + kv * a.cb_k_head_stride;
  const __half* cbv = static_cast<const __half*>(a.cb_v) + kv * a.cb_v_head_stride;
#pragma unroll
  for (int i = 0; i < 8; i += DSUB) {
    const int m = (d0 + i) / DSUB;
    const int kc = ck[(m % 4) * (M / 4) + m / 4], vc = cv[(m % 8) * (M / 8) + m / 8];
#pragma unroll
    for (int x = 0; x < DSUB; x += 2) {
      const float2 kk = __half22float2(*reinterpret_cast<const __half2*>(cbk + (m * 256 + kc) * DSUB + x));
      const float2 vv = __half22float2(*reinterpret_cast<const __half2*>(cbv + (m * 256 + vc) * DSUB + x));
      kf[i + x] = kk.x;
      kf[i + x + 1] = kk.y;
      vf[i + x] = vv.x;
      vf[i + x + 1] = vv.y;
    }
  }
}

// Dimensions d0 .. d0 + 7 of code row t of (sequence x kv head) sh, normalisations applied, as fp16.
__device__ __forceinline__ void decode_codes8(const Params& P, std::int64_t sh, int kv, std::int64_t t, int d0, uint4& k,
                                              uint4& v) {
  const PrefillAttentionArgs& a = P.a;
  const int hd = a.head_dim;
  float kf[8], vf[8];
  if (P.dsub == 2) {
    decode8<2>(a, sh, kv, t, d0, kf, vf);
  } else {
    decode8<4>(a, sh, kv, t, d0, kf, vf);
  }
  if (a.k_group_params) {
    const __half* gp = static_cast<const __half*>(a.k_group_params) + (sh * P.n_groups + t / a.norm_group) * 2 * hd + d0;
    const uint4 mn = *reinterpret_cast<const uint4*>(gp), rg = *reinterpret_cast<const uint4*>(gp + hd);
    const __half* mnh = reinterpret_cast<const __half*>(&mn);
    const __half* rgh = reinterpret_cast<const __half*>(&rg);
#pragma unroll
    for (int i = 0; i < 8; ++i) kf[i] = __half2float(mnh[i]) + __half2float(rgh[i]) * kf[i];
  }
  if (a.v_token_norm) {
    const float nrm = __half2float(static_cast<const __half*>(a.v_token_norm)[sh * a.codes_capacity + t]);
#pragma unroll
    for (int i = 0; i < 8; ++i) vf[i] *= nrm;
  }
  k = pack8(kf);
  v = pack8(vf);
}

// pq_decode_history: rows 0 .. n - 1 of every (sequence x kv head) into out_k / out_v.
__global__ void decode_history_kernel(const Params P, std::int64_t n, __half* out_k, __half* out_v, std::int64_t cap) {
  const int hd = P.a.head_dim, per_row = hd / 8;
  const std::int64_t rows = static_cast<std::int64_t>(P.a.batch) * P.a.n_kv_heads, total = rows * n * per_row;
  for (std::int64_t u = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; u < total;
       u += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t sh = u / (n * per_row), t = u / per_row % n;
    const int d0 = static_cast<int>(u % per_row) * 8;
    uint4 k, v;
    decode_codes8(P, sh, static_cast<int>(sh % P.a.n_kv_heads), t, d0, k, v);
    *reinterpret_cast<uint4*>(out_k + (sh * cap + t) * hd + d0) = k;
    *reinterpret_cast<uint4*>(out_v + (sh * cap + t) * hd + d0) = v;
  }
}

template <int TK>
__device__ void load_tile_h(const Params& P, int src, std::int64_t t0, int b, int kv, __half* sK, __half* sV, int stride,
                            long long* sPos) {
  const PrefillAttentionArgs& a = P.a;
  const int hd = a.head_dim, per_row = hd / 8;
  const std::int64_t sh = static_cast<std::int64_t>(b) * a.n_kv_heads + kv;
  load_positions<TK>(a, src, t0, sPos);
  for (int e = threadIdx.x; e < TK * per_row; e += blockDim.x) {
    const int j = e / per_row, d0 = (e % per_row) * 8;
    uint4 k = make_uint4(0, 0, 0, 0), v = k;
    if (sPos[j] != LLONG_MAX) {
      const std::int64_t t = t0 + j;
      if (src == kCache || src == kRing) {
        const std::int64_t i = src == kCache ? (sh * a.cache_capacity + t) * hd + d0 : (sh * (a.sinks + a.window) + t) * hd + d0;
        k = *reinterpret_cast<const uint4*>(static_cast<const __half*>(src == kCache ? a.cache_k : a.ring_k) + i);
        v = *reinterpret_cast<const uint4*>(static_cast<const __half*>(src == kCache ? a.cache_v : a.ring_v) + i);
      } else if (src == kChunk) {
        const std::int64_t i = ((static_cast<std::int64_t>(b) * a.n_q + t) * a.n_kv_heads + kv) * hd + d0;
        float kf[8], vf[8];
        *reinterpret_cast<float4*>(kf) = *reinterpret_cast<const float4*>(a.chunk_k + i);
        *reinterpret_cast<float4*>(kf + 4) = *reinterpret_cast<const float4*>(a.chunk_k + i + 4);
        *reinterpret_cast<float4*>(vf) = *reinterpret_cast<const float4*>(a.chunk_v + i);
        *reinterpret_cast<float4*>(vf + 4) = *reinterpret_cast<const float4*>(a.chunk_v + i + 4);
        k = pack8(kf);
        v = pack8(vf);
      } else if (t < a.decoded_n) {  // codes decoded once for every block (pq_decode_history)
        const std::int64_t i = (sh * a.decoded_capacity + t) * hd + d0;
        k = *reinterpret_cast<const uint4*>(static_cast<const __half*>(a.decoded_k) + i);
        v = *reinterpret_cast<const uint4*>(static_cast<const __half*>(a.decoded_v) + i);
      } else {
        decode_codes8(P, sh, kv, t, d0, k, v);
      }
    }
    *reinterpret_cast<uint4*>(sK + j * stride + d0) = k;
    *reinterpret_cast<uint4*>(sV + j * stride + d0) = v;
  }
  __syncthreads();
}

// The tensor-core kernel (PrefillKernel::kMma): 8 warps, each 16 of the block's 128 rows; tiles
// of kTKm keys decoded to fp16 in shared memory (sK, sV [kTKm][HD + 8]: the padding puts the 8
// rows an ldmatrix phase reads in different banks), the block's queries in sQ [128][HD + 8] fp16
// (scaled by scale * log2(e)), loaded once into A fragments. Per tile and warp: S = Q K^T
// (m16n8k16, K fragments by ldmatrix), masks, online softmax on the accumulators (the 4 lanes of
// a row reduce by shuffles), P to fp16 in registers as the A fragments of O += P V (V fragments
// by ldmatrix.trans). FlashAttention-2's register reuse.
constexpr int kTKm = 64;
constexpr int kWarpsM = 8;
constexpr int kThreadsM = 32 * kWarpsM;
constexpr int kRowsM = 16 * kWarpsM;
using detail::mma16816;

__device__ __forceinline__ void ldsm_x4(unsigned (&r)[4], const __half* p) {
  const unsigned a = static_cast<unsigned>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
}
__device__ __forceinline__ void ldsm_x4_t(unsigned (&r)[4], const __half* p) {
  const unsigned a = static_cast<unsigned>(__cvta_generic_to_shared(p));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
}
__device__ __forceinline__ unsigned pack_half2(float lo, float hi) {
  const __half2 h = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<const unsigned*>(&h);
}

template <int HD>
__global__ void __launch_bounds__(kThreadsM, 1) prefill_mma_kernel(const Params P) {
  constexpr int KS = HD / 16, NT = HD / 8, ST = HD + 8, TN = kTKm / 8;
  const PrefillAttentionArgs& a = P.a;
  extern __shared__ __align__(16) unsigned char smem[];
  __half* sK = reinterpret_cast<__half*>(smem);
  __half* sV = sK + kTKm * ST;
  __half* sQ = sV + kTKm * ST;
  long long* sPos = reinterpret_cast<long long*>(sQ + kRowsM * ST);
  const int b = blockIdx.z, kv = blockIdx.y, warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
  const int G = P.group, QPB = kRowsM / G;
  const int q_last = min(a.n_q - 1, (blockIdx.x + 1) * QPB - 1);
  auto head_row = [&](int r, bool& active) {  // block row -> row of q / out
    const int qi = blockIdx.x * QPB + r / G;
    active = r < QPB * G && qi < a.n_q;
    return (static_cast<std::int64_t>(b) * a.n_q + (active ? qi : 0)) * a.n_heads + kv * G + r % G;
  };
  const float qs = a.scale * 1.4426950408889634f;
  for (int e = threadIdx.x; e < kRowsM * HD / 8; e += kThreadsM) {
    const int r = e / (HD / 8), d0 = e % (HD / 8) * 8;
    bool active;
    const std::int64_t hr = head_row(r, active);
    float x[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    if (active) {
      *reinterpret_cast<float4*>(x) = *reinterpret_cast<const float4*>(a.q + hr * HD + d0);
      *reinterpret_cast<float4*>(x + 4) = *reinterpret_cast<const float4*>(a.q + hr * HD + d0 + 4);
#pragma unroll
      for (int i = 0; i < 8; ++i) x[i] *= qs;
    }
    *reinterpret_cast<uint4*>(sQ + r * ST + d0) = pack8(x);
  }
  __syncthreads();
  unsigned qa[KS][4];
#pragma unroll
  for (int ks = 0; ks < KS; ++ks) ldsm_x4(qa[ks], sQ + (warp * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * ST + ks * 16 + (lane >> 4) * 8);
  // This lane's rows: warp * 16 + g and + 8; inactive rows see everything up to the block's last query.
  long long qpos[2];
  for (int h = 0; h < 2; ++h) {
    const int r = warp * 16 + g + 8 * h, qi = blockIdx.x * QPB + r / G;
    qpos[h] = a.pos0 + (r < QPB * G && qi < a.n_q ? qi : q_last);
  }
  const long long warp_qmax = max(__shfl_sync(0xffffffffu, qpos[1], 28), qpos[0]);  // lane 28: row 15
  float o[NT][4];
#pragma unroll
  for (int n = 0; n < NT; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
  float mx[2] = {-INFINITY, -INFINITY}, sum[2] = {0.0f, 0.0f};

  for (int src = 0; src < 4; ++src) {
    const std::int64_t n = source_tokens(a, src, q_last);
    for (std::int64_t t0 = 0; t0 < n; t0 += kTKm) {
      __syncthreads();  // the previous tile is consumed
      load_tile_h<kTKm>(P, src, t0, b, kv, sK, sV, ST, sPos);
      long long mn = min(sPos[lane], sPos[lane + 32]);
      for (int off = 16; off > 0; off >>= 1) mn = min(mn, __shfl_xor_sync(0xffffffffu, mn, off));
      if (mn > warp_qmax) continue;  // nothing in this tile is visible to the warp's rows
      float s[TN][4];
#pragma unroll
      for (int nt = 0; nt < TN; ++nt) {
        s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
#pragma unroll
        for (int ks = 0; ks < KS; ks += 2) {
          unsigned kb[4];  // k-steps ks and ks + 1 of keys nt * 8 .. + 7
          ldsm_x4(kb, sK + (nt * 8 + (lane & 7)) * ST + ks * 16 + (lane >> 3) * 8);
          mma16816(s[nt], qa[ks][0], qa[ks][1], qa[ks][2], qa[ks][3], kb[0], kb[1]);
          if (ks + 1 < KS) mma16816(s[nt], qa[ks + 1][0], qa[ks + 1][1], qa[ks + 1][2], qa[ks + 1][3], kb[2], kb[3]);
        }
      }
      float tmax[2] = {mx[0], mx[1]};
#pragma unroll
      for (int nt = 0; nt < TN; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const long long pos = sPos[nt * 8 + 2 * c + (e & 1)];
          if (pos > qpos[e >> 1]) s[nt][e] = -INFINITY;
          tmax[e >> 1] = fmaxf(tmax[e >> 1], s[nt][e]);
        }
      }
      float corr[2], base[2];
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        tmax[h] = fmaxf(tmax[h], __shfl_xor_sync(0xffffffffu, tmax[h], 1));
        tmax[h] = fmaxf(tmax[h], __shfl_xor_sync(0xffffffffu, tmax[h], 2));
        corr[h] = exp2f(mx[h] - tmax[h]);  // 0 while nothing was visible (mx = -inf)
        base[h] = tmax[h] == -INFINITY ? 0.0f : tmax[h];
        mx[h] = tmax[h];
        sum[h] *= corr[h];
      }
#pragma unroll
      for (int n2 = 0; n2 < NT; ++n2) {
        o[n2][0] *= corr[0];
        o[n2][1] *= corr[0];
        o[n2][2] *= corr[1];
        o[n2][3] *= corr[1];
      }
#pragma unroll
      for (int nt = 0; nt < TN; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          s[nt][e] = exp2f(s[nt][e] - base[e >> 1]);
          sum[e >> 1] += s[nt][e];
        }
      }
#pragma unroll
      for (int kk = 0; kk < TN / 2; ++kk) {  // 16 keys a k-step of O += P V
        const unsigned p0 = pack_half2(s[2 * kk][0], s[2 * kk][1]), p1 = pack_half2(s[2 * kk][2], s[2 * kk][3]);
        const unsigned p2 = pack_half2(s[2 * kk + 1][0], s[2 * kk + 1][1]), p3 = pack_half2(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
        for (int dt = 0; dt < NT / 2; ++dt) {
          unsigned vb[4];  // dims dt * 16 .. + 7 (vb[0], vb[1]) and + 8 .. + 15 (vb[2], vb[3])
          ldsm_x4_t(vb, sV + (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * ST + dt * 16 + (lane >> 4) * 8);
          mma16816(o[2 * dt], p0, p1, p2, p3, vb[0], vb[1]);
          mma16816(o[2 * dt + 1], p0, p1, p2, p3, vb[2], vb[3]);
        }
      }
    }
  }
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    sum[h] += __shfl_xor_sync(0xffffffffu, sum[h], 1);
    sum[h] += __shfl_xor_sync(0xffffffffu, sum[h], 2);
    bool active;
    const std::int64_t hr = head_row(warp * 16 + g + 8 * h, active);
    if (!active) continue;
    const float inv = sum[h] > 0.0f ? 1.0f / sum[h] : 0.0f;
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      *reinterpret_cast<float2*>(a.out + hr * HD + nt * 8 + 2 * c) = make_float2(o[nt][2 * h] * inv, o[nt][2 * h + 1] * inv);
    }
  }
}

}  // namespace

namespace {

[[noreturn]] void fail(const std::string& why) { throw InvalidArgumentError("CUDA prefill attention: " + why); }

// The PQ source's checks and derived parameters.
void pq_params(const PrefillAttentionArgs& a, Params& P) {
  if (!a.codes_v || !a.cb_k || !a.cb_v || a.M < 8 || a.M % 8 != 0 || a.head_dim % a.M != 0) fail("bad PQ arguments");
  P.dsub = a.head_dim / a.M;
  if (P.dsub != 2 && P.dsub != 4) fail("PQ dsub must be 2 or 4");
  if (a.n_codes < 0 || a.n_codes > a.codes_capacity || a.codes_offset < 0) fail("codes past their capacity");
  if (a.k_group_params) {
    if (a.norm_group < 1) fail("key channel-groups need norm_group");
    P.n_groups = (a.codes_capacity + a.norm_group - 1) / a.norm_group;
  }
  if (a.decoded_n > 0 && (!a.decoded_k || !a.decoded_v || a.decoded_n > a.decoded_capacity)) fail("bad decoded rows");
}

}  // namespace

void pq_decode_history(PrefillAttentionArgs& a, void* k_out, void* v_out, std::int64_t capacity, cudaStream_t stream) {
  if (!a.codes_k) fail("pq_decode_history needs the PQ source");
  if (a.head_dim < 8 || a.head_dim > 128 || a.head_dim % 8 != 0) fail("head_dim must be a multiple of 8 up to 128");
  if (a.n_codes > capacity || !k_out || !v_out) fail("decoded rows do not fit");
  Params P{a, 1, 1, 0, 0};
  P.a.decoded_n = 0;
  pq_params(P.a, P);
  a.decoded_k = k_out;
  a.decoded_v = v_out;
  a.decoded_capacity = capacity;
  a.decoded_n = a.n_codes;
  if (a.n_codes == 0) return;
  const std::int64_t units = static_cast<std::int64_t>(a.batch) * a.n_kv_heads * a.n_codes * (a.head_dim / 8);
  const unsigned blocks = static_cast<unsigned>(std::min<std::int64_t>((units + 255) / 256, 65535));
  decode_history_kernel<<<blocks, 256, 0, stream>>>(P, a.n_codes, static_cast<__half*>(k_out), static_cast<__half*>(v_out),
                                                     capacity);
  check(cudaGetLastError(), "decode history launch");
}

void prefill_attention(const PrefillAttentionArgs& a, cudaStream_t stream) {
  if (a.batch < 1 || a.n_kv_heads < 1 || a.n_heads < a.n_kv_heads || a.n_heads % a.n_kv_heads != 0) fail("bad head counts");
  if (a.head_dim < 8 || a.head_dim > 128 || a.head_dim % 8 != 0) fail("head_dim must be a multiple of 8 up to 128");
  const int G = a.n_heads / a.n_kv_heads;
  if (G > kRows) fail("GQA groups over 64 query heads per kv head are not supported");
  if (a.head_dim % 8 != 0) fail("head_dim must be a multiple of 8");
  if (a.n_q < 1 || a.pos0 < 0 || !a.q || !a.out) fail("no queries");
  if (!a.codes_k && !a.ring_k && !a.cache_k && !a.chunk_k) fail("no keys to attend to");
  Params P{a, G, kRows / G, 0, 0};
  if (a.cache_k && (!a.cache_v || a.cache_capacity < a.pos0 + a.n_q)) fail("the fp16 cache does not hold the chunk");
  if (a.codes_k) pq_params(a, P);
  if (a.ring_k && (!a.ring_v || a.sinks < 0 || a.window < 1)) fail("the ring needs a window");
  if (a.chunk_k && !a.chunk_v) fail("chunk values missing");
  const int qpb = a.kernel == PrefillKernel::kMma ? kRowsM / G : P.queries_per_block;
  const dim3 grid(static_cast<unsigned>((a.n_q + qpb - 1) / qpb), static_cast<unsigned>(a.n_kv_heads),
                  static_cast<unsigned>(a.batch));
  if (a.kernel == PrefillKernel::kMma) {
    const int hd = a.head_dim;
    if (hd != 64 && hd != 128) fail("the tensor-core kernel needs head_dim 64 or 128");
    const std::size_t smem = sizeof(__half) * (2 * kTKm + kRowsM) * (hd + 8) + sizeof(long long) * kTKm;
    if (hd == 128) {
      check(cudaFuncSetAttribute(prefill_mma_kernel<128>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)),
            "prefill attention shared memory");
      prefill_mma_kernel<128><<<grid, kThreadsM, smem, stream>>>(P);
    } else {
      check(cudaFuncSetAttribute(prefill_mma_kernel<64>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)),
            "prefill attention shared memory");
      prefill_mma_kernel<64><<<grid, kThreadsM, smem, stream>>>(P);
    }
  } else {
    const std::size_t smem = 2 * sizeof(float) * kTK * (a.head_dim + 4) + sizeof(long long) * kTK;
    prefill_kernel<<<grid, kThreads, smem, stream>>>(P);
  }
  check(cudaGetLastError(), "prefill attention launch");
}

}  // namespace million::cuda
