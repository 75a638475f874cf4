// Hugging Face weight loading: maps the safetensors, checks every tensor the config implies
// (present, right shape, a float dtype) and points the matrices into the mapping (or copies /
// converts them when alignment or WeightsOptions::to_f32 asks for it).
#include "model/weights.h"

#include <fmt/format.h>

#include <cstring>
#include <filesystem>

#include "core/half.h"
#include "core/mapped_file.h"
#include "core/memory.h"
#include "million/error.h"
#include "million/log.h"
#include "model/gguf_model.h"
#include "model/safetensors.h"

namespace million {

namespace fs = std::filesystem;

std::int64_t ModelWeights::bytes() const {
  std::int64_t n = tok_embd.bytes() + lm_head.bytes() + static_cast<std::int64_t>(final_norm.size()) * 4;
  for (const auto& l : layers) {
    for (const auto* m : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down}) n += m->bytes();
    for (const auto* v : {&l.attn_norm, &l.bq, &l.bk, &l.bv, &l.ffn_norm}) n += static_cast<std::int64_t>(v->size()) * 4;
  }
  return n;
}

std::string ModelWeights::matrix_dtype() const {
  std::string name = weight_dtype_name(tok_embd.dtype);
  for (const auto& l : layers) {
    for (const auto* m : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down}) {
      if (weight_dtype_name(m->dtype) != name) return "mixed";
    }
  }
  return name;
}

std::vector<float> matrix_to_f32(const WeightMatrix& w) {
  std::vector<float> out(static_cast<std::size_t>(w.rows * w.cols));
  for (std::int64_t r = 0; r < w.rows; ++r) weight_row_f32(w, r, out.data() + r * w.cols, SimdLevel::kScalar);
  return out;
}

namespace {

std::string shape_str(const std::vector<std::int64_t>& s) {
  std::string out = "[";
  for (std::size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

void check_tensor(const TensorInfo& t, const std::vector<std::int64_t>& expected) {
  if (t.shape != expected) {
    throw FormatError(fmt::format("{}: tensor '{}' has shape {} but the config implies {}", t.file, t.name,
                                  shape_str(t.shape), shape_str(expected)));
  }
  if (t.dtype != DType::kF32 && t.dtype != DType::kF16 && t.dtype != DType::kBF16) {
    throw UnsupportedError(fmt::format("{}: tensor '{}' has dtype {}; weights must be F32, F16 or BF16", t.file,
                                       t.name, t.dtype_str));
  }
}

float element_f32(const TensorInfo& t, std::int64_t i) {
  if (t.dtype == DType::kF32) {
    float f;
    std::memcpy(&f, t.data + 4 * i, 4);
    return f;
  }
  std::uint16_t b;
  std::memcpy(&b, t.data + 2 * i, 2);
  return t.dtype == DType::kF16 ? f16_to_f32(b) : bf16_to_f32(b);
}

std::vector<float> vector_f32(const TensorInfo& t, std::int64_t n) {
  check_tensor(t, {n});
  std::vector<float> out(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) out[static_cast<std::size_t>(i)] = element_f32(t, i);
  return out;
}

class MatrixLoader {
 public:
  MatrixLoader(ModelWeights& w, const WeightsOptions& opt) : w_(w), opt_(opt) {}

  WeightMatrix load(const TensorInfo& t, std::int64_t rows, std::int64_t cols) {
    check_tensor(t, {rows, cols});
    WeightMatrix m;
    m.rows = rows;
    m.cols = cols;
    m.dtype = t.dtype == DType::kF32 ? WeightDType::kF32 : t.dtype == DType::kF16 ? WeightDType::kF16 : WeightDType::kBF16;
    const auto align = static_cast<std::uintptr_t>(weight_dtype_size(m.dtype));
    if (!opt_.to_f32 && reinterpret_cast<std::uintptr_t>(t.data) % align == 0) {
      m.data = t.data;  // zero copy: read from the mapping
      return m;
    }
    if (!opt_.to_f32) {  // misaligned in the file: copy as is
      auto buf = std::make_shared<std::vector<std::uint32_t>>((t.nbytes + 3) / 4);
      std::memcpy(buf->data(), t.data, t.nbytes);
      m.data = buf->data();
      w_.storage.push_back(buf);
      return m;
    }
    auto buf = std::make_shared<std::vector<float>>(static_cast<std::size_t>(rows * cols));
    const std::int64_t n = rows * cols;
#pragma omp parallel for schedule(static)
    for (std::int64_t i = 0; i < n; ++i) (*buf)[static_cast<std::size_t>(i)] = element_f32(t, i);
    m.dtype = WeightDType::kF32;
    m.data = buf->data();
    w_.storage.push_back(buf);
    return m;
  }

 private:
  ModelWeights& w_;
  const WeightsOptions& opt_;
};

}  // namespace

ModelWeights load_hf_weights(const std::string& dir, const WeightsOptions& options) {
  const std::string config_path = (fs::path(dir) / "config.json").string();
  if (!fs::exists(config_path)) {
    throw IoError(fmt::format("'{}' has no config.json: expected a Hugging Face model directory", dir));
  }
  ModelConfig c = parse_hf_config(read_text_file(config_path, "model config"), config_path);
  auto st = std::make_shared<SafetensorsModel>(SafetensorsModel::open_dir(dir));
  const std::int64_t bytes = options.to_f32 ? c.n_params() * 4 : st->total_bytes();
  require_memory(bytes, fmt::format("the model's weights ({} parameters{})", c.n_params(),
                                    options.to_f32 ? " as f32" : ""));

  const std::int64_t H = c.hidden_size, Q = c.q_dim(), KV = c.kv_dim(), F = c.ffn_hidden, V = c.vocab_size;
  ModelWeights w;
  w.config = c;
  w.source = dir;
  w.storage.push_back(st);
  MatrixLoader ml(w, options);
  auto mat = [&](const std::string& name, std::int64_t rows, std::int64_t cols) { return ml.load(st->get(name), rows, cols); };
  auto vec = [&](const std::string& name, std::int64_t n) { return vector_f32(st->get(name), n); };

  w.tok_embd = mat("model.embed_tokens.weight", V, H);
  w.layers.resize(static_cast<std::size_t>(c.n_layers));
  for (int i = 0; i < c.n_layers; ++i) {
    const std::string p = fmt::format("model.layers.{}.", i);
    LayerWeights& l = w.layers[static_cast<std::size_t>(i)];
    l.attn_norm = vec(p + "input_layernorm.weight", H);
    l.wq = mat(p + "self_attn.q_proj.weight", Q, H);
    l.wk = mat(p + "self_attn.k_proj.weight", KV, H);
    l.wv = mat(p + "self_attn.v_proj.weight", KV, H);
    if (c.qkv_bias) {
      l.bq = vec(p + "self_attn.q_proj.bias", Q);
      l.bk = vec(p + "self_attn.k_proj.bias", KV);
      l.bv = vec(p + "self_attn.v_proj.bias", KV);
    }
    l.wo = mat(p + "self_attn.o_proj.weight", H, Q);
    l.ffn_norm = vec(p + "post_attention_layernorm.weight", H);
    l.w_gate = mat(p + "mlp.gate_proj.weight", F, H);
    l.w_up = mat(p + "mlp.up_proj.weight", F, H);
    l.w_down = mat(p + "mlp.down_proj.weight", H, F);
  }
  w.final_norm = vec("model.norm.weight", H);
  if (!c.tied_embeddings) {
    if (st->find("lm_head.weight") == nullptr) {
      throw FormatError(fmt::format("{}: config says tie_word_embeddings=false but there is no 'lm_head.weight' tensor",
                                    dir));
    }
    w.lm_head = mat("lm_head.weight", V, H);
  }
  return w;
}

ModelWeights load_weights(const std::string& path, const WeightsOptions& options) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) return load_hf_weights(path, options);
  if (!fs::exists(path, ec)) throw IoError(fmt::format("model '{}' does not exist", path));
  if (is_gguf_file(path)) return load_gguf_weights(path, options);  // checks its own memory needs
  const std::int64_t size = static_cast<std::int64_t>(fs::file_size(path, ec));
  require_memory(size, fmt::format("the model '{}'", path));
  return load_llama2c_weights(path);  // f32 already; to_f32 changes nothing
}

}  // namespace million
