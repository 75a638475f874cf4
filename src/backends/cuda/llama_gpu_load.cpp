// Loads a Hugging Face Llama directory (config.json + safetensors) or a llama2.c checkpoint (the
// engine's own loader) into LlamaHostWeights for GpuLlama: tensors converted to f32 on the host
// (GpuLlama rounds them to bf16 on upload). Refuses what the GPU path does not implement yet
// (RoPE scaling, q/k/v biases, sliding windows) instead of computing something else.
#include <cstring>
#include <filesystem>
#include <string>

#include "backends/cuda/llama_gpu.h"
#include "core/half.h"
#include "core/mapped_file.h"
#include "million/error.h"
#include "model/config.h"
#include "model/safetensors.h"
#include "model/weights.h"
#include "pq/codebook.h"
#include "pq/codebook_file.h"

namespace million::cuda {
namespace {

// n values of the given width at p (f32, or f16 / bf16) as f32.
std::vector<float> widen(const std::uint8_t* p, std::int64_t n, WeightDType dtype) {
  std::vector<float> out(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) {
    if (dtype == WeightDType::kF32) {
      std::memcpy(&out[static_cast<std::size_t>(i)], p + 4 * i, 4);
    } else {
      std::uint16_t h;
      std::memcpy(&h, p + 2 * i, 2);
      out[static_cast<std::size_t>(i)] = dtype == WeightDType::kBF16 ? bf16_to_f32(h) : f16_to_f32(h);
    }
  }
  return out;
}

std::vector<float> to_f32(const TensorInfo& t, std::int64_t want, const std::string& name) {
  if (t.numel() != want) {
    throw FormatError("tensor '" + name + "' has " + std::to_string(t.numel()) + " values, the config implies " +
                      std::to_string(want));
  }
  switch (t.dtype) {
    case DType::kF32: return widen(t.data, want, WeightDType::kF32);
    case DType::kF16: return widen(t.data, want, WeightDType::kF16);
    case DType::kBF16: return widen(t.data, want, WeightDType::kBF16);
    default: throw UnsupportedError("tensor '" + name + "' has dtype " + t.dtype_str + " (f32, f16 or bf16 expected)");
  }
}

// GpuLlama's shape of a validated ModelConfig; UnsupportedError for what the GPU path lacks.
LlamaShape shape_of(const ModelConfig& c) {
  if (c.qkv_bias) throw UnsupportedError("GPU path: q/k/v projection biases are not implemented");
  if (c.sliding_window > 0) throw UnsupportedError("GPU path: sliding-window attention is not implemented");
  LlamaShape shape;
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
  if (c.rope_scaling.type != RopeScaling::Type::kNone) shape.rope_inv_freq = rope_inv_freq(c);  // Llama 3
  return shape;
}

// A weight matrix of the engine's loaders (f32 / f16 / bf16, possibly in a mapped file) as f32.
std::vector<float> matrix_f32(const WeightMatrix& m) {
  return widen(static_cast<const std::uint8_t*>(m.data), m.rows * m.cols, m.dtype);
}

}  // namespace

LlamaHostWeights load_llama_hf(const std::string& dir, LlamaShape& shape) {
  const std::string config_path = (std::filesystem::path(dir) / "config.json").string();
  const ModelConfig c = parse_hf_config(read_text_file(config_path, "model config"), config_path);
  shape = shape_of(c);
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
  const bool qpca = set.rotation == RotationKind::kQueryPca;
  const auto hd = static_cast<std::size_t>(shape.head_dim);
  LlamaHostCodebooks cb;
  for (int l = 0; l < shape.n_layers; ++l) {
    std::vector<float> k, v, rk, rq, rv, ks;
    for (int h = 0; h < shape.n_kv_heads; ++h) {
      const PQCodebook& ek = set.get(l, h, KVKind::kKey);
      const PQCodebook& ev = set.get(l, h, KVKind::kValue);
      k.insert(k.end(), ek.centroids.begin(), ek.centroids.end());
      v.insert(v.end(), ev.centroids.begin(), ev.centroids.end());
      if (o.pq_rotate) {
        rk.insert(rk.end(), ek.rotation_matrix.begin(), ek.rotation_matrix.end());
        rv.insert(rv.end(), ev.rotation_matrix.begin(), ev.rotation_matrix.end());
      }
      if (qpca) {  // queries by Q = T^-T: Q[i][j] = (T^-1)[j][i]
        for (std::size_t i = 0; i < hd; ++i) {
          for (std::size_t j = 0; j < hd; ++j) rq.push_back(ek.inverse_matrix[j * hd + i]);
        }
        ks.insert(ks.end(), ek.channel_scale.begin(), ek.channel_scale.end());
      }
    }
    cb.k.push_back(std::move(k));
    cb.v.push_back(std::move(v));
    if (o.pq_rotate) {
      cb.rotation.push_back(std::move(rk));
      cb.rotation_v.push_back(std::move(rv));
    }
    if (qpca) {
      cb.rotation_q.push_back(std::move(rq));
      cb.k_scale.push_back(std::move(ks));
    }
  }
  return cb;
}

LlamaHostWeights load_llama2c(const std::string& path, LlamaShape& shape) {
  const ModelWeights mw = load_llama2c_weights(path);  // the engine's loader: header and size checks
  shape = shape_of(mw.config);
  LlamaHostWeights w;
  w.tok_embd = matrix_f32(mw.tok_embd);
  w.final_norm = mw.final_norm;
  w.lm_head = matrix_f32(mw.output_matrix());
  for (const LayerWeights& l : mw.layers) {
    LlamaHostWeights::Layer L;
    L.attn_norm = l.attn_norm;
    L.ffn_norm = l.ffn_norm;
    L.wq = matrix_f32(l.wq);
    L.wk = matrix_f32(l.wk);
    L.wv = matrix_f32(l.wv);
    L.wo = matrix_f32(l.wo);
    L.w_gate = matrix_f32(l.w_gate);
    L.w_up = matrix_f32(l.w_up);
    L.w_down = matrix_f32(l.w_down);
    w.layers.push_back(std::move(L));
  }
  return w;
}

}  // namespace million::cuda
