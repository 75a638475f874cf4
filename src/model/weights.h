// Model weights in memory and their loaders. Matrices stay in the file's dtype (f32, f16 or
// bf16) and, where alignment allows, are read straight from the memory-mapped file: loading is
// instant, memory is the file's size, and decode reads 2 bytes per bf16 weight instead of 4
// (docs/foundation.md has the measurement). WeightsOptions::to_f32 converts every matrix to f32
// once at load instead. Norm weights and biases (small) are always converted to f32.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kernels/matmul.h"
#include "model/config.h"

namespace million {

struct LayerWeights {
  std::vector<float> attn_norm;   // [hidden]
  WeightMatrix wq;                // [n_heads * head_dim, hidden]
  WeightMatrix wk, wv;            // [n_kv_heads * head_dim, hidden]
  std::vector<float> bq, bk, bv;  // [q_dim], [kv_dim], [kv_dim]; empty unless config.qkv_bias
  WeightMatrix wo;                // [hidden, n_heads * head_dim]
  std::vector<float> ffn_norm;    // [hidden]
  WeightMatrix w_gate, w_up;      // [ffn_hidden, hidden]
  WeightMatrix w_down;            // [hidden, ffn_hidden]
};

struct ModelWeights {
  ModelConfig config;
  WeightMatrix tok_embd;          // [vocab, hidden]
  std::vector<LayerWeights> layers;
  std::vector<float> final_norm;  // [hidden]
  WeightMatrix lm_head;           // [vocab, hidden]; empty when tied to tok_embd
  std::string source;             // path it was loaded from
  /// Mapped files and owned buffers the matrices point into (kept alive with the weights).
  std::vector<std::shared_ptr<const void>> storage;

  const WeightMatrix& output_matrix() const { return lm_head.empty() ? tok_embd : lm_head; }
  /// Bytes of weights as held (matrices in their dtype, vectors in f32).
  std::int64_t bytes() const;
  /// "bf16", "f32", or "mixed" when matrices differ.
  std::string matrix_dtype() const;
};

struct WeightsOptions {
  bool to_f32 = false;  ///< convert every matrix to f32 at load (4 bytes per weight)
};

/// Hugging Face directory: config.json + model.safetensors or sharded safetensors with index.
/// Tensors may be f32, f16 or bf16; shapes are checked against the config.
ModelWeights load_hf_weights(const std::string& dir, const WeightsOptions& options = {});

/// llama2.c checkpoint (legacy format: 7 int32 header, f32 tensors; see models/stories260K/README.md).
ModelWeights load_llama2c_weights(const std::string& path);

/// Loads whichever format `path` is: a directory with config.json, a .gguf file (by its magic;
/// see gguf_model.h), or a llama2.c .bin file.
/// Refuses (ResourceError) a model whose weights would not fit in the available memory.
ModelWeights load_weights(const std::string& path, const WeightsOptions& options = {});

/// An owned f32 copy of a matrix (for tests and tools).
std::vector<float> matrix_to_f32(const WeightMatrix& w);

}  // namespace million
