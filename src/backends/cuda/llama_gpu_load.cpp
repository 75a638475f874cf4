// Loads a Hugging Face Llama directory (config.json + safetensors) into LlamaHostWeights for
// GpuLlama: tensors converted to f32 on the host (GpuLlama rounds them to bf16 on upload).
// Refuses what the GPU path does not implement yet (RoPE scaling, q/k/v biases, sliding
// windows) instead of computing something else.
#include <cstring>
#include <filesystem>
#include <string>

#include "backends/cuda/llama_gpu.h"
#include "core/half.h"
#include "core/mapped_file.h"
#include "million/error.h"
#include "model/config.h"
#include "model/safetensors.h"

namespace million::cuda {
namespace {

std::vector<float> to_f32(const TensorInfo& t, std::int64_t want, const std::string& name) {
  if (t.numel() != want) {
    throw FormatError("tensor '" + name + "' has " + std::to_string(t.numel()) + " values, the config implies " +
                      std::to_string(want));
  }
  std::vector<float> out(static_cast<std::size_t>(want));
  for (std::int64_t i = 0; i < want; ++i) {
    switch (t.dtype) {
      case DType::kF32: {
        float f;
        std::memcpy(&f, t.data + 4 * i, 4);
        out[static_cast<std::size_t>(i)] = f;
        break;
      }
      case DType::kBF16:
      case DType::kF16: {
        std::uint16_t h;
        std::memcpy(&h, t.data + 2 * i, 2);
        out[static_cast<std::size_t>(i)] = t.dtype == DType::kBF16 ? bf16_to_f32(h) : f16_to_f32(h);
        break;
      }
      default:
        throw UnsupportedError("tensor '" + name + "' has dtype " + t.dtype_str + " (f32, f16 or bf16 expected)");
    }
  }
  return out;
}

}  // namespace

LlamaHostWeights load_llama_hf(const std::string& dir, LlamaShape& shape) {
  const std::string config_path = (std::filesystem::path(dir) / "config.json").string();
  const ModelConfig c = parse_hf_config(read_text_file(config_path, "model config"), config_path);
  if (c.rope_scaling.type != RopeScaling::Type::kNone) throw UnsupportedError("GPU path: RoPE scaling is not implemented");
  if (c.qkv_bias) throw UnsupportedError("GPU path: q/k/v projection biases are not implemented");
  if (c.sliding_window > 0) throw UnsupportedError("GPU path: sliding-window attention is not implemented");
  if (c.head_dim != 64 && c.head_dim != 128) {
    throw UnsupportedError("GPU path: head_dim " + std::to_string(c.head_dim) + " (64 or 128 supported)");
  }
  shape = LlamaShape{};
  shape.hidden = c.hidden_size;
  shape.n_layers = c.n_layers;
  shape.n_heads = c.n_heads;
  shape.n_kv_heads = c.n_kv_heads;
  shape.head_dim = c.head_dim;
  shape.ffn = c.ffn_hidden;
  shape.vocab = c.vocab_size;
  shape.norm_eps = c.norm_eps;
  shape.rope_theta = c.rope_theta;
  shape.rope_interleaved = c.rope_layout == RopeLayout::kInterleaved;
  const SafetensorsModel st = SafetensorsModel::open_dir(dir);
  const std::int64_t H = c.hidden_size, q = c.q_dim(), kv = c.kv_dim(), F = c.ffn_hidden, V = c.vocab_size;
  auto get = [&](const std::string& name, std::int64_t n) { return to_f32(st.get(name), n, name); };
  LlamaHostWeights w;
  w.tok_embd = get("model.embed_tokens.weight", V * H);
  w.final_norm = get("model.norm.weight", H);
  w.lm_head = st.find("lm_head.weight") ? get("lm_head.weight", V * H) : w.tok_embd;  // tied embeddings
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    LlamaHostWeights::Layer L;
    L.attn_norm = get(p + "input_layernorm.weight", H);
    L.wq = get(p + "self_attn.q_proj.weight", q * H);
    L.wk = get(p + "self_attn.k_proj.weight", kv * H);
    L.wv = get(p + "self_attn.v_proj.weight", kv * H);
    L.wo = get(p + "self_attn.o_proj.weight", H * q);
    L.ffn_norm = get(p + "post_attention_layernorm.weight", H);
    L.w_gate = get(p + "mlp.gate_proj.weight", F * H);
    L.w_up = get(p + "mlp.up_proj.weight", F * H);
    L.w_down = get(p + "mlp.down_proj.weight", H * F);
    w.layers.push_back(std::move(L));
  }
  return w;
}

}  // namespace million::cuda
