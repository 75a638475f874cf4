// ModelConfig: the architecture facts the forward pass needs, parsed from a Hugging Face
// config.json (LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM; transformers 4 and 5
// layouts) or from a llama2.c header. Validates ranges and consistency; knows nothing about
// weights or files beyond config.json itself.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace million {

/// Which dimensions RoPE rotates together.
enum class RopeLayout {
  kHalf,         ///< Hugging Face "rotate half": dimension i pairs with i + head_dim/2
  kInterleaved,  ///< llama2.c / GGUF: dimension 2i pairs with 2i+1
};

struct RopeScaling {
  enum class Type { kNone, kLlama3 } type = Type::kNone;
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  double original_max_position_embeddings = 8192.0;
};

struct ModelConfig {
  std::string architecture;  ///< "LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "llama2.c"
  int hidden_size = 0;
  int n_layers = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  int ffn_hidden = 0;  ///< intermediate_size
  int vocab_size = 0;
  std::int64_t max_ctx = 0;  ///< max_position_embeddings (trained context)
  float norm_eps = 1e-5f;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  RopeLayout rope_layout = RopeLayout::kHalf;
  bool qkv_bias = false;        ///< Qwen2: q/k/v projections have biases
  bool tied_embeddings = false; ///< the output layer reuses the token embedding
  int sliding_window = 0;       ///< 0 = full attention; else each query sees this many keys (itself included)
  int bos_id = 1;
  std::vector<int> eos_ids{2};

  int q_dim() const { return n_heads * head_dim; }
  int kv_dim() const { return n_kv_heads * head_dim; }
  int group_size() const { return n_heads / n_kv_heads; }
  /// Parameter count implied by the shapes.
  std::int64_t n_params() const;
  /// Throws FormatError when a field is out of range or the fields disagree.
  void validate(const std::string& source) const;
  /// One line: "LlamaForCausalLM: 8 layers, hidden 512, 4 heads / 2 kv heads, head_dim 128, ...".
  std::string summary() const;
};

/// Parses the text of a Hugging Face config.json. `source` names it in error messages.
/// Unknown architectures throw UnsupportedError listing the supported ones.
ModelConfig parse_hf_config(const std::string& json_text, const std::string& source);

/// RoPE inverse frequencies for one head: head_dim/2 values, including llama3 scaling.
std::vector<double> rope_inv_freq(const ModelConfig& config);

}  // namespace million
