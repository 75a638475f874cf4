// A Llama-architecture decoder on one GPU: decode steps (one new token per sequence, all
// sequences of a batch at the same position) and chunked prefill (up to prefill_chunk tokens per
// sequence per call, attention inside the chunk over exact K/V, earlier tokens read from the
// cache as a decode step reads them): bf16 (or f32) weights, GEMMs through cuBLAS (bf16 inputs,
// f32 accumulation and outputs), fused small kernels (embedding, RMSNorm, RoPE + split, SwiGLU,
// residual adds), and a KV cache on the device — dense fp16 or PQ codes (plain, or the CPU's
// normalised variant: rotations, key channel-groups, value token norms; an exact window and
// sinks) read by the attention kernels of cuda_attention.h / prefill_attention.h, the codes
// written by pq_encode (on a side stream during decode steps).
// Weights come from host arrays (tests; load_llama_hf / load_llama2c) or a seeded random fill on
// the device (benchmarks of a model shape without its weights). A decode step runs as one CUDA
// graph (GpuLlamaOptions::cuda_graph); a prefill call runs eagerly.
// Not here: GGUF files, sampling, sequences of different lengths in one batch.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace million::cuda {

struct LlamaShape {
  int hidden = 0;
  int n_layers = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;  ///< 64 or 128 (PQ; the fp16 cache takes any even head_dim up to 128)
  int ffn = 0;
  int vocab = 0;
  float norm_eps = 1e-5f;
  double rope_theta = 10000.0;
  bool rope_interleaved = false;  ///< false: Hugging Face "rotate half" pairs (i, i + head_dim / 2)
  /// RoPE inverse frequency of each pair (head_dim / 2 values), e.g. Llama 3's scaled ones
  /// (rope_inv_freq of model/config.h); empty: rope_theta^(-2i / head_dim).
  std::vector<double> rope_inv_freq;
  /// Llama-3-8B: 32 layers, 32 heads / 8 kv heads, head_dim 128, hidden 4096, ffn 14336, vocab 128256.
  static LlamaShape llama3_8b();
  std::int64_t n_params() const;
};

enum class GpuCache { kF16, kPQ };

struct GpuLlamaOptions {
  int batch = 1;
  std::int64_t capacity = 0;  ///< tokens per sequence the cache holds
  GpuCache cache = GpuCache::kF16;
  int pq_M = 0;               ///< PQ: subspaces (head_dim / 2: 4 bits, head_dim / 4: 2 bits); ksub 256
  /// PQ: the newest pq_window tokens stay exact (fp16 ring buffer) and attention reads only the
  /// older ones from codes (pq_window_decode_attention); each token is encoded as it arrives on a
  /// side stream, overlapping the rest of the step (it is read from codes only once it leaves
  /// the window). 0: every token read from codes, encoded before the step's attention.
  int pq_window = 0;
  /// Run each decode step as one CUDA graph (captured at the first step: the kernels read the
  /// position from device memory, so the same graph serves every step) instead of ~15 launches
  /// per layer from the host.
  bool cuda_graph = true;
  /// Weights and GEMM inputs in f32 (4 bytes a weight) instead of bf16: the CPU engine's
  /// precision, for checks against its outputs; bf16 is the fast path.
  bool f32_weights = false;
  /// PQ, the normalised variant of the CPU engine's default codebooks (src/pq/normalize.h; needs
  /// pq_window > 0): vectors rotated by the codebooks' per-(layer, kv head) matrices (queries
  /// too, outputs back), keys min/max-normalised per channel over groups of pq_norm_group
  /// tokens (a group is encoded on the side stream when it completes: pq_window must hold a
  /// whole group), values divided by their f16 norm.
  bool pq_rotate = false;
  /// PQ window: the first pq_sinks tokens stay exact for good (attention sinks; the CPU's pq
  /// cache keeps 4 with a normalised codebook). Codes, norms and channel-groups then count from
  /// the first token after them, as on the CPU.
  int pq_sinks = 0;
  bool pq_k_channel_group = false;
  bool pq_v_token_norm = false;
  int pq_norm_group = 128;
  /// Most tokens per sequence one prefill() call takes; the activation buffers are sized for
  /// batch * prefill_chunk rows. 0: no prefill (prompts go through step() token by token).
  int prefill_chunk = 256;
  /// prefill() returns the logits of every position ([batch, n, vocab] f32: a buffer of
  /// batch * prefill_chunk * vocab floats) instead of each sequence's last one.
  bool prefill_all_logits = false;
  /// Prefill attention on tensor cores (fp16 operands; head_dim 64 or 128) rather than the f32
  /// CUDA-core kernel (prefill_attention.h).
  bool prefill_tensor_cores = true;
  /// PQ prefill: decode the coded history once per layer and chunk into an fp16 buffer that
  /// every block of queries reads (pq_decode_history; one layer's fp16 K/V for the capacity:
  /// 4 GiB for Llama-3-8B at a million tokens) instead of decoding it in each block.
  bool prefill_decode_history = true;
};

/// Host-side weights in f32 (rounded to bf16 on upload), Hugging Face layouts: matrices [out, in].
struct LlamaHostWeights {
  std::vector<float> tok_embd;  // [vocab, hidden]
  struct Layer {
    std::vector<float> attn_norm, wq, wk, wv, wo, ffn_norm, w_gate, w_up, w_down;
  };
  std::vector<Layer> layers;
  std::vector<float> final_norm, lm_head;  // lm_head [vocab, hidden]
};

/// Loads a Hugging Face Llama directory (config.json + safetensors, f32 / f16 / bf16) and sets
/// `shape` from its config (llama_gpu_load.cpp; Llama 3's RoPE scaling as rope_inv_freq). Throws
/// UnsupportedError for what the GPU path lacks (q/k/v biases, sliding windows).
LlamaHostWeights load_llama_hf(const std::string& dir, LlamaShape& shape);
/// Loads a llama2.c checkpoint (legacy format: 7 int32 header, f32 tensors; models/stories260K).
LlamaHostWeights load_llama2c(const std::string& path, LlamaShape& shape);

struct LlamaHostCodebooks;
/// A codebook file of `million calibrate` (pq/codebook_file.h) as GpuLlama's arrays, and the
/// options it implies (pq_M, pq_rotate, pq_k_channel_group, pq_v_token_norm, pq_norm_group set
/// in `options`; window and sinks are the caller's). Throws FormatError when it was made for
/// another shape, UnsupportedError for what GpuLlama lacks (codes under 8 bits, K and V with
/// different M, key token norms, value channel-groups).
LlamaHostCodebooks load_codebooks_for_gpu(const std::string& path, const LlamaShape& shape, GpuLlamaOptions& options);

/// PQ codebooks per layer for the PQ cache: K and V, [n_kv_heads, M, 256, dsub] f32 each.
struct LlamaHostCodebooks {
  std::vector<std::vector<float>> k, v;
  /// pq_rotate: per layer [n_kv_heads, head_dim, head_dim] row-major R (rotated = R x) of the
  /// keys, of the queries (empty: the keys' ones, which must then be orthogonal; a qpca
  /// codebook's T^-T for its T), and of the values (orthogonal; empty: the keys' ones; the
  /// output is rotated back with the values' R).
  std::vector<std::vector<float>> rotation, rotation_q, rotation_v;
  /// pq_k_channel_group: per layer [n_kv_heads, head_dim] channel scales (a qpca codebook's
  /// channel_scale: stored ranges are range / scale); empty: ones.
  std::vector<std::vector<float>> k_scale;
};

class GpuLlama {
 public:
  /// Allocates weights, cache and work buffers; throws ResourceError with the bytes needed
  /// when they do not fit the card's free memory (checked before any allocation).
  GpuLlama(const LlamaShape& shape, const GpuLlamaOptions& options);
  ~GpuLlama();
  GpuLlama(const GpuLlama&) = delete;
  GpuLlama& operator=(const GpuLlama&) = delete;

  /// Bytes the weights, the cache and the work buffers need on the device.
  static std::int64_t weight_bytes(const LlamaShape& shape, bool f32_weights = false);
  static std::int64_t cache_bytes(const LlamaShape& shape, const GpuLlamaOptions& options);

  void upload_weights(const LlamaHostWeights& w);
  /// Uniform random weights in +-1/sqrt(fan-in), norms 1; PQ codebooks random too.
  void init_random(std::uint64_t seed);
  void upload_codebooks(const LlamaHostCodebooks& cb);
  /// Fills positions [0, n) of every layer's cache with random values / codes and sets the
  /// position to n (the synthetic long context of the benchmarks: no prefill).
  void fill_cache_random(std::int64_t n, std::uint64_t seed);

  /// One decode step: tokens[batch] at the current position (the same for every sequence);
  /// returns device logits [batch, vocab] f32 (valid until the next step; synchronise
  /// stream() before reading) and advances the position. Waits for the previous step first.
  /// Throws InvalidArgumentError when the cache is full.
  const float* step(const std::vector<int>& tokens);
  /// Chunked prefill: tokens [batch * n] (sequence-major: n tokens of sequence 0, then of
  /// sequence 1, ...) at positions position() .. position() + n - 1, 1 <= n <= prefill_chunk.
  /// Attention inside the chunk is causal over its exact K/V (rounded to fp16 as the window
  /// keeps them); earlier tokens are read from the cache as step() reads them (the PQ window
  /// counted from the chunk's first token; stress mode, no window: every token from its codes,
  /// the chunk's own included); then the chunk's K/V are written / encoded. Returns device logits
  /// [batch, vocab] of each sequence's last token, or [batch, n, vocab] with prefill_all_logits
  /// (valid until the next call; synchronise stream() before reading). prefill(tokens, 1)
  /// computes what step() computes. Throws InvalidArgumentError for a bad n, tokens or a full cache.
  const float* prefill(const std::vector<int>& tokens, int n);
  std::int64_t position() const { return pos_; }
  /// The fp16 cache of `layer` for positions [0, position()): K and V [batch, n_kv_heads,
  /// position(), head_dim] as fp16 bits (tests on real K/V, analysis). Throws
  /// InvalidArgumentError for a PQ cache or a bad layer.
  void download_f16_cache(int layer, std::vector<std::uint16_t>& k, std::vector<std::uint16_t>& v) const;
  /// Empties the cache (position 0).
  void reset();
  cudaStream_t stream() const { return stream_; }
  const LlamaShape& shape() const { return shape_; }
  const GpuLlamaOptions& options() const { return opt_; }

 private:
  struct Impl;
  void enqueue_step();  // the step's work on stream_ (captured into the graph or run eagerly)
  void enqueue_prefill(int n);  // prefill()'s work on stream_ (tokens already on the device)
  LlamaShape shape_;
  GpuLlamaOptions opt_;
  std::int64_t pos_ = 0;
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<Impl> impl_;
};

}  // namespace million::cuda
