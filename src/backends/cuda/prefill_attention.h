// CUDA attention for a chunk of queries (prefill): n_q consecutive positions of each sequence
// attend causally over up to four sources of keys and values in one online softmax —
//   (1) a dense fp16 cache holding every position up to the chunk's last,
//   (2) PQ codes (decoded in the kernel: the decode kernels' code layouts, codebooks, key
//       channel-groups and value token norms),
//   (3) the exact fp16 sinks + ring buffer of GpuLlama's PQ window,
//   (4) the chunk's own K/V in f32 (read rounded to fp16, as the window stores them).
// Two kernels: tensor cores (FlashAttention-2-like, fp16 operands) and f32 on CUDA cores (the
// precise one, and any head_dim); the specification is dense_attention_ref over the K/V each
// position holds (the tests).
// Not here: RoPE, rotations (queries and the chunk's K/V arrive in the codebooks' space; the
// caller rotates outputs back), writing the cache.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace million::cuda {

/// kCudaCores: f32 throughout (~1e-6 of the output scale), any head_dim in the supported range.
/// kMma: tensor cores (mma.sync m16n8k16), queries, keys, values and probabilities in fp16 with
/// f32 accumulation (~1e-3 of the output scale, as FlashAttention); head_dim 64 or 128.
enum class PrefillKernel { kCudaCores, kMma };

struct PrefillAttentionArgs {
  int batch = 1;
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;            ///< a multiple of 8, at most 128
  int n_q = 0;                 ///< queries per sequence: positions pos0 .. pos0 + n_q - 1
  std::int64_t pos0 = 0;
  const float* q = nullptr;    ///< [batch, n_q, n_heads, head_dim] f32
  float* out = nullptr;        ///< same layout
  float scale = 0.0f;
  PrefillKernel kernel = PrefillKernel::kMma;

  /// (1) Dense fp16 cache [batch, n_kv_heads, cache_capacity, head_dim] holding positions 0 ..
  /// pos0 + n_q - 1 (the chunk already appended): token t is visible to the query at p iff t <= p.
  const void* cache_k = nullptr;
  const void* cache_v = nullptr;
  std::int64_t cache_capacity = 0;

  /// (2) PQ codes [batch, n_kv_heads, codes_capacity, M] u8 in the kMma kernel's orders (keys /
  /// values, interleave_pq_codes), codebooks [n_kv_heads, M, 256, dsub] fp16; code c holds
  /// position c + codes_offset, n_codes of them are read, each visible to the query at p iff
  /// its position <= p. Normalisations as PQDecodeArgs (key channel-groups of norm_group codes,
  /// value token norms; null = none).
  int M = 0;
  const std::uint8_t* codes_k = nullptr;
  const std::uint8_t* codes_v = nullptr;
  const void* cb_k = nullptr;
  const void* cb_v = nullptr;
  std::int64_t cb_k_head_stride = 0;
  std::int64_t cb_v_head_stride = 0;
  const void* k_group_params = nullptr;
  const void* v_token_norm = nullptr;
  int norm_group = 0;
  std::int64_t codes_capacity = 0;
  std::int64_t n_codes = 0;
  std::int64_t codes_offset = 0;
  /// The codes decoded once for every block (pq_decode_history sets these): rows
  /// [batch, n_kv_heads, decoded_capacity, head_dim] fp16 of codes 0 .. decoded_n - 1, read
  /// instead of decoding those codes in each block (the mma kernel's values; the CUDA-core
  /// kernel then reads normalised codes rounded to fp16 rather than in f32).
  const void* decoded_k = nullptr;
  const void* decoded_v = nullptr;
  std::int64_t decoded_capacity = 0;
  std::int64_t decoded_n = 0;

  /// (3) Exact fp16 buffer [batch, n_kv_heads, sinks + window, head_dim] as GpuLlama's PQ window
  /// keeps it before the chunk: slot k < sinks holds position k (if < pos0); ring slot sinks + j
  /// the newest position p < pos0 with p >= sinks and (p - sinks) % window == j. Visible: the
  /// sinks, and ring positions >= ring_min_pos. Null: no such source.
  const void* ring_k = nullptr;
  const void* ring_v = nullptr;
  int sinks = 0;
  int window = 0;
  std::int64_t ring_min_pos = 0;

  /// (4) The chunk's own K/V [batch, n_q, n_kv_heads, head_dim] f32: token j (position pos0 + j)
  /// is visible to query i iff j <= i. Null: no such source.
  const float* chunk_k = nullptr;
  const float* chunk_v = nullptr;
};

/// Decodes codes 0 .. a.n_codes - 1 of the PQ source (normalisations applied, rounded to fp16
/// as the kernels read them) into k_out / v_out [batch, n_kv_heads, capacity, head_dim] fp16
/// and points a.decoded_* at them: a long coded history is then decoded once per call instead
/// of once per block of queries. Launches on `stream`.
void pq_decode_history(PrefillAttentionArgs& a, void* k_out, void* v_out, std::int64_t capacity, cudaStream_t stream);

/// Throws million::InvalidArgumentError for unsupported shapes (head_dim, a GQA group over 64,
/// PQ dsub other than 2 or 4, no source); launches on `stream`.
void prefill_attention(const PrefillAttentionArgs& a, cudaStream_t stream);

}  // namespace million::cuda
