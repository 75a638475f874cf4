// PQ decode attention on tensor cores with mma.sync (PQKernel::kMma; contract in
// cuda_attention.h). No decoded tile ever touches shared memory: each thread looks the
// centroids of its own matrix-fragment elements up in the shared-memory codebooks and feeds
// them to the tensor cores from registers.
//
// Block: 16 warps on one (sequence split, kv head, sequence); both codebooks in shared memory
// (fp16, interleaved: cb_align). Each warp walks its own contiguous run of 16-token tiles with
// its own online softmax (no block barrier in the main loop); the warps' partials are merged in
// shared memory at the end and written like the other kernels' (merge_kernel), at split slots
// 0 .. splits - 1 of ws_splits (an exact window's partial may take the next slot). The token
// count may be read from device memory when the kernel runs (a decode step in a CUDA graph).
// Per 16-token tile, with g = lane / 4 and c = lane % 4 (the mma fragment coordinates):
//  - codebooks: copied asynchronously into shared memory with the subspaces of one lookup
//    instruction interleaved (cb_align), so that lanes of different subspaces never collide in
//    a bank and a lookup address is one shift and one logic op. Lanes of one subspace with
//    different random codes still collide (~3 wavefronts a warp-wide lookup): shared memory,
//    not DRAM, bounds this kernel at 4 bits.
//  - scores S[16 tokens x 8 heads] = K[16 x D] . Q^T[D x 8] (m16n8k16, D/16 k-steps; the G
//    query heads padded to 8 columns). A thread's A elements are (token g or g+8, dims of
//    subspaces m = 4j + c): with dsub 2 one 4-byte centroid per register, with dsub 4 one
//    8-byte centroid per two registers (the k order inside a step is permuted to match; Q's
//    fragments use the same order). The key code layout puts a thread's codes of one token in
//    one contiguous M/4-byte run (interleave_pq_codes).
//  - online softmax in the S fragment (a thread: tokens g, g+8 of heads 2c, 2c+1), exp2 with
//    log2(e) folded into the queries; P to fp16, transposed by movmatrix into the B fragment of
//    the value product.
//  - values: O^T[D x 8] += V^T[D x 16 tokens] . P^T[16 x 8], D/16 m-tiles. A thread's A
//    elements are (dims of subspace m = 8j + g, tokens 2c, 2c+1, 2c+8, 2c+9): rows g and g+8 of
//    an m-tile are the two (dsub 2) or two of the four (dsub 4) dims of one centroid, so a
//    lookup fills two rows and byte permutes build the registers. Value codes: M/8-byte runs.
//  - normalisations (NORM): key token norms scale S rows, value token norms the probabilities
//    fed to the value product (the softmax sums take the plain ones); key channel-groups scale
//    the query fragments by the group's ranges and add the bias q . min (rebuilt when a warp's
//    tile enters a new group: groups are multiples of 64 tokens, tiles never straddle them).
// Accuracy: fp16 Q, P and (as stored) centroids, f32 accumulation: ~1e-3 of the output scale.
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "backends/cuda/cuda_attention.h"
#include "backends/cuda/decode_common.cuh"
#include "million/error.h"

namespace million::cuda {
namespace detail {
namespace {

constexpr int kWarps = 16;
constexpr int kThreads = kWarps * 32;
constexpr int kTok = 16;  // tokens per warp tile
constexpr float kLog2e = 1.4426950408889634f;
// Codebook layout in shared memory, per kind: the subspaces a warp-wide lookup touches (S = 4
// for keys: m = 4j + c; S = 8 for values: m = 8j + g) interleaved, centroid `code` of subspace
// m at byte (m / S) * S * ksub * ES + code * S * ES + (m % S) * ES (ES: bytes per centroid).
// Subspace m's centroids then sit in the banks congruent to its m % S (mod S * ES / 4): random
// codes collide only among the lanes of one subspace (simulated: 3.2 instead of 3.4 wavefronts
// a key lookup, 2.9 instead of 3.5 a value lookup, 4-byte centroids), and the address of a
// lookup is code << log2(S * ES) or'ed into the thread's base: the tables start at a multiple
// of 256 * S * ES (values first at the aligned address, keys after them).
constexpr unsigned cb_align(int es) { return 256u * 8u * static_cast<unsigned>(es); }
template <int D>
constexpr int kMergeBytes = static_cast<int>(sizeof(float)) * kWarps * 8 * D;  // sAcc

using detail::mma16816;

__device__ __forceinline__ unsigned transpose8x8(unsigned x) {
  unsigned y;
  asm("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;\n" : "=r"(y) : "r"(x));
  return y;
}

__device__ __forceinline__ unsigned pack_half2(float lo, float hi) {
  const __half2 h = __floats2half2_rn(lo, hi);
  unsigned u;
  std::memcpy(&u, &h, 4);
  return u;
}

// 32- and 64-bit shared-memory loads at a 32-bit shared address (the lookups' address is one
// logic op: code bits or'ed into an aligned per-thread base, the subspace as an immediate).
__device__ __forceinline__ unsigned lds32(unsigned addr) {
  unsigned v;
  asm volatile("ld.shared.b32 %0, [%1];\n" : "=r"(v) : "r"(addr));
  return v;
}
__device__ __forceinline__ uint2 lds64(unsigned addr) {
  uint2 v;
  asm volatile("ld.shared.v2.b32 {%0, %1}, [%2];\n" : "=r"(v.x), "=r"(v.y) : "r"(addr));
  return v;
}

// Byte k of w times 2^SH: one shift and one mask.
template <int SH>
__device__ __forceinline__ unsigned code_off(unsigned w, int k) {
  const unsigned x = 8 * k >= SH ? w >> (8 * k - SH) : w << (SH - 8 * k);
  return x & (0xFFu << SH);
}

__device__ __forceinline__ float ex2(float x) {  // 2^x; -inf gives +0
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// N bytes of codes as 32-bit words (N = 2: the low half of one word).
template <int N>
struct CodeRun {
  static constexpr int kWords = N >= 4 ? N / 4 : 1;
  unsigned w[kWords];
  __device__ __forceinline__ void load(const std::uint8_t* src) {
    if constexpr (N == 16) {
      const uint4 x = __ldg(reinterpret_cast<const uint4*>(src));
      w[0] = x.x, w[1] = x.y, w[2] = x.z, w[3] = x.w;
    } else if constexpr (N == 8) {
      const uint2 x = __ldg(reinterpret_cast<const uint2*>(src));
      w[0] = x.x, w[1] = x.y;
    } else if constexpr (N == 4) {
      w[0] = __ldg(reinterpret_cast<const unsigned*>(src));
    } else {
      static_assert(N == 2);
      w[0] = __ldg(reinterpret_cast<const unsigned short*>(src));
    }
  }
  __device__ __forceinline__ void zero() {
#pragma unroll
    for (int i = 0; i < kWords; ++i) w[i] = 0;
  }
  // Code j times 2^SH (the stride of one code in the interleaved codebook).
  template <int SH>
  __device__ __forceinline__ unsigned off(int j) const {
    return code_off<SH>(w[j / 4], j % 4);
  }
};

template <int BYTES>  // 4, 8 or 16
__device__ __forceinline__ void cp_async(void* smem_dst, const void* gmem_src) {
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem_dst));
  asm volatile("cp.async.ca.shared.global [%0], [%1], %2;\n" ::"r"(dst), "l"(gmem_src), "n"(BYTES) : "memory");
}

// Dims of the two B-fragment registers of k-step ks (thread column c): the first of each pair.
template <int DSUB>
__device__ __forceinline__ int q_dim(int ks, int c, int reg) {
  if constexpr (DSUB == 2) return 16 * ks + 2 * c + 8 * reg;
  return 16 * ks + 4 * c + 2 * reg;
}

// One tile's loads (prefetched a tile ahead).
template <int M, bool NORM>
struct TileLoads {
  CodeRun<M / 4> k[2];  // tokens g, g + 8
  CodeRun<M / 8> v[4];  // tokens 2c, 2c + 1, 2c + 8, 2c + 9
  unsigned short kn[2], vn[2];  // f16 bits of tokens g, g + 8 (NORM)
};

template <int D, int DSUB, int KSUB, bool NORM>
__global__ void __launch_bounds__(kThreads, 1) pq_mma_kernel(PQParams p) {
  constexpr int M = D / DSUB;
  constexpr int KS = D / 16;        // k-steps of the score product, m-tiles of the value product
  constexpr int ES = DSUB * 2;      // bytes per centroid
  extern __shared__ __align__(16) unsigned char smem[];
  // Layout: the codebooks first (values, then keys; interleaved, see cb_align) at an aligned
  // shared address (cb_align(ES) bytes of slack allocated), then sQ [8][D] f32 (scaled
  // queries, zero rows past G), sStat [2][kWarps][8] f32 (max, sum), sGP [kWarps][2][D] fp16
  // (NORM: a warp's key group (min, range)). The merge reuses the codebooks' space as sAcc
  // [kWarps][8][D] f32.
  const int ksub = KSUB > 0 ? KSUB : p.ksub;
  const int cb_bytes = M * ksub * ES;  // one codebook
  constexpr unsigned kAlign = cb_align(ES);
  const unsigned s0 = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  const unsigned cb_s = (s0 + kAlign - 1) & ~(kAlign - 1u);  // shared address of the value codebook
  unsigned char* cb = smem + (cb_s - s0);
  float* sAcc = reinterpret_cast<float*>(cb);
  float* sQ = reinterpret_cast<float*>(cb + (2 * cb_bytes > kMergeBytes<D> ? 2 * cb_bytes : kMergeBytes<D>));
  float* sStat = sQ + 8 * D;
  __half* sGP = reinterpret_cast<__half*>(sStat + 2 * kWarps * 8);

  const int t = threadIdx.x, lane = t & 31, warp = t >> 5, g = lane >> 2, c = lane & 3;
  const int h = blockIdx.y, b = blockIdx.z;
  const int G = p.n_heads / p.n_kv_heads;
  const std::int64_t seq = static_cast<std::int64_t>(b) * p.n_kv_heads + h;
  {
    // Codebooks by asynchronous copies of one centroid each (all in flight at once), into the
    // interleaved layout.
    const unsigned char* srcK = reinterpret_cast<const unsigned char*>(p.cb_k + h * p.cb_k_stride);
    const unsigned char* srcV = reinterpret_cast<const unsigned char*>(p.cb_v + h * p.cb_v_stride);
    for (int e = t; e < M * ksub; e += kThreads) {
      const int m = e / ksub, code = e % ksub;
      cp_async<ES>(cb + cb_bytes + ((m / 4) * 4 * ksub + code * 4 + m % 4) * ES, srcK + e * ES);
      cp_async<ES>(cb + ((m / 8) * 8 * ksub + code * 8 + m % 8) * ES, srcV + e * ES);
    }
    asm volatile("cp.async.wait_all;\n" ::: "memory");
    const float* q = p.q + (static_cast<std::int64_t>(b) * p.n_heads + static_cast<std::int64_t>(h) * G) * D;
    const float qs = p.scale * kLog2e;
    for (int i = t; i < 8 * D; i += kThreads) sQ[i] = i / D < G ? q[i] * qs : 0.0f;
  }
  __syncthreads();

  // This warp's tiles: the block's split of the sequence cut into kWarps contiguous runs.
  const std::int64_t n_tokens = p.n_tokens_dev ? max(*p.n_tokens_dev - p.n_dev_minus, std::int64_t{0}) : p.n_tokens;
  std::int64_t lo, hi;
  {
    const std::int64_t tiles = (n_tokens + kTok - 1) / kTok;
    const std::int64_t blo = tiles * blockIdx.x / p.splits, bhi = tiles * (blockIdx.x + 1) / p.splits;
    lo = blo + (bhi - blo) * warp / kWarps;
    hi = blo + (bhi - blo) * (warp + 1) / kWarps;
  }
  // Next tile to load: key codes of token g (+8 rows: 8 * M), value codes of token 2c (+1, +8,
  // +9 tokens), norms of token g; advanced a tile at a time.
  const std::uint8_t* kp = p.codes_k + (seq * p.capacity + lo * kTok + g) * M + c * (M / 4);
  const std::uint8_t* vp = p.codes_v + (seq * p.capacity + lo * kTok + 2 * c) * M + g * (M / 8);
  const unsigned short* knp =
      NORM && p.k_norm ? reinterpret_cast<const unsigned short*>(p.k_norm) + seq * p.capacity + lo * kTok + g : nullptr;
  const unsigned short* vnp =
      NORM && p.v_norm ? reinterpret_cast<const unsigned short*>(p.v_norm) + seq * p.capacity + lo * kTok + g : nullptr;
  const __half* k_gp = NORM && p.k_gp ? p.k_gp + seq * p.n_groups * 2 * D : nullptr;

  // Query fragments (B of the score product): head g, this thread's dims of each k-step.
  unsigned qf[KS][2];
  auto build_q = [&](const __half* range) {
#pragma unroll
    for (int ks = 0; ks < KS; ++ks) {
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int d = q_dim<DSUB>(ks, c, r);
        float x0 = sQ[g * D + d], x1 = sQ[g * D + d + 1];
        if (range) {
          const float2 rg = __half22float2(*reinterpret_cast<const __half2*>(range + d));
          x0 *= rg.x;
          x1 *= rg.y;
        }
        qf[ks][r] = pack_half2(x0, x1);
      }
    }
  };
  build_q(nullptr);
  float bias0 = 0.0f, bias1 = 0.0f;  // key channel-groups: q . min of heads 2c, 2c + 1 (scaled)
  std::int64_t group_end = -1;      // first token past the current key group (NORM, k_gp)
  __half* gp = sGP + warp * 2 * D;  // this warp's (min, range) rows

  float acc[KS][4];
#pragma unroll
  for (int i = 0; i < KS; ++i) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.0f;
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;  // heads 2c, 2c + 1 (l: this thread's part)

  // Lookup bases (cb_align's layout): keys m = 4j + c, this thread's (m % 4) part in kb;
  // values m = 8j + g, the g part in vb; m / S is an immediate. With KSUB known the code
  // offset is or'ed in (the bases' bits below 256 * S * ES are the m % S part alone).
  constexpr int kShK = ES == 4 ? 4 : 5, kShV = kShK + 1;  // log2(S * ES)
  const unsigned vb = cb_s + g * ES, kb = cb_s + cb_bytes + c * ES;
  auto lookup_addr = [&](unsigned base, unsigned off, int block_bytes_per_ksub, int block) -> unsigned {
    if constexpr (KSUB > 0) return (base | off) + block * (block_bytes_per_ksub * KSUB);
    return base + off + block * (block_bytes_per_ksub * ksub);
  };
  auto kaddr = [&](unsigned off, int m_block) { return lookup_addr(kb, off, 4 * ES, m_block); };
  auto vaddr = [&](unsigned off, int m_block) { return lookup_addr(vb, off, 8 * ES, m_block); };

  auto load_tile = [&](TileLoads<M, NORM>& L, std::int64_t t0) {
    if (t0 + kTok <= n_tokens) {
      L.k[0].load(kp);
      L.k[1].load(kp + 8 * M);
      L.v[0].load(vp);
      L.v[1].load(vp + M);
      L.v[2].load(vp + 8 * M);
      L.v[3].load(vp + 9 * M);
      if constexpr (NORM) {
        L.kn[0] = knp ? __ldg(knp) : 0;
        L.kn[1] = knp ? __ldg(knp + 8) : 0;
        L.vn[0] = vnp ? __ldg(vnp) : 0;
        L.vn[1] = vnp ? __ldg(vnp + 8) : 0;
      }
    } else {  // the last tile: tokens past the end get code 0 and norm +0 (never NaN times 0)
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const bool in = t0 + g + 8 * r < n_tokens;
        if (in) {
          L.k[r].load(kp + 8 * r * M);
        } else {
          L.k[r].zero();
        }
        if constexpr (NORM) {
          L.kn[r] = in && knp ? __ldg(knp + 8 * r) : 0;
          L.vn[r] = in && vnp ? __ldg(vnp + 8 * r) : 0;
        }
      }
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const int dt = (r & 1) + 8 * (r >> 1);
        if (t0 + 2 * c + dt < n_tokens) {
          L.v[r].load(vp + dt * M);
        } else {
          L.v[r].zero();
        }
      }
    }
    kp += kTok * M;
    vp += kTok * M;
    if constexpr (NORM) {
      if (knp) knp += kTok;
      if (vnp) vnp += kTok;
    }
  };

  TileLoads<M, NORM> cur, nxt;
  if (lo < hi) load_tile(cur, lo * kTok);
  for (std::int64_t tile = lo; tile < hi; ++tile) {
    const std::int64_t t0 = tile * kTok;
    if (tile + 1 < hi) load_tile(nxt, t0 + kTok);
    if (NORM && k_gp && t0 >= group_end) {  // a new key group: scaled queries and biases
      const std::int64_t grp = t0 / p.norm_group;
      group_end = (grp + 1) * p.norm_group;
      __syncwarp();
      if (lane < D / 4) {  // 2 * D halves, 16 bytes a lane
        reinterpret_cast<uint4*>(gp)[lane] = __ldg(reinterpret_cast<const uint4*>(k_gp + grp * 2 * D) + lane);
      }
      __syncwarp();
      build_q(gp + D);
      float part = 0.0f;  // head g: this thread's dims of q . min
#pragma unroll
      for (int ks = 0; ks < KS; ++ks) {
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const int d = q_dim<DSUB>(ks, c, r);
          const float2 mn = __half22float2(*reinterpret_cast<const __half2*>(gp + d));
          part += sQ[g * D + d] * mn.x + sQ[g * D + d + 1] * mn.y;
        }
      }
      part += __shfl_xor_sync(0xffffffffu, part, 1);
      part += __shfl_xor_sync(0xffffffffu, part, 2);
      bias0 = __shfl_sync(0xffffffffu, part, 8 * c);
      bias1 = __shfl_sync(0xffffffffu, part, 8 * c + 4);
    }

    // Scores: S[token g / g + 8][head 2c / 2c + 1] in s[0..1] / s[2..3].
    float s[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
    for (int ks = 0; ks < KS; ++ks) {
      unsigned a[4];
      if constexpr (DSUB == 2) {
        // registers 0/1: subspace 8ks + c = 4(2ks) + c (code byte 2ks) of tokens g / g + 8;
        // 2/3: 4(2ks + 1) + c (code byte 2ks + 1).
        a[0] = lds32(kaddr(cur.k[0].template off<kShK>(2 * ks), 2 * ks));
        a[1] = lds32(kaddr(cur.k[1].template off<kShK>(2 * ks), 2 * ks));
        a[2] = lds32(kaddr(cur.k[0].template off<kShK>(2 * ks + 1), 2 * ks + 1));
        a[3] = lds32(kaddr(cur.k[1].template off<kShK>(2 * ks + 1), 2 * ks + 1));
      } else {  // subspace 4ks + c (code byte ks): one 8-byte centroid, registers 0/2 and 1/3
        const uint2 e0 = lds64(kaddr(cur.k[0].template off<kShK>(ks), ks));
        const uint2 e1 = lds64(kaddr(cur.k[1].template off<kShK>(ks), ks));
        a[0] = e0.x, a[2] = e0.y, a[1] = e1.x, a[3] = e1.y;
      }
      mma16816(s, a[0], a[1], a[2], a[3], qf[ks][0], qf[ks][1]);
    }
    float pv[4];  // value-side factors of the probabilities (value token norms)
    if constexpr (NORM) {
      if (knp) {
        const float n0 = __half2float(__ushort_as_half(cur.kn[0])), n1 = __half2float(__ushort_as_half(cur.kn[1]));
        s[0] *= n0, s[1] *= n0, s[2] *= n1, s[3] *= n1;
      }
      if (k_gp) s[0] += bias0, s[1] += bias1, s[2] += bias0, s[3] += bias1;
      const float v0 = vnp ? __half2float(__ushort_as_half(cur.vn[0])) : 1.0f;
      const float v1 = vnp ? __half2float(__ushort_as_half(cur.vn[1])) : 1.0f;
      pv[0] = pv[1] = v0, pv[2] = pv[3] = v1;
    }
    if (t0 + kTok > n_tokens) {  // the last tile: mask tokens past the end
      if (t0 + g >= n_tokens) s[0] = s[1] = -INFINITY;
      if (t0 + g + 8 >= n_tokens) s[2] = s[3] = -INFINITY;
    }

    // Online softmax over heads 2c (s[0], s[2]) and 2c + 1 (s[1], s[3]).
    float x0 = fmaxf(s[0], s[2]), x1 = fmaxf(s[1], s[3]);
#pragma unroll
    for (int o = 4; o < 32; o <<= 1) {
      x0 = fmaxf(x0, __shfl_xor_sync(0xffffffffu, x0, o));
      x1 = fmaxf(x1, __shfl_xor_sync(0xffffffffu, x1, o));
    }
    const float n0 = fmaxf(m0, x0), n1 = fmaxf(m1, x1);  // finite: every tile has a valid token
    const float al0 = ex2(m0 - n0), al1 = ex2(m1 - n1);  // 0 while m = -inf
    m0 = n0, m1 = n1;
    float pr[4];
    pr[0] = ex2(s[0] - n0), pr[1] = ex2(s[1] - n1), pr[2] = ex2(s[2] - n0), pr[3] = ex2(s[3] - n1);
    l0 = l0 * al0 + pr[0] + pr[2];
    l1 = l1 * al1 + pr[1] + pr[3];
    if (__any_sync(0xffffffffu, al0 != 1.0f || al1 != 1.0f)) {
#pragma unroll
      for (int i = 0; i < KS; ++i) acc[i][0] *= al0, acc[i][1] *= al1, acc[i][2] *= al0, acc[i][3] *= al1;
    }
    if constexpr (NORM) {
#pragma unroll
      for (int i = 0; i < 4; ++i) pr[i] *= pv[i];
    }
    // P^T fragment: rows k = tokens 2c, 2c + 1 (b0) and 2c + 8, 2c + 9 (b1), column head g.
    const unsigned b0 = transpose8x8(pack_half2(pr[0], pr[1]));
    const unsigned b1 = transpose8x8(pack_half2(pr[2], pr[3]));

    // Values: m-tile rows g / g + 8 = the dims of subspace 8j + g (code byte j; see the header).
#pragma unroll
    for (int j = 0; j < M / 8; ++j) {
      if constexpr (DSUB == 2) {
        const unsigned e0 = lds32(vaddr(cur.v[0].template off<kShV>(j), j));
        const unsigned e1 = lds32(vaddr(cur.v[1].template off<kShV>(j), j));
        const unsigned e8 = lds32(vaddr(cur.v[2].template off<kShV>(j), j));
        const unsigned e9 = lds32(vaddr(cur.v[3].template off<kShV>(j), j));
        mma16816(acc[j], __byte_perm(e0, e1, 0x5410), __byte_perm(e0, e1, 0x7632), __byte_perm(e8, e9, 0x5410),
                 __byte_perm(e8, e9, 0x7632), b0, b1);
      } else {
        const uint2 e0 = lds64(vaddr(cur.v[0].template off<kShV>(j), j));
        const uint2 e1 = lds64(vaddr(cur.v[1].template off<kShV>(j), j));
        const uint2 e8 = lds64(vaddr(cur.v[2].template off<kShV>(j), j));
        const uint2 e9 = lds64(vaddr(cur.v[3].template off<kShV>(j), j));
        mma16816(acc[2 * j], __byte_perm(e0.x, e1.x, 0x5410), __byte_perm(e0.x, e1.x, 0x7632),
                 __byte_perm(e8.x, e9.x, 0x5410), __byte_perm(e8.x, e9.x, 0x7632), b0, b1);
        mma16816(acc[2 * j + 1], __byte_perm(e0.y, e1.y, 0x5410), __byte_perm(e0.y, e1.y, 0x7632),
                 __byte_perm(e8.y, e9.y, 0x5410), __byte_perm(e8.y, e9.y, 0x7632), b0, b1);
      }
    }
    cur = nxt;
  }

  // The warp's sums over its lanes; partials to shared memory; merge over the warps.
#pragma unroll
  for (int o = 4; o < 32; o <<= 1) {
    l0 += __shfl_xor_sync(0xffffffffu, l0, o);
    l1 += __shfl_xor_sync(0xffffffffu, l1, o);
  }
  __syncthreads();  // every warp is done with the codebooks: sAcc overwrites them
  if (g == 0) {
    sStat[warp * 8 + 2 * c] = m0;
    sStat[warp * 8 + 2 * c + 1] = m1;
    sStat[(kWarps + warp) * 8 + 2 * c] = l0;
    sStat[(kWarps + warp) * 8 + 2 * c + 1] = l1;
  }
  float* wacc = sAcc + warp * 8 * D;  // [head][dim]
#pragma unroll
  for (int i = 0; i < KS; ++i) {
    // Rows g / g + 8 of m-tile i: dims 16i + 2g / + 1 (dsub 2); 32(i/2) + 4g + 2(i%2) / + 1 (dsub 4).
    const int d = DSUB == 2 ? 16 * i + 2 * g : 32 * (i / 2) + 4 * g + 2 * (i % 2);
    wacc[(2 * c) * D + d] = acc[i][0];
    wacc[(2 * c + 1) * D + d] = acc[i][1];
    wacc[(2 * c) * D + d + 1] = acc[i][2];
    wacc[(2 * c + 1) * D + d + 1] = acc[i][3];
  }
  __syncthreads();
  constexpr float kLn2 = 0.6931471805599453f;
  for (int i = t; i < G * (D + 2); i += kThreads) {
    const int j = i / (D + 2), col = i % (D + 2);
    float mx = -INFINITY;
    for (int w = 0; w < kWarps; ++w) mx = fmaxf(mx, sStat[w * 8 + j]);
    float v = 0.0f;
    if (col == D) {
      v = mx * kLn2;  // the merge works in natural-log units
    } else {
      for (int w = 0; w < kWarps; ++w) {
        const float mw = sStat[w * 8 + j];
        if (mw == -INFINITY) continue;  // a warp without tokens
        v += exp2f(mw - mx) * (col < D ? sAcc[(w * 8 + j) * D + col] : sStat[(kWarps + w) * 8 + j]);
      }
    }
    const std::int64_t head = static_cast<std::int64_t>(b) * p.n_heads + static_cast<std::int64_t>(h) * G + j;
    p.ws[(head * (p.ws_splits > 0 ? p.ws_splits : p.splits) + blockIdx.x) * (D + 2) + col] = v;
  }
}

std::size_t mma_smem(int D, int M, int ksub, bool norm) {
  const int es = 2 * (D / M);
  const std::size_t books = 2 * sizeof(__half) * static_cast<std::size_t>(D) * ksub;  // M * ksub * dsub each
  const std::size_t merge = sizeof(float) * kWarps * 8 * D;
  const std::size_t fixed = sizeof(float) * (8 * D + 2 * kWarps * 8) + (norm ? sizeof(__half) * kWarps * 2 * D : 0);
  return cb_align(es) + std::max(books, merge) + fixed;
}

template <int D, int DSUB, int KSUB, bool NORM>
void run(const PQParams& p, int batch, int n_kv_heads, cudaStream_t stream) {
  const std::size_t smem = mma_smem(D, D / DSUB, p.ksub, NORM);
  auto kernel = pq_mma_kernel<D, DSUB, KSUB, NORM>;
  check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)),
        "cudaFuncSetAttribute(max dynamic shared memory)");
  kernel<<<dim3(p.splits, n_kv_heads, batch), kThreads, smem, stream>>>(p);
  check(cudaGetLastError(), "PQ mma kernel launch");
}

template <int D, int DSUB>
void run_k(const PQParams& p, bool norm, int batch, int n_kv_heads, cudaStream_t stream) {
  if (p.ksub == 256) {
    return norm ? run<D, DSUB, 256, true>(p, batch, n_kv_heads, stream)
                : run<D, DSUB, 256, false>(p, batch, n_kv_heads, stream);
  }
  return norm ? run<D, DSUB, 0, true>(p, batch, n_kv_heads, stream) : run<D, DSUB, 0, false>(p, batch, n_kv_heads, stream);
}

}  // namespace

void launch_pq_mma(const PQParams& p, int head_dim, int dsub, int batch, int n_kv_heads, cudaStream_t stream) {
  const bool norm = p.k_norm || p.v_norm || p.k_gp;
  if (p.v_gp) throw InvalidArgumentError("CUDA PQ attention: the mma kernel has no value channel-groups");
  if (head_dim == 128 && dsub == 2) return run_k<128, 2>(p, norm, batch, n_kv_heads, stream);
  if (head_dim == 128 && dsub == 4) return run_k<128, 4>(p, norm, batch, n_kv_heads, stream);
  if (head_dim == 64 && dsub == 2) return run_k<64, 2>(p, norm, batch, n_kv_heads, stream);
  return run_k<64, 4>(p, norm, batch, n_kv_heads, stream);
}

std::size_t pq_mma_smem(int head_dim, int M, int ksub, bool norm) { return mma_smem(head_dim, M, ksub, norm); }

}  // namespace detail

int pq_mma_blocks_per_sm(const PQDecodeArgs& a) {
  int dev = 0, per_sm = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  check(cudaDeviceGetAttribute(&per_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, dev), "shared memory per SM");
  const std::size_t need = detail::pq_mma_smem(a.shape.head_dim, a.M, a.ksub, a.normalised()) + 1024;  // + the per-block reserve
  return std::max(1, std::min(2048 / detail::kThreads, static_cast<int>(static_cast<std::size_t>(per_sm) / need)));
}

int choose_splits_mma(const DecodeShape& s, int sm_count, int blocks_per_sm) {
  const std::int64_t pairs = static_cast<std::int64_t>(s.batch) * s.n_kv_heads;
  const std::int64_t tiles = (s.n_tokens + 511) / 512;
  const std::int64_t want = static_cast<std::int64_t>(sm_count) * blocks_per_sm / pairs;
  return static_cast<int>(std::max<std::int64_t>(1, std::min(want, tiles)));
}

void interleave_pq_codes(const std::uint8_t* src, std::uint8_t* dst, std::size_t rows, int M, bool values) {
  if (M < 8 || M % 8 != 0) throw InvalidArgumentError("interleave_pq_codes: M must be a multiple of 8");
  const int step = values ? 8 : 4, run = M / step;
  for (std::size_t r = 0; r < rows; ++r) {
    const std::uint8_t* s = src + r * M;
    std::uint8_t* d = dst + r * M;
    for (int m = 0; m < M; ++m) d[(m % step) * run + m / step] = s[m];
  }
}

}  // namespace million::cuda
