// Unit tests for GGUF `llama` models (src/model/gguf_weights.cpp, gguf_tokenizer.cpp). The tiny
// Hugging Face model tests/data/hf-tiny/llama3-rope (its RoPE scaling switched off) is written
// here as a GGUF the way llama.cpp's converter does it (attn_q / attn_k rows permuted for
// interleaved RoPE, ggml dims order, output.weight or tied) in F32, F16 and Q8_0; loading it back
// must give the HF config, the HF matrices (un-permuted) and the same logits. Metadata and tensor
// errors give FormatError / UnsupportedError naming the key or tensor. A small byte-level BPE
// vocabulary checks the tokenizer built from metadata. SmolLM2 itself: tests/e2e/test_gguf_smollm2.cpp.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "common/gguf_writer.h"
#include "common/model_runner.h"
#include "common/test_paths.h"
#include "common/test_util.h"
#include "core/half.h"
#include "million/error.h"
#include "model/gguf_model.h"
#include "model/model.h"
#include "model/weights.h"

namespace million {
namespace {

using test::GgufWriter;
namespace enc = test::gguf_enc;

ModelWeights tiny_hf() {
  ModelWeights w = load_hf_weights(test::data_path("hf-tiny/llama3-rope"), {.to_f32 = true});
  w.config.rope_scaling = RopeScaling{};  // GGUF llama3 scaling (rope_freqs) is not supported
  return w;
}

/// llama.cpp's permute(): HF row h*hd + j*hd/2 + i goes to h*hd + 2i + j.
std::vector<float> permute_rows(const std::vector<float>& m, std::int64_t rows, std::int64_t cols, int heads) {
  std::vector<float> out(m.size());
  const std::int64_t hd = rows / heads, half = hd / 2;
  for (std::int64_t h = 0; h < heads; ++h)
    for (std::int64_t j = 0; j < 2; ++j)
      for (std::int64_t i = 0; i < half; ++i)
        std::copy_n(m.begin() + (h * hd + j * half + i) * cols, cols, out.begin() + (h * hd + 2 * i + j) * cols);
  return out;
}

/// Simple Q8_0 quantizer (d = max|x| / 127 as f16, q = round(x / d)).
std::string quantize_q8_0(const std::vector<float>& x) {
  std::string out;
  for (std::size_t b = 0; b < x.size(); b += 32) {
    float amax = 0;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[b + j]));
    const std::uint16_t dh = f32_to_f16(amax / 127.0f);
    const float d = f16_to_f32(dh), inv = d != 0 ? 1.0f / d : 0.0f;
    out += enc::le(dh);
    for (int j = 0; j < 32; ++j) {
      out += static_cast<char>(static_cast<std::int8_t>(std::clamp(std::lround(x[b + j] * inv), -127L, 127L)));
    }
  }
  return out;
}

std::string encode(const std::vector<float>& x, std::uint32_t type) {
  if (type == 0) return std::string(reinterpret_cast<const char*>(x.data()), x.size() * 4);
  if (type == 8) return quantize_q8_0(x);
  std::string out;
  for (float f : x) out += enc::le(f32_to_f16(f));
  return out;
}

struct Options {
  std::uint32_t type = 0;  // ggml type of the matrices: 0 F32, 1 F16, 8 Q8_0
  bool tied = false;
  std::function<void(GgufWriter&)> extra_meta;
  std::string skip_key, skip_tensor;
};

std::string write_llama_gguf(const ModelWeights& hf, const Options& o = {}) {
  const ModelConfig& c = hf.config;
  GgufWriter w;
  auto u32 = [&](const std::string& k, std::uint32_t v) { if (k != o.skip_key) w.u32(k, v); };
  if (o.skip_key != "general.architecture") w.str("general.architecture", "llama");
  u32("llama.block_count", static_cast<std::uint32_t>(c.n_layers));
  u32("llama.context_length", static_cast<std::uint32_t>(c.max_ctx));
  u32("llama.embedding_length", static_cast<std::uint32_t>(c.hidden_size));
  u32("llama.feed_forward_length", static_cast<std::uint32_t>(c.ffn_hidden));
  u32("llama.attention.head_count", static_cast<std::uint32_t>(c.n_heads));
  u32("llama.attention.head_count_kv", static_cast<std::uint32_t>(c.n_kv_heads));
  u32("llama.attention.key_length", static_cast<std::uint32_t>(c.head_dim));
  u32("llama.rope.dimension_count", static_cast<std::uint32_t>(c.head_dim));
  u32("llama.vocab_size", static_cast<std::uint32_t>(c.vocab_size));
  if (o.skip_key != "llama.rope.freq_base") w.f32("llama.rope.freq_base", static_cast<float>(c.rope_theta));
  if (o.skip_key != "llama.attention.layer_norm_rms_epsilon") w.f32("llama.attention.layer_norm_rms_epsilon", c.norm_eps);
  if (o.extra_meta) o.extra_meta(w);
  auto mat = [&](const std::string& name, const WeightMatrix& m, int heads = 0) {
    if (name == o.skip_tensor) return;
    std::vector<float> x = matrix_to_f32(m);
    if (heads) x = permute_rows(x, m.rows, m.cols, heads);
    w.tensor({name, {static_cast<std::uint64_t>(m.cols), static_cast<std::uint64_t>(m.rows)}, o.type, encode(x, o.type)});
  };
  auto vec = [&](const std::string& name, const std::vector<float>& v) {
    if (name != o.skip_tensor) w.tensor({name, {v.size()}, 0, encode(v, 0)});
  };
  mat("token_embd.weight", hf.tok_embd);
  for (int i = 0; i < c.n_layers; ++i) {
    const LayerWeights& l = hf.layers[static_cast<std::size_t>(i)];
    const std::string p = "blk." + std::to_string(i) + ".";
    vec(p + "attn_norm.weight", l.attn_norm);
    mat(p + "attn_q.weight", l.wq, c.n_heads);
    mat(p + "attn_k.weight", l.wk, c.n_kv_heads);
    mat(p + "attn_v.weight", l.wv);
    mat(p + "attn_output.weight", l.wo);
    vec(p + "ffn_norm.weight", l.ffn_norm);
    mat(p + "ffn_gate.weight", l.w_gate);
    mat(p + "ffn_up.weight", l.w_up);
    mat(p + "ffn_down.weight", l.w_down);
  }
  vec("output_norm.weight", hf.final_norm);
  if (!o.tied) mat("output.weight", hf.output_matrix());
  const std::string path = test::temp_dir() + "/tiny.gguf";
  test::write_file(path, w.bytes());
  return path;
}

float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  float m = 0;
  for (std::size_t i = 0; i < a.size() && i < b.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

const std::vector<int> kIds = {1, 17, 99, 3, 250, 42, 7, 7, 128, 64, 5, 200};

TEST(GgufModel, F32MatchesTheHuggingFaceModelExactly) {
  ModelWeights hf = tiny_hf();
  const std::string path = write_llama_gguf(hf);
  ModelWeights g = load_weights(path);  // dispatches on the magic
  const ModelConfig& c = g.config;
  EXPECT_EQ(c.hidden_size, 64);
  EXPECT_EQ(c.head_dim, 32);
  EXPECT_EQ(c.n_heads, 4);
  EXPECT_EQ(c.n_kv_heads, 2);
  EXPECT_EQ(c.ffn_hidden, hf.config.ffn_hidden);
  EXPECT_EQ(c.vocab_size, 256);
  EXPECT_EQ(c.rope_layout, RopeLayout::kHalf);
  EXPECT_EQ(c.rope_theta, hf.config.rope_theta);
  EXPECT_FALSE(c.tied_embeddings);
  EXPECT_EQ(g.matrix_dtype(), "f32");
  EXPECT_EQ(matrix_to_f32(g.layers[1].wq), matrix_to_f32(hf.layers[1].wq));  // un-permuted
  EXPECT_EQ(matrix_to_f32(g.layers[1].wk), matrix_to_f32(hf.layers[1].wk));
  EXPECT_EQ(g.layers[0].attn_norm, hf.layers[0].attn_norm);
  Model mg(std::move(g)), mh(std::move(hf));
  EXPECT_EQ(test::all_logits(mg, kIds, 5), test::all_logits(mh, kIds, 5));
}

TEST(GgufModel, F16IsZeroCopyAndTiedEmbeddings) {
  ModelWeights hf = tiny_hf();
  const std::string path = write_llama_gguf(hf, {.type = 1, .tied = true});
  ModelWeights g = load_gguf_weights(path);
  EXPECT_TRUE(g.config.tied_embeddings);
  EXPECT_TRUE(g.lm_head.empty());
  EXPECT_EQ(g.matrix_dtype(), "f16");
  std::vector<float> want = matrix_to_f32(hf.layers[0].wk);
  for (float& f : want) f = f16_to_f32(f32_to_f16(f));
  EXPECT_EQ(matrix_to_f32(g.layers[0].wk), want);
  // --weights f32 converts at load.
  ModelWeights g32 = load_gguf_weights(path, {.to_f32 = true});
  EXPECT_EQ(g32.matrix_dtype(), "f32");
  EXPECT_EQ(matrix_to_f32(g32.layers[0].wk), want);
}

TEST(GgufModel, Q8_0DequantizesAndUnpermutes) {
  ModelWeights hf = tiny_hf();
  const std::string path = write_llama_gguf(hf, {.type = 8});
  ModelWeights g = load_gguf_weights(path);
  ModelWeights g32 = load_gguf_weights(path, {.to_f32 = true});
  EXPECT_EQ(g.matrix_dtype(), "f16");
  EXPECT_EQ(g32.matrix_dtype(), "f32");
  // Expected: the HF matrix quantized in HF row order (rows are whole blocks, so the permutation
  // commutes with quantization), dequantized by the reference.
  const WeightMatrix& wq = hf.layers[1].wq;
  const std::string q = quantize_q8_0(matrix_to_f32(wq));
  std::vector<float> want(static_cast<std::size_t>(wq.rows * wq.cols));
  ggml_dequantize(GgmlType::kQ8_0, reinterpret_cast<const std::uint8_t*>(q.data()), want.data(),
                  static_cast<std::int64_t>(want.size()), SimdLevel::kScalar);
  EXPECT_EQ(matrix_to_f32(g32.layers[1].wq), want);
  for (float& f : want) f = f16_to_f32(f32_to_f16(f));
  EXPECT_EQ(matrix_to_f32(g.layers[1].wq), want);
  // Logits stay close to the unquantized model (within 5% of their largest magnitude).
  Model mg(std::move(g32)), mh(std::move(hf));
  const std::vector<float> lh = test::all_logits(mh, kIds, 12);
  float scale = 0;
  for (float f : lh) scale = std::max(scale, std::fabs(f));
  EXPECT_LT(max_abs_diff(test::all_logits(mg, kIds, 12), lh), 0.05f * scale);
}

TEST(GgufModel, MetadataAndTensorErrors) {
  const ModelWeights hf = tiny_hf();
  auto error_of = [&](const Options& o) -> std::string {
    const std::string path = write_llama_gguf(hf, o);
    try {
      load_gguf_weights(path);
    } catch (const Error& e) {
      return e.what();
    }
    return "(no error)";
  };
  EXPECT_HAS(error_of({.skip_key = "llama.block_count"}), "missing required metadata 'llama.block_count'");
  EXPECT_HAS(error_of({.skip_key = "llama.attention.layer_norm_rms_epsilon"}), "layer_norm_rms_epsilon");
  EXPECT_HAS(error_of({.skip_key = "general.architecture"}), "general.architecture");
  EXPECT_HAS(error_of({.extra_meta = [](GgufWriter& w) { w.str("general.architecture", "qwen2"); }, .skip_key = "general.architecture"}),
             "architecture 'qwen2' is not supported");
  EXPECT_HAS(error_of({.extra_meta = [](GgufWriter& w) { w.u32("llama.expert_count", 8); }}), "mixture-of-experts");
  EXPECT_HAS(error_of({.skip_tensor = "blk.1.ffn_up.weight"}), "missing tensor 'blk.1.ffn_up.weight'");
  EXPECT_HAS(error_of({.extra_meta = [](GgufWriter& w) { w.f32("llama.block_count", 2.0f); }, .skip_key = "llama.block_count"}),
             "'llama.block_count' is a float32, expected an integer");
  // Shape disagreeing with the metadata.
  EXPECT_HAS(error_of({.extra_meta = [](GgufWriter& w) { w.u32("llama.feed_forward_length", 32); },
                       .skip_key = "llama.feed_forward_length"}),
             "has dims [64, 96] but the metadata implies [64, 32]");
  // A ggml type the loader cannot read (Q5_0), in a tensor of its own.
  {
    GgufWriter w;
    w.str("general.architecture", "llama");
    w.tensor({"x", {32}, 6, std::string(22, '\0')});
    const std::string path = test::temp_dir() + "/q5.gguf";
    test::write_file(path, w.bytes());
    GgufFile g(path);
    EXPECT_FALSE(ggml_type_loadable(g.get_tensor("x").type));
    EXPECT_EQ(ggml_type_name(g.get_tensor("x").type), "Q5_0");
  }
  EXPECT_HAS(error_of({.extra_meta = [](GgufWriter& w) { w.u32("llama.rope.dimension_count", 16); },
                       .skip_key = "llama.rope.dimension_count"}),
             "partial rotary");
}

TEST(GgufTokenizer, BuildsByteLevelBpeFromMetadata) {
  auto make = [](bool add_bos, const std::string& model = "gpt2") {
    GgufWriter w;
    w.str("tokenizer.ggml.model", model);
    w.str("tokenizer.ggml.pre", "gpt2");
    w.str_array("tokenizer.ggml.tokens", {"<s>", "h", "e", "l", "o", "he", "ll", "hell", "hello", "\xc4\xa0",
                                          "\xc4\xa0hello", "<x>"});
    w.str_array("tokenizer.ggml.merges", {"h e", "l l", "he ll", "hell o", "\xc4\xa0 hello"});
    w.i32_array("tokenizer.ggml.token_type", {3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 4});
    w.u32("tokenizer.ggml.bos_token_id", 0);
    w.u32("tokenizer.ggml.eos_token_id", 0);
    w.boolean("tokenizer.ggml.add_bos_token", add_bos);
    const std::string path = test::temp_dir() + "/tok.gguf";
    test::write_file(path, w.bytes());
    return path;
  };
  auto tok = load_gguf_tokenizer(make(true));
  EXPECT_EQ(tok->encode("hello hello<x>", true), (std::vector<int>{0, 8, 10, 11}));
  EXPECT_EQ(tok->decode({0, 8, 10, 11}), "hello hello<x>");
  auto no_bos = load_gguf_tokenizer(make(false));
  EXPECT_EQ(no_bos->encode("hello", true), (std::vector<int>{8}));
  EXPECT_EQ(no_bos->encode("", true), (std::vector<int>{0}));
  EXPECT_HAS(test::throws<UnsupportedError>([&] { load_gguf_tokenizer(make(true, "llama")); }),
             "tokenizer model 'llama' is not supported");
}

}  // namespace
}  // namespace million
