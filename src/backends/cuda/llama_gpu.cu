// GpuLlama (llama_gpu.h): device buffers, the small fused kernels, one decode step and one
// prefill chunk.
// Layouts (row-major, batch-major):
//   weights (W = bf16, or f32 with GpuLlamaOptions::f32_weights): tok_embd / lm_head [vocab, hidden] W;
//   per layer wqkv [q_dim + 2 kv_dim, hidden]
//   (wq rows, then wk, then wv), wo [hidden, q_dim], wgu [2 ffn, hidden] (gate rows, then up),
//   wdown [hidden, ffn] W; norms f32 [hidden]. One allocation for all of them.
//   activations, R = B * max(1, prefill_chunk) rows (a decode step uses the first B; a prefill
//   chunk of n tokens B * n, sequence-major): x, tmp [R, hidden] f32; xb [R, max(hidden, q_dim,
//   ffn)] W (GEMM inputs); qkv [R, q_dim + 2 kv_dim] f32; q, att [R, n_heads, head_dim] f32;
//   k, v [R, n_kv, head_dim] f32; gu [R, 2 ffn] f32; logits [B, vocab] f32 ([R, vocab] with
//   prefill_all_logits). Prefill only (PQ): pf_kr, pf_vr [R, n_kv, head_dim] f32 (the chunk's
//   K/V as attention reads them: rotated when pq_rotate), pf_kx, pf_vx [B * n_kv, n, head_dim]
//   f32 (the encoder's input, per (sequence, kv head)), pf_qr, pf_att [R, n_heads, head_dim].
//   cache per layer: fp16 K, V [B, n_kv, capacity, head_dim]; or PQ codes [B, n_kv, capacity, M]
//   u8 in the mma kernel's orders (keys / values) + codebooks [n_kv, M, 256, dsub] in fp16 (for
//   attention) and f32 (for the encoder).
// GEMMs: cublasGemmEx, W x W -> f32 with f32 compute, no TF32 (y = W x for every row of the batch).
#include "backends/cuda/llama_gpu.h"

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <type_traits>

#include "backends/cuda/cuda_attention.h"
#include "backends/cuda/prefill_attention.h"
#include "core/half.h"
#include "million/error.h"

namespace million::cuda {
namespace {

using bf16 = __nv_bfloat16;

void check_blas(cublasStatus_t s, const char* what) {
  if (s != CUBLAS_STATUS_SUCCESS) throw Error(ErrorKind::kUnsupported, std::string(what) + ": cuBLAS status " + std::to_string(s));
}

__device__ __forceinline__ float block_sum(float v, float* red) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) red[warp] = v;
  __syncthreads();
  float s = 0.0f;
  for (int w = 0; w < static_cast<int>(blockDim.x / 32); ++w) s += red[w];
  __syncthreads();
  return s;
}

__device__ __forceinline__ float to_f(bf16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_f(float x) { return x; }
template <typename T>
__device__ __forceinline__ T from_f(float x) {
  if constexpr (std::is_same_v<T, bf16>) {
    return __float2bfloat16(x);
  } else {
    return x;
  }
}

template <typename T>
__global__ void embed_kernel(const T* emb, const int* tokens, float* x, int hidden) {
  const T* row = emb + static_cast<std::int64_t>(tokens[blockIdx.x]) * hidden;
  for (int i = threadIdx.x; i < hidden; i += blockDim.x) x[blockIdx.x * hidden + i] = to_f(row[i]);
}

// out = T(x * rsqrt(mean(x^2) + eps) * w), one block per row.
template <typename T>
__global__ void rmsnorm_kernel(const float* x, const float* w, T* out, int n, float eps) {
  __shared__ float red[32];
  const float* xr = x + static_cast<std::int64_t>(blockIdx.x) * n;
  float ss = 0.0f;
  for (int i = threadIdx.x; i < n; i += blockDim.x) ss += xr[i] * xr[i];
  const float r = rsqrtf(block_sum(ss, red) / static_cast<float>(n) + eps);
  for (int i = threadIdx.x; i < n; i += blockDim.x) out[static_cast<std::int64_t>(blockIdx.x) * n + i] = from_f<T>(xr[i] * r * w[i]);
}

// Splits qkv rows into q [rows, H, hd], k, v [rows, Hkv, hd] and rotates q and k at the row's
// position: *len - 1 (a decode step) or, with len null, pos0 + row % T (a prefill chunk of T
// tokens per sequence). Angles in double: pos * inv_freq reaches 1e6 radians at a million tokens.
__global__ void rope_split_kernel(const float* qkv, const double* inv_freq, const std::int64_t* len, std::int64_t pos0,
                                  int T, float* q, float* k, float* v, int H, int Hkv, int hd, bool interleaved) {
  const int b = blockIdx.x, half = hd / 2;
  const std::int64_t pos = len ? *len - 1 : pos0 + b % T;
  const int qd = H * hd, kd = Hkv * hd;
  const float* row = qkv + static_cast<std::int64_t>(b) * (qd + 2 * kd);
  for (int i = threadIdx.x; i < (H + Hkv) * half; i += blockDim.x) {
    const int head = i / half, j = i % half;
    const bool is_q = head < H;
    const float* src = is_q ? row + head * hd : row + qd + (head - H) * hd;
    float* dst = is_q ? q + (static_cast<std::int64_t>(b) * H + head) * hd : k + (static_cast<std::int64_t>(b) * Hkv + head - H) * hd;
    const int i0 = interleaved ? 2 * j : j, i1 = interleaved ? 2 * j + 1 : j + half;
    double s, c;
    sincos(static_cast<double>(pos) * inv_freq[j], &s, &c);
    const float x0 = src[i0], x1 = src[i1];
    dst[i0] = static_cast<float>(x0 * c - x1 * s);
    dst[i1] = static_cast<float>(x0 * s + x1 * c);
  }
  for (int i = threadIdx.x; i < kd; i += blockDim.x) v[static_cast<std::int64_t>(b) * kd + i] = row[qd + kd + i];
}

// k, v [B, T, Hkv, hd] f32 -> fp16 caches [B * Hkv, capacity, hd] at positions base .. base + T - 1,
// base = *len - 1 (a decode step, T = 1) or pos0 (len null). One block per row of k.
__global__ void append_f16_kernel(const float* k, const float* v, __half* kc, __half* vc, std::int64_t capacity,
                                  const std::int64_t* len, std::int64_t pos0, int T, int Hkv, int hd) {
  const std::int64_t row = blockIdx.x, kv = row % Hkv, j = row / Hkv % T, b = row / (static_cast<std::int64_t>(Hkv) * T);
  const std::int64_t sh = b * Hkv + kv, pos = (len ? *len - 1 : pos0) + j;
  for (int i = threadIdx.x; i < hd; i += blockDim.x) {
    kc[(sh * capacity + pos) * hd + i] = __float2half(k[row * hd + i]);
    vc[(sh * capacity + pos) * hd + i] = __float2half(v[row * hd + i]);
  }
}

__global__ void set_len_kernel(std::int64_t* len, std::int64_t n) { *len = n; }

__global__ void advance_kernel(std::int64_t* len) { *len += 1; }

// k, v [B, T, Hkv, hd] f32 -> the exact buffers [B * Hkv, sinks + window, hd]: token t (positions
// base .. base + T - 1, base = *len - 1 with T = 1, or pos0 when len is null) at slot t while
// t < sinks, else at sinks + (t - sinks) % window (a ring of the newest); tokens of a chunk that
// the chunk's own newer ones push out of the window are skipped. One block per row of k.
__global__ void append_ring_kernel(const float* k, const float* v, __half* rk, __half* rv, int sinks, int window,
                                   const std::int64_t* len, std::int64_t pos0, int T, int Hkv, int hd) {
  const std::int64_t row = blockIdx.x, kv = row % Hkv, j = row / Hkv % T, b = row / (static_cast<std::int64_t>(Hkv) * T);
  const std::int64_t base = len ? *len - 1 : pos0, t = base + j;
  if (t >= sinks && t < base + T - window) return;
  const std::int64_t slot = t < sinks ? t : sinks + (t - sinks) % window, cap = sinks + window, sh = b * Hkv + kv;
  for (int i = threadIdx.x; i < hd; i += blockDim.x) {
    rk[(sh * cap + slot) * hd + i] = __float2half(k[row * hd + i]);
    rv[(sh * cap + slot) * hd + i] = __float2half(v[row * hd + i]);
  }
}

// Prefill: rows j0 .. j0 + n - 1 of each sequence of x [B, T, Hkv, hd] into y [B * Hkv, n, hd]
// (the encoder's layout). One block per output row.
__global__ void gather_rows_kernel(const float* x, float* y, int T, int Hkv, int j0, int n, int hd) {
  const std::int64_t row = blockIdx.x, sh = row / n, j = row % n, b = sh / Hkv, kv = sh % Hkv;
  const float* src = x + ((b * T + j0 + j) * Hkv + kv) * hd;
  for (int i = threadIdx.x; i < hd; i += blockDim.x) y[row * hd + i] = src[i];
}

// y[row]_i = sum_j Mt[j][i] x[row]_j with Mt of row = mt + ((row / div) % n_kv) * hd * hd (div: the
// GQA group for query / output rows, 1 for key / value rows): Mt = R^T rotates (y = R x), Mt = R
// rotates back (y = R^T x). A thread per output reads Mt column-wise: consecutive threads,
// consecutive addresses. One block per row, hd threads.
__global__ void rotate_kernel(const float* x, float* y, const float* mt, int div, int n_kv, int hd) {
  __shared__ float sx[128];
  const std::int64_t row = blockIdx.x;
  const float* Mt = mt + static_cast<std::int64_t>((row / div) % n_kv) * hd * hd;
  for (int j = threadIdx.x; j < hd; j += blockDim.x) sx[j] = x[row * hd + j];
  __syncthreads();
  for (int i = threadIdx.x; i < hd; i += blockDim.x) {
    float a = 0.0f;
    for (int j = 0; j < hd; ++j) a = fmaf(Mt[j * hd + i], sx[j], a);
    y[row * hd + i] = a;
  }
}

// The same for the few rows of a decode step, where the kernel is latency-bound: P = blockDim.x
// / hd threads share each output, each summing hd / P of the products (chains of 16 instead of
// 128 dependent loads and FMAs), reduced through shared memory. One block per row.
__global__ void rotate_split_kernel(const float* x, float* y, const float* mt, int div, int n_kv, int hd) {
  __shared__ float sx[128];
  __shared__ float part[1024];
  const std::int64_t row = blockIdx.x;
  const float* Mt = mt + static_cast<std::int64_t>((row / div) % n_kv) * hd * hd;
  const int t = threadIdx.x, P = blockDim.x / hd, i = t % hd, p = t / hd, len = hd / P;
  for (int j = t; j < hd; j += blockDim.x) sx[j] = x[row * hd + j];
  __syncthreads();
  float a = 0.0f;
  for (int j = p * len; j < (p + 1) * len; ++j) a = fmaf(Mt[j * hd + i], sx[j], a);
  part[t] = a;
  __syncthreads();
  if (p == 0) {
    for (int q = 1; q < P; ++q) a += part[q * hd + i];
    y[row * hd + i] = a;
  }
}

__device__ __forceinline__ float round_f16(float x) {  // as pq/normalize.cpp: clamped to the f16 range
  return __half2float(__float2half_rn(fminf(fmaxf(x, -65504.0f), 65504.0f)));
}

// Value token norms (token_norm_f16 / token_normalize of pq/normalize.cpp): the norm of each
// row v [B * Hkv, n, hd] rounded to f16, stored at its coded index (*len - 1 - sinks for the
// new token of a decode step, n = 1; c0 + row % n with len null), u = v * (1 / norm).
__global__ void vnorm_kernel(const float* v, float* u, __half* norms, std::int64_t capacity, const std::int64_t* len,
                             int sinks, std::int64_t c0, int n, int hd) {
  __shared__ double red[32];
  const std::int64_t row = blockIdx.x, sh = row;
  double ss = 0.0;
  for (int i = threadIdx.x; i < hd; i += blockDim.x) ss += static_cast<double>(v[sh * hd + i]) * v[sh * hd + i];
  for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = ss;
  __syncthreads();
  double tot = 0.0;
  for (int w = 0; w < static_cast<int>(blockDim.x / 32); ++w) tot += red[w];
  const float nrm = round_f16(static_cast<float>(sqrt(tot)));
  const std::int64_t c = len ? *len - 1 - sinks : c0 + row % n;  // coded index (sinks are never coded)
  if (threadIdx.x == 0 && c >= 0) norms[row / n * capacity + c] = __float2half_rn(nrm);
  const float inv = nrm > 0.0f ? 1.0f / nrm : 0.0f;
  for (int i = threadIdx.x; i < hd; i += blockDim.x) u[sh * hd + i] = v[sh * hd + i] * inv;
}

// Keys into the current channel-group's staging rows gbuf [B * Hkv, group, hd] at slot (len - 1) % group.
__global__ void kgroup_stage_kernel(const float* k, float* gbuf, int group, const std::int64_t* len, int sinks, int hd) {
  const std::int64_t c = *len - 1 - sinks;  // coded index
  if (c < 0) return;
  const std::int64_t sh = blockIdx.x, slot = c % group;
  for (int i = threadIdx.x; i < hd; i += blockDim.x) gbuf[(sh * group + slot) * hd + i] = k[sh * hd + i];
}

// Prefill: keys [B * Hkv, n, hd] of coded indices c0 .. c0 + n - 1, those in [lo, hi), into the
// staging rows gbuf at slot c % group. One block per (sequence, kv head) and token.
__global__ void kgroup_stage_rows_kernel(const float* k, float* gbuf, int group, std::int64_t c0, int n, std::int64_t lo,
                                         std::int64_t hi, int hd) {
  const std::int64_t sh = blockIdx.x / n, j = blockIdx.x % n, c = c0 + j;
  if (c < lo || c >= hi) return;
  for (int i = threadIdx.x; i < hd; i += blockDim.x) gbuf[(sh * group + c % group) * hd + i] = k[(sh * n + j) * hd + i];
}

// When a group completes (len a multiple of group): per channel min and range over its tokens
// (channel_group_params of pq/normalize.cpp, f16 values) into params [B * Hkv, n_groups, 2, hd],
// and u = (x - min) / range into uk [B * Hkv, group, hd] for the encoder. One block per
// (sequence, kv head), a thread per channel.
// (A prefill passes len null and the coded count that completes the group.)
// kscale: [n_kv, hd] per-channel scales of a qpca codebook (the stored range is range / scale),
// or null for ones.
__global__ void kgroup_kernel(const float* gbuf, __half* params, float* uk, int group, std::int64_t n_groups,
                              const std::int64_t* len, int sinks, std::int64_t coded_host, int hd, const float* kscale,
                              int n_kv) {
  const std::int64_t coded = len ? *len - sinks : coded_host;
  if (coded <= 0 || coded % group != 0) return;
  const std::int64_t sh = blockIdx.x, g = coded / group - 1;
  for (int c = threadIdx.x; c < hd; c += blockDim.x) {
    const float* x = gbuf + sh * group * hd + c;
    float lo = x[0], hi = lo;
    for (int t = 1; t < group; ++t) lo = fminf(lo, x[t * hd]), hi = fmaxf(hi, x[t * hd]);
    const float m = round_f16(lo);
    const float sc = kscale ? kscale[(sh % n_kv) * hd + c] : 1.0f;
    float r = round_f16(fmaxf(0.0f, hi - m) / sc);
    if (m + r * sc < hi && r < 65504.0f) r = __half2float(__ushort_as_half(static_cast<unsigned short>(__half_as_ushort(__float2half_rn(r)) + 1)));
    params[((sh * n_groups + g) * 2 + 0) * hd + c] = __float2half_rn(m);
    params[((sh * n_groups + g) * 2 + 1) * hd + c] = __float2half_rn(r);
    for (int t = 0; t < group; ++t) uk[(sh * group + t) * hd + c] = r > 0.0f ? (x[t * hd] - m) / r : 0.0f;
  }
}

template <typename T>
__global__ void to_act_kernel(const float* x, T* y, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n; i += gridDim.x * static_cast<std::int64_t>(blockDim.x)) {
    y[i] = from_f<T>(x[i]);
  }
}

// h = T(silu(gate) * up), gu rows [gate (ffn) | up (ffn)].
template <typename T>
__global__ void swiglu_kernel(const float* gu, T* h, int ffn, int batch) {
  const std::int64_t n = static_cast<std::int64_t>(batch) * ffn;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n; i += gridDim.x * static_cast<std::int64_t>(blockDim.x)) {
    const std::int64_t b = i / ffn, j = i % ffn;
    const float g = gu[b * 2 * ffn + j], u = gu[b * 2 * ffn + ffn + j];
    h[i] = from_f<T>(g / (1.0f + expf(-g)) * u);
  }
}

__global__ void add_kernel(float* x, const float* y, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n; i += gridDim.x * static_cast<std::int64_t>(blockDim.x)) x[i] += y[i];
}

__device__ __forceinline__ std::uint64_t mix(std::uint64_t z) {  // splitmix64
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
__device__ __forceinline__ float unit(std::uint64_t seed, std::int64_t i) {  // [-1, 1)
  return static_cast<float>(static_cast<double>(mix(seed ^ mix(static_cast<std::uint64_t>(i))) >> 11) * 0x1.0p-52 - 1.0);
}

template <typename T>
__global__ void fill_random_kernel(T* p, std::int64_t n, std::uint64_t seed, float scale) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n; i += gridDim.x * static_cast<std::int64_t>(blockDim.x)) {
    const float u = unit(seed, i) * scale;
    if constexpr (std::is_same_v<T, bf16>) {
      p[i] = __float2bfloat16(u);
    } else if constexpr (std::is_same_v<T, __half>) {
      p[i] = __float2half(u);
    } else if constexpr (std::is_same_v<T, std::uint8_t>) {
      p[i] = static_cast<std::uint8_t>(mix(seed ^ mix(static_cast<std::uint64_t>(i))) & 0xff);
    } else {
      p[i] = u;
    }
  }
}

__global__ void fill_half_kernel(__half* p, std::int64_t n, float v) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n; i += gridDim.x * static_cast<std::int64_t>(blockDim.x)) p[i] = __float2half(v);
}

__global__ void identity_kernel(float* r, int n_mats, int hd) {  // n_mats [hd, hd] identity matrices
  const std::int64_t n = static_cast<std::int64_t>(n_mats) * hd * hd;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n; i += gridDim.x * static_cast<std::int64_t>(blockDim.x)) {
    const std::int64_t e = i % (static_cast<std::int64_t>(hd) * hd);
    r[i] = e / hd == e % hd ? 1.0f : 0.0f;
  }
}

__global__ void fill_const_kernel(float* p, std::int64_t n, float v) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n; i += gridDim.x * static_cast<std::int64_t>(blockDim.x)) p[i] = v;
}

__global__ void f32_to_f16_kernel(const float* x, __half* y, std::int64_t n) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n; i += gridDim.x * static_cast<std::int64_t>(blockDim.x)) y[i] = __float2half(x[i]);
}

unsigned grid_for(std::int64_t n) { return static_cast<unsigned>(std::min<std::int64_t>((n + 255) / 256, 65535)); }

}  // namespace

LlamaShape LlamaShape::llama3_8b() {
  LlamaShape s;
  s.hidden = 4096;
  s.n_layers = 32;
  s.n_heads = 32;
  s.n_kv_heads = 8;
  s.head_dim = 128;
  s.ffn = 14336;
  s.vocab = 128256;
  s.rope_theta = 500000.0;
  return s;
}

std::int64_t LlamaShape::n_params() const {
  const std::int64_t q = static_cast<std::int64_t>(n_heads) * head_dim, kv = static_cast<std::int64_t>(n_kv_heads) * head_dim;
  const std::int64_t layer = hidden * (q + 2 * kv) + q * hidden + 3ll * hidden * ffn + 2ll * hidden;
  return 2ll * vocab * hidden + n_layers * layer + hidden;
}

struct GpuLlama::Impl {
  cublasHandle_t blas = nullptr;
  int sm_count = 0;
  void* weights = nullptr;  // one allocation
  bool f32 = false;   // weights and GEMM inputs in f32 (else bf16)
  void *tok_embd = nullptr, *lm_head = nullptr;
  float* final_norm = nullptr;
  struct Layer {
    void *wqkv, *wo, *wgu, *wdown;
    float *attn_norm, *ffn_norm;
    void *kc, *vc;                  // fp16 K / V, or PQ key / value codes
    __half *cbk16, *cbv16;          // PQ codebooks for attention
    float *cbk32, *cbv32;           // and for the encoder
    __half *ring_k, *ring_v;        // PQ window: [B * n_kv, window, head_dim] fp16 (rotated when pq_rotate)
    float* rot_q_t = nullptr;       // pq_rotate: queries' Q^T [n_kv, head_dim, head_dim] (rotates q: y = Q q;
                                    // Q = the keys' R, or T^-T for a qpca codebook)
    float* rot_t = nullptr;         // pq_rotate: keys' R^T, same layout (rotates k: y = R x)
    float* rot_v = nullptr;         // pq_rotate: values' R (rotates the output back: y = R^T x)
    float* rot_v_t = nullptr;       // pq_rotate: values' R^T (rotates v)
    __half* vnorm = nullptr;        // pq_v_token_norm: [B * n_kv, capacity] f16
    __half* kgp = nullptr;          // pq_k_channel_group: [B * n_kv, n_groups, 2, head_dim] f16 (min, range)
    float* kscale = nullptr;        // pq_k_channel_group: [n_kv, head_dim] channel scales (ones but for qpca)
    float* gbuf = nullptr;          // pq_k_channel_group: the current group's keys [B * n_kv, group, head_dim]
    float* uk = nullptr;            // pq_k_channel_group: normalised group [B * n_kv, group, head_dim]
    float* uv = nullptr;            // pq_v_token_norm: normalised value [B * n_kv, head_dim]
    float *stage_k, *stage_v;       // PQ window: this step's K / V [B * n_kv, head_dim] f32 (side-stream encoder input)
    cudaEvent_t staged = nullptr;   // PQ window: K / V staged, the side stream may encode
  };
  std::vector<Layer> layers;
  void* cache = nullptr;  // one allocation: every layer's cache (+ PQ codebooks)
  void* work = nullptr;   // one allocation: activations, workspace
  int* tokens = nullptr;      // device [batch]
  int* pf_tokens = nullptr;   // device [R]: a prefill chunk's tokens
  float *pf_kr = nullptr, *pf_vr = nullptr, *pf_kx = nullptr, *pf_vx = nullptr, *pf_qr = nullptr, *pf_att = nullptr;
  int* host_tokens = nullptr; // pinned [batch]: the graph's copy reads it when it runs
  std::int64_t* len = nullptr;  // device: tokens in the cache once this step's token is appended
  float *x, *tmp, *qkv, *q, *k, *v, *att, *gu, *logits, *ws;
  void* xb;
  double* inv_freq;
  void* blas_ws = nullptr;
  int dense_splits = 0, pq_splits = 0;  // chosen for the capacity (the kernels skip empty splits)
  cudaGraphExec_t graph = nullptr;
  float *qr = nullptr, *att_r = nullptr;  // pq_rotate: rotated queries / outputs [B, n_heads, head_dim]
  void* norm_mem = nullptr;         // one allocation for the normalised variant's buffers
  void* history = nullptr;          // prefill_decode_history: K then V [B * n_kv, capacity, head_dim] fp16
  cudaStream_t side = nullptr;      // PQ window: the encoder's stream
  cudaEvent_t joined = nullptr;     // PQ window: the side stream's work of this step is done

  Impl() = default;
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;

  // The row-wise work a decode step (rows = batch) and a prefill chunk (rows = batch x n) share,
  // enqueued on `st` (gemm: on the cuBLAS handle's stream, the model's). y[rows, out] = x[rows, in] W^T with W [out, in] row-major and x's rows ldx
  // elements apart (column-major for cuBLAS: y^T = W x^T).
  void gemm(const void* W, const void* x, float* y, std::int64_t out, std::int64_t in, int rows,
            std::int64_t ldx) const;  // on the cuBLAS handle's stream (the model's)
  void embed(cudaStream_t st, const int* tok, int rows, const LlamaShape& s) const;  // x = tok_embd[tok]
  void rmsnorm(cudaStream_t st, const float* w, int rows, const LlamaShape& s) const;  // xb = norm(x) * w
  // After attention (att): x += att Wo^T, then the SwiGLU FFN block: x += down(silu(gate) * up).
  void block_tail(cudaStream_t st, const Layer& L, int rows, const LlamaShape& s) const;
  ~Impl() {  // also when the constructor throws halfway: whatever was created is released
    if (graph) cudaGraphExecDestroy(graph);
    for (auto& L : layers) {
      if (L.staged) cudaEventDestroy(L.staged);
    }
    if (joined) cudaEventDestroy(joined);
    if (side) cudaStreamDestroy(side);
    if (blas) cublasDestroy(blas);
    cudaFree(blas_ws);
    cudaFreeHost(host_tokens);
    cudaFree(weights);
    cudaFree(cache);
    cudaFree(work);
    cudaFree(norm_mem);
    cudaFree(history);
  }
};

namespace {

struct Sizes {
  std::int64_t q, kv, weights_elems, norms;
};
Sizes sizes(const LlamaShape& s) {
  Sizes z;
  z.q = static_cast<std::int64_t>(s.n_heads) * s.head_dim;
  z.kv = static_cast<std::int64_t>(s.n_kv_heads) * s.head_dim;
  const std::int64_t layer = s.hidden * (z.q + 2 * z.kv) + z.q * s.hidden + 3ll * s.hidden * s.ffn;
  z.weights_elems = 2ll * s.vocab * s.hidden + s.n_layers * layer;
  z.norms = (2ll * s.n_layers + 1) * s.hidden;
  return z;
}
std::int64_t codebook_elems(const LlamaShape& s) { return static_cast<std::int64_t>(s.n_kv_heads) * s.head_dim * 256; }
constexpr std::size_t kBlasWorkspace = 32u << 20;
// Activation rows R (layouts at the top of this file).
std::int64_t act_rows(const GpuLlamaOptions& o) { return static_cast<std::int64_t>(o.batch) * std::max(1, o.prefill_chunk); }
std::int64_t logit_rows(const GpuLlamaOptions& o) { return o.prefill_all_logits ? act_rows(o) : o.batch; }
// Prefill-only f32 buffers (pf_*) per activation row.
std::int64_t prefill_floats_per_row(const LlamaShape& s, const GpuLlamaOptions& o) {
  if (o.prefill_chunk < 1 || o.cache != GpuCache::kPQ) return 0;
  const Sizes z = sizes(s);
  return 4 * z.kv + 2 * z.q;
}
std::int64_t work_bytes(const LlamaShape& s, const GpuLlamaOptions& o, int splits_max) {
  const Sizes z = sizes(s);
  const std::int64_t B = o.batch, R = act_rows(o);
  const std::int64_t f32 = R * (2ll * s.hidden + (z.q + 2 * z.kv) + 2 * z.q + 2 * z.kv + 2ll * s.ffn) +
                           logit_rows(o) * s.vocab + B * s.n_heads * splits_max * (s.head_dim + 2) +
                           R * prefill_floats_per_row(s, o);
  const std::int64_t xb = R * std::max<std::int64_t>({s.hidden, z.q, s.ffn});
  return 4 * f32 + (o.f32_weights ? 4 : 2) * xb + 8ll * s.head_dim + 4ll * B + 4 * R + 8 + 1024 + 16 * 16;  // + takef's alignment
}

}  // namespace

// prefill_decode_history's buffer: one layer's fp16 K and V for the capacity.
static std::int64_t history_bytes(const LlamaShape& s, const GpuLlamaOptions& o) {
  if (o.cache != GpuCache::kPQ || o.prefill_chunk < 1 || !o.prefill_decode_history) return 0;
  return 2ll * o.batch * s.n_kv_heads * o.capacity * s.head_dim * 2;
}

// The normalised variant's buffers (Impl::Layer's rot_q_t .. uv, Impl's qr / att_r), all layers.
static std::int64_t norm_bytes(const LlamaShape& s, const GpuLlamaOptions& o) {
  if (o.cache != GpuCache::kPQ) return 0;
  const std::int64_t sh = static_cast<std::int64_t>(o.batch) * s.n_kv_heads, hd = s.head_dim, g = o.pq_norm_group;
  std::int64_t layer = 0, global = 0;
  if (o.pq_rotate) {
    layer += 4 * 4ll * s.n_kv_heads * hd * hd;
    global += 2ll * 4 * o.batch * s.n_heads * hd;
  }
  if (o.pq_v_token_norm) layer += 2 * sh * o.capacity + 4 * sh * hd;
  if (o.pq_k_channel_group) {
    layer += 2 * sh * ((o.capacity + g - 1) / g) * 2 * hd + 2 * 4 * sh * g * hd + 4ll * s.n_kv_heads * hd;
  }
  return s.n_layers * layer + global;
}

void GpuLlama::Impl::gemm(const void* W, const void* x, float* y, std::int64_t out, std::int64_t in, int rows,
                          std::int64_t ldx) const {
  const float one = 1.0f, zero = 0.0f;
  const cudaDataType_t wt = f32 ? CUDA_R_32F : CUDA_R_16BF;
  check_blas(cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(out), rows, static_cast<int>(in), &one, W, wt,
                          static_cast<int>(in), x, wt, static_cast<int>(ldx), &zero, y, CUDA_R_32F, static_cast<int>(out),
                          CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
             "cublasGemmEx");
}

void GpuLlama::Impl::embed(cudaStream_t st, const int* tok, int rows, const LlamaShape& s) const {
  if (f32) {
    embed_kernel<float><<<rows, 256, 0, st>>>(static_cast<const float*>(tok_embd), tok, x, s.hidden);
  } else {
    embed_kernel<bf16><<<rows, 256, 0, st>>>(static_cast<const bf16*>(tok_embd), tok, x, s.hidden);
  }
}

void GpuLlama::Impl::rmsnorm(cudaStream_t st, const float* w, int rows, const LlamaShape& s) const {
  if (f32) {
    rmsnorm_kernel<float><<<rows, 256, 0, st>>>(x, w, static_cast<float*>(xb), s.hidden, s.norm_eps);
  } else {
    rmsnorm_kernel<bf16><<<rows, 256, 0, st>>>(x, w, static_cast<bf16*>(xb), s.hidden, s.norm_eps);
  }
}

void GpuLlama::Impl::block_tail(cudaStream_t st, const Layer& L, int rows, const LlamaShape& s) const {
  const Sizes z = sizes(s);
  const std::int64_t nq = static_cast<std::int64_t>(rows) * z.q, nh = static_cast<std::int64_t>(rows) * s.hidden,
                     nf = static_cast<std::int64_t>(rows) * s.ffn;
  if (f32) {
    to_act_kernel<float><<<grid_for(nq), 256, 0, st>>>(att, static_cast<float*>(xb), nq);
  } else {
    to_act_kernel<bf16><<<grid_for(nq), 256, 0, st>>>(att, static_cast<bf16*>(xb), nq);
  }
  gemm(L.wo, xb, tmp, s.hidden, z.q, rows, z.q);
  add_kernel<<<grid_for(nh), 256, 0, st>>>(x, tmp, nh);
  rmsnorm(st, L.ffn_norm, rows, s);
  gemm(L.wgu, xb, gu, 2ll * s.ffn, s.hidden, rows, s.hidden);
  if (f32) {
    swiglu_kernel<float><<<grid_for(nf), 256, 0, st>>>(gu, static_cast<float*>(xb), s.ffn, rows);
  } else {
    swiglu_kernel<bf16><<<grid_for(nf), 256, 0, st>>>(gu, static_cast<bf16*>(xb), s.ffn, rows);
  }
  gemm(L.wdown, xb, tmp, s.hidden, s.ffn, rows, s.ffn);
  add_kernel<<<grid_for(nh), 256, 0, st>>>(x, tmp, nh);
}

std::int64_t GpuLlama::weight_bytes(const LlamaShape& s, bool f32_weights) {
  const Sizes z = sizes(s);
  return (f32_weights ? 4 : 2) * z.weights_elems + 4 * z.norms;
}

std::int64_t GpuLlama::cache_bytes(const LlamaShape& s, const GpuLlamaOptions& o) {
  const std::int64_t rows = static_cast<std::int64_t>(o.batch) * s.n_kv_heads * o.capacity;
  if (o.cache == GpuCache::kF16) return s.n_layers * 2 * rows * s.head_dim * 2;
  const std::int64_t window =
      o.pq_window > 0 ? 2ll * o.batch * s.n_kv_heads * ((o.pq_window + o.pq_sinks) * 2ll + 4) * s.head_dim : 0;
  return s.n_layers * (2 * rows * o.pq_M + 2 * codebook_elems(s) * (2 + 4) + window) + norm_bytes(s, o);
}

GpuLlama::GpuLlama(const LlamaShape& shape, const GpuLlamaOptions& options) : shape_(shape), opt_(options) {
  const LlamaShape& s = shape_;
  if (s.hidden < 1 || s.n_layers < 1 || s.n_heads < 1 || s.n_kv_heads < 1 || s.n_heads % s.n_kv_heads != 0 ||
      s.ffn < 1 || s.vocab < 1 || s.head_dim < 2 || s.head_dim > 128 || s.head_dim % 2 != 0) {
    throw InvalidArgumentError("GpuLlama: unsupported shape (head_dim even and at most 128, heads a multiple of kv heads)");
  }
  if (opt_.cache == GpuCache::kPQ && s.head_dim != 64 && s.head_dim != 128) {
    throw InvalidArgumentError("GpuLlama: the PQ cache needs head_dim 64 or 128");
  }
  if (opt_.batch < 1 || opt_.capacity < 1) throw InvalidArgumentError("GpuLlama: batch and capacity must be positive");
  if (!s.rope_inv_freq.empty() && s.rope_inv_freq.size() != static_cast<std::size_t>(s.head_dim / 2)) {
    throw InvalidArgumentError("GpuLlama: rope_inv_freq needs head_dim / 2 values");
  }
  if (opt_.prefill_chunk < 0) throw InvalidArgumentError("GpuLlama: prefill_chunk must be >= 0");
  if (opt_.cache == GpuCache::kPQ) {
    const int dsub = opt_.pq_M > 0 && s.head_dim % opt_.pq_M == 0 ? s.head_dim / opt_.pq_M : 0;
    if (dsub != 2 && dsub != 4) throw InvalidArgumentError("GpuLlama: PQ cache needs M = head_dim / 2 or head_dim / 4");
    if (opt_.pq_window < 0 || opt_.pq_window > opt_.capacity) {
      throw InvalidArgumentError("GpuLlama: pq_window must be in [0, capacity]");
    }
    if (opt_.pq_sinks < 0 || (opt_.pq_sinks > 0 && opt_.pq_window < 1)) {
      throw InvalidArgumentError("GpuLlama: pq_sinks needs an exact window (pq_window > 0)");
    }
    if ((opt_.pq_rotate || opt_.pq_k_channel_group || opt_.pq_v_token_norm) && opt_.pq_window < 1) {
      throw InvalidArgumentError("GpuLlama: the normalised PQ variant needs an exact window (pq_window > 0)");
    }
    if (opt_.pq_k_channel_group && (opt_.pq_norm_group < 64 || opt_.pq_norm_group % 64 != 0 ||
                                    opt_.pq_window < opt_.pq_norm_group)) {
      throw InvalidArgumentError("GpuLlama: key channel-groups need pq_norm_group a multiple of 64 and pq_window >= it");
    }
  }
  impl_ = std::make_unique<Impl>();
  Impl& m = *impl_;
  int dev = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  check(cudaDeviceGetAttribute(&m.sm_count, cudaDevAttrMultiProcessorCount, dev), "SM count");
  const int splits_max = 4 * m.sm_count;
  const std::int64_t need_w = weight_bytes(s, opt_.f32_weights), need_c = cache_bytes(s, opt_),
                     need_work = work_bytes(s, opt_, splits_max) + static_cast<std::int64_t>(kBlasWorkspace) +
                                 history_bytes(s, opt_);
  std::size_t free_b = 0, total_b = 0;
  check(cudaMemGetInfo(&free_b, &total_b), "cudaMemGetInfo");
  const double gib = 1024.0 * 1024.0 * 1024.0;
  if (static_cast<double>(need_w + need_c + need_work) > 0.98 * static_cast<double>(free_b)) {
    char msg[400];
    std::snprintf(msg, sizeof msg,
                  "GpuLlama: does not fit on the GPU: weights %.2f GiB + %s cache of %lld tokens x %d sequences %.2f GiB"
                  " + buffers %.2f GiB = %.2f GiB, %.2f GiB free of %.2f GiB",
                  need_w / gib, opt_.cache == GpuCache::kF16 ? "fp16" : "PQ", static_cast<long long>(opt_.capacity),
                  opt_.batch, need_c / gib, need_work / gib, (need_w + need_c + need_work) / gib, free_b / gib, total_b / gib);
    throw ResourceError(msg);
  }
  check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
  try {
    if (opt_.cache == GpuCache::kPQ && opt_.pq_window > 0) {
      check(cudaStreamCreateWithFlags(&impl_->side, cudaStreamNonBlocking), "cudaStreamCreate(side)");
      check(cudaEventCreateWithFlags(&impl_->joined, cudaEventDisableTiming), "cudaEventCreate");
    }
    check_blas(cublasCreate(&m.blas), "cublasCreate");
    check_blas(cublasSetStream(m.blas, stream_), "cublasSetStream");
    check(cudaMalloc(&m.blas_ws, kBlasWorkspace), "cudaMalloc(cuBLAS workspace)");
    check_blas(cublasSetWorkspace(m.blas, m.blas_ws, kBlasWorkspace), "cublasSetWorkspace");  // no allocation inside a graph

    const Sizes z = sizes(s);
    check(cudaMalloc(&m.weights, static_cast<std::size_t>(need_w)), "cudaMalloc(weights)");
    m.f32 = opt_.f32_weights;
    const int es = m.f32 ? 4 : 2;
    unsigned char* wp = static_cast<unsigned char*>(m.weights);
    auto take = [&](std::int64_t n) {
      void* p = wp;
      wp += n * es;
      return p;
    };
    m.tok_embd = take(static_cast<std::int64_t>(s.vocab) * s.hidden);
    m.lm_head = take(static_cast<std::int64_t>(s.vocab) * s.hidden);
    m.layers.resize(static_cast<std::size_t>(s.n_layers));
    for (auto& L : m.layers) {
      L.wqkv = take(s.hidden * (z.q + 2 * z.kv));
      L.wo = take(z.q * s.hidden);
      L.wgu = take(2ll * s.ffn * s.hidden);
      L.wdown = take(static_cast<std::int64_t>(s.hidden) * s.ffn);
    }
    float* np = reinterpret_cast<float*>(wp);
    for (auto& L : m.layers) {
      L.attn_norm = np;
      L.ffn_norm = np + s.hidden;
      np += 2 * s.hidden;
    }
    m.final_norm = np;

    check(cudaMalloc(&m.cache, static_cast<std::size_t>(std::max<std::int64_t>(need_c, 1))), "cudaMalloc(cache)");
    unsigned char* cp = static_cast<unsigned char*>(m.cache);
    const std::int64_t rows = static_cast<std::int64_t>(opt_.batch) * s.n_kv_heads * opt_.capacity;
    for (auto& L : m.layers) {
      const std::int64_t kind = opt_.cache == GpuCache::kF16 ? rows * s.head_dim * 2 : rows * opt_.pq_M;
      L.kc = cp;
      L.vc = cp + kind;
      cp += 2 * kind;
      if (opt_.cache == GpuCache::kPQ) {
        const std::int64_t e = codebook_elems(s);
        L.cbk32 = reinterpret_cast<float*>(cp);
        L.cbv32 = L.cbk32 + e;
        L.cbk16 = reinterpret_cast<__half*>(L.cbv32 + e);
        L.cbv16 = L.cbk16 + e;
        cp += e * (4 + 4 + 2 + 2);
        if (opt_.pq_window > 0) {
          const std::int64_t rw =
              static_cast<std::int64_t>(opt_.batch) * s.n_kv_heads * (opt_.pq_window + opt_.pq_sinks) * s.head_dim;
          const std::int64_t st = static_cast<std::int64_t>(opt_.batch) * s.n_kv_heads * s.head_dim;
          L.ring_k = reinterpret_cast<__half*>(cp);
          L.ring_v = L.ring_k + rw;
          L.stage_k = reinterpret_cast<float*>(L.ring_v + rw);
          L.stage_v = L.stage_k + st;
          cp += 2 * rw * 2 + 2 * st * 4;
          check(cudaEventCreateWithFlags(&L.staged, cudaEventDisableTiming), "cudaEventCreate");
        }
      }
    }
    if (const std::int64_t nb = norm_bytes(s, opt_); nb > 0) {  // the normalised variant's buffers
      const std::int64_t slack = 16ll * (9 * s.n_layers + 2);  // each buffer starts 16-byte aligned
      check(cudaMalloc(&m.norm_mem, static_cast<std::size_t>(nb + slack)), "cudaMalloc(normalisation buffers)");
      unsigned char* np8 = static_cast<unsigned char*>(m.norm_mem);
      auto takeb = [&](std::int64_t bytes) {
        void* p = np8;
        np8 += (bytes + 15) / 16 * 16;
        return p;
      };
      const std::int64_t shn = static_cast<std::int64_t>(opt_.batch) * s.n_kv_heads, hd = s.head_dim;
      const std::int64_t g = opt_.pq_norm_group, n_groups = (opt_.capacity + g - 1) / g;
      if (opt_.pq_rotate) {
        m.qr = static_cast<float*>(takeb(4ll * opt_.batch * s.n_heads * hd));
        m.att_r = static_cast<float*>(takeb(4ll * opt_.batch * s.n_heads * hd));
      }
      for (auto& L : m.layers) {
        if (opt_.pq_rotate) {
          L.rot_q_t = static_cast<float*>(takeb(4ll * s.n_kv_heads * hd * hd));
          L.rot_t = static_cast<float*>(takeb(4ll * s.n_kv_heads * hd * hd));
          L.rot_v = static_cast<float*>(takeb(4ll * s.n_kv_heads * hd * hd));
          L.rot_v_t = static_cast<float*>(takeb(4ll * s.n_kv_heads * hd * hd));
        }
        if (opt_.pq_v_token_norm) {
          L.vnorm = static_cast<__half*>(takeb(2 * shn * opt_.capacity));
          L.uv = static_cast<float*>(takeb(4 * shn * hd));
        }
        if (opt_.pq_k_channel_group) {
          L.kgp = static_cast<__half*>(takeb(2 * shn * n_groups * 2 * hd));
          L.kscale = static_cast<float*>(takeb(4ll * s.n_kv_heads * hd));
          L.gbuf = static_cast<float*>(takeb(4 * shn * g * hd));
          L.uk = static_cast<float*>(takeb(4 * shn * g * hd));
        }
      }
    }
    if (const std::int64_t hb = history_bytes(s, opt_); hb > 0) {
      check(cudaMalloc(&m.history, static_cast<std::size_t>(hb)), "cudaMalloc(prefill history)");
    }
    check(cudaMalloc(&m.work, static_cast<std::size_t>(need_work - history_bytes(s, opt_))), "cudaMalloc(work)");
    float* fp = static_cast<float*>(m.work);
    auto takef = [&](std::int64_t n) {  // 16-byte aligned (the kernels load float4)
      float* p = fp;
      fp += (n + 3) / 4 * 4;
      return p;
    };
    const int B = opt_.batch;
    const std::int64_t R = act_rows(opt_);
    m.x = takef(R * s.hidden);
    m.tmp = takef(R * s.hidden);
    m.qkv = takef(R * (z.q + 2 * z.kv));
    m.q = takef(R * z.q);
    m.att = takef(R * z.q);
    m.k = takef(R * z.kv);
    m.v = takef(R * z.kv);
    m.gu = takef(2 * R * s.ffn);
    m.logits = takef(logit_rows(opt_) * s.vocab);
    m.ws = takef(static_cast<std::int64_t>(B) * s.n_heads * splits_max * (s.head_dim + 2));
    if (prefill_floats_per_row(s, opt_) > 0) {
      m.pf_kr = takef(R * z.kv);
      m.pf_vr = takef(R * z.kv);
      m.pf_kx = takef(R * z.kv);
      m.pf_vx = takef(R * z.kv);
      m.pf_qr = takef(R * z.q);
      m.pf_att = takef(R * z.q);
    }
    m.xb = fp;
    unsigned char* xb_end = reinterpret_cast<unsigned char*>(fp) + es * R * std::max<std::int64_t>({s.hidden, z.q, s.ffn});
    m.inv_freq = reinterpret_cast<double*>((reinterpret_cast<std::uintptr_t>(xb_end) + 15) & ~std::uintptr_t{15});
    m.len = reinterpret_cast<std::int64_t*>(m.inv_freq + s.head_dim / 2);
    m.tokens = reinterpret_cast<int*>(m.len + 1);
    m.pf_tokens = m.tokens + B;
    check(cudaMallocHost(&m.host_tokens, sizeof(int) * static_cast<std::size_t>(B)), "cudaMallocHost(tokens)");
    check(cudaMemset(m.len, 0, sizeof(std::int64_t)), "cache length");
    // Splits for the capacity: the kernels read the length on the device and leave the splits
    // past it empty, so one choice (and one graph) serves every step.
    const DecodeShape cap{B, s.n_heads, s.n_kv_heads, s.head_dim, opt_.capacity, opt_.capacity};
    m.dense_splits = choose_splits(cap, m.sm_count);
    if (opt_.cache == GpuCache::kPQ) {
      PQDecodeArgs a;
      a.shape = cap;
      a.M = opt_.pq_M;
      m.pq_splits = choose_splits_mma(cap, m.sm_count, pq_mma_blocks_per_sm(a));
    }
    std::vector<double> inv = s.rope_inv_freq;
    if (inv.empty()) {
      inv.resize(static_cast<std::size_t>(s.head_dim / 2));
      for (int i = 0; i < s.head_dim / 2; ++i) inv[static_cast<std::size_t>(i)] = std::pow(s.rope_theta, -2.0 * i / s.head_dim);
    }
    check(cudaMemcpy(m.inv_freq, inv.data(), inv.size() * sizeof(double), cudaMemcpyHostToDevice), "upload inv_freq");
  } catch (...) {  // the buffers go with impl_; the stream is ours
    impl_.reset();
    cudaStreamDestroy(stream_);
    stream_ = nullptr;
    throw;
  }
}

GpuLlama::~GpuLlama() {
  impl_.reset();
  if (stream_) cudaStreamDestroy(stream_);
}

void GpuLlama::upload_weights(const LlamaHostWeights& w) {
  const LlamaShape& s = shape_;
  const Sizes z = sizes(s);
  Impl& m = *impl_;
  auto need = [&](const std::vector<float>& v, std::int64_t n, const char* name) {
    if (static_cast<std::int64_t>(v.size()) != n) {
      throw InvalidArgumentError(std::string("GpuLlama::upload_weights: ") + name + " has " + std::to_string(v.size()) +
                                 " values, the shape needs " + std::to_string(n));
    }
  };
  auto up_bf16 = [&](void* dst, std::initializer_list<const std::vector<float>*> parts) {  // or f32
    if (m.f32) {
      std::vector<float> h;
      for (const auto* p : parts) h.insert(h.end(), p->begin(), p->end());
      check(cudaMemcpy(dst, h.data(), h.size() * 4, cudaMemcpyHostToDevice), "upload weights");
      return;
    }
    std::vector<std::uint16_t> h;
    for (const auto* p : parts) {
      for (float f : *p) h.push_back(f32_to_bf16(f));
    }
    check(cudaMemcpy(dst, h.data(), h.size() * 2, cudaMemcpyHostToDevice), "upload weights");
  };
  auto up_f32 = [&](float* dst, const std::vector<float>& v) {
    check(cudaMemcpy(dst, v.data(), v.size() * 4, cudaMemcpyHostToDevice), "upload norms");
  };
  need(w.tok_embd, static_cast<std::int64_t>(s.vocab) * s.hidden, "tok_embd");
  need(w.lm_head, static_cast<std::int64_t>(s.vocab) * s.hidden, "lm_head");
  need(w.final_norm, s.hidden, "final_norm");
  if (static_cast<int>(w.layers.size()) != s.n_layers) throw InvalidArgumentError("GpuLlama::upload_weights: layer count");
  up_bf16(m.tok_embd, {&w.tok_embd});
  up_bf16(m.lm_head, {&w.lm_head});
  up_f32(m.final_norm, w.final_norm);
  for (int l = 0; l < s.n_layers; ++l) {
    const auto& L = w.layers[static_cast<std::size_t>(l)];
    const auto& D = m.layers[static_cast<std::size_t>(l)];
    need(L.wq, z.q * s.hidden, "wq");
    need(L.wk, z.kv * s.hidden, "wk");
    need(L.wv, z.kv * s.hidden, "wv");
    need(L.wo, z.q * s.hidden, "wo");
    need(L.w_gate, static_cast<std::int64_t>(s.ffn) * s.hidden, "w_gate");
    need(L.w_up, static_cast<std::int64_t>(s.ffn) * s.hidden, "w_up");
    need(L.w_down, static_cast<std::int64_t>(s.ffn) * s.hidden, "w_down");
    need(L.attn_norm, s.hidden, "attn_norm");
    need(L.ffn_norm, s.hidden, "ffn_norm");
    up_bf16(D.wqkv, {&L.wq, &L.wk, &L.wv});
    up_bf16(D.wo, {&L.wo});
    up_bf16(D.wgu, {&L.w_gate, &L.w_up});
    up_bf16(D.wdown, {&L.w_down});
    up_f32(D.attn_norm, L.attn_norm);
    up_f32(D.ffn_norm, L.ffn_norm);
  }
}

void GpuLlama::init_random(std::uint64_t seed) {
  const LlamaShape& s = shape_;
  const Sizes z = sizes(s);
  Impl& m = *impl_;
  auto fill = [&](void* p, std::int64_t n, float scale) {
    if (m.f32) {
      fill_random_kernel<float><<<grid_for(n), 256, 0, stream_>>>(static_cast<float*>(p), n, seed++, scale);
    } else {
      fill_random_kernel<bf16><<<grid_for(n), 256, 0, stream_>>>(static_cast<bf16*>(p), n, seed++, scale);
    }
  };
  const float hs = 1.0f / std::sqrt(static_cast<float>(s.hidden));
  fill(m.tok_embd, static_cast<std::int64_t>(s.vocab) * s.hidden, 1.0f);
  fill(m.lm_head, static_cast<std::int64_t>(s.vocab) * s.hidden, hs);
  for (auto& L : m.layers) {
    fill(L.wqkv, s.hidden * (z.q + 2 * z.kv), hs);
    fill(L.wo, z.q * s.hidden, 1.0f / std::sqrt(static_cast<float>(z.q)));
    fill(L.wgu, 2ll * s.ffn * s.hidden, hs);
    fill(L.wdown, static_cast<std::int64_t>(s.hidden) * s.ffn, 1.0f / std::sqrt(static_cast<float>(s.ffn)));
  }
  fill_const_kernel<<<grid_for(z.norms), 256, 0, stream_>>>(m.layers.empty() ? m.final_norm : m.layers[0].attn_norm, z.norms, 1.0f);
  if (opt_.cache == GpuCache::kPQ) {
    const std::int64_t e = codebook_elems(s);
    for (auto& L : m.layers) {
      fill_random_kernel<float><<<grid_for(e), 256, 0, stream_>>>(L.cbk32, e, seed++, 1.0f);
      fill_random_kernel<float><<<grid_for(e), 256, 0, stream_>>>(L.cbv32, e, seed++, 1.0f);
      f32_to_f16_kernel<<<grid_for(e), 256, 0, stream_>>>(L.cbk32, L.cbk16, e);
      f32_to_f16_kernel<<<grid_for(e), 256, 0, stream_>>>(L.cbv32, L.cbv16, e);
      if (L.rot_q_t) {  // a valid rotation
        for (float* r : {L.rot_q_t, L.rot_t, L.rot_v, L.rot_v_t}) identity_kernel<<<grid_for(e), 256, 0, stream_>>>(r, s.n_kv_heads, s.head_dim);
      }
      if (L.kscale) fill_const_kernel<<<1, 256, 0, stream_>>>(L.kscale, static_cast<std::int64_t>(s.n_kv_heads) * s.head_dim, 1.0f);
    }
  }
  check(cudaGetLastError(), "random weights");
  check(cudaStreamSynchronize(stream_), "random weights");
}

void GpuLlama::upload_codebooks(const LlamaHostCodebooks& cb) {
  if (opt_.cache != GpuCache::kPQ) throw InvalidArgumentError("GpuLlama::upload_codebooks: the cache is not PQ");
  const std::int64_t e = codebook_elems(shape_);
  if (static_cast<int>(cb.k.size()) != shape_.n_layers || static_cast<int>(cb.v.size()) != shape_.n_layers) {
    throw InvalidArgumentError("GpuLlama::upload_codebooks: one K and one V codebook per layer");
  }
  for (int l = 0; l < shape_.n_layers; ++l) {
    const auto& L = impl_->layers[static_cast<std::size_t>(l)];
    for (int kind = 0; kind < 2; ++kind) {
      const std::vector<float>& src = kind == 0 ? cb.k[static_cast<std::size_t>(l)] : cb.v[static_cast<std::size_t>(l)];
      if (static_cast<std::int64_t>(src.size()) != e) throw InvalidArgumentError("GpuLlama::upload_codebooks: size");
      std::vector<std::uint16_t> h(src.size());
      for (std::size_t i = 0; i < src.size(); ++i) h[i] = f32_to_f16(src[i]);
      check(cudaMemcpy(kind == 0 ? L.cbk32 : L.cbv32, src.data(), src.size() * 4, cudaMemcpyHostToDevice), "codebooks");
      check(cudaMemcpy(kind == 0 ? static_cast<void*>(L.cbk16) : static_cast<void*>(L.cbv16), h.data(), h.size() * 2,
                       cudaMemcpyHostToDevice),
            "codebooks");
    }
    if (opt_.pq_rotate) {
      const std::size_t want = static_cast<std::size_t>(shape_.n_kv_heads) * shape_.head_dim * shape_.head_dim;
      if (cb.rotation.size() != static_cast<std::size_t>(shape_.n_layers) || cb.rotation[static_cast<std::size_t>(l)].size() != want) {
        throw InvalidArgumentError("GpuLlama::upload_codebooks: pq_rotate needs one [n_kv_heads, head_dim, head_dim] rotation per layer");
      }
      const bool own_v = !cb.rotation_v.empty();
      if (own_v && (cb.rotation_v.size() != static_cast<std::size_t>(shape_.n_layers) ||
                    cb.rotation_v[static_cast<std::size_t>(l)].size() != want)) {
        throw InvalidArgumentError("GpuLlama::upload_codebooks: rotation_v needs one [n_kv_heads, head_dim, head_dim] per layer");
      }
      const int hd = shape_.head_dim;
      auto upload = [&](const std::vector<float>& R, float* r, float* rt) {  // R to r (if any), R^T to rt
        std::vector<float> Rt(R.size());
        for (int h = 0; h < shape_.n_kv_heads; ++h) {
          for (int i = 0; i < hd; ++i) {
            for (int j = 0; j < hd; ++j) {
              Rt[(static_cast<std::size_t>(h) * hd + j) * hd + i] = R[(static_cast<std::size_t>(h) * hd + i) * hd + j];
            }
          }
        }
        if (r) check(cudaMemcpy(r, R.data(), want * 4, cudaMemcpyHostToDevice), "rotations");
        check(cudaMemcpy(rt, Rt.data(), want * 4, cudaMemcpyHostToDevice), "rotations");
      };
      const bool own_q = !cb.rotation_q.empty();
      if (own_q && (cb.rotation_q.size() != static_cast<std::size_t>(shape_.n_layers) ||
                    cb.rotation_q[static_cast<std::size_t>(l)].size() != want)) {
        throw InvalidArgumentError("GpuLlama::upload_codebooks: rotation_q needs one [n_kv_heads, head_dim, head_dim] per layer");
      }
      upload(cb.rotation[static_cast<std::size_t>(l)], nullptr, L.rot_t);
      upload(own_q ? cb.rotation_q[static_cast<std::size_t>(l)] : cb.rotation[static_cast<std::size_t>(l)], nullptr, L.rot_q_t);
      upload(own_v ? cb.rotation_v[static_cast<std::size_t>(l)] : cb.rotation[static_cast<std::size_t>(l)], L.rot_v, L.rot_v_t);
    }
    if (opt_.pq_k_channel_group) {
      const std::size_t want = static_cast<std::size_t>(shape_.n_kv_heads) * shape_.head_dim;
      std::vector<float> ones(want, 1.0f);
      const std::vector<float>* sc = &ones;
      if (!cb.k_scale.empty()) {
        if (cb.k_scale.size() != static_cast<std::size_t>(shape_.n_layers) || cb.k_scale[static_cast<std::size_t>(l)].size() != want) {
          throw InvalidArgumentError("GpuLlama::upload_codebooks: k_scale needs one [n_kv_heads, head_dim] per layer");
        }
        sc = &cb.k_scale[static_cast<std::size_t>(l)];
      }
      check(cudaMemcpy(L.kscale, sc->data(), want * 4, cudaMemcpyHostToDevice), "channel scales");
    }
  }
}

void GpuLlama::fill_cache_random(std::int64_t n, std::uint64_t seed) {
  if (n < 0 || n >= opt_.capacity) throw InvalidArgumentError("GpuLlama::fill_cache_random: n must leave room for a step");
  const std::int64_t seqs = static_cast<std::int64_t>(opt_.batch) * shape_.n_kv_heads;
  for (auto& L : impl_->layers) {
    for (void* c : {L.kc, L.vc}) {
      // Every sequence's rows [0, n): one fill over the whole buffer is simpler and the rest is
      // overwritten by the steps that follow.
      if (opt_.cache == GpuCache::kF16) {
        const std::int64_t e = seqs * opt_.capacity * shape_.head_dim;
        fill_random_kernel<__half><<<grid_for(e), 256, 0, stream_>>>(static_cast<__half*>(c), e, seed++, 1.0f);
      } else {
        const std::int64_t e = seqs * opt_.capacity * opt_.pq_M;
        fill_random_kernel<std::uint8_t><<<grid_for(e), 256, 0, stream_>>>(static_cast<std::uint8_t*>(c), e, seed++, 0.0f);
      }
    }
    if (L.vnorm) {  // synthetic tokens: unit norms, channel-groups of min 0.5 and range 0.5
      const std::int64_t e = seqs * opt_.capacity;
      fill_half_kernel<<<grid_for(e), 256, 0, stream_>>>(L.vnorm, e, 1.0f);
    }
    if (L.kgp) {
      const std::int64_t g = opt_.pq_norm_group, e = seqs * ((opt_.capacity + g - 1) / g) * 2 * shape_.head_dim;
      fill_half_kernel<<<grid_for(e), 256, 0, stream_>>>(L.kgp, e, 0.5f);
    }
    if (opt_.cache == GpuCache::kPQ && opt_.pq_window > 0) {
      const std::int64_t e = seqs * (opt_.pq_window + opt_.pq_sinks) * shape_.head_dim;
      fill_random_kernel<__half><<<grid_for(e), 256, 0, stream_>>>(L.ring_k, e, seed++, 1.0f);
      fill_random_kernel<__half><<<grid_for(e), 256, 0, stream_>>>(L.ring_v, e, seed++, 1.0f);
    }
  }
  check(cudaMemcpyAsync(impl_->len, &n, sizeof n, cudaMemcpyHostToDevice, stream_), "cache length");
  check(cudaGetLastError(), "fill cache");
  check(cudaStreamSynchronize(stream_), "fill cache");
  pos_ = n;
}

void GpuLlama::download_f16_cache(int layer, std::vector<std::uint16_t>& k, std::vector<std::uint16_t>& v) const {
  if (opt_.cache != GpuCache::kF16) throw InvalidArgumentError("GpuLlama::download_f16_cache: not an fp16 cache");
  if (layer < 0 || layer >= shape_.n_layers) throw InvalidArgumentError("GpuLlama::download_f16_cache: no such layer");
  check(cudaStreamSynchronize(stream_), "download cache");
  const auto& L = impl_->layers[static_cast<std::size_t>(layer)];
  const std::size_t rows = static_cast<std::size_t>(opt_.batch) * shape_.n_kv_heads, hd = static_cast<std::size_t>(shape_.head_dim);
  const std::size_t n = static_cast<std::size_t>(pos_), cap = static_cast<std::size_t>(opt_.capacity);
  k.resize(rows * n * hd);
  v.resize(k.size());
  if (n == 0) return;
  // rows of `n * hd` halves from rows of `cap * hd`
  check(cudaMemcpy2D(k.data(), n * hd * 2, L.kc, cap * hd * 2, n * hd * 2, rows, cudaMemcpyDeviceToHost), "download K");
  check(cudaMemcpy2D(v.data(), n * hd * 2, L.vc, cap * hd * 2, n * hd * 2, rows, cudaMemcpyDeviceToHost), "download V");
}

void GpuLlama::reset() {
  check(cudaStreamSynchronize(stream_), "reset");
  check(cudaMemset(impl_->len, 0, sizeof(std::int64_t)), "cache length");
  pos_ = 0;
}

const float* GpuLlama::step(const std::vector<int>& tokens) {
  Impl& m = *impl_;
  const int B = opt_.batch;
  if (static_cast<int>(tokens.size()) != B) throw InvalidArgumentError("GpuLlama::step: one token per sequence");
  for (int t : tokens) {
    if (t < 0 || t >= shape_.vocab) {
      throw InvalidArgumentError("GpuLlama::step: token " + std::to_string(t) + " out of the vocabulary");
    }
  }
  if (pos_ >= opt_.capacity) {
    throw InvalidArgumentError("GpuLlama::step: the cache is full (" + std::to_string(opt_.capacity) + " tokens)");
  }
  check(cudaStreamSynchronize(stream_), "previous step");  // its copy of host_tokens is done
  std::memcpy(m.host_tokens, tokens.data(), sizeof(int) * tokens.size());
  if (!opt_.cuda_graph) {
    enqueue_step();
  } else {
    if (!m.graph) {
      cudaGraph_t g = nullptr;
      check(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeRelaxed), "cudaStreamBeginCapture");
      try {
        enqueue_step();
      } catch (...) {
        cudaStreamEndCapture(stream_, &g);
        if (g) cudaGraphDestroy(g);
        throw;
      }
      check(cudaStreamEndCapture(stream_, &g), "cudaStreamEndCapture");
      const cudaError_t err = cudaGraphInstantiate(&m.graph, g, 0);
      cudaGraphDestroy(g);
      check(err, "cudaGraphInstantiate");
    }
    check(cudaGraphLaunch(m.graph, stream_), "cudaGraphLaunch");
  }
  ++pos_;
  return m.logits;
}

void GpuLlama::enqueue_step() {
  const LlamaShape& s = shape_;
  const Sizes z = sizes(s);
  Impl& m = *impl_;
  const int B = opt_.batch;
  check(cudaMemcpyAsync(m.tokens, m.host_tokens, sizeof(int) * static_cast<std::size_t>(B), cudaMemcpyHostToDevice,
                        stream_),
        "tokens");
  advance_kernel<<<1, 1, 0, stream_>>>(m.len);
  m.embed(stream_, m.tokens, B, s);
  // Host-side shape: the capacity (checks, splits); the kernels read the length from m.len.
  const DecodeShape ds{B, s.n_heads, s.n_kv_heads, s.head_dim, opt_.capacity, opt_.capacity};
  const float scale = 1.0f / std::sqrt(static_cast<float>(s.head_dim));
  const int rot_threads = s.head_dim * std::min(16, 1024 / s.head_dim);  // rotate_split_kernel: head_dim x P
  for (const auto& L : m.layers) {
    m.rmsnorm(stream_, L.attn_norm, B, s);
    m.gemm(L.wqkv, m.xb, m.qkv, z.q + 2 * z.kv, s.hidden, B, s.hidden);
    rope_split_kernel<<<B, 256, 0, stream_>>>(m.qkv, m.inv_freq, m.len, 0, 1, m.q, m.k, m.v, s.n_heads,
                                              s.n_kv_heads, s.head_dim, s.rope_interleaved);
    if (opt_.cache == GpuCache::kF16) {
      append_f16_kernel<<<B * s.n_kv_heads, s.head_dim, 0, stream_>>>(m.k, m.v, static_cast<__half*>(L.kc),
                                                                      static_cast<__half*>(L.vc), opt_.capacity, m.len, 0, 1,
                                                                      s.n_kv_heads, s.head_dim);
      DenseDecodeArgs a{ds, L.kc, L.vc, m.q, m.att, scale};
      a.n_tokens_device = m.len;
      dense_decode_attention(a, m.ws, m.dense_splits, stream_);
    } else {
      const bool win = opt_.pq_window > 0;
      PQEncodeArgs e;
      e.n_seq_heads = B * s.n_kv_heads;
      e.n_kv_heads = s.n_kv_heads;
      e.n_tokens = 1;
      e.head_dim = s.head_dim;
      e.M = opt_.pq_M;
      e.ksub = 256;
      e.cb_head_stride = codebook_elems(s) / s.n_kv_heads;
      e.capacity = opt_.capacity;
      e.len_device = m.len;
      e.len_offset = opt_.pq_sinks;  // codes count from the first token after the sinks
      cudaStream_t enc = stream_;
      const float *ek = m.k, *ev = m.v;
      const int G = s.n_heads / s.n_kv_heads, rows_kv = B * s.n_kv_heads;
      if (win) {  // the new token into the exact window now; its codes on the side stream
        const std::size_t bytes = sizeof(float) * static_cast<std::size_t>(B) * z.kv;
        if (opt_.pq_rotate) {  // staged rotated: the window and the codes live in the codebooks' space
          rotate_split_kernel<<<rows_kv, rot_threads, 0, stream_>>>(m.k, L.stage_k, L.rot_t, 1, s.n_kv_heads, s.head_dim);
          rotate_split_kernel<<<rows_kv, rot_threads, 0, stream_>>>(m.v, L.stage_v, L.rot_v_t, 1, s.n_kv_heads, s.head_dim);
        } else {
          check(cudaMemcpyAsync(L.stage_k, m.k, bytes, cudaMemcpyDeviceToDevice, stream_), "stage K");
          check(cudaMemcpyAsync(L.stage_v, m.v, bytes, cudaMemcpyDeviceToDevice, stream_), "stage V");
        }
        append_ring_kernel<<<rows_kv, s.head_dim, 0, stream_>>>(L.stage_k, L.stage_v, L.ring_k, L.ring_v,
                                                                opt_.pq_sinks, opt_.pq_window, m.len, 0, 1, s.n_kv_heads,
                                                                s.head_dim);
        check(cudaEventRecord(L.staged, stream_), "cudaEventRecord");
        check(cudaStreamWaitEvent(m.side, L.staged, 0), "cudaStreamWaitEvent");
        enc = m.side;
        ek = L.stage_k;
        ev = L.stage_v;
        if (opt_.pq_v_token_norm) {
          vnorm_kernel<<<rows_kv, 128, 0, enc>>>(L.stage_v, L.uv, L.vnorm, opt_.capacity, m.len, opt_.pq_sinks, 0,
                                                 1, s.head_dim);
          ev = L.uv;
        }
      }
      if (opt_.pq_k_channel_group) {  // a group's keys are encoded together once it completes
        const int g = opt_.pq_norm_group;
        kgroup_stage_kernel<<<rows_kv, s.head_dim, 0, enc>>>(L.stage_k, L.gbuf, g, m.len, opt_.pq_sinks, s.head_dim);
        kgroup_kernel<<<rows_kv, s.head_dim, 0, enc>>>(L.gbuf, L.kgp, L.uk, g, (opt_.capacity + g - 1) / g, m.len,
                                                       opt_.pq_sinks, 0, s.head_dim, L.kscale, s.n_kv_heads);
        PQEncodeArgs ge = e;
        ge.n_tokens = g;
        ge.every = g;
        ge.x = L.uk;
        ge.centroids = L.cbk32;
        ge.codes = static_cast<std::uint8_t*>(L.kc);
        ge.order = PQCodeOrder::kMmaKeys;
        pq_encode(ge, enc);
      } else {
        e.x = ek;
        e.centroids = L.cbk32;
        e.codes = static_cast<std::uint8_t*>(L.kc);
        e.order = PQCodeOrder::kMmaKeys;
        pq_encode(e, enc);
      }
      e.x = ev;
      e.centroids = L.cbv32;
      e.codes = static_cast<std::uint8_t*>(L.vc);
      e.order = PQCodeOrder::kMmaValues;
      pq_encode(e, enc);
      const float* qa = m.q;
      float* out = m.att;
      if (opt_.pq_rotate) {
        rotate_split_kernel<<<B * s.n_heads, rot_threads, 0, stream_>>>(m.q, m.qr, L.rot_q_t, G, s.n_kv_heads, s.head_dim);
        qa = m.qr;
        out = m.att_r;
      }
      PQDecodeArgs a;
      a.shape = ds;
      a.M = opt_.pq_M;
      a.ksub = 256;
      a.codes_k = static_cast<const std::uint8_t*>(L.kc);
      a.codes_v = static_cast<const std::uint8_t*>(L.vc);
      a.cb_k = L.cbk16;
      a.cb_v = L.cbv16;
      a.cb_k_head_stride = a.cb_v_head_stride = codebook_elems(s) / s.n_kv_heads;
      a.q = qa;
      a.out = out;
      a.scale = scale;
      a.kernel = PQKernel::kMma;
      a.n_tokens_device = m.len;
      if (opt_.pq_v_token_norm) a.v_token_norm = L.vnorm;
      if (opt_.pq_k_channel_group) {
        a.k_group_params = L.kgp;
        a.norm_group = opt_.pq_norm_group;
      }
      if (win) {
        a.n_tokens_device_minus = opt_.pq_window + opt_.pq_sinks;  // codes: all but the sinks and the window
        const int wb = opt_.pq_window + opt_.pq_sinks;
        DenseDecodeArgs w{{B, s.n_heads, s.n_kv_heads, s.head_dim, wb, wb}, L.ring_k, L.ring_v, qa, out, scale};
        w.n_tokens_device = m.len;  // clamped to sinks + window
        pq_window_decode_attention(a, w, m.ws, m.pq_splits, stream_);
      } else {
        pq_decode_attention(a, m.ws, m.pq_splits, stream_);
      }
      if (opt_.pq_rotate) {  // the output back from the codebooks' space
        rotate_split_kernel<<<B * s.n_heads, rot_threads, 0, stream_>>>(m.att_r, m.att, L.rot_v, G, s.n_kv_heads, s.head_dim);
      }
    }
    m.block_tail(stream_, L, B, s);
  }
  m.rmsnorm(stream_, m.final_norm, B, s);
  m.gemm(m.lm_head, m.xb, m.logits, s.vocab, s.hidden, B, s.hidden);
  if (m.side) {  // join the encoder's stream: this step's codes are written when the step ends
    check(cudaEventRecord(m.joined, m.side), "cudaEventRecord");
    check(cudaStreamWaitEvent(stream_, m.joined, 0), "cudaStreamWaitEvent");
  }
  check(cudaGetLastError(), "decode step");
}

const float* GpuLlama::prefill(const std::vector<int>& tokens, int n) {
  Impl& m = *impl_;
  const int B = opt_.batch;
  if (opt_.prefill_chunk < 1) throw InvalidArgumentError("GpuLlama::prefill: built with prefill_chunk 0");
  if (n < 1 || n > opt_.prefill_chunk) {
    throw InvalidArgumentError("GpuLlama::prefill: " + std::to_string(n) + " tokens per sequence, the chunk takes 1 to " +
                               std::to_string(opt_.prefill_chunk));
  }
  if (tokens.size() != static_cast<std::size_t>(B) * static_cast<std::size_t>(n)) {
    throw InvalidArgumentError("GpuLlama::prefill: expected batch x n tokens");
  }
  for (int t : tokens) {
    if (t < 0 || t >= shape_.vocab) {
      throw InvalidArgumentError("GpuLlama::prefill: token " + std::to_string(t) + " out of the vocabulary");
    }
  }
  if (pos_ + n > opt_.capacity) {
    throw InvalidArgumentError("GpuLlama::prefill: " + std::to_string(n) + " tokens at position " + std::to_string(pos_) +
                               " overflow the cache (" + std::to_string(opt_.capacity) + " tokens)");
  }
  if (shape_.head_dim % 8 != 0) throw UnsupportedError("GpuLlama::prefill: head_dim must be a multiple of 8");
  check(cudaMemcpyAsync(m.pf_tokens, tokens.data(), sizeof(int) * tokens.size(), cudaMemcpyHostToDevice, stream_),
        "prefill tokens");
  enqueue_prefill(n);
  check(cudaStreamSynchronize(stream_), "prefill");  // the host vector is pageable: keep it simple and safe
  pos_ += n;
  return m.logits;
}

// One prefill chunk of T tokens per sequence at positions p0 .. p0 + T - 1, eagerly on stream_
// (after whatever the side stream of earlier steps enqueued: those steps joined it).
void GpuLlama::enqueue_prefill(int T) {
  const LlamaShape& s = shape_;
  const Sizes z = sizes(s);
  Impl& m = *impl_;
  const int B = opt_.batch, R = B * T, Hkv = s.n_kv_heads, hd = s.head_dim, G = s.n_heads / Hkv;
  const std::int64_t p0 = pos_;
  const int es = m.f32 ? 4 : 2;
  m.embed(stream_, m.pf_tokens, R, s);
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const bool pq = opt_.cache == GpuCache::kPQ, win = pq && opt_.pq_window > 0;
  const int S = opt_.pq_sinks, W = opt_.pq_window;
  // PQ: the chunk's tokens that get codes (all but sinks): rows j0 .. T - 1, coded indices c0 ..
  const int j0 = static_cast<int>(std::clamp<std::int64_t>(S - p0, 0, T)), nc = T - j0;
  const std::int64_t c0 = p0 + j0 - S;
  for (const auto& L : m.layers) {
    m.rmsnorm(stream_, L.attn_norm, R, s);
    m.gemm(L.wqkv, m.xb, m.qkv, z.q + 2 * z.kv, s.hidden, R, s.hidden);
    rope_split_kernel<<<R, 256, 0, stream_>>>(m.qkv, m.inv_freq, nullptr, p0, T, m.q, m.k, m.v, s.n_heads, Hkv, hd,
                                              s.rope_interleaved);
    PrefillAttentionArgs a;
    a.batch = B;
    a.n_heads = s.n_heads;
    a.n_kv_heads = Hkv;
    a.head_dim = hd;
    a.n_q = T;
    a.pos0 = p0;
    a.q = m.q;
    a.out = m.att;
    a.scale = scale;
    a.kernel = opt_.prefill_tensor_cores && (hd == 64 || hd == 128) ? PrefillKernel::kMma : PrefillKernel::kCudaCores;
    if (!pq) {
      append_f16_kernel<<<R * Hkv, hd, 0, stream_>>>(m.k, m.v, static_cast<__half*>(L.kc), static_cast<__half*>(L.vc),
                                                     opt_.capacity, nullptr, p0, T, Hkv, hd);
      a.cache_k = L.kc;
      a.cache_v = L.vc;
      a.cache_capacity = opt_.capacity;
      prefill_attention(a, stream_);
    } else {
      const float *kr = m.k, *vr = m.v;  // the chunk's K/V in the codebooks' space
      if (opt_.pq_rotate) {
        rotate_kernel<<<R * Hkv, hd, 0, stream_>>>(m.k, m.pf_kr, L.rot_t, 1, Hkv, hd);
        rotate_kernel<<<R * Hkv, hd, 0, stream_>>>(m.v, m.pf_vr, L.rot_v_t, 1, Hkv, hd);
        rotate_kernel<<<R * s.n_heads, hd, 0, stream_>>>(m.q, m.pf_qr, L.rot_q_t, G, Hkv, hd);
        kr = m.pf_kr;
        vr = m.pf_vr;
        a.q = m.pf_qr;
        a.out = m.pf_att;
      }
      auto encode = [&] {  // the chunk's codes (coded indices c0 .. c0 + nc - 1)
        if (nc < 1) return;
        const unsigned rows = static_cast<unsigned>(B * Hkv * nc);
        gather_rows_kernel<<<rows, hd, 0, stream_>>>(kr, m.pf_kx, T, Hkv, j0, nc, hd);
        gather_rows_kernel<<<rows, hd, 0, stream_>>>(vr, m.pf_vx, T, Hkv, j0, nc, hd);
        PQEncodeArgs e;
        e.n_seq_heads = B * Hkv;
        e.n_kv_heads = Hkv;
        e.head_dim = hd;
        e.M = opt_.pq_M;
        e.ksub = 256;
        e.cb_head_stride = codebook_elems(s) / Hkv;
        e.capacity = opt_.capacity;
        if (opt_.pq_k_channel_group) {  // every group the chunk completes, encoded whole
          const int g = opt_.pq_norm_group;
          for (std::int64_t gi = c0 / g; gi * g < c0 + nc; ++gi) {
            const std::int64_t lo = gi * g, hi = lo + g;
            kgroup_stage_rows_kernel<<<rows, hd, 0, stream_>>>(m.pf_kx, L.gbuf, g, c0, nc, lo, hi, hd);
            if (hi > c0 + nc) break;  // incomplete: its keys wait in gbuf for the next tokens
            kgroup_kernel<<<B * Hkv, hd, 0, stream_>>>(L.gbuf, L.kgp, L.uk, g, (opt_.capacity + g - 1) / g, nullptr, 0,
                                                       hi, hd, L.kscale, Hkv);
            PQEncodeArgs ge = e;
            ge.n_tokens = g;
            ge.pos0 = lo;
            ge.x = L.uk;
            ge.centroids = L.cbk32;
            ge.codes = static_cast<std::uint8_t*>(L.kc);
            ge.order = PQCodeOrder::kMmaKeys;
            pq_encode(ge, stream_);
          }
        } else {
          PQEncodeArgs ke = e;
          ke.n_tokens = nc;
          ke.pos0 = c0;
          ke.x = m.pf_kx;
          ke.centroids = L.cbk32;
          ke.codes = static_cast<std::uint8_t*>(L.kc);
          ke.order = PQCodeOrder::kMmaKeys;
          pq_encode(ke, stream_);
        }
        const float* ev = m.pf_vx;
        if (opt_.pq_v_token_norm) {  // normalised in place: pf_vx is not read again
          vnorm_kernel<<<rows, 128, 0, stream_>>>(m.pf_vx, m.pf_vx, L.vnorm, opt_.capacity, nullptr, 0, c0, nc, hd);
        }
        PQEncodeArgs ve = e;
        ve.n_tokens = nc;
        ve.pos0 = c0;
        ve.x = ev;
        ve.centroids = L.cbv32;
        ve.codes = static_cast<std::uint8_t*>(L.vc);
        ve.order = PQCodeOrder::kMmaValues;
        pq_encode(ve, stream_);
      };
      a.M = opt_.pq_M;
      a.codes_k = static_cast<const std::uint8_t*>(L.kc);
      a.codes_v = static_cast<const std::uint8_t*>(L.vc);
      a.cb_k = L.cbk16;
      a.cb_v = L.cbv16;
      a.cb_k_head_stride = a.cb_v_head_stride = codebook_elems(s) / Hkv;
      a.codes_capacity = opt_.capacity;
      a.codes_offset = S;
      if (opt_.pq_k_channel_group) {
        a.k_group_params = L.kgp;
        a.norm_group = opt_.pq_norm_group;
      }
      if (opt_.pq_v_token_norm) a.v_token_norm = L.vnorm;
      auto decode_history = [&] {  // the coded history once for every block of queries
        if (!m.history || a.n_codes < 1) return;
        const std::int64_t half = static_cast<std::int64_t>(B) * Hkv * opt_.capacity * hd;
        pq_decode_history(a, m.history, static_cast<__half*>(m.history) + half, opt_.capacity, stream_);
      };
      if (win) {  // codes older than the window (counted from the chunk's first token), sinks + ring, the chunk
        a.n_codes = std::max<std::int64_t>(0, p0 + 1 - W - S);
        decode_history();
        a.ring_k = L.ring_k;
        a.ring_v = L.ring_v;
        a.sinks = S;
        a.window = W;
        a.ring_min_pos = p0 + 1 - W;
        a.chunk_k = kr;
        a.chunk_v = vr;
        prefill_attention(a, stream_);
        append_ring_kernel<<<R * Hkv, hd, 0, stream_>>>(kr, vr, L.ring_k, L.ring_v, S, W, nullptr, p0, T, Hkv, hd);
        encode();
      } else {  // stress mode: every token from its codes, the chunk's own too
        encode();
        a.n_codes = p0 + T;
        decode_history();
        prefill_attention(a, stream_);
      }
      if (opt_.pq_rotate) rotate_kernel<<<R * s.n_heads, hd, 0, stream_>>>(m.pf_att, m.att, L.rot_v, G, Hkv, hd);
    }
    m.block_tail(stream_, L, R, s);
  }
  m.rmsnorm(stream_, m.final_norm, R, s);
  if (opt_.prefill_all_logits) {
    m.gemm(m.lm_head, m.xb, m.logits, s.vocab, s.hidden, R, s.hidden);
  } else {  // each sequence's last row: rows T - 1, 2T - 1, ... of xb
    m.gemm(m.lm_head, static_cast<unsigned char*>(m.xb) + static_cast<std::size_t>(es) * (T - 1) * s.hidden,
           m.logits, s.vocab, s.hidden, B, static_cast<std::int64_t>(T) * s.hidden);
  }
  set_len_kernel<<<1, 1, 0, stream_>>>(m.len, p0 + T);
  check(cudaGetLastError(), "prefill");
}

}  // namespace million::cuda
