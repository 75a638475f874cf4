// Model weights in memory, converted once to f32 at load time (see docs/design-notes.md for
// the measurement behind that choice), and the loaders for each on-disk format.
// Every matrix is row-major [out_features, in_features], as Hugging Face and llama2.c store them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"

namespace million {

struct LayerWeights {
  std::vector<float> attn_norm;     // [hidden]
  std::vector<float> wq;            // [n_heads * head_dim, hidden]
  std::vector<float> wk, wv;        // [n_kv_heads * head_dim, hidden]
  std::vector<float> bq, bk, bv;    // [q_dim], [kv_dim], [kv_dim]; empty unless config.qkv_bias
  std::vector<float> wo;            // [hidden, n_heads * head_dim]
  std::vector<float> ffn_norm;      // [hidden]
  std::vector<float> w_gate, w_up;  // [ffn_hidden, hidden]
  std::vector<float> w_down;        // [hidden, ffn_hidden]
};

struct ModelWeights {
  ModelConfig config;
  std::vector<float> tok_embd;    // [vocab, hidden]
  std::vector<LayerWeights> layers;
  std::vector<float> final_norm;  // [hidden]
  std::vector<float> lm_head;     // [vocab, hidden]; empty when tied to tok_embd
  std::string source;             // path it was loaded from

  const float* output_matrix() const { return lm_head.empty() ? tok_embd.data() : lm_head.data(); }
  /// Bytes of weights held in memory.
  std::int64_t bytes() const;
};

/// Hugging Face directory: config.json + model.safetensors or sharded safetensors with index.
/// Tensors may be f32, f16 or bf16; shapes are checked against the config.
ModelWeights load_hf_weights(const std::string& dir);

/// llama2.c checkpoint (legacy format: 7 int32 header, f32 tensors; see models/stories260K/README.md).
ModelWeights load_llama2c_weights(const std::string& path);

/// Loads whichever format `path` is: a directory with config.json, or a llama2.c .bin file.
/// Refuses (ResourceError) a model whose f32 weights would not fit in the available memory.
ModelWeights load_weights(const std::string& path);

}  // namespace million
