// Loads a Hugging Face Llama directory (config.json + safetensors) or a llama2.c checkpoint into
// LlamaHostWeights for GpuLlama: tensors converted to f32 on the host (GpuLlama rounds them to bf16 on upload).
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
#include "pq/codebook.h"
#include "pq/codebook_file.h"

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

LlamaHostCodebooks load_codebooks_for_gpu(const std::string& path, const LlamaShape& shape, GpuLlamaOptions& o) {
  const CodebookSet set = load_codebooks(path);
  if (set.model.n_layers != shape.n_layers || set.model.n_kv_heads != shape.n_kv_heads ||
      set.model.head_dim != shape.head_dim || set.model.hidden_size != shape.hidden) {
    throw FormatError("'" + path + "' was calibrated for another model (" + set.model.str() + ")");
  }
  if (set.k_config.nbits != 8 || set.v_config.nbits != 8 || set.k_config.M != set.v_config.M) {
    throw UnsupportedError("GPU path: codebooks need 8-bit codes and the same M for K and V (" + set.k_config.str() +
                           " / " + set.v_config.str() + ")");
  }
  if (set.k_norm == VectorNorm::kToken || set.v_norm == VectorNorm::kChannelGroup) {
    throw UnsupportedError("GPU path: key token norms and value channel-groups are not implemented");
  }
  o.pq_M = set.k_config.M;
  o.pq_rotate = set.rotation != RotationKind::kNone;
  o.pq_k_channel_group = set.k_norm == VectorNorm::kChannelGroup;
  o.pq_v_token_norm = set.v_norm == VectorNorm::kToken;
  if (o.pq_k_channel_group) o.pq_norm_group = set.norm_group;
  LlamaHostCodebooks cb;
  for (int l = 0; l < shape.n_layers; ++l) {
    std::vector<float> k, v, rk, rv;
    for (int h = 0; h < shape.n_kv_heads; ++h) {
      const PQCodebook& ek = set.get(l, h, KVKind::kKey);
      const PQCodebook& ev = set.get(l, h, KVKind::kValue);
      k.insert(k.end(), ek.centroids.begin(), ek.centroids.end());
      v.insert(v.end(), ev.centroids.begin(), ev.centroids.end());
      if (o.pq_rotate) {
        rk.insert(rk.end(), ek.rotation_matrix.begin(), ek.rotation_matrix.end());
        rv.insert(rv.end(), ev.rotation_matrix.begin(), ev.rotation_matrix.end());
      }
    }
    cb.k.push_back(std::move(k));
    cb.v.push_back(std::move(v));
    if (o.pq_rotate) {
      cb.rotation.push_back(std::move(rk));
      cb.rotation_v.push_back(std::move(rv));
    }
  }
  return cb;
}

LlamaHostWeights load_llama2c(const std::string& path, LlamaShape& shape) {
  const MappedFile file(path);
  const std::uint8_t* p = file.data();
  const std::size_t size = file.size();
  if (size < 28) throw FormatError("'" + path + "': shorter than a llama2.c header (28 bytes)");
  std::int32_t h[7];
  std::memcpy(h, p, 28);
  const int dim = h[0], hidden = h[1], layers = h[2], heads = h[3], kv_heads = h[4], seq_len = h[6];
  const bool shared = h[5] > 0;
  const int vocab = shared ? h[5] : -h[5];
  if (dim <= 0 || hidden <= 0 || layers <= 0 || heads <= 0 || kv_heads <= 0 || vocab <= 0 || seq_len <= 0 ||
      dim % heads != 0 || heads % kv_heads != 0 || dim > (1 << 16) || hidden > (1 << 18) || layers > 1024 ||
      vocab > (1 << 22) || seq_len > (1 << 24)) {
    throw FormatError("'" + path + "': implausible llama2.c header");
  }
  const std::int64_t hd = dim / heads, kv_dim = static_cast<std::int64_t>(dim) * kv_heads / heads, L = layers;
  const std::int64_t floats = static_cast<std::int64_t>(vocab) * dim + L * dim + L * dim * dim + 2 * L * kv_dim * dim +
                              L * dim * dim + L * dim + 3 * L * hidden * dim + dim + static_cast<std::int64_t>(seq_len) * hd +
                              (shared ? 0 : static_cast<std::int64_t>(vocab) * dim);
  if (static_cast<std::int64_t>(size) < 28 + 4 * floats) {
    throw FormatError("'" + path + "': truncated (" + std::to_string(size) + " bytes, the header implies " +
                      std::to_string(28 + 4 * floats) + ")");
  }
  std::size_t off = 28;
  auto take = [&](std::int64_t n) {
    std::vector<float> v(static_cast<std::size_t>(n));
    std::memcpy(v.data(), p + off, static_cast<std::size_t>(n) * 4);
    off += static_cast<std::size_t>(n) * 4;
    return v;
  };
  auto split = [&](const std::vector<float>& all, int l, std::int64_t n) {
    return std::vector<float>(all.begin() + l * n, all.begin() + (l + 1) * n);
  };
  shape = LlamaShape{};
  shape.hidden = dim;
  shape.n_layers = layers;
  shape.n_heads = heads;
  shape.n_kv_heads = kv_heads;
  shape.head_dim = static_cast<int>(hd);
  shape.ffn = hidden;
  shape.vocab = vocab;
  shape.norm_eps = 1e-5f;
  shape.rope_theta = 10000.0;
  shape.rope_interleaved = true;  // llama2.c rotates adjacent pairs
  LlamaHostWeights w;
  w.tok_embd = take(static_cast<std::int64_t>(vocab) * dim);
  const auto rms_att = take(L * dim), wq = take(L * dim * dim), wk = take(L * kv_dim * dim), wv = take(L * kv_dim * dim),
             wo = take(L * dim * dim), rms_ffn = take(L * dim), w1 = take(L * hidden * dim), w2 = take(L * dim * hidden),
             w3 = take(L * hidden * dim);
  w.final_norm = take(dim);
  off += static_cast<std::size_t>(seq_len) * static_cast<std::size_t>(hd) * 4;  // the legacy RoPE tables
  w.lm_head = shared ? w.tok_embd : take(static_cast<std::int64_t>(vocab) * dim);
  for (int l = 0; l < layers; ++l) {
    LlamaHostWeights::Layer Ly;
    Ly.attn_norm = split(rms_att, l, dim);
    Ly.wq = split(wq, l, dim * dim);
    Ly.wk = split(wk, l, kv_dim * dim);
    Ly.wv = split(wv, l, kv_dim * dim);
    Ly.wo = split(wo, l, dim * dim);
    Ly.ffn_norm = split(rms_ffn, l, dim);
    Ly.w_gate = split(w1, l, hidden * dim);  // SwiGLU: w2(silu(w1 x) * (w3 x))
    Ly.w_down = split(w2, l, dim * hidden);
    Ly.w_up = split(w3, l, hidden * dim);
    w.layers.push_back(std::move(Ly));
  }
  return w;
}

}  // namespace million::cuda
