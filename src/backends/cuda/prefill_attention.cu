// Prefill attention (prefill_attention.h): one online softmax per query row over the enabled
// sources, in that order: PQ codes, the exact sinks + ring buffer, the dense fp16 cache, the
// chunk's own K/V.
// Block: 128 threads on (tile of queries, kv head, sequence); 64 query rows = QT queries x the
// G heads of the kv head (QT = 64 / G), two threads per row, each owning half of the head's
// dimensions in alternating runs of 4 (thread h of a row: dims 8c + 4h .. + 3), so that the two
// threads of a row read different banks of a broadcast key row.
// Per tile of kTK = 32 keys: every thread decodes part of the tile into shared memory
// (sK, sV [kTK][head_dim] f32, sPos [kTK] positions, INT64_MAX = absent), then each row scores
// the 32 keys (the pair of threads adds its halves with one shuffle), masks those after its own
// position, and updates max / sum / accumulator (exp2 with log2(e) folded into the query).
#include "backends/cuda/prefill_attention.h"

#include <cuda_fp16.h>

#include <climits>
#include <string>

#include "backends/cuda/cuda_attention.h"
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

// Positions of a tile's tokens and their K/V rows (f32) into shared memory.
__device__ void load_tile(const Params& P, int src, std::int64_t t0, int b, int kv, float* sK, float* sV,
                          long long* sPos) {
  const PrefillAttentionArgs& a = P.a;
  const int hd = a.head_dim, stride = hd + 4;
  const std::int64_t sh = static_cast<std::int64_t>(b) * a.n_kv_heads + kv;
  if (threadIdx.x < kTK) {
    const std::int64_t t = t0 + threadIdx.x;
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
    sPos[threadIdx.x] = pos;
  }
  __syncthreads();
  for (int e = threadIdx.x; e < kTK * hd; e += kThreads) {
    const int j = e / hd, d = e % hd;
    float k = 0.0f, v = 0.0f;
    if (sPos[j] != LLONG_MAX) {
      const std::int64_t t = t0 + j;
      if (src == kCodes) {
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
    sK[j * stride + d] = k;
    sV[j * stride + d] = v;
  }
  __syncthreads();
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
  const long long qpos = a.pos0 + qi, pos_last = a.pos0 + q_last;
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
    std::int64_t n = 0;  // tokens of this source the block may see
    if (src == kCodes && a.codes_k) n = a.n_codes < pos_last + 1 - a.codes_offset ? a.n_codes : pos_last + 1 - a.codes_offset;
    if (src == kRing && a.ring_k) n = a.sinks + a.window;
    if (src == kCache && a.cache_k) n = pos_last + 1;
    if (src == kChunk && a.chunk_k) n = q_last + 1;
    for (std::int64_t t0 = 0; t0 < n; t0 += kTK) {
      __syncthreads();  // the previous tile is consumed
      load_tile(P, src, t0, b, kv, sK, sV, sPos);
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

}  // namespace

void prefill_attention(const PrefillAttentionArgs& a, cudaStream_t stream) {
  auto fail = [](const std::string& why) { throw InvalidArgumentError("CUDA prefill attention: " + why); };
  if (a.batch < 1 || a.n_kv_heads < 1 || a.n_heads < a.n_kv_heads || a.n_heads % a.n_kv_heads != 0) fail("bad head counts");
  if (a.head_dim < 8 || a.head_dim > 128 || a.head_dim % 8 != 0) fail("head_dim must be a multiple of 8 up to 128");
  const int G = a.n_heads / a.n_kv_heads;
  if (G > kRows) fail("GQA groups over 64 query heads per kv head are not supported");
  if (a.n_q < 1 || a.pos0 < 0 || !a.q || !a.out) fail("no queries");
  if (!a.codes_k && !a.ring_k && !a.cache_k && !a.chunk_k) fail("no keys to attend to");
  Params P{a, G, kRows / G, 0, 0};
  if (a.cache_k && (!a.cache_v || a.cache_capacity < a.pos0 + a.n_q)) fail("the fp16 cache does not hold the chunk");
  if (a.codes_k) {
    if (!a.codes_v || !a.cb_k || !a.cb_v || a.M < 8 || a.M % 8 != 0 || a.head_dim % a.M != 0) fail("bad PQ arguments");
    P.dsub = a.head_dim / a.M;
    if (P.dsub != 2 && P.dsub != 4) fail("PQ dsub must be 2 or 4");
    if (a.n_codes < 0 || a.n_codes > a.codes_capacity || a.codes_offset < 0) fail("codes past their capacity");
    if (a.k_group_params) {
      if (a.norm_group < 1) fail("key channel-groups need norm_group");
      P.n_groups = (a.codes_capacity + a.norm_group - 1) / a.norm_group;
    }
  }
  if (a.ring_k && (!a.ring_v || a.sinks < 0 || a.window < 1)) fail("the ring needs a window");
  if (a.chunk_k && !a.chunk_v) fail("chunk values missing");
  const dim3 grid(static_cast<unsigned>((a.n_q + P.queries_per_block - 1) / P.queries_per_block),
                  static_cast<unsigned>(a.n_kv_heads), static_cast<unsigned>(a.batch));
  const std::size_t smem = 2 * sizeof(float) * kTK * (a.head_dim + 4) + sizeof(long long) * kTK;
  prefill_kernel<<<grid, kThreads, smem, stream>>>(P);
  check(cudaGetLastError(), "prefill attention launch");
}

}  // namespace million::cuda
