// CUDA decode attention kernels (see cuda_attention.h): dense fp16 and PQ on CUDA cores (the
// PQ tensor-core kernel is pq_decode_mma.cu), one thread block per (sequence split, kv head,
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
//  - normalised codebooks (PQDecodeArgs' token norms / channel-group min and range; template
//    NORM, so the plain kernel is unchanged): token norms scale a token's score or its value
//    probability; channel-groups scale the queries per group (q * range, bias q . min) once per
//    tile and denormalise value centroids (min + range * u) per token. Comment at the kernel.
// Accumulation is f32 throughout; exp is __expf.
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
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
constexpr int kMaxNormSlots = kPQThreads / 64;  // channel-groups a PQ tile touches, at most (groups: multiples of 64)

// Folds this thread's scores s[j] (-inf for no token) into the running max m_run[j] and sum
// l_run[j] (the same in every thread), writes p = exp(s - max) to sP[t][G] and returns the
// factors alpha[j] = exp(old max - new max) that rescale the accumulators. sRed: 2 x [warps][G].
// PMUL: sP gets p * pmul (a value token norm) while the sums take p.
template <int G, int THREADS, bool PMUL = false>
__device__ inline void tile_softmax(const float (&s)[G], float (&m_run)[G], float (&l_run)[G], float (&alpha)[G],
                                    float* sP, float* sRed, float pmul = 1.0f) {
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
    if constexpr (PMUL) {
      sP[t * G + j] = p[j] * pmul;
    } else {
      sP[t * G + j] = p[j];
    }
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
// groups through sAcc [groups][G][D], and writes the partial of this (sequence, kv head, split)
// at split index split0 + blockIdx.x of `splits` per head.
template <int D, int G, int W, int THREADS>
__device__ inline void write_partial(const float (&acc)[G][W], const float (&l_run)[G], const float (&m_run)[G], int grp,
                                     int groups, int c0, float* sAcc, float* ws, int splits, int n_heads, int split0 = 0) {
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
    ws[(head * splits + split0 + blockIdx.x) * (D + 2) + c] = v;
  }
}

// Byte offset of the normalised kernel's extra shared memory (scaled queries, bias partials,
// value (min, range) pairs), after the codebooks + value codes or the end-of-kernel
// accumulators, whichever is larger.
template <int D, int DSUB, int G>
__host__ __device__ constexpr std::size_t pq_norm_smem_offset(int ksub) {
  constexpr int M = D / DSUB, T = kPQThreads;
  const std::size_t tables = 2u * M * ksub * DSUB * sizeof(__half) + static_cast<std::size_t>(T) * M;
  const std::size_t accs = sizeof(float) * (T / M) * G * D;
  const std::size_t fixed = sizeof(float) * (D * G + T * G + 2 * (T / 32) * G);
  return fixed + ((tables > accs ? tables : accs) + 15) / 16 * 16;
}

// KSUB: the codebook size when known at compile time (256, 16), 0 = read from p.ksub.
// NORM: normalised codebooks (PQParams' k_norm / v_norm / k_gp / v_gp, each optional):
//  - token norms: loaded a tile ahead (their latency hidden behind a whole tile); a key
//    norm scales the token's score (s = norm * q . u), a value norm the probability stored for
//    the value phase (the softmax sums take the plain one);
//  - channel-groups: the (min, range) pairs of the groups a tile touches (at most 8: groups are
//    multiples of 64 tokens) are loaded into registers two tiles ahead, a thread per (group,
//    channel), and staged into shared memory at the end of the tile before (no extra barrier:
//    the key phase's readers are done after the softmax, the value pairs are double-buffered).
//    Keys: the queries scaled by each group's ranges, q * range_g, in slots sQn[slot], the
//    biases q . min_g in sBias (per 32 channels, warp sums); a key thread reads its token's
//    slot in place of sQ (the inner loop is the plain one: a warp's 32 tokens share a group)
//    and starts from the bias. Values: the pairs in sVg; a value thread keeps its DSUB
//    channels' pairs of its current group in registers and denormalises each centroid,
//    min + range * u, before weighting it.
template <int D, int DSUB, int G, int KSUB, bool NORM>
__global__ void __launch_bounds__(kPQThreads, 1) pq_decode_kernel(PQParams p) {
  constexpr int M = D / DSUB;
  constexpr int T = kPQThreads;  // also the tile: one token per thread in the key phase
  constexpr int kGroups = T / M;
  constexpr int kR = (kMaxNormSlots * D + T - 1) / T;  // (group, channel) pairs per thread
  constexpr int kC32 = D / 32;                          // bias partials per (group, head)
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
  // NORM, channel-groups: [slots][M][G][DSUB] scaled queries, [slots][D / 32][G] bias partials,
  // [2][slots][D] value (min, range) pairs (double-buffered: tile parity).
  const int slots = NORM ? p.norm_slots : 0;
  float* sQn = reinterpret_cast<float*>(smem + pq_norm_smem_offset<D, DSUB, G>(ksub));
  float* sBias = sQn + slots * D * G;
  __half2* sVg = reinterpret_cast<__half2*>(sBias + slots * kC32 * G);

  const int t = threadIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int lane = t & 31;
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
  // NORM: this sequence's parameters (null where that normalisation is off). Copies of p's
  // fields: the lambdas below must not take p's address.
  const __half* k_norm = NORM && p.k_norm ? p.k_norm + seq * p.capacity : nullptr;
  const __half* v_norm = NORM && p.v_norm ? p.v_norm + seq * p.capacity : nullptr;
  const __half* k_gp = NORM && p.k_gp ? p.k_gp + seq * p.n_groups * 2 * D : nullptr;
  const __half* v_gp = NORM && p.v_gp ? p.v_gp + seq * p.n_groups * 2 * D : nullptr;
  const bool any_gp = k_gp || v_gp;
  const int norm_group = NORM && any_gp ? p.norm_group : 1;
  const std::int64_t n_tokens = p.n_tokens;
  // A tile's place among the channel-groups: its first group g0 and its start's offset in it.
  // Stepped from tile to tile, and divisions by the group done in f32 with a correction: the
  // integer ones (~25 instructions, ~70 for 64 bits) were a third of the normalisation's cost.
  struct GroupPos {
    std::int64_t g0;
    int off0;
  };
  const int tile_groups = NORM && any_gp ? T / norm_group : 0, tile_rest = NORM && any_gp ? T % norm_group : 0;
  const float inv_group = 1.0f / static_cast<float>(norm_group);
  auto div_group = [&](int x) {  // x / norm_group for 0 <= x < 2^22
    int q = __float2int_rz(static_cast<float>(x) * inv_group);
    if (q * norm_group > x) {
      --q;
    } else if ((q + 1) * norm_group <= x) {
      ++q;
    }
    return q;
  };
  auto step = [&](GroupPos x) {
    x.g0 += tile_groups;
    x.off0 += tile_rest;
    if (x.off0 >= norm_group) {
      x.off0 -= norm_group;
      ++x.g0;
    }
    return x;
  };
  // Groups the tile tl at position x touches.
  auto n_slots = [&](std::int64_t tl, GroupPos x) {
    const int nv = static_cast<int>(n_tokens - tl * T < T ? n_tokens - tl * T : T);
    return div_group(x.off0 + nv - 1) + 1;
  };
  GroupPos pos{0, 0};  // of the current tile
  if (NORM && any_gp) pos = {tile_lo * T / norm_group, static_cast<int>(tile_lo * T % norm_group)};
  // Prefetched parameters stay raw f16 bits until used: a conversion (or packing) right after
  // the load would wait for it there.
  unsigned short pk_mn[kR], pk_rg[kR], pv_mn[kR], pv_rg[kR];  // (group slot, channel) t + r * T of the tile to come
  const unsigned short* k_gp_raw = reinterpret_cast<const unsigned short*>(k_gp);
  const unsigned short* v_gp_raw = reinterpret_cast<const unsigned short*>(v_gp);
  auto prefetch = [&](std::int64_t tl, GroupPos x) {
    const std::int64_t g0 = x.g0;
    const int ns = n_slots(tl, x);
#pragma unroll
    for (int r = 0; r < kR; ++r) {
      const int i = t + r * T, sl = i / D, c = i % D;
      if (sl < ns) {
        const std::int64_t o = (g0 + sl) * 2 * D + c;
        if (k_gp) {
          pk_mn[r] = k_gp_raw[o];
          pk_rg[r] = k_gp_raw[o + D];
        }
        if (v_gp) {
          pv_mn[r] = v_gp_raw[o];
          pv_rg[r] = v_gp_raw[o + D];
        }
      }
    }
  };
  // Registers -> shared memory for tile tl (pairs prefetched for it): scaled queries, bias
  // partials, value pairs into buffer (tl - tile_lo) & 1.
  auto stage = [&](std::int64_t tl, GroupPos x) {
    const int ns = n_slots(tl, x);
    __half2* vg = sVg + ((tl - tile_lo) & 1) * slots * D;
#pragma unroll
    for (int r = 0; r < kR; ++r) {
      if (r * T >= ns * D) break;  // block-uniform, so the shuffles below see a converged warp
      const int i = t + r * T, sl = i / D, c = i % D;
      const bool ok = sl < ns;
      if (k_gp) {
        const float2 mr = ok ? make_float2(__half2float(__ushort_as_half(pk_mn[r])), __half2float(__ushort_as_half(pk_rg[r])))
                             : make_float2(0.0f, 0.0f);  // (min, range)
#pragma unroll
        for (int j = 0; j < G; ++j) {
          const int qi = ((c / DSUB) * G + j) * DSUB + c % DSUB;
          const float qv = sQ[qi];
          if (ok) sQn[sl * D * G + qi] = qv * mr.y;
          const float bias = warp_sum(qv * mr.x);
          if (ok && lane == 0) sBias[(sl * kC32 + c / 32) * G + j] = bias;
        }
      }
      if (v_gp && ok) vg[sl * D + c] = __halves2half2(__ushort_as_half(pv_mn[r]), __ushort_as_half(pv_rg[r]));
    }
  };
  if (NORM && any_gp && tile_lo < tile_hi) {
    prefetch(tile_lo, pos);
    __syncthreads();  // sQ is written
    stage(tile_lo, pos);
    if (tile_lo + 1 < tile_hi) prefetch(tile_lo + 1, step(pos));
  }

  // Token norms of this thread's token in tile tl, loaded a tile ahead as raw f16 bits (1.0 =
  // 0x3c00 where none).
  unsigned short kn_next = 0x3c00, vn_next = 0x3c00;
  auto load_norms = [&](std::int64_t tl) {
    const std::int64_t tok = tl * T + t;
    if (tl < tile_hi && tok < n_tokens) {
      if (k_norm) kn_next = reinterpret_cast<const unsigned short*>(k_norm)[tok];
      if (v_norm) vn_next = reinterpret_cast<const unsigned short*>(v_norm)[tok];
    }
  };
  if constexpr (NORM) load_norms(tile_lo);

  for (std::int64_t tile = tile_lo; tile < tile_hi; ++tile) {
    const std::int64_t base = tile * T;
    const int n_valid = static_cast<int>(p.n_tokens - base < T ? p.n_tokens - base : T);
    const unsigned short kn_raw = kn_next, vn_raw = vn_next;  // token norms of this thread's token
    if constexpr (NORM) load_norms(tile + 1);
    __syncthreads();  // the previous tile's readers of sCodes / sP are done, sQn / sBias / sVg staged
    {
      const uint4* src = reinterpret_cast<const uint4*>(codes_v + base * M);
      uint4* dst = reinterpret_cast<uint4*>(sCodes);
      const int chunks = n_valid * M / 16;
      for (int i = t; i < T * M / 16; i += T) dst[i] = i < chunks ? src[i] : make_uint4(0, 0, 0, 0);
    }
    const float* qs = sQ;  // this thread's queries: sQ, or its group's scaled copy
    int off0 = 0;          // NORM, channel-groups: the tile's start within its first group
    float s[G];
#pragma unroll
    for (int j = 0; j < G; ++j) s[j] = 0.0f;
    if constexpr (NORM) {
      if (any_gp) {
        off0 = pos.off0;
        if (k_gp && t < n_valid) {
          const int sl = div_group(t + off0);
          qs = sQn + sl * D * G;
#pragma unroll
          for (int k = 0; k < kC32; ++k) {
#pragma unroll
            for (int j = 0; j < G; ++j) s[j] += sBias[(sl * kC32 + k) * G + j];
          }
        }
      }
    }
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
          const float* qm = qs + m * G * DSUB;
#pragma unroll
          for (int j = 0; j < G; ++j) {
#pragma unroll
            for (int e = 0; e < DSUB; ++e) s[j] = fmaf(qm[j * DSUB + e], c[e], s[j]);
          }
        }
      }
      const float sc = NORM ? p.scale * __half2float(__ushort_as_half(kn_raw)) : p.scale;
#pragma unroll
      for (int j = 0; j < G; ++j) s[j] *= sc;
    } else {
#pragma unroll
      for (int j = 0; j < G; ++j) s[j] = -INFINITY;
    }
    float alpha[G];
    tile_softmax<G, T, NORM>(s, m_run, l_run, alpha, sP, sRed, __half2float(__ushort_as_half(vn_raw)));
#pragma unroll
    for (int j = 0; j < G; ++j) {
#pragma unroll
      for (int e = 0; e < DSUB; ++e) acc[j][e] *= alpha[j];
    }
    // Weighted centroids of this thread's tokens tt in [lo, hi) (tt = grp mod kGroups); CG: value
    // channel-groups, each centroid denormalised with this thread's channels' (min, range) of
    // the group slot the range lies in.
    auto value_range = [&](auto cg_tag, int lo, int hi, int slot) {
      constexpr bool CG = decltype(cg_tag)::value;
      float mn[DSUB], rg[DSUB];
      if constexpr (CG) {
        const __half2* vg = sVg + (((tile - tile_lo) & 1) * slots + slot) * D + mV * DSUB;
#pragma unroll
        for (int e = 0; e < DSUB; ++e) {
          const float2 f = __half22float2(vg[e]);
          mn[e] = f.x;
          rg[e] = f.y;
        }
      }
#pragma unroll 2
      for (int tt = lo + grp; tt < hi; tt += kGroups) {
        float c[DSUB];
        load_centroid<DSUB>(cbV + ((sCodes[tt * M + mV] & kmask) * M + mV) * DSUB, c);
        if constexpr (CG) {
#pragma unroll
          for (int e = 0; e < DSUB; ++e) c[e] = fmaf(rg[e], c[e], mn[e]);
        }
        const float* pt = sP + tt * G;
#pragma unroll
        for (int j = 0; j < G; ++j) {
          const float pj = pt[j];
#pragma unroll
          for (int e = 0; e < DSUB; ++e) acc[j][e] = fmaf(pj, c[e], acc[j][e]);
        }
      }
    };
    if (NORM && v_gp) {
      // Slot by slot: group edges are multiples of 64 tokens past the tile's start, so each
      // slot's first token of this thread is at its start + grp (kGroups divides 64).
      int lo = 0, slot = 0;
      while (lo < n_valid) {
        const int hi = min(n_valid, (slot + 1) * norm_group - off0);
        value_range(std::true_type{}, lo, hi, slot);
        lo = hi;
        ++slot;
      }
    } else {
      value_range(std::false_type{}, 0, n_valid, 0);
    }
    if (NORM && any_gp && tile + 1 < tile_hi) {  // the key phase's readers of sQn / sBias are done
      pos = step(pos);
      stage(tile + 1, pos);
      if (tile + 2 < tile_hi) prefetch(tile + 2, step(pos));
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
  const std::int64_t* n_tokens_dev;  // read on the device when set (CUDA graphs), clamped to capacity
  int ws_splits;                     // partials per head in the workspace (splits, or more when merged)
  int split0;                        // this launch's first partial
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
  const std::int64_t n_tokens = p.n_tokens_dev ? min(*p.n_tokens_dev, p.capacity) : p.n_tokens;
  std::int64_t tile_lo, tile_hi;
  split_tiles(n_tokens, kTile, p.splits, tile_lo, tile_hi);
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
    const int n_valid = static_cast<int>(n_tokens - base < kTile ? n_tokens - base : kTile);
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
  write_partial<D, G, 8, kThreads>(acc, l_run, m_run, grp, kGroups, chunk * 8, sAcc, p.ws, p.ws_splits, p.n_heads,
                                   p.split0);
}

// Any even head_dim up to 128 (small models such as stories260K, head_dim 8): one block per
// (sequence, kv head), one split, 128-token tiles (a thread per token for the scores, a thread
// per dim for the values) with the same online softmax and partial format. Not tuned: the
// kernels above are the fast paths.
constexpr int kSmallThreads = 128;
template <int G>
__global__ void __launch_bounds__(kSmallThreads) dense_small_kernel(DenseParams p, int D) {
  extern __shared__ __align__(16) unsigned char smem_small[];
  float* sQ = reinterpret_cast<float*>(smem_small);  // [G][D]
  float* sP = sQ + G * D;                            // [kSmallThreads][G]
  float* sRed = sP + kSmallThreads * G;              // [2][kSmallThreads / 32][G]
  const int t = threadIdx.x, h = blockIdx.y, b = blockIdx.z;
  const std::int64_t seq = static_cast<std::int64_t>(b) * p.n_kv_heads + h;
  const float* q = p.q + (static_cast<std::int64_t>(b) * p.n_heads + static_cast<std::int64_t>(h) * G) * D;
  for (int i = t; i < G * D; i += kSmallThreads) sQ[i] = q[i];
  __syncthreads();
  const std::int64_t n_tokens = p.n_tokens_dev ? min(*p.n_tokens_dev, p.capacity) : p.n_tokens;
  const __half* K = p.k + seq * p.capacity * D;
  const __half* V = p.v + seq * p.capacity * D;
  float m_run[G], l_run[G], acc[G][1];
#pragma unroll
  for (int j = 0; j < G; ++j) m_run[j] = -INFINITY, l_run[j] = 0.0f, acc[j][0] = 0.0f;
  for (std::int64_t base = 0; base < n_tokens; base += kSmallThreads) {
    const int n_valid = static_cast<int>(n_tokens - base < kSmallThreads ? n_tokens - base : kSmallThreads);
    __syncthreads();
    float s[G];
#pragma unroll
    for (int j = 0; j < G; ++j) {
      s[j] = -INFINITY;
      if (t < n_valid) {
        float d = 0.0f;
        for (int c = 0; c < D; ++c) d = fmaf(sQ[j * D + c], __half2float(K[(base + t) * D + c]), d);
        s[j] = d * p.scale;
      }
    }
    float alpha[G];
    tile_softmax<G, kSmallThreads>(s, m_run, l_run, alpha, sP, sRed);
    if (t < D) {
#pragma unroll
      for (int j = 0; j < G; ++j) {
        float a = acc[j][0] * alpha[j];
        for (int tt = 0; tt < n_valid; ++tt) a = fmaf(sP[tt * G + j], __half2float(V[(base + tt) * D + t]), a);
        acc[j][0] = a;
      }
    }
  }
  const std::int64_t head0 = static_cast<std::int64_t>(b) * p.n_heads + static_cast<std::int64_t>(h) * G;
#pragma unroll
  for (int j = 0; j < G; ++j) {
    float* part = p.ws + ((head0 + j) * p.ws_splits + p.split0) * (D + 2);
    if (t < D) part[t] = acc[j][0];
    if (t == 0) part[D] = m_run[j], part[D + 1] = l_run[j];
  }
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

// any_group: every GQA group of 1 to 8 query heads (the dense and mma kernels); else 1, 2, 4 or 8
// (the CUDA-core PQ kernel).
void validate(const DecodeShape& s, int splits, int tile, bool any_head_dim = false, bool any_group = true) {
  if (s.batch < 1 || s.n_kv_heads < 1 || s.n_heads % s.n_kv_heads != 0) {
    throw InvalidArgumentError("CUDA decode attention: bad batch or head counts");
  }
  const int G = s.group();
  if (any_group ? G > 8 : G != 1 && G != 2 && G != 4 && G != 8) {
    throw InvalidArgumentError(std::string("CUDA decode attention: query heads per kv head must be ") +
                               (any_group ? "1 to 8" : "1, 2, 4 or 8 (the CUDA-core PQ kernel)") + ", got " +
                               std::to_string(G));
  }
  const bool small_ok = any_head_dim && s.head_dim >= 2 && s.head_dim <= 128 && s.head_dim % 2 == 0;
  if (s.head_dim != 64 && s.head_dim != 128 && !small_ok) {
    throw InvalidArgumentError("CUDA decode attention: head_dim must be 64 or 128" +
                               std::string(any_head_dim ? " (or even, at most 128, for the fp16 cache)" : "") + ", got " +
                               std::to_string(s.head_dim));
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

template <int D, int DSUB, int G, int KSUB, bool NORM>
void run_pq(const PQParams& params, const DecodeShape& s, cudaStream_t stream) {
  std::size_t smem = pq_norm_smem_offset<D, DSUB, G>(params.ksub);
  if (NORM && (params.k_gp || params.v_gp)) {
    smem += 4u * static_cast<std::size_t>(params.norm_slots) * (D * G + (D / 32) * G + 2 * D);
  }
  launch(pq_decode_kernel<D, DSUB, G, KSUB, NORM>, params, kPQThreads, smem, s, params.splits, stream);
}

template <int D, int DSUB, int KSUB, bool NORM>
void run_pq_k(const PQParams& params, const DecodeShape& s, cudaStream_t stream) {
  switch (s.group()) {
    case 1: return run_pq<D, DSUB, 1, KSUB, NORM>(params, s, stream);
    case 2: return run_pq<D, DSUB, 2, KSUB, NORM>(params, s, stream);
    case 4: return run_pq<D, DSUB, 4, KSUB, NORM>(params, s, stream);
    default: return run_pq<D, DSUB, 8, KSUB, NORM>(params, s, stream);
  }
}

// The normalised kernels exist for ksub 256 and a runtime ksub (others, 16 included).
template <int D, int DSUB>
void run_pq_g(const PQParams& params, const DecodeShape& s, bool norm, cudaStream_t stream) {
  if (norm) {
    if (params.ksub == 256) return run_pq_k<D, DSUB, 256, true>(params, s, stream);
    return run_pq_k<D, DSUB, 0, true>(params, s, stream);
  }
  if (params.ksub == 256) return run_pq_k<D, DSUB, 256, false>(params, s, stream);
  if (params.ksub == 16) return run_pq_k<D, DSUB, 16, false>(params, s, stream);
  run_pq_k<D, DSUB, 0, false>(params, s, stream);
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
    case 3: return run_dense<D, 3>(params, s, stream);
    case 4: return run_dense<D, 4>(params, s, stream);
    case 5: return run_dense<D, 5>(params, s, stream);
    case 6: return run_dense<D, 6>(params, s, stream);
    case 7: return run_dense<D, 7>(params, s, stream);
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
  const int D = a.shape.head_dim;
  if (D != 64 && D != 128) {  // small models: the generic kernel, one split (`splits` is not used)
    validate(a.shape, 1, kTile, true);
    DenseParams p{static_cast<const __half*>(a.k), static_cast<const __half*>(a.v), a.q, workspace, a.shape.n_tokens,
                  a.shape.capacity, a.shape.n_heads, a.shape.n_kv_heads, 1, a.scale, a.n_tokens_device, 1, 0};
    const int G = a.shape.group();
    const std::size_t smem = sizeof(float) * (G * D + kSmallThreads * G + 2 * (kSmallThreads / 32) * G);
    const dim3 grid(1, a.shape.n_kv_heads, a.shape.batch);
    switch (G) {
      case 1: dense_small_kernel<1><<<grid, kSmallThreads, smem, stream>>>(p, D); break;
      case 2: dense_small_kernel<2><<<grid, kSmallThreads, smem, stream>>>(p, D); break;
      case 3: dense_small_kernel<3><<<grid, kSmallThreads, smem, stream>>>(p, D); break;
      case 4: dense_small_kernel<4><<<grid, kSmallThreads, smem, stream>>>(p, D); break;
      case 5: dense_small_kernel<5><<<grid, kSmallThreads, smem, stream>>>(p, D); break;
      case 6: dense_small_kernel<6><<<grid, kSmallThreads, smem, stream>>>(p, D); break;
      case 7: dense_small_kernel<7><<<grid, kSmallThreads, smem, stream>>>(p, D); break;
      default: dense_small_kernel<8><<<grid, kSmallThreads, smem, stream>>>(p, D); break;
    }
    check(cudaGetLastError(), "decode attention kernel launch");
    merge(a.shape, workspace, 1, a.out, stream);
    return;
  }
  validate(a.shape, splits, kTile);
  DenseParams p{static_cast<const __half*>(a.k), static_cast<const __half*>(a.v), a.q, workspace, a.shape.n_tokens,
                a.shape.capacity, a.shape.n_heads, a.shape.n_kv_heads, splits, a.scale, a.n_tokens_device, splits, 0};
  if (a.shape.head_dim == 128) {
    run_dense_g<128>(p, a.shape, stream);
  } else {
    run_dense_g<64>(p, a.shape, stream);
  }
  merge(a.shape, workspace, splits, a.out, stream);
}

namespace {

// Validates `a`, launches the PQ kernel writing its partials at 0 .. splits - 1 of ws_splits per
// head; the caller merges.
void launch_pq_attention_partials(const PQDecodeArgs& a, float* workspace, int splits, int ws_splits, cudaStream_t stream) {
  validate(a.shape, splits, kPQThreads, false, a.kernel == PQKernel::kMma);
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
  const bool norm = a.normalised();
  if (a.n_tokens_device) {
    if (a.kernel != PQKernel::kMma) throw InvalidArgumentError("CUDA PQ attention: n_tokens_device needs the mma kernel");
    p.n_tokens_dev = a.n_tokens_device;
    p.n_dev_minus = a.n_tokens_device_minus;
  }
  p.ws_splits = ws_splits;
  if (ws_splits != splits && a.kernel != PQKernel::kMma) {
    throw InvalidArgumentError("CUDA PQ attention: merged partials need the mma kernel");
  }
  if (norm) {
    if (a.kernel == PQKernel::kMma && a.v_group_params) {
      throw InvalidArgumentError("CUDA PQ attention: the mma kernel has no value channel-groups");
    }
    if ((a.k_token_norm && a.k_group_params) || (a.v_token_norm && a.v_group_params)) {
      throw InvalidArgumentError("CUDA PQ attention: token norms and channel-groups exclude each other per kind");
    }
    p.k_norm = static_cast<const __half*>(a.k_token_norm);
    p.v_norm = static_cast<const __half*>(a.v_token_norm);
    p.k_gp = static_cast<const __half*>(a.k_group_params);
    p.v_gp = static_cast<const __half*>(a.v_group_params);
    if (p.k_gp || p.v_gp) {
      const int g = a.norm_group;
      if (g < 64 || g % 64 != 0 || g > (1 << 20)) {
        throw InvalidArgumentError("CUDA PQ attention: norm_group must be a positive multiple of 64 (at most 2^20), got " +
                                   std::to_string(g));
      }
      p.norm_group = g;
      p.n_groups = (a.shape.capacity + g - 1) / g;
      // Groups a 512-token tile (starting at a multiple of 512) can touch.
      p.norm_slots = kPQThreads % g == 0 ? kPQThreads / g : (kPQThreads - 1) / g + 2;
    }
  }
  if (a.kernel == PQKernel::kMma) {
    if ((reinterpret_cast<std::uintptr_t>(a.codes_k) | reinterpret_cast<std::uintptr_t>(a.codes_v)) % 16 != 0) {
      throw InvalidArgumentError("CUDA PQ attention: the mma kernel needs 16-byte aligned code buffers");
    }
    launch_pq_mma(p, D, dsub, a.shape.batch, a.shape.n_kv_heads, stream);
    return;
  }
  if (D == 128 && dsub == 2) run_pq_g<128, 2>(p, a.shape, norm, stream);
  if (D == 128 && dsub == 4) run_pq_g<128, 4>(p, a.shape, norm, stream);
  if (D == 64 && dsub == 2) run_pq_g<64, 2>(p, a.shape, norm, stream);
  if (D == 64 && dsub == 4) run_pq_g<64, 4>(p, a.shape, norm, stream);
}

}  // namespace

void pq_decode_attention(const PQDecodeArgs& a, float* workspace, int splits, cudaStream_t stream) {
  launch_pq_attention_partials(a, workspace, splits, splits, stream);
  merge(a.shape, workspace, splits, a.out, stream);
}

void pq_window_decode_attention(const PQDecodeArgs& pq, const DenseDecodeArgs& window, float* workspace, int splits,
                                cudaStream_t stream) {
  if (pq.kernel != PQKernel::kMma) throw InvalidArgumentError("CUDA PQ + window attention: the mma kernel only");
  const DecodeShape& s = pq.shape;
  const DecodeShape& w = window.shape;
  if (w.batch != s.batch || w.n_heads != s.n_heads || w.n_kv_heads != s.n_kv_heads || w.head_dim != s.head_dim) {
    throw InvalidArgumentError("CUDA PQ + window attention: the window's shape differs from the codes'");
  }
  if (w.capacity < 1) throw InvalidArgumentError("CUDA PQ + window attention: empty window buffer");
  if (!window.n_tokens_device) validate(w, 1, kTile);
  // Codes: partials 0 .. splits - 1 (none when the host says no token is coded yet).
  const bool coded = pq.n_tokens_device != nullptr || s.n_tokens > 0;
  const int S = coded ? splits : 0;
  if (coded) {
    PQDecodeArgs a = pq;
    a.out = nullptr;  // merged below
    launch_pq_attention_partials(a, workspace, splits, S + 1, stream);
  }
  DenseParams p{static_cast<const __half*>(window.k), static_cast<const __half*>(window.v), window.q, workspace,
                w.n_tokens, w.capacity, w.n_heads, w.n_kv_heads, 1, window.scale, window.n_tokens_device, S + 1, S};
  if (w.head_dim == 128) {
    run_dense_g<128>(p, w, stream);
  } else {
    run_dense_g<64>(p, w, stream);
  }
  merge(s, workspace, S + 1, pq.out, stream);
}

}  // namespace million::cuda
