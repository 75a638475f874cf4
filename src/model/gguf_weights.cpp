// GGUF `llama` models onto ModelConfig / ModelWeights (see gguf_model.h): metadata -> config,
// tensor names and shapes checked against it, matrices zero-copy or dequantized, attn_q / attn_k
// rows un-permuted back to the Hugging Face (rotate-half) layout.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "backends/cpu/cpu_kernels.h"
#include "backends/cpu/dequant_kernels.h"
#include "core/half.h"
#include "core/memory.h"
#include "million/error.h"
#include "model/gguf_model.h"

namespace million {

namespace {

constexpr double kF16Max = 65504.0;

bool is_quantized(GgmlType t) { return t == GgmlType::kQ8_0 || t == GgmlType::kQ4_0 || t == GgmlType::kQ4_1; }

std::int64_t row_bytes(GgmlType t, std::int64_t cols) {
  const GgmlTypeInfo* info = ggml_type_info(static_cast<std::uint32_t>(t));
  return cols / info->block_size * info->type_size;
}

/// Largest |value| a quantized tensor's blocks can produce (from the block scales alone).
double quantized_bound(const GgufTensorInfo& t) {
  const std::int64_t bytes = row_bytes(t.type, kQuantBlock);
  const std::int64_t n_blocks = t.numel / kQuantBlock;
  double bound = 0.0;
  for (std::int64_t b = 0; b < n_blocks; ++b) {
    const std::uint8_t* p = t.data + b * bytes;
    std::uint16_t h[2];
    std::memcpy(h, p, 4);  // Q8_0's second half is data: only read for Q4_1
    const double d = std::fabs(f16_to_f32(h[0]));
    const double v = t.type == GgmlType::kQ8_0 ? 128.0 * d
                     : t.type == GgmlType::kQ4_0 ? 8.0 * d
                                                 : 15.0 * d + std::fabs(f16_to_f32(h[1]));
    if (!(v <= bound)) bound = std::isnan(v) ? INFINITY : v;
  }
  return bound;
}

/// Source row of destination row r when undoing llama.cpp's Q/K permutation with `heads` heads
/// (0: identity). llama.cpp stores HF row h*hd + j*hd/2 + i at h*hd + 2i + j.
std::int64_t source_row(std::int64_t r, std::int64_t rows, int heads) {
  if (heads == 0) return r;
  const std::int64_t hd = rows / heads, half = hd / 2;
  const std::int64_t h = r / hd, k = r % hd, j = k / half, i = k % half;
  return h * hd + 2 * i + j;
}

class GgufLoader {
 public:
  GgufLoader(ModelWeights& w, const GgufFile& g, const WeightsOptions& opt)
      : w_(w), g_(g), opt_(opt), level_(active_simd_level()) {}

  const GgufTensorInfo& tensor(const std::string& name, std::vector<std::int64_t> dims) {
    const GgufTensorInfo& t = g_.get_tensor(name);
    if (t.dims != dims) {
      GgufTensorInfo want;
      want.dims = dims;
      throw FormatError(fmt::format("{}: tensor '{}' has dims {} but the metadata implies {}", g_.path(), name,
                                    t.dims_str(), want.dims_str()));
    }
    if (!ggml_type_loadable(t.type)) {
      throw UnsupportedError(fmt::format("{}: tensor '{}' has type {}; supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1",
                                         g_.path(), name, ggml_type_name(t.type)));
    }
    return t;
  }

  std::vector<float> vec(const std::string& name, std::int64_t n) {
    const GgufTensorInfo& t = tensor(name, {n});
    std::vector<float> out(static_cast<std::size_t>(n));
    ggml_dequantize(t.type, t.data, out.data(), n, level_);
    return out;
  }

  /// A [rows, cols] matrix; `heads` > 0 undoes the Q/K row permutation for that many heads.
  WeightMatrix mat(const std::string& name, std::int64_t rows, std::int64_t cols, int heads = 0) {
    const GgufTensorInfo& t = tensor(name, {cols, rows});
    WeightMatrix m;
    m.rows = rows;
    m.cols = cols;
    const bool native = !is_quantized(t.type);
    if (native) {
      m.dtype = t.type == GgmlType::kF32 ? WeightDType::kF32 : t.type == GgmlType::kF16 ? WeightDType::kF16 : WeightDType::kBF16;
    } else {
      m.dtype = quantized_bound(t) <= kF16Max ? WeightDType::kF16 : WeightDType::kF32;
    }
    if (opt_.to_f32) m.dtype = WeightDType::kF32;
    const auto align = static_cast<std::uintptr_t>(weight_dtype_size(m.dtype));
    if (native && !opt_.to_f32 && heads == 0 && reinterpret_cast<std::uintptr_t>(t.data) % align == 0) {
      m.data = t.data;  // zero copy
      return m;
    }
    auto buf = std::make_shared<std::vector<std::uint32_t>>(static_cast<std::size_t>((m.bytes() + 3) / 4));
    auto* dst = reinterpret_cast<std::uint8_t*>(buf->data());
    const std::int64_t src_bytes = row_bytes(t.type, cols), dst_bytes = cols * weight_dtype_size(m.dtype);
    const bool same = native && weight_dtype_size(m.dtype) == row_bytes(t.type, 1) &&
                      !(opt_.to_f32 && t.type != GgmlType::kF32);
    const CpuKernels& k = cpu_kernels(level_);
    const SimdLevel level = level_;
    const GgmlType type = t.type;
    const std::uint8_t* src = t.data;
#pragma omp parallel
    {
      std::vector<float> row(static_cast<std::size_t>(cols));
#pragma omp for schedule(static)
      for (std::int64_t r = 0; r < rows; ++r) {
        const std::uint8_t* s = src + source_row(r, rows, heads) * src_bytes;
        std::uint8_t* d = dst + r * dst_bytes;
        if (same) {
          std::memcpy(d, s, static_cast<std::size_t>(dst_bytes));
        } else if (m.dtype == WeightDType::kF32) {
          ggml_dequantize(type, s, reinterpret_cast<float*>(d), cols, level);
        } else {  // quantized -> f16
          ggml_dequantize(type, s, row.data(), cols, level);
          k.f32_to_f16(row.data(), reinterpret_cast<std::uint16_t*>(d), cols);
        }
      }
    }
    m.data = buf->data();
    w_.storage.push_back(buf);
    return m;
  }

 private:
  ModelWeights& w_;
  const GgufFile& g_;
  const WeightsOptions& opt_;
  SimdLevel level_;
};

std::int64_t meta_int(const GgufFile& g, const std::string& key, std::int64_t lo, std::int64_t hi) {
  const std::int64_t v = g.get_int(key);
  if (v < lo || v > hi) throw FormatError(fmt::format("{}: metadata '{}' = {} is out of range", g.path(), key, v));
  return v;
}

}  // namespace

bool ggml_type_loadable(GgmlType t) {
  return t == GgmlType::kF32 || t == GgmlType::kF16 || t == GgmlType::kBF16 || is_quantized(t);
}

void ggml_dequantize(GgmlType type, const std::uint8_t* src, float* dst, std::int64_t n, SimdLevel level) {
  switch (type) {
    case GgmlType::kF32: std::memcpy(dst, src, static_cast<std::size_t>(n) * 4); return;
    case GgmlType::kF16: {
      // The mapping may leave f16 data at an odd address only with general.alignment 1.
      if (reinterpret_cast<std::uintptr_t>(src) % 2 == 0) {
        cpu_kernels(level).f16_to_f32(reinterpret_cast<const std::uint16_t*>(src), dst, n);
      } else {
        for (std::int64_t i = 0; i < n; ++i) {
          std::uint16_t h;
          std::memcpy(&h, src + 2 * i, 2);
          dst[i] = f16_to_f32(h);
        }
      }
      return;
    }
    case GgmlType::kBF16:
      for (std::int64_t i = 0; i < n; ++i) {
        std::uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        dst[i] = bf16_to_f32(h);
      }
      return;
    case GgmlType::kQ8_0: dequant_kernels(level).q8_0(src, dst, n / kQuantBlock); return;
    case GgmlType::kQ4_0: dequant_kernels(level).q4_0(src, dst, n / kQuantBlock); return;
    case GgmlType::kQ4_1: dequant_kernels(level).q4_1(src, dst, n / kQuantBlock); return;
    default: break;
  }
  throw UnsupportedError(fmt::format("cannot dequantize ggml type {}", ggml_type_name(type)));
}

ModelConfig gguf_model_config(const GgufFile& g) {
  const std::string& path = g.path();
  const std::string arch = g.get_string("general.architecture");
  if (arch != "llama") {
    throw UnsupportedError(fmt::format("{}: GGUF architecture '{}' is not supported (supported: llama)", path, arch));
  }
  const std::string p = "llama.";
  if (g.find_int(p + "expert_count").value_or(0) > 0) {
    throw UnsupportedError(fmt::format("{}: mixture-of-experts models are not supported", path));
  }
  ModelConfig c;
  c.architecture = "LlamaForCausalLM";
  c.hidden_size = static_cast<int>(meta_int(g, p + "embedding_length", 1, 1 << 16));
  c.n_layers = static_cast<int>(meta_int(g, p + "block_count", 1, 1024));
  c.ffn_hidden = static_cast<int>(meta_int(g, p + "feed_forward_length", 1, 1 << 20));
  c.n_heads = static_cast<int>(meta_int(g, p + "attention.head_count", 1, 1024));
  c.n_kv_heads = g.find(p + "attention.head_count_kv") ? static_cast<int>(meta_int(g, p + "attention.head_count_kv", 1, 1024))
                                                        : c.n_heads;
  c.max_ctx = meta_int(g, p + "context_length", 1, std::int64_t{1} << 32);
  c.head_dim = g.find(p + "attention.key_length") ? static_cast<int>(meta_int(g, p + "attention.key_length", 1, 1024))
                                                   : c.hidden_size / c.n_heads;
  if (g.find(p + "attention.value_length") && g.get_int(p + "attention.value_length") != c.head_dim) {
    throw UnsupportedError(fmt::format("{}: attention.value_length differs from key_length", path));
  }
  if (const auto rot = g.find_int(p + "rope.dimension_count"); rot && *rot != c.head_dim) {
    throw UnsupportedError(fmt::format("{}: rope.dimension_count {} differs from the head dimension {} (partial "
                                       "rotary embeddings are not supported)",
                                       path, *rot, c.head_dim));
  }
  c.rope_theta = g.find_float(p + "rope.freq_base").value_or(10000.0);
  if (const auto s = g.find_string(p + "rope.scaling.type"); s && *s != "none") {
    throw UnsupportedError(fmt::format("{}: rope scaling type '{}' is not supported", path, *s));
  }
  if (g.find_tensor("rope_freqs.weight") != nullptr) {
    throw UnsupportedError(fmt::format("{}: rope_freqs.weight (Llama 3.1 RoPE scaling) is not supported", path));
  }
  if (g.find_tensor("blk.0.attn_q.bias") != nullptr) {
    throw UnsupportedError(fmt::format("{}: attention biases in a llama GGUF are not supported", path));
  }
  c.norm_eps = static_cast<float>(g.get_float(p + "attention.layer_norm_rms_epsilon"));
  c.rope_layout = RopeLayout::kHalf;  // attn_q / attn_k are un-permuted at load
  c.tied_embeddings = g.find_tensor("output.weight") == nullptr;
  if (const GgufValue* tokens = g.find("tokenizer.ggml.tokens"); tokens && tokens->array) {
    c.vocab_size = static_cast<int>(std::min<std::size_t>(tokens->array->size(), std::size_t{1} << 30));
  } else if (g.find(p + "vocab_size")) {
    c.vocab_size = static_cast<int>(meta_int(g, p + "vocab_size", 1, 1 << 24));
  } else {
    const GgufTensorInfo& e = g.get_tensor("token_embd.weight");
    c.vocab_size = e.dims.size() == 2 ? static_cast<int>(std::min<std::int64_t>(e.dims[1], 1 << 30)) : 0;
  }
  const int vocab = c.vocab_size;
  auto id = [&](const char* key, int fallback) {
    const auto v = g.find_int(key);
    return v ? static_cast<int>(std::clamp<std::int64_t>(*v, -1, vocab)) : fallback;
  };
  c.bos_id = id("tokenizer.ggml.bos_token_id", 1);
  c.eos_ids = {id("tokenizer.ggml.eos_token_id", 2)};
  if (const int eot = id("tokenizer.ggml.eot_token_id", -2); eot != -2 && eot != c.eos_ids[0]) c.eos_ids.push_back(eot);
  c.validate(path);
  return c;
}

ModelWeights load_gguf_weights(const std::string& path, const WeightsOptions& options) {
  auto g = std::make_shared<GgufFile>(path);
  const ModelConfig c = gguf_model_config(*g);
  // Memory: the mapping (file size) plus what dequantization allocates (2 or 4 bytes a weight).
  std::int64_t converted = 0;
  for (const GgufTensorInfo& t : g->tensors()) {
    if (t.dims.size() == 2 && (is_quantized(t.type) || options.to_f32)) converted += t.numel * (options.to_f32 ? 4 : 2);
  }
  require_memory(static_cast<std::int64_t>(g->file_size()) + converted,
                 fmt::format("the model's weights ({} parameters{})", c.n_params(), options.to_f32 ? " as f32" : ""));

  const std::int64_t H = c.hidden_size, Q = c.q_dim(), KV = c.kv_dim(), F = c.ffn_hidden, V = c.vocab_size;
  ModelWeights w;
  w.config = c;
  w.source = path;
  w.storage.push_back(g);
  GgufLoader ld(w, *g, options);
  w.tok_embd = ld.mat("token_embd.weight", V, H);
  w.layers.resize(static_cast<std::size_t>(c.n_layers));
  for (int i = 0; i < c.n_layers; ++i) {
    const std::string p = fmt::format("blk.{}.", i);
    LayerWeights& l = w.layers[static_cast<std::size_t>(i)];
    l.attn_norm = ld.vec(p + "attn_norm.weight", H);
    l.wq = ld.mat(p + "attn_q.weight", Q, H, c.n_heads);
    l.wk = ld.mat(p + "attn_k.weight", KV, H, c.n_kv_heads);
    l.wv = ld.mat(p + "attn_v.weight", KV, H);
    l.wo = ld.mat(p + "attn_output.weight", H, Q);
    l.ffn_norm = ld.vec(p + "ffn_norm.weight", H);
    l.w_gate = ld.mat(p + "ffn_gate.weight", F, H);
    l.w_up = ld.mat(p + "ffn_up.weight", F, H);
    l.w_down = ld.mat(p + "ffn_down.weight", H, F);
  }
  w.final_norm = ld.vec("output_norm.weight", H);
  if (!c.tied_embeddings) w.lm_head = ld.mat("output.weight", V, H);
  return w;
}

}  // namespace million
