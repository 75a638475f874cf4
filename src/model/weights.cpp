// Hugging Face weight loading: maps the safetensors, checks every tensor the config implies
// (present, right shape, a float dtype) and converts it to f32 in parallel.
#include "model/weights.h"

#include <fmt/format.h>

#include <cstring>
#include <filesystem>

#include "core/half.h"
#include "core/memory.h"
#include "core/mapped_file.h"
#include "million/error.h"
#include "million/log.h"
#include "model/safetensors.h"

namespace million {

namespace fs = std::filesystem;

std::int64_t ModelWeights::bytes() const {
  std::int64_t n = static_cast<std::int64_t>(tok_embd.size() + final_norm.size() + lm_head.size());
  for (const auto& l : layers) {
    for (const auto* v : {&l.attn_norm, &l.wq, &l.wk, &l.wv, &l.bq, &l.bk, &l.bv, &l.wo, &l.ffn_norm, &l.w_gate,
                          &l.w_up, &l.w_down}) {
      n += static_cast<std::int64_t>(v->size());
    }
  }
  return n * 4;
}

namespace {

std::string shape_str(const std::vector<std::int64_t>& s) {
  std::string out = "[";
  for (std::size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

std::vector<float> to_f32(const TensorInfo& t, const std::vector<std::int64_t>& expected) {
  if (t.shape != expected) {
    throw FormatError(fmt::format("{}: tensor '{}' has shape {} but the config implies {}", t.file, t.name,
                                  shape_str(t.shape), shape_str(expected)));
  }
  const std::int64_t n = t.numel();
  std::vector<float> out(static_cast<std::size_t>(n));
  switch (t.dtype) {
    case DType::kF32: {
      std::memcpy(out.data(), t.data, static_cast<std::size_t>(n) * 4);
      break;
    }
    case DType::kF16: {
#pragma omp parallel for schedule(static)
      for (std::int64_t i = 0; i < n; ++i) {
        std::uint16_t b;
        std::memcpy(&b, t.data + 2 * i, 2);
        out[static_cast<std::size_t>(i)] = f16_to_f32(b);
      }
      break;
    }
    case DType::kBF16: {
#pragma omp parallel for schedule(static)
      for (std::int64_t i = 0; i < n; ++i) {
        std::uint16_t b;
        std::memcpy(&b, t.data + 2 * i, 2);
        out[static_cast<std::size_t>(i)] = bf16_to_f32(b);
      }
      break;
    }
    default:
      throw UnsupportedError(fmt::format("{}: tensor '{}' has dtype {}; weights must be F32, F16 or BF16", t.file,
                                         t.name, t.dtype_str));
  }
  return out;
}

}  // namespace

ModelWeights load_hf_weights(const std::string& dir) {
  const std::string config_path = (fs::path(dir) / "config.json").string();
  if (!fs::exists(config_path)) {
    throw IoError(fmt::format("'{}' has no config.json: expected a Hugging Face model directory", dir));
  }
  ModelConfig c = parse_hf_config(read_text_file(config_path, "model config"), config_path);
  require_memory(c.n_params() * 4, fmt::format("the model's f32 weights ({} parameters)", c.n_params()));
  SafetensorsModel st = SafetensorsModel::open_dir(dir);

  const std::int64_t H = c.hidden_size, Q = c.q_dim(), KV = c.kv_dim(), F = c.ffn_hidden, V = c.vocab_size;
  auto get = [&](const std::string& name, const std::vector<std::int64_t>& shape) { return to_f32(st.get(name), shape); };

  ModelWeights w;
  w.config = c;
  w.source = dir;
  w.tok_embd = get("model.embed_tokens.weight", {V, H});
  w.layers.resize(static_cast<std::size_t>(c.n_layers));
  for (int i = 0; i < c.n_layers; ++i) {
    const std::string p = fmt::format("model.layers.{}.", i);
    LayerWeights& l = w.layers[static_cast<std::size_t>(i)];
    l.attn_norm = get(p + "input_layernorm.weight", {H});
    l.wq = get(p + "self_attn.q_proj.weight", {Q, H});
    l.wk = get(p + "self_attn.k_proj.weight", {KV, H});
    l.wv = get(p + "self_attn.v_proj.weight", {KV, H});
    if (c.qkv_bias) {
      l.bq = get(p + "self_attn.q_proj.bias", {Q});
      l.bk = get(p + "self_attn.k_proj.bias", {KV});
      l.bv = get(p + "self_attn.v_proj.bias", {KV});
    }
    l.wo = get(p + "self_attn.o_proj.weight", {H, Q});
    l.ffn_norm = get(p + "post_attention_layernorm.weight", {H});
    l.w_gate = get(p + "mlp.gate_proj.weight", {F, H});
    l.w_up = get(p + "mlp.up_proj.weight", {F, H});
    l.w_down = get(p + "mlp.down_proj.weight", {H, F});
  }
  w.final_norm = get("model.norm.weight", {H});
  if (!c.tied_embeddings) {
    if (st.find("lm_head.weight") == nullptr) {
      throw FormatError(fmt::format("{}: config says tie_word_embeddings=false but there is no 'lm_head.weight' tensor",
                                    dir));
    }
    w.lm_head = get("lm_head.weight", {V, H});
  }
  return w;
}

ModelWeights load_weights(const std::string& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) return load_hf_weights(path);
  if (!fs::exists(path, ec)) throw IoError(fmt::format("model '{}' does not exist", path));
  const std::int64_t size = static_cast<std::int64_t>(fs::file_size(path, ec));
  require_memory(size, fmt::format("the model '{}'", path));
  return load_llama2c_weights(path);
}

}  // namespace million
