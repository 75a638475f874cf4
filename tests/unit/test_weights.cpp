// Weight loading (weights.cpp, llama2c_file.cpp): stories260K.bin against its header and the
// README's tensor layout, the tiny HF models against their raw safetensors bytes decoded here
// (F32 copy, BF16 = bits << 16, F16 via f16_to_f32) as stored, with to_f32 and misaligned, and
// corrupt checkpoints / model directories built in temp dirs. Values are compared bit-exactly
// (tolerance 0): widening f16/bf16 to f32 is exact, so any difference is a bug.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "common/test_util.h"
#include "common/test_paths.h"
#include "core/half.h"
#include "million/error.h"
#include "model/weights.h"

namespace million {
namespace {

using test::throws;
using test::slurp;

namespace fs = std::filesystem;
using nlohmann::json;




std::string stories_path() { return test::source_dir() + "/models/stories260K/stories260K.bin"; }
std::string tiny_dir(const std::string& name) { return test::data_path("hf-tiny/" + name); }

/// Bitwise equality of a loaded tensor and the expected floats, reporting the first difference.
::testing::AssertionResult same_bits(const std::vector<float>& got, const std::vector<float>& want) {
  if (got.size() != want.size()) {
    return ::testing::AssertionFailure() << "size " << got.size() << ", expected " << want.size();
  }
  for (std::size_t i = 0; i < got.size(); ++i) {
    std::uint32_t a, b;
    std::memcpy(&a, &got[i], 4);
    std::memcpy(&b, &want[i], 4);
    if (a != b) return ::testing::AssertionFailure() << "element " << i << ": " << got[i] << ", expected " << want[i];
  }
  return ::testing::AssertionSuccess();
}

/// A matrix as f32, after checking its shape and stored dtype.
std::vector<float> f32(const WeightMatrix& m, std::size_t rows, std::size_t cols, WeightDType dtype) {
  EXPECT_EQ(m.rows, static_cast<std::int64_t>(rows));
  EXPECT_EQ(m.cols, static_cast<std::int64_t>(cols));
  EXPECT_EQ(m.dtype, dtype);
  EXPECT_FALSE(m.empty());
  return matrix_to_f32(m);
}

// --- llama2.c ------------------------------------------------------------------------------------

std::vector<float> floats_at(const std::string& bytes, std::size_t offset, std::size_t count) {
  std::vector<float> out(count);
  EXPECT_LE(offset + count * 4, bytes.size());
  std::memcpy(out.data(), bytes.data() + offset, count * 4);
  return out;
}

std::int32_t header_field(const std::string& bytes, int i) {
  std::int32_t v;
  std::memcpy(&v, bytes.data() + 4 * i, 4);
  return v;
}

std::string with_header_field(std::string bytes, int i, std::int32_t v) {
  std::memcpy(bytes.data() + 4 * i, &v, 4);
  return bytes;
}

std::string write_temp(const std::string& name, const std::string& bytes) {
  const std::string path = test::temp_dir() + "/" + name;
  test::write_file(path, bytes);
  return path;
}

TEST(Llama2c, Stories260KMatchesHeaderAndReadmeLayout) {
  const std::string bytes = slurp(stories_path());
  ASSERT_EQ(bytes.size(), 1'056'540u);  // README
  const ModelWeights w = load_llama2c_weights(stories_path());
  const ModelConfig& c = w.config;
  EXPECT_EQ(c.architecture, "llama2.c");
  EXPECT_EQ(c.hidden_size, 64);
  EXPECT_EQ(c.ffn_hidden, 172);
  EXPECT_EQ(c.n_layers, 5);
  EXPECT_EQ(c.n_heads, 8);
  EXPECT_EQ(c.n_kv_heads, 4);
  EXPECT_EQ(c.vocab_size, 512);
  EXPECT_EQ(c.max_ctx, 512);
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_EQ(c.kv_dim(), 32);
  EXPECT_TRUE(c.tied_embeddings);
  EXPECT_EQ(c.rope_layout, RopeLayout::kInterleaved);
  EXPECT_EQ(c.rope_theta, 10000.0);
  EXPECT_FLOAT_EQ(c.norm_eps, 1e-5f);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_EQ(w.source, stories_path());
  const int fields[] = {c.hidden_size, c.ffn_hidden, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size,
                        static_cast<int>(c.max_ctx)};
  for (int i = 0; i < 7; ++i) EXPECT_EQ(header_field(bytes, i), fields[i]) << "header field " << i;

  // Walk the file in the README's order and compare every tensor.
  const std::size_t D = 64, F = 172, L = 5, KV = 32, V = 512, seq = 512, half = 4;
  std::size_t off = 28;
  auto next = [&](std::size_t count) {
    std::vector<float> v = floats_at(bytes, off, count);
    off += count * 4;
    return v;
  };
  EXPECT_TRUE(same_bits(f32(w.tok_embd, V, D, WeightDType::kF32), next(V * D)));
  ASSERT_EQ(w.layers.size(), L);
  for (const auto& l : w.layers) EXPECT_TRUE(same_bits(l.attn_norm, next(D)));
  for (const auto& l : w.layers) EXPECT_TRUE(same_bits(f32(l.wq, D, D, WeightDType::kF32), next(D * D)));
  for (const auto& l : w.layers) EXPECT_TRUE(same_bits(f32(l.wk, KV, D, WeightDType::kF32), next(KV * D)));
  for (const auto& l : w.layers) EXPECT_TRUE(same_bits(f32(l.wv, KV, D, WeightDType::kF32), next(KV * D)));
  for (const auto& l : w.layers) EXPECT_TRUE(same_bits(f32(l.wo, D, D, WeightDType::kF32), next(D * D)));
  for (const auto& l : w.layers) EXPECT_TRUE(same_bits(l.ffn_norm, next(D)));
  for (const auto& l : w.layers) EXPECT_TRUE(same_bits(f32(l.w_gate, F, D, WeightDType::kF32), next(F * D)));  // w1
  for (const auto& l : w.layers) EXPECT_TRUE(same_bits(f32(l.w_down, D, F, WeightDType::kF32), next(D * F)));  // w2
  for (const auto& l : w.layers) EXPECT_TRUE(same_bits(f32(l.w_up, F, D, WeightDType::kF32), next(F * D)));    // w3
  EXPECT_TRUE(same_bits(w.final_norm, next(D)));
  off += 2 * seq * half * 4;  // legacy RoPE tables
  EXPECT_EQ(off, bytes.size());
  for (const auto& l : w.layers) {
    EXPECT_TRUE(l.bq.empty() && l.bk.empty() && l.bv.empty());
  }
  EXPECT_TRUE(w.lm_head.empty());
  EXPECT_EQ(&w.output_matrix(), &w.tok_embd);
  EXPECT_EQ(w.matrix_dtype(), "f32");
  EXPECT_EQ(w.bytes(), static_cast<std::int64_t>(4 * (V * D + L * (2 * D + 2 * D * D + 2 * KV * D + 3 * F * D) + D)));
}

TEST(Llama2c, UntiedCheckpointReadsTheClassifier) {
  // Negative vocab_size = separate classifier (wcls) after the RoPE tables.
  const std::string bytes = slurp(stories_path());
  std::string cls(512 * 64 * 4, '\0');
  for (std::size_t i = 0; i < cls.size(); ++i) cls[i] = static_cast<char>((i * 7 + 3) & 0x3f);  // small finite floats
  const std::string path = write_temp("untied.bin", with_header_field(bytes, 5, -512) + cls);
  const ModelWeights w = load_llama2c_weights(path);
  EXPECT_FALSE(w.config.tied_embeddings);
  EXPECT_EQ(w.config.vocab_size, 512);
  EXPECT_TRUE(same_bits(f32(w.lm_head, 512, 64, WeightDType::kF32), floats_at(cls, 0, 512 * 64)));
  EXPECT_EQ(&w.output_matrix(), &w.lm_head);
  // Without the classifier bytes the size no longer matches.
  const std::string short_path = write_temp("untied-short.bin", with_header_field(bytes, 5, -512));
  EXPECT_HAS(throws<FormatError>([&] { load_llama2c_weights(short_path); }), "truncated");
}

TEST(Llama2c, TruncatedOrExtendedFilesAreFormatErrors) {
  const std::string bytes = slurp(stories_path());
  for (std::size_t len : {std::size_t{0}, std::size_t{10}, std::size_t{27}, std::size_t{28}, std::size_t{1000},
                          bytes.size() - 1}) {
    SCOPED_TRACE(len);
    const std::string path = write_temp("truncated.bin", bytes.substr(0, len));
    const std::string msg = throws<FormatError>([&] { load_llama2c_weights(path); });
    EXPECT_HAS(msg, path);
    EXPECT_HAS(msg, "truncated");
    EXPECT_HAS(msg, "bytes");
  }
  const std::string path = write_temp("extra.bin", bytes + '\0');
  const std::string msg = throws<FormatError>([&] { load_llama2c_weights(path); });
  EXPECT_HAS(msg, std::to_string(bytes.size() + 1));
  EXPECT_HAS(msg, std::to_string(bytes.size()));
}

TEST(Llama2c, BadHeadersAreFormatErrors) {
  const std::string bytes = slurp(stories_path());
  const std::int32_t kMin = std::numeric_limits<std::int32_t>::min();
  const std::int32_t kMax = std::numeric_limits<std::int32_t>::max();
  struct Case {
    int field;
    std::int32_t value;
  };
  // Fields: 0 dim, 1 hidden, 2 layers, 3 heads, 4 kv heads, 5 vocab, 6 seq_len.
  const Case cases[] = {{3, 0},    {3, -8},   {0, -64}, {0, 0},    {0, 60},   {4, 3},    {4, 0},
                        {4, 16},   {2, 0},    {2, -5},  {1, 0},    {5, 0},    {5, kMin}, {6, 0},
                        {6, -512}, {0, kMin}, {1, kMax}, {2, kMax}, {5, kMax}, {6, kMax}, {3, kMin}};
  for (const Case& c : cases) {
    SCOPED_TRACE("header field " + std::to_string(c.field) + " = " + std::to_string(c.value));
    const std::string path = write_temp("bad-header.bin", with_header_field(bytes, c.field, c.value));
    EXPECT_HAS(throws<FormatError>([&] { load_llama2c_weights(path); }), path);
  }
  // A header at every validated maximum implies terabytes: refused by the size check before
  // anything is allocated.
  std::string big = bytes;
  const std::pair<int, std::int32_t> maxima[] = {{0, 1 << 16}, {1, 1 << 20}, {2, 1024}, {3, 1024},
                                                 {4, 1024},    {5, 1 << 24}, {6, kMax}};
  for (auto [i, v] : maxima) big = with_header_field(big, i, v);
  const std::string path = write_temp("huge.bin", big);
  EXPECT_HAS(throws<FormatError>([&] { load_llama2c_weights(path); }), "truncated");
}

TEST(Llama2c, MissingFileIsIoError) {
  const std::string path = test::temp_dir() + "/nope.bin";
  EXPECT_HAS(throws<IoError>([&] { load_llama2c_weights(path); }), path);
  EXPECT_HAS(throws<IoError>([&] { load_weights(path); }), path);
}

// --- Hugging Face: reading raw safetensors here ------------------------------------------------------

struct RawTensor {
  std::string dtype;
  std::vector<std::int64_t> shape;
  std::string bytes;
};
using RawTensors = std::map<std::string, RawTensor>;

/// Parses a .safetensors file with nothing but the format's definition: 8-byte little-endian
/// header length, JSON header, data buffer.
RawTensors read_raw(const std::string& path) {
  const std::string file = slurp(path);
  std::uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<std::uint64_t>(static_cast<unsigned char>(file[i])) << (8 * i);
  const json header = json::parse(file.substr(8, n));
  RawTensors out;
  for (const auto& [name, t] : header.items()) {
    if (name == "__metadata__") continue;
    const auto b = t["data_offsets"][0].get<std::size_t>(), e = t["data_offsets"][1].get<std::size_t>();
    out[name] = {t["dtype"].get<std::string>(), t["shape"].get<std::vector<std::int64_t>>(), file.substr(8 + n + b, e - b)};
  }
  return out;
}

RawTensors read_raw_dir(const std::string& dir) {
  RawTensors all;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().extension() != ".safetensors") continue;
    for (auto& [name, t] : read_raw(entry.path().string())) all[name] = std::move(t);
  }
  return all;
}

/// Writes tensors as a .safetensors file (data laid out in map order). The header is padded
/// with spaces (as writers do) until the data buffer starts at `data_mod` modulo 8, which
/// controls the alignment of every tensor whose offset is a multiple of 8.
void write_raw(const std::string& path, const RawTensors& tensors, std::size_t data_mod = 0) {
  json header = json::object();
  std::string data;
  for (const auto& [name, t] : tensors) {
    header[name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {data.size(), data.size() + t.bytes.size()}}};
    data += t.bytes;
    data.append((8 - data.size() % 8) % 8, '\0');  // keep the next tensor 8-byte aligned in the buffer
  }
  std::string h = header.dump();
  while ((8 + h.size()) % 8 != data_mod) h += ' ';
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[static_cast<std::size_t>(i)] = static_cast<char>((h.size() >> (8 * i)) & 0xff);
  test::write_file(path, out + h + data);
}

/// Decodes a raw tensor to f32 from the dtype definitions.
std::vector<float> decode(const RawTensor& t) {
  std::vector<float> out;
  if (t.dtype == "F32") {
    out.resize(t.bytes.size() / 4);
    std::memcpy(out.data(), t.bytes.data(), t.bytes.size());
  } else if (t.dtype == "BF16" || t.dtype == "F16") {
    out.resize(t.bytes.size() / 2);
    for (std::size_t i = 0; i < out.size(); ++i) {
      std::uint16_t h;
      std::memcpy(&h, t.bytes.data() + 2 * i, 2);
      if (t.dtype == "BF16") {
        const std::uint32_t bits = static_cast<std::uint32_t>(h) << 16;
        std::memcpy(&out[i], &bits, 4);
      } else {
        out[i] = f16_to_f32(h);  // itself checked against F16C hardware in test_core
      }
    }
  } else {
    ADD_FAILURE() << "unexpected dtype " << t.dtype;
  }
  return out;
}

WeightDType weight_dtype_of(const std::string& dtype) {
  if (dtype == "BF16") return WeightDType::kBF16;
  if (dtype == "F16") return WeightDType::kF16;
  return WeightDType::kF32;
}

/// One loaded tensor: its values as f32, its shape and, for matrices, the dtype it is held in.
struct Loaded {
  std::vector<float> values;
  std::vector<std::int64_t> shape;
  bool is_matrix = false;
  WeightDType dtype = WeightDType::kF32;
};

/// Every tensor of a loaded model under its Hugging Face name.
std::map<std::string, Loaded> by_hf_name(const ModelWeights& w) {
  std::map<std::string, Loaded> m;
  auto mat = [&](const std::string& name, const WeightMatrix& x) {
    m[name] = {matrix_to_f32(x), {x.rows, x.cols}, true, x.dtype};
  };
  auto vec = [&](const std::string& name, const std::vector<float>& v) {
    m[name] = {v, {static_cast<std::int64_t>(v.size())}, false, WeightDType::kF32};
  };
  mat("model.embed_tokens.weight", w.tok_embd);
  vec("model.norm.weight", w.final_norm);
  if (!w.lm_head.empty()) mat("lm_head.weight", w.lm_head);
  for (std::size_t i = 0; i < w.layers.size(); ++i) {
    const LayerWeights& l = w.layers[i];
    const std::string p = "model.layers." + std::to_string(i) + ".";
    vec(p + "input_layernorm.weight", l.attn_norm);
    vec(p + "post_attention_layernorm.weight", l.ffn_norm);
    mat(p + "self_attn.q_proj.weight", l.wq);
    mat(p + "self_attn.k_proj.weight", l.wk);
    mat(p + "self_attn.v_proj.weight", l.wv);
    mat(p + "self_attn.o_proj.weight", l.wo);
    mat(p + "mlp.gate_proj.weight", l.w_gate);
    mat(p + "mlp.up_proj.weight", l.w_up);
    mat(p + "mlp.down_proj.weight", l.w_down);
    if (!l.bq.empty() || !l.bk.empty() || !l.bv.empty()) {
      vec(p + "self_attn.q_proj.bias", l.bq);
      vec(p + "self_attn.k_proj.bias", l.bk);
      vec(p + "self_attn.v_proj.bias", l.bv);
    }
  }
  return m;
}

/// Checks that `w` holds exactly the tensors of `raw`, each with its shape and its exact values,
/// matrices in the stored dtype (or f32 when `to_f32`).
void compare(const ModelWeights& w, const RawTensors& raw, bool to_f32) {
  const auto loaded = by_hf_name(w);
  EXPECT_EQ(loaded.size(), raw.size()) << "every stored tensor is used, and only those";
  std::int64_t expected_bytes = 0;
  for (const auto& [name, t] : raw) {
    SCOPED_TRACE(name);
    auto it = loaded.find(name);
    if (it == loaded.end()) {
      ADD_FAILURE() << "stored tensor not loaded";
      continue;
    }
    const Loaded& got = it->second;
    EXPECT_EQ(got.shape, t.shape);
    EXPECT_TRUE(same_bits(got.values, decode(t)));
    if (got.is_matrix) {
      EXPECT_EQ(got.dtype, to_f32 ? WeightDType::kF32 : weight_dtype_of(t.dtype));
      expected_bytes += static_cast<std::int64_t>(to_f32 ? got.values.size() * 4 : t.bytes.size());
    } else {
      expected_bytes += static_cast<std::int64_t>(got.values.size() * 4);
    }
  }
  EXPECT_EQ(w.bytes(), expected_bytes);
}

ModelWeights load_and_compare(const std::string& dir, const std::string& expected_dtype) {
  ModelWeights w = load_hf_weights(dir);
  const RawTensors raw = read_raw_dir(dir);
  for (const auto& [name, t] : raw) EXPECT_EQ(t.dtype, expected_dtype) << name;
  compare(w, raw, /*to_f32=*/false);
  // The same with every matrix converted to f32 at load.
  WeightsOptions o;
  o.to_f32 = true;
  const ModelWeights w32 = load_hf_weights(dir, o);
  compare(w32, raw, /*to_f32=*/true);
  EXPECT_EQ(w32.matrix_dtype(), "f32");
  EXPECT_EQ(w32.bytes(), 4 * w32.config.n_params());
  return w;
}

void expect_shapes(const ModelWeights& w) {
  const ModelConfig& c = w.config;
  const std::int64_t H = c.hidden_size, Q = c.q_dim(), KV = c.kv_dim(), F = c.ffn_hidden, V = c.vocab_size;
  auto shape = [](const WeightMatrix& m) { return std::vector<std::int64_t>{m.rows, m.cols}; };
  using S = std::vector<std::int64_t>;
  EXPECT_EQ(shape(w.tok_embd), (S{V, H}));
  EXPECT_EQ(w.final_norm.size(), static_cast<std::size_t>(H));
  ASSERT_EQ(w.layers.size(), static_cast<std::size_t>(c.n_layers));
  for (const LayerWeights& l : w.layers) {
    EXPECT_EQ(l.attn_norm.size(), static_cast<std::size_t>(H));
    EXPECT_EQ(l.ffn_norm.size(), static_cast<std::size_t>(H));
    EXPECT_EQ(shape(l.wq), (S{Q, H}));
    EXPECT_EQ(shape(l.wk), (S{KV, H}));
    EXPECT_EQ(shape(l.wv), (S{KV, H}));
    EXPECT_EQ(shape(l.wo), (S{H, Q}));
    EXPECT_EQ(shape(l.w_gate), (S{F, H}));
    EXPECT_EQ(shape(l.w_up), (S{F, H}));
    EXPECT_EQ(shape(l.w_down), (S{H, F}));
    EXPECT_EQ(static_cast<std::int64_t>(l.bq.size()), c.qkv_bias ? Q : 0);
    EXPECT_EQ(static_cast<std::int64_t>(l.bk.size()), c.qkv_bias ? KV : 0);
    EXPECT_EQ(static_cast<std::int64_t>(l.bv.size()), c.qkv_bias ? KV : 0);
  }
  if (c.tied_embeddings) {
    EXPECT_TRUE(w.lm_head.empty());
    EXPECT_EQ(&w.output_matrix(), &w.tok_embd);
  } else {
    EXPECT_EQ(shape(w.lm_head), (S{V, H}));
    EXPECT_EQ(&w.output_matrix(), &w.lm_head);
  }
}

TEST(HfWeights, MistralBf16) {
  const ModelWeights w = load_and_compare(tiny_dir("mistral-sw"), "BF16");
  EXPECT_EQ(w.config.architecture, "MistralForCausalLM");
  EXPECT_FALSE(w.config.tied_embeddings);
  EXPECT_EQ(w.source, tiny_dir("mistral-sw"));
  EXPECT_EQ(w.matrix_dtype(), "bf16");
  expect_shapes(w);
}

TEST(HfWeights, Qwen2F16WithBiases) {
  const ModelWeights w = load_and_compare(tiny_dir("qwen2-bias"), "F16");
  EXPECT_TRUE(w.config.qkv_bias);
  EXPECT_TRUE(w.config.tied_embeddings);
  EXPECT_EQ(w.matrix_dtype(), "f16");
  for (const LayerWeights& l : w.layers) {
    EXPECT_FALSE(l.bq.empty());
    EXPECT_FALSE(l.bk.empty());
    EXPECT_FALSE(l.bv.empty());
  }
  expect_shapes(w);
}

TEST(HfWeights, Llama3ShardedF32) {
  const ModelWeights w = load_and_compare(tiny_dir("llama3-rope"), "F32");
  EXPECT_EQ(w.config.head_dim, 32);
  EXPECT_EQ(w.config.rope_scaling.type, RopeScaling::Type::kLlama3);
  EXPECT_EQ(w.matrix_dtype(), "f32");
  expect_shapes(w);
}

TEST(HfWeights, LoadWeightsDispatchesOnPathKind) {
  const ModelWeights hf = load_weights(tiny_dir("mistral-sw"));
  EXPECT_EQ(hf.config.architecture, "MistralForCausalLM");
  EXPECT_EQ(hf.config.rope_layout, RopeLayout::kHalf);
  const ModelWeights l2c = load_weights(stories_path());
  EXPECT_EQ(l2c.config.architecture, "llama2.c");
  EXPECT_EQ(l2c.config.rope_layout, RopeLayout::kInterleaved);
}

// --- Hugging Face: rewritten and broken directories ----------------------------------------------------

/// A private copy of a tiny model directory.
std::string copy_model(const std::string& name) {
  const std::string dst = test::temp_dir() + "/" + name;
  fs::copy(tiny_dir(name), dst, fs::copy_options::recursive);
  return dst;
}

/// Rewrites `dir`/model.safetensors after `edit` changes its tensors.
template <class Edit>
void rewrite(const std::string& dir, Edit&& edit, std::size_t data_mod = 0) {
  const std::string path = dir + "/model.safetensors";
  RawTensors t = read_raw(path);
  edit(t);
  write_raw(path, t, data_mod);
}

TEST(HfWeights, RewrittenFileLoadsTheSame) {
  // The writer itself is sound: an unchanged rewrite, and one converted to F32, load identically.
  const ModelWeights orig = load_hf_weights(tiny_dir("mistral-sw"));
  const auto want = by_hf_name(orig);
  const std::string dir = copy_model("mistral-sw");
  rewrite(dir, [](RawTensors&) {});
  auto got = by_hf_name(load_hf_weights(dir));
  ASSERT_EQ(got.size(), want.size());
  for (const auto& [name, v] : want) EXPECT_TRUE(same_bits(got.at(name).values, v.values)) << name;

  rewrite(dir, [](RawTensors& t) {
    for (auto& [name, r] : t) {
      const std::vector<float> f = decode(r);
      r.dtype = "F32";
      r.bytes.assign(reinterpret_cast<const char*>(f.data()), f.size() * 4);
    }
  });
  const ModelWeights w32 = load_hf_weights(dir);
  EXPECT_EQ(w32.matrix_dtype(), "f32");
  got = by_hf_name(w32);
  for (const auto& [name, v] : want) EXPECT_TRUE(same_bits(got.at(name).values, v.values)) << name;
}

TEST(HfWeights, MisalignedTensorsLoadCorrectly) {
  // bf16 data starting at an odd address, and f32 data at 2 mod 4, cannot be used in place.
  for (std::size_t mod : {1u, 3u, 7u}) {
    SCOPED_TRACE(mod);
    const std::string dir = copy_model("mistral-sw");
    rewrite(dir, [](RawTensors&) {}, mod);
    const ModelWeights w = load_hf_weights(dir);
    compare(w, read_raw(dir + "/model.safetensors"), /*to_f32=*/false);
  }
  // llama3-rope's four F32 shards merged into one file whose data starts at 2 mod 4.
  const std::string dir = copy_model("llama3-rope");
  const RawTensors all = read_raw_dir(dir);
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().extension() == ".safetensors") fs::remove(entry.path());
  }
  fs::remove(dir + "/model.safetensors.index.json");
  write_raw(dir + "/model.safetensors", all, 2);
  compare(load_hf_weights(dir), all, /*to_f32=*/false);
}

TEST(HfWeights, WeightsOutliveTheirFilesAndMoves) {
  // The matrices may point into the mapped files: the weights must keep them alive, through
  // moves and copies, even after the files are deleted.
  const std::string dir = copy_model("qwen2-bias");
  const RawTensors raw = read_raw(dir + "/model.safetensors");
  std::vector<ModelWeights> kept;
  {
    ModelWeights w = load_hf_weights(dir);
    kept.push_back(std::move(w));
  }
  kept.push_back(kept.front());  // a copy shares the storage
  fs::remove_all(dir);
  for (const ModelWeights& w : kept) compare(w, raw, /*to_f32=*/false);
  kept.erase(kept.begin());
  compare(kept.front(), raw, /*to_f32=*/false);
}

TEST(HfWeightsErrors, MissingConfigIsIoError) {
  const std::string dir = copy_model("mistral-sw");
  fs::remove(dir + "/config.json");
  EXPECT_HAS(throws<IoError>([&] { load_hf_weights(dir); }), dir);
  EXPECT_HAS(throws<IoError>([&] { load_weights(dir); }), "config.json");
}

TEST(HfWeightsErrors, MissingTensorIsNamed) {
  for (const char* name : {"model.layers.1.mlp.up_proj.weight", "model.embed_tokens.weight", "model.norm.weight"}) {
    const std::string dir = copy_model("mistral-sw");
    rewrite(dir, [&](RawTensors& t) { ASSERT_EQ(t.erase(name), 1u); });
    const std::string msg = throws<FormatError>([&] { load_hf_weights(dir); });
    EXPECT_HAS(msg, "missing tensor");
    EXPECT_HAS(msg, name);
  }
  const std::string dir = copy_model("qwen2-bias");
  rewrite(dir, [](RawTensors& t) { ASSERT_EQ(t.erase("model.layers.0.self_attn.k_proj.bias"), 1u); });
  EXPECT_HAS(throws<FormatError>([&] { load_hf_weights(dir); }), "model.layers.0.self_attn.k_proj.bias");
}

TEST(HfWeightsErrors, WrongShapeIsNamed) {
  const std::string dir = copy_model("mistral-sw");
  rewrite(dir, [](RawTensors& t) {
    auto& s = t.at("model.layers.0.mlp.gate_proj.weight").shape;  // [128, 64] -> [64, 128]
    std::swap(s[0], s[1]);
  });
  const std::string msg = throws<FormatError>([&] { load_hf_weights(dir); });
  EXPECT_HAS(msg, "shape");
  EXPECT_HAS(msg, "model.layers.0.mlp.gate_proj.weight");

  const std::string dir2 = copy_model("qwen2-bias");
  rewrite(dir2, [](RawTensors& t) { t.at("model.layers.1.self_attn.q_proj.bias").shape = {1, 64}; });
  EXPECT_HAS(throws<FormatError>([&] { load_hf_weights(dir2); }), "shape");

  const std::string dir3 = copy_model("qwen2-bias");
  rewrite(dir3, [](RawTensors& t) { t.at("model.layers.1.input_layernorm.weight").shape = {8, 8}; });
  EXPECT_HAS(throws<FormatError>([&] { load_hf_weights(dir3); }), "model.layers.1.input_layernorm.weight");
}

TEST(HfWeightsErrors, IntegerDtypeIsUnsupported) {
  for (const char* name : {"model.norm.weight", "model.layers.0.self_attn.q_proj.weight"}) {
    const std::string dir = copy_model("mistral-sw");
    rewrite(dir, [&](RawTensors& t) {
      RawTensor& r = t.at(name);
      r.dtype = "I32";
      r.bytes.assign(r.bytes.size() * 2, '\0');
    });
    const std::string msg = throws<UnsupportedError>([&] { load_hf_weights(dir); });
    EXPECT_HAS(msg, "I32");
    EXPECT_HAS(msg, name);
  }
}

TEST(HfWeightsErrors, UntiedWithoutLmHead) {
  const std::string dir = copy_model("mistral-sw");  // tie_word_embeddings false
  rewrite(dir, [](RawTensors& t) { ASSERT_EQ(t.erase("lm_head.weight"), 1u); });
  EXPECT_HAS(throws<FormatError>([&] { load_hf_weights(dir); }), "lm_head");

  const std::string dir2 = copy_model("qwen2-bias");  // tied, no lm_head stored; now claim untied
  json cfg = json::parse(slurp(dir2 + "/config.json"));
  cfg["tie_word_embeddings"] = false;
  test::write_file(dir2 + "/config.json", cfg.dump());
  EXPECT_HAS(throws<FormatError>([&] { load_hf_weights(dir2); }), "lm_head");
}

TEST(HfWeightsErrors, BadConfigOrMissingShard) {
  const std::string dir = copy_model("mistral-sw");
  test::write_file(dir + "/config.json", "{not json");
  EXPECT_HAS(throws<FormatError>([&] { load_hf_weights(dir); }), "config.json");

  const std::string dir2 = copy_model("llama3-rope");
  fs::remove(dir2 + "/model-00003-of-00004.safetensors");
  EXPECT_HAS(throws<IoError>([&] { load_hf_weights(dir2); }), "model-00003-of-00004.safetensors");

  const std::string dir3 = copy_model("mistral-sw");
  fs::remove(dir3 + "/model.safetensors");
  throws<IoError>([&] { load_hf_weights(dir3); });
}

}  // namespace
}  // namespace million
