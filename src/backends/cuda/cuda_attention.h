// CUDA decode attention (one query token per sequence) over two device KV-cache formats:
// dense fp16, and MILLION's PQ codes. Host-side API; kernels in decode_attention.cu.
// Shapes follow the CPU caches: GQA groups of G = n_heads / n_kv_heads query heads share a kv
// head, which is read once for the whole group; the sequence is split over thread blocks and
// the splits are merged with log-sum-exp weights (flash-decoding).
// Not here: prefill attention (prefill_attention.h), RoPE, rotations (the PQ kernel works in the codebook's space:
// queries rotated in and outputs rotated back by the caller), encoding into the cache.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace million::cuda {

/// Every sequence of the batch holds n_tokens keys; buffers have room for `capacity`.
struct DecodeShape {
  int batch = 1;
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;  ///< 64 or 128 (dense: any even head_dim up to 128, one split, a simple kernel)
  std::int64_t n_tokens = 0;
  std::int64_t capacity = 0;
  int group() const { return n_heads / n_kv_heads; }
};

/// Dense fp16 cache. k, v: [batch, n_kv_heads, capacity, head_dim] fp16.
/// q: [batch, n_heads, head_dim] f32; out: same shape, f32.
struct DenseDecodeArgs {
  DecodeShape shape;
  const void* k = nullptr;
  const void* v = nullptr;
  const float* q = nullptr;
  float* out = nullptr;
  float scale = 0.0f;
  /// If set, the kernel reads the token count from this device address when it runs (a decode
  /// step captured once in a CUDA graph), clamped to shape.capacity; shape.n_tokens then only
  /// bounds the host's checks and the split choice (pass the capacity), and splits past the
  /// tokens produce empty partials.
  const std::int64_t* n_tokens_device = nullptr;
};

/// Which PQ decode kernel runs.
///  - kCudaCores: f32 throughout (~1e-6 relative to the reference); codes token-major.
///  - kMma: tensor cores (mma.sync m16n8k16): each thread looks its centroids up straight into
///    the matrix fragments, queries and probabilities in fp16 with f32 accumulation (~1e-3
///    relative, as FlashAttention); codes in the interleaved layout of interleave_pq_codes().
///    No value channel-groups (InvalidArgumentError).
enum class PQKernel { kCudaCores, kMma };

/// PQ cache. codes_k / codes_v: [batch, n_kv_heads, capacity, M] u8, a token's M codes
/// contiguous: in subspace order for kCudaCores, permuted by interleave_pq_codes() for kMma.
/// Codebooks: [n_kv_heads, M, ksub, dsub] fp16 at cb_*_head_stride elements per kv head (0 =
/// one codebook shared by every head). dsub = head_dim / M, 2 or 4; keys and values use the
/// same M here.
struct PQDecodeArgs {
  DecodeShape shape;
  int M = 0;
  int ksub = 256;
  const std::uint8_t* codes_k = nullptr;
  const std::uint8_t* codes_v = nullptr;
  const void* cb_k = nullptr;
  const void* cb_v = nullptr;
  std::int64_t cb_k_head_stride = 0;
  std::int64_t cb_v_head_stride = 0;
  const float* q = nullptr;
  float* out = nullptr;
  float scale = 0.0f;
  PQKernel kernel = PQKernel::kCudaCores;
  /// As DenseDecodeArgs::n_tokens_device; the kMma kernel only (InvalidArgumentError otherwise).
  /// The kernel reads max(0, *n_tokens_device - n_tokens_device_minus) (codes of all but the
  /// newest tokens, which sit in an exact window: pq_window_decode_attention).
  const std::int64_t* n_tokens_device = nullptr;
  std::int64_t n_tokens_device_minus = 0;

  /// Normalised codebooks (src/pq/normalize.h; the kMma kernel takes all but value
  /// channel-groups). Null = none; per kind at most one of the two, all fp16, in the
  /// codebook's (rotated) space, laid out like the codes:
  ///  - token norms k/v_token_norm: [batch, n_kv_heads, capacity]; a token decodes to
  ///    norm * centroid.
  ///  - channel-group parameters k/v_group_params: [batch, n_kv_heads, ceil(capacity /
  ///    norm_group), 2, head_dim] (min row, then range row); token t of group g = t / norm_group
  ///    decodes to min_g + range_g * centroid per channel. norm_group: a multiple of 64.
  const void* k_token_norm = nullptr;
  const void* v_token_norm = nullptr;
  const void* k_group_params = nullptr;
  const void* v_group_params = nullptr;
  int norm_group = 0;
  bool normalised() const { return k_token_norm || v_token_norm || k_group_params || v_group_params; }
};

/// Sequence splits per (sequence, kv head): enough blocks to fill `sm_count` SMs twice, no
/// split shorter than 512 tokens. Valid for every kernel (splits <= tiles: dense tiles are 256
/// tokens, PQ tiles 512).
int choose_splits(const DecodeShape& s, int sm_count);
/// The same for the kMma PQ kernel: one wave of blocks (`blocks_per_sm` resident per SM, see
/// pq_mma_blocks_per_sm), so that no SM runs a second, partial wave.
int choose_splits_mma(const DecodeShape& s, int sm_count, int blocks_per_sm);
/// Blocks of the kMma kernel one SM holds for this shape (shared memory: both codebooks).
int pq_mma_blocks_per_sm(const PQDecodeArgs& a);

/// The kMma kernel's code layout, per token (rows of M codes; M a multiple of 8): key code of
/// subspace m = 4j + i at byte i * M/4 + j, value code of m = 8j + i at byte i * M/8 + j, so
/// that each thread loads the codes of its matrix fragments as one contiguous run.
/// `values` picks the layout. Host reference; a device encoder writes the same layout.
void interleave_pq_codes(const std::uint8_t* src, std::uint8_t* dst, std::size_t rows, int M, bool values);
/// Floats of device workspace the kernels need for `splits` (partial results per split).
std::size_t decode_workspace_floats(const DecodeShape& s, int splits);

/// Throw million::InvalidArgumentError for unsupported shapes; launch on `stream`.
void dense_decode_attention(const DenseDecodeArgs& a, float* workspace, int splits, cudaStream_t stream);
void pq_decode_attention(const PQDecodeArgs& a, float* workspace, int splits, cudaStream_t stream);
/// One softmax over PQ codes (the older tokens; kMma kernel, `splits` splits) and an exact fp16
/// window of the newest tokens (`window`: its K/V buffer holds window.shape.capacity tokens in
/// any order — attention does not depend on it — of which window.shape.n_tokens, or the device
/// count clamped to the capacity, are valid). The window's partial is merged with the codes' by
/// log-sum-exp; output in pq.out. Workspace: decode_workspace_floats(shape, splits + 1).
void pq_window_decode_attention(const PQDecodeArgs& pq, const DenseDecodeArgs& window, float* workspace, int splits,
                                cudaStream_t stream);

/// Code orders a PQ cache on the device can hold (see interleave_pq_codes).
enum class PQCodeOrder { kTokenMajor, kMmaKeys, kMmaValues };

/// PQ encoding on the device: nearest centroid per subspace (f32 distances, ties to the lower
/// index; the CPU reference is pq_encode_ref, which sums in double), written into a cache's
/// code buffer. Vectors are already rotated / normalised (the caller's business, as on the CPU).
struct PQEncodeArgs {
  int n_seq_heads = 0;  ///< batch * n_kv_heads; row block s uses codebook s % n_kv_heads
  int n_kv_heads = 0;
  int n_tokens = 0;     ///< new tokens per (sequence, kv head)
  int head_dim = 0;
  int M = 0;
  int ksub = 256;
  const float* x = nullptr;          ///< [n_seq_heads, n_tokens, head_dim] f32
  const float* centroids = nullptr;  ///< [n_kv_heads or 1, M, ksub, dsub] f32
  std::int64_t cb_head_stride = 0;   ///< floats per kv head's codebook (0 = one shared codebook)
  std::uint8_t* codes = nullptr;     ///< [n_seq_heads, capacity, M]; tokens pos0 .. pos0 + n_tokens written
  std::int64_t capacity = 0;
  std::int64_t pos0 = 0;
  PQCodeOrder order = PQCodeOrder::kTokenMajor;
  /// If set, pos0 is read on the device when the kernel runs: *len_device - n_tokens (the
  /// cache's length after these tokens; CUDA graphs). pos0 above is then not used.
  const std::int64_t* len_device = nullptr;
  /// With len_device: encode only when *len_device is a multiple of `every` (0: always) — a
  /// group of tokens encoded when it completes, inside a graph that runs every step.
  int every = 0;
  /// With len_device: the length counts this many leading tokens that are never coded (exact
  /// sinks): positions and `every` apply to *len_device - len_offset (codes indexed from the
  /// first coded token), and nothing is written while that is below n_tokens.
  std::int64_t len_offset = 0;
};
/// Throws InvalidArgumentError for bad shapes (dsub not dividing, ksub not a power of two in
/// [2, 256], tokens past capacity, M not a multiple of 8 for the mma orders); launches on `stream`.
void pq_encode(const PQEncodeArgs& a, cudaStream_t stream);

/// Throws million::Error with `what` and the CUDA error string when err != cudaSuccess.
void check(cudaError_t err, const char* what);

}  // namespace million::cuda
