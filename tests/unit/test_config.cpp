// Hugging Face config.json parsing (src/model/config.cpp): the three tiny test models and
// gutenberg-23m (skipped when ../shared lacks it) parse to the values in their JSON, every kind
// of bad config throws the right typed error, and rope_inv_freq matches 1/theta^(2i/d) and an
// independent Llama 3.1 scaling implementation to 1e-12 relative (both are double arithmetic
// that may differ only by libm rounding); parameter counts are exact integers.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "common/test_util.h"
#include "common/test_paths.h"
#include "million/error.h"
#include "model/config.h"

namespace million {
namespace {

using test::throws;
using test::slurp;

namespace fs = std::filesystem;
using nlohmann::json;




std::string tiny_dir(const std::string& name) { return test::data_path("hf-tiny/" + name); }
json tiny_json(const std::string& name) { return json::parse(slurp(tiny_dir(name) + "/config.json")); }
ModelConfig parse_tiny(const std::string& name) {
  return parse_hf_config(slurp(tiny_dir(name) + "/config.json"), tiny_dir(name) + "/config.json");
}
ModelConfig parse(const json& j) { return parse_hf_config(j.dump(), "test-config.json"); }

/// Parameters actually stored in a model directory: the sum of every tensor's element count in
/// its safetensors headers, read here with a few lines of JSON (independent of the library).
std::int64_t stored_params(const std::string& dir) {
  std::int64_t total = 0;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().extension() != ".safetensors") continue;
    std::ifstream in(entry.path(), std::ios::binary);
    std::uint64_t n = 0;
    in.read(reinterpret_cast<char*>(&n), 8);
    std::string header(n, '\0');
    in.read(header.data(), static_cast<std::streamsize>(n));
    const json parsed = json::parse(header);
    for (const auto& [name, t] : parsed.items()) {
      if (name == "__metadata__") continue;
      std::int64_t numel = 1;
      for (const auto& d : t["shape"]) numel *= d.get<std::int64_t>();
      total += numel;
    }
  }
  return total;
}

/// The fields every config shares, checked against the JSON they came from.
void expect_common_fields(const ModelConfig& c, const json& j) {
  EXPECT_EQ(c.architecture, j["architectures"][0].get<std::string>());
  EXPECT_EQ(c.hidden_size, j["hidden_size"].get<int>());
  EXPECT_EQ(c.n_layers, j["num_hidden_layers"].get<int>());
  EXPECT_EQ(c.n_heads, j["num_attention_heads"].get<int>());
  EXPECT_EQ(c.n_kv_heads, j["num_key_value_heads"].get<int>());
  EXPECT_EQ(c.ffn_hidden, j["intermediate_size"].get<int>());
  EXPECT_EQ(c.vocab_size, j["vocab_size"].get<int>());
  EXPECT_EQ(c.max_ctx, j["max_position_embeddings"].get<std::int64_t>());
  EXPECT_FLOAT_EQ(c.norm_eps, j["rms_norm_eps"].get<float>());
  EXPECT_EQ(c.bos_id, j["bos_token_id"].get<int>());
  EXPECT_EQ(c.eos_ids, std::vector<int>{j["eos_token_id"].get<int>()});
  EXPECT_EQ(c.tied_embeddings, j["tie_word_embeddings"].get<bool>());
  EXPECT_EQ(c.rope_layout, RopeLayout::kHalf);
  EXPECT_EQ(c.q_dim(), c.n_heads * c.head_dim);
  EXPECT_EQ(c.kv_dim(), c.n_kv_heads * c.head_dim);
  EXPECT_EQ(c.group_size(), c.n_heads / c.n_kv_heads);
}

// --- the tiny models --------------------------------------------------------------------------

TEST(HfConfig, MistralSlidingWindow) {
  const ModelConfig c = parse_tiny("mistral-sw");
  expect_common_fields(c, tiny_json("mistral-sw"));
  EXPECT_EQ(c.architecture, "MistralForCausalLM");
  EXPECT_EQ(c.sliding_window, 8);
  EXPECT_FALSE(c.tied_embeddings);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.rope_theta, 10000.0);
  EXPECT_EQ(c.rope_scaling.type, RopeScaling::Type::kNone);
  EXPECT_EQ(c.n_params(), stored_params(tiny_dir("mistral-sw")));
  EXPECT_HAS(c.summary(), "sliding window 8");
}

TEST(HfConfig, Qwen2BiasTransformers5Rope) {
  const ModelConfig c = parse_tiny("qwen2-bias");
  expect_common_fields(c, tiny_json("qwen2-bias"));
  EXPECT_EQ(c.architecture, "Qwen2ForCausalLM");
  EXPECT_TRUE(c.qkv_bias);
  EXPECT_TRUE(c.tied_embeddings);
  EXPECT_EQ(c.rope_theta, 1e6);  // from rope_parameters (transformers 5 layout)
  EXPECT_EQ(c.rope_scaling.type, RopeScaling::Type::kNone);
  EXPECT_EQ(c.sliding_window, 0);  // "sliding_window": null and use_sliding_window false
  EXPECT_EQ(c.head_dim, 64 / 4);   // no head_dim field: hidden / heads
  EXPECT_EQ(c.n_params(), stored_params(tiny_dir("qwen2-bias")));  // tied: no lm_head stored
}

TEST(HfConfig, Llama3RopeTransformers4Layout) {
  const ModelConfig c = parse_tiny("llama3-rope");
  const json j = tiny_json("llama3-rope");
  expect_common_fields(c, j);
  EXPECT_EQ(c.architecture, "LlamaForCausalLM");
  EXPECT_EQ(c.head_dim, 32);
  EXPECT_NE(c.head_dim, c.hidden_size / c.n_heads);
  EXPECT_EQ(c.q_dim(), 128);
  EXPECT_EQ(c.rope_theta, 500000.0);  // top-level rope_theta (transformers 4 layout)
  ASSERT_EQ(c.rope_scaling.type, RopeScaling::Type::kLlama3);
  EXPECT_EQ(c.rope_scaling.factor, j["rope_scaling"]["factor"].get<double>());
  EXPECT_EQ(c.rope_scaling.low_freq_factor, j["rope_scaling"]["low_freq_factor"].get<double>());
  EXPECT_EQ(c.rope_scaling.high_freq_factor, j["rope_scaling"]["high_freq_factor"].get<double>());
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings,
            j["rope_scaling"]["original_max_position_embeddings"].get<double>());
  EXPECT_EQ(c.sliding_window, 0);
  EXPECT_FALSE(c.tied_embeddings);
  EXPECT_EQ(c.n_params(), stored_params(tiny_dir("llama3-rope")));
  // The index's metadata states the same count.
  const json index = json::parse(slurp(tiny_dir("llama3-rope") + "/model.safetensors.index.json"));
  EXPECT_EQ(c.n_params(), index["metadata"]["total_parameters"].get<std::int64_t>());
  EXPECT_HAS(c.summary(), "llama3 rope scaling");
}

TEST(HfConfig, Transformers5LayoutOfLlama3ScalingParsesTheSame) {
  json j = tiny_json("llama3-rope");
  json rp = j["rope_scaling"];
  rp["rope_theta"] = j["rope_theta"];
  j.erase("rope_scaling");
  j.erase("rope_theta");
  j["rope_parameters"] = rp;
  const ModelConfig a = parse_tiny("llama3-rope");
  const ModelConfig b = parse(j);
  EXPECT_EQ(b.rope_theta, a.rope_theta);
  EXPECT_EQ(b.rope_scaling.type, RopeScaling::Type::kLlama3);
  EXPECT_EQ(b.rope_scaling.factor, a.rope_scaling.factor);
  EXPECT_EQ(b.rope_scaling.original_max_position_embeddings, a.rope_scaling.original_max_position_embeddings);
  EXPECT_EQ(rope_inv_freq(b), rope_inv_freq(a));
  // Old-style "type" instead of "rope_type" is accepted too.
  json k = tiny_json("llama3-rope");
  k["rope_scaling"].erase("rope_type");
  k["rope_scaling"]["type"] = "llama3";
  EXPECT_EQ(rope_inv_freq(parse(k)), rope_inv_freq(a));
}

TEST(HfConfig, Gutenberg23m) {
  const std::string dir = test::shared_dir() + "/models/gutenberg-23m";
  if (!fs::exists(dir + "/config.json")) GTEST_SKIP() << dir << "/config.json not present";
  const ModelConfig c = parse_hf_config(slurp(dir + "/config.json"), dir + "/config.json");
  expect_common_fields(c, json::parse(slurp(dir + "/config.json")));
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.group_size(), 2);
  EXPECT_TRUE(c.tied_embeddings);
  EXPECT_EQ(c.max_ctx, 4096);
  EXPECT_EQ(c.n_params(), 23'077'376);  // stated in its README
  EXPECT_EQ(c.n_params(), stored_params(dir));
}

// --- defaults -----------------------------------------------------------------------------------

TEST(HfConfig, DefaultsFollowTransformers) {
  // model_type instead of architectures; no num_key_value_heads, head_dim, rope or tying fields.
  json j = tiny_json("qwen2-bias");
  j.erase("architectures");
  for (const char* k : {"num_key_value_heads", "tie_word_embeddings", "rope_parameters", "rms_norm_eps",
                        "max_position_embeddings", "hidden_act"}) {
    j.erase(k);
  }
  const ModelConfig c = parse(j);
  EXPECT_EQ(c.architecture, "Qwen2ForCausalLM");
  EXPECT_EQ(c.n_kv_heads, c.n_heads);
  EXPECT_EQ(c.rope_theta, 10000.0);
  EXPECT_FALSE(c.tied_embeddings);  // Qwen2Config(tie_word_embeddings=False)
  EXPECT_FLOAT_EQ(c.norm_eps, 1e-6f);
  EXPECT_GT(c.max_ctx, 0);

  json m = tiny_json("mistral-sw");
  m.erase("architectures");
  EXPECT_EQ(parse(m).architecture, "MistralForCausalLM");
  m["model_type"] = "llama";
  const ModelConfig l = parse(m);
  EXPECT_EQ(l.architecture, "LlamaForCausalLM");
  EXPECT_EQ(l.sliding_window, 0);  // only Mistral reads sliding_window

  json e = tiny_json("mistral-sw");
  e["eos_token_id"] = {2, 5, 7};
  EXPECT_EQ(parse(e).eos_ids, (std::vector<int>{2, 5, 7}));
  e.erase("eos_token_id");
  EXPECT_TRUE(parse(e).eos_ids.empty());
}

// --- errors -------------------------------------------------------------------------------------

TEST(HfConfigErrors, InvalidJson) {
  EXPECT_HAS(throws<FormatError>([] { parse_hf_config("{\"hidden_size\": 64,", "broken.json"); }), "broken.json");
  throws<FormatError>([] { parse_hf_config("", "empty.json"); });
  throws<FormatError>([] { parse_hf_config("[1, 2]", "array.json"); });
}

TEST(HfConfigErrors, UnsupportedArchitectureListsSupported) {
  json j = tiny_json("mistral-sw");
  j["architectures"] = {"GPT2LMHeadModel"};
  const std::string msg = throws<UnsupportedError>([&] { parse(j); });
  EXPECT_HAS(msg, "GPT2LMHeadModel");
  for (const char* a : {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"}) EXPECT_HAS(msg, a);

  j.erase("architectures");
  j["model_type"] = "gpt2";
  throws<UnsupportedError>([&] { parse(j); });
  j.erase("model_type");
  throws<UnsupportedError>([&] { parse(j); });
}

TEST(HfConfigErrors, MissingRequiredFieldIsNamed) {
  for (const char* field :
       {"hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size"}) {
    json j = tiny_json("mistral-sw");
    j.erase(field);
    EXPECT_HAS(throws<FormatError>([&] { parse(j); }), field);
    j[field] = nullptr;
    EXPECT_HAS(throws<FormatError>([&] { parse(j); }), field);
  }
}

TEST(HfConfigErrors, WrongTypes) {
  struct Case {
    const char* field;
    json value;
  };
  const Case cases[] = {
      {"hidden_size", "64"},
      {"hidden_size", 64.5},             // would truncate to 64
      {"hidden_size", true},             // would read as 1
      {"hidden_size", 4294967360LL},     // 2^32 + 64: would wrap to 64
      {"hidden_size", -4294967232LL},    // -2^32 + 64
      {"num_hidden_layers", json::array({2})},
      {"num_key_value_heads", json::object()},
      {"max_position_embeddings", "128"},
      {"tie_word_embeddings", "false"},
      {"tie_word_embeddings", 0},
      {"rms_norm_eps", "1e-5"},
      {"rms_norm_eps", true},
      {"hidden_act", 3},
      {"eos_token_id", "2"},
      {"eos_token_id", json::array({2, "x"})},
      {"eos_token_id", 4294967298LL},  // 2^32 + 2: would wrap to 2
      {"bos_token_id", 4294967297LL},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(std::string(c.field) + " = " + c.value.dump());
    json j = tiny_json("mistral-sw");
    j[c.field] = c.value;
    EXPECT_HAS(throws<FormatError>([&] { parse(j); }), c.field);
  }
  json j = tiny_json("mistral-sw");
  j["rope_parameters"]["rope_theta"] = "10000";
  EXPECT_HAS(throws<FormatError>([&] { parse(j); }), "rope_theta");
}

TEST(HfConfigErrors, InconsistentShapes) {
  auto expect_format = [](json j, const char* needle) {
    SCOPED_TRACE(needle);
    EXPECT_HAS(throws<FormatError>([&] { parse(j); }), needle);
  };
  json j = tiny_json("mistral-sw");  // 4 heads
  j["num_key_value_heads"] = 3;
  expect_format(j, "num_key_value_heads");
  j["num_key_value_heads"] = 8;
  expect_format(j, "num_key_value_heads");
  j["num_key_value_heads"] = 0;
  expect_format(j, "num_key_value_heads");

  j = tiny_json("mistral-sw");
  j["head_dim"] = 15;
  expect_format(j, "head_dim");
  j.erase("head_dim");
  j["hidden_size"] = 60;  // 60 / 4 = 15: odd
  expect_format(j, "head_dim");

  j = tiny_json("mistral-sw");
  j["num_attention_heads"] = 0;
  expect_format(j, "num_attention_heads");
  j = tiny_json("mistral-sw");
  j["hidden_size"] = -64;
  expect_format(j, "hidden_size");
  j = tiny_json("mistral-sw");
  j["vocab_size"] = 0;
  expect_format(j, "vocab_size");
  j = tiny_json("mistral-sw");
  j["bos_token_id"] = 256;  // vocab 256
  expect_format(j, "bos_token_id");
  j = tiny_json("mistral-sw");
  j["eos_token_id"] = {2, 300};
  expect_format(j, "eos_token_id");
  j = tiny_json("mistral-sw");
  j["rms_norm_eps"] = 0.0;
  expect_format(j, "rms_norm_eps");
  j = tiny_json("mistral-sw");
  j["sliding_window"] = -1;
  expect_format(j, "sliding_window");
  j = tiny_json("mistral-sw");
  j["max_position_embeddings"] = 0;
  expect_format(j, "max_position_embeddings");
  j = tiny_json("mistral-sw");
  j["rope_parameters"]["rope_theta"] = -1.0;
  expect_format(j, "rope_theta");
}

TEST(HfConfigErrors, UnsupportedFeatures) {
  json j = tiny_json("mistral-sw");
  j["rope_parameters"] = {{"rope_type", "yarn"}, {"rope_theta", 10000.0}, {"factor", 4.0}};
  EXPECT_HAS(throws<UnsupportedError>([&] { parse(j); }), "yarn");

  j = tiny_json("llama3-rope");  // transformers 4 layout, old "type" key
  j["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  EXPECT_HAS(throws<UnsupportedError>([&] { parse(j); }), "linear");

  j = tiny_json("mistral-sw");
  j["hidden_act"] = "gelu";
  EXPECT_HAS(throws<UnsupportedError>([&] { parse(j); }), "gelu");

  j = tiny_json("llama3-rope");
  j["mlp_bias"] = true;
  EXPECT_HAS(throws<UnsupportedError>([&] { parse(j); }), "mlp_bias");

  j = tiny_json("qwen2-bias");
  j["use_sliding_window"] = true;
  EXPECT_HAS(throws<UnsupportedError>([&] { parse(j); }), "use_sliding_window");
}

TEST(HfConfigErrors, BadLlama3Scaling) {
  for (const char* field : {"factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"}) {
    json j = tiny_json("llama3-rope");
    j["rope_scaling"].erase(field);
    EXPECT_HAS(throws<FormatError>([&] { parse(j); }), field);
  }
  json j = tiny_json("llama3-rope");
  j["rope_scaling"]["high_freq_factor"] = 1.0;  // == low_freq_factor: the blend would divide by 0
  throws<FormatError>([&] { parse(j); });
  j = tiny_json("llama3-rope");
  j["rope_scaling"]["factor"] = 0.0;
  throws<FormatError>([&] { parse(j); });
}

// --- RoPE frequencies -------------------------------------------------------------------------------

TEST(RopeInvFreq, DefaultIsThetaPower) {
  for (const char* name : {"mistral-sw", "qwen2-bias"}) {
    const ModelConfig c = parse_tiny(name);
    const std::vector<double> inv = rope_inv_freq(c);
    ASSERT_EQ(inv.size(), static_cast<std::size_t>(c.head_dim / 2));
    for (std::size_t i = 0; i < inv.size(); ++i) {
      const double want = std::exp(-std::log(c.rope_theta) * (2.0 * static_cast<double>(i)) / c.head_dim);
      EXPECT_NEAR(inv[i] / want, 1.0, 1e-12) << name << " i=" << i;
    }
    EXPECT_EQ(inv[0], 1.0);
  }
}

/// Llama 3.1 frequency scaling as published (Meta's apply_scaling), written here in terms of
/// frequencies: keep f when its wavelength is below original_max / high_freq_factor, divide by
/// `factor` when above original_max / low_freq_factor, and in between interpolate linearly in
/// smooth = (original_max / wavelength - low) / (high - low) between f / factor and f.
double llama3_scaled(double f, double factor, double low, double high, double original_max) {
  const double wavelength = 2.0 * M_PI / f;
  const double ratio = original_max / wavelength;  // how many wavelengths fit in the original context
  if (ratio > high) return f;                      // wavelength < original_max / high
  if (ratio < low) return f / factor;              // wavelength > original_max / low
  const double smooth = (ratio - low) / (high - low);
  return f * (smooth + (1.0 - smooth) / factor);
}

enum Regime { kHigh, kMedium, kLow };
Regime regime_of(double f, const RopeScaling& s) {
  const double wavelength = 2.0 * M_PI / f;
  if (wavelength < s.original_max_position_embeddings / s.high_freq_factor) return kHigh;
  if (wavelength > s.original_max_position_embeddings / s.low_freq_factor) return kLow;
  return kMedium;
}

void check_llama3(const ModelConfig& c, bool require_all_regimes) {
  const RopeScaling& s = c.rope_scaling;
  ModelConfig unscaled = c;
  unscaled.rope_scaling.type = RopeScaling::Type::kNone;
  const std::vector<double> base = rope_inv_freq(unscaled);
  const std::vector<double> inv = rope_inv_freq(c);
  ASSERT_EQ(inv.size(), base.size());
  int count[3] = {0, 0, 0};
  for (std::size_t i = 0; i < inv.size(); ++i) {
    const double want = llama3_scaled(base[i], s.factor, s.low_freq_factor, s.high_freq_factor,
                                      s.original_max_position_embeddings);
    EXPECT_NEAR(inv[i] / want, 1.0, 1e-12) << "i=" << i;
    const Regime r = regime_of(base[i], s);
    ++count[r];
    if (r == kHigh) {
      EXPECT_EQ(inv[i], base[i]) << "i=" << i;
    }
    if (r == kLow) {
      EXPECT_NEAR(inv[i] / (base[i] / s.factor), 1.0, 1e-15) << "i=" << i;
    }
    if (r == kMedium) {
      EXPECT_LE(inv[i], base[i]) << "i=" << i;
      EXPECT_GE(inv[i], base[i] / s.factor) << "i=" << i;
    }
    if (i > 0) {
      EXPECT_LT(inv[i], inv[i - 1]) << "frequencies must stay decreasing, i=" << i;
    }
  }
  if (require_all_regimes) {
    EXPECT_GE(count[kHigh], 1);
    EXPECT_GE(count[kMedium], 1);
    EXPECT_GE(count[kLow], 1);
  }
}

TEST(RopeInvFreq, Llama3ScalingTinyModelHitsAllThreeRegimes) {
  const ModelConfig c = parse_tiny("llama3-rope");
  check_llama3(c, /*require_all_regimes=*/true);
}

TEST(RopeInvFreq, Llama3ScalingLlama31Settings) {
  // Llama 3.1 8B: theta 500000, head_dim 128, factor 8, low 1, high 4, original context 8192.
  ModelConfig c = parse_tiny("llama3-rope");
  c.head_dim = 128;
  c.rope_theta = 500000.0;
  c.rope_scaling = RopeScaling{RopeScaling::Type::kLlama3, 8.0, 1.0, 4.0, 8192.0};
  check_llama3(c, /*require_all_regimes=*/true);
  // A blend endpoint: the medium formula is continuous with both neighbours.
  EXPECT_NEAR(llama3_scaled(2 * M_PI / (8192.0 / 4.0) * (1 - 1e-12), 8, 1, 4, 8192),
              2 * M_PI / (8192.0 / 4.0), 1e-12);
  EXPECT_NEAR(llama3_scaled(2 * M_PI / 8192.0 * (1 + 1e-12), 8, 1, 4, 8192), 2 * M_PI / 8192.0 / 8, 1e-12);
}

}  // namespace
}  // namespace million
