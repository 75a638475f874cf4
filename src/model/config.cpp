// Hugging Face config.json parsing and ModelConfig validation.
#include "model/config.h"

#include <fmt/format.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <type_traits>

#include "million/error.h"

namespace million {

using nlohmann::json;

namespace {

// json::get<int> would silently truncate 64.5, wrap 4294967360 to 64 and read true as 1, so
// integer fields must be JSON integers that fit T, and numeric fields must be numbers.
template <class T>
T convert(const json& v, const char* key, const std::string& source) {
  auto wrong_type = [&] { return FormatError(fmt::format("{}: field '{}' has the wrong type ({})", source, key, v.dump())); };
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
    if (!v.is_number_integer()) throw wrong_type();
    const bool fits = v.is_number_unsigned()
                          ? v.get<std::uint64_t>() <= static_cast<std::uint64_t>(std::numeric_limits<T>::max())
                          : v.get<std::int64_t>() >= std::numeric_limits<T>::min() &&
                                v.get<std::int64_t>() <= std::numeric_limits<T>::max();
    if (!fits) throw FormatError(fmt::format("{}: field '{}' is out of range ({})", source, key, v.dump()));
  } else if constexpr (std::is_floating_point_v<T>) {
    if (!v.is_number()) throw wrong_type();
  }
  try {
    return v.get<T>();
  } catch (const json::exception&) {
    throw wrong_type();
  }
}

template <class T>
T get_required(const json& j, const char* key, const std::string& source) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) throw FormatError(fmt::format("{}: missing required field '{}'", source, key));
  return convert<T>(*it, key, source);
}

template <class T>
T get_optional(const json& j, const char* key, T fallback, const std::string& source) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  return convert<T>(*it, key, source);
}

void parse_rope(const json& j, ModelConfig& c, const std::string& source) {
  // transformers 5: rope_parameters {rope_theta, rope_type, ...}; transformers 4: top-level
  // rope_theta and an optional rope_scaling {rope_type|type, factor, ...}.
  const json* scaling = nullptr;
  if (auto rp = j.find("rope_parameters"); rp != j.end() && rp->is_object()) {
    c.rope_theta = get_optional<double>(*rp, "rope_theta", 10000.0, source);
    scaling = &*rp;
  } else {
    c.rope_theta = get_optional<double>(j, "rope_theta", 10000.0, source);
    if (auto rs = j.find("rope_scaling"); rs != j.end() && rs->is_object()) scaling = &*rs;
  }
  if (scaling == nullptr) return;
  std::string type = get_optional<std::string>(*scaling, "rope_type", "", source);
  if (type.empty()) type = get_optional<std::string>(*scaling, "type", "default", source);
  if (type == "default") return;
  if (type != "llama3") {
    throw UnsupportedError(fmt::format("{}: rope scaling type '{}' is not supported (supported: default, llama3)",
                                       source, type));
  }
  RopeScaling& s = c.rope_scaling;
  s.type = RopeScaling::Type::kLlama3;
  s.factor = get_required<double>(*scaling, "factor", source);
  s.low_freq_factor = get_required<double>(*scaling, "low_freq_factor", source);
  s.high_freq_factor = get_required<double>(*scaling, "high_freq_factor", source);
  s.original_max_position_embeddings = get_required<double>(*scaling, "original_max_position_embeddings", source);
  if (!(s.factor > 0) || !(s.low_freq_factor > 0) || !(s.high_freq_factor > s.low_freq_factor) ||
      !(s.original_max_position_embeddings > 0)) {
    throw FormatError(fmt::format("{}: rope_scaling values are out of range: {}", source, scaling->dump()));
  }
}

std::vector<int> parse_eos(const json& j, const std::string& source) {
  auto it = j.find("eos_token_id");
  if (it == j.end() || it->is_null()) return {};
  if (it->is_number_integer()) return {convert<int>(*it, "eos_token_id", source)};
  if (it->is_array()) {
    std::vector<int> ids;
    for (const auto& e : *it) {
      if (!e.is_number_integer()) throw FormatError(fmt::format("{}: eos_token_id has a non-integer entry", source));
      ids.push_back(convert<int>(e, "eos_token_id", source));
    }
    return ids;
  }
  throw FormatError(fmt::format("{}: eos_token_id has the wrong type ({})", source, it->dump()));
}

}  // namespace

ModelConfig parse_hf_config(const std::string& json_text, const std::string& source) {
  json j;
  try {
    j = json::parse(json_text);
  } catch (const json::exception& e) {
    throw FormatError(fmt::format("{}: not valid JSON ({})", source, e.what()));
  }
  if (!j.is_object()) throw FormatError(fmt::format("{}: expected a JSON object", source));

  std::string arch;
  if (auto a = j.find("architectures"); a != j.end() && a->is_array() && !a->empty() && (*a)[0].is_string()) {
    arch = (*a)[0].get<std::string>();
  } else {
    const std::string model_type = get_optional<std::string>(j, "model_type", "", source);
    if (model_type == "llama") arch = "LlamaForCausalLM";
    if (model_type == "mistral") arch = "MistralForCausalLM";
    if (model_type == "qwen2") arch = "Qwen2ForCausalLM";
  }
  if (arch != "LlamaForCausalLM" && arch != "MistralForCausalLM" && arch != "Qwen2ForCausalLM") {
    throw UnsupportedError(fmt::format(
        "{}: architecture '{}' is not supported (supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM)",
        source, arch.empty() ? "(none given)" : arch));
  }

  ModelConfig c;
  c.architecture = arch;
  c.hidden_size = get_required<int>(j, "hidden_size", source);
  c.n_layers = get_required<int>(j, "num_hidden_layers", source);
  c.n_heads = get_required<int>(j, "num_attention_heads", source);
  c.n_kv_heads = get_optional<int>(j, "num_key_value_heads", c.n_heads, source);
  c.ffn_hidden = get_required<int>(j, "intermediate_size", source);
  c.vocab_size = get_required<int>(j, "vocab_size", source);
  c.max_ctx = get_optional<std::int64_t>(j, "max_position_embeddings", 2048, source);
  c.norm_eps = static_cast<float>(get_optional<double>(j, "rms_norm_eps", 1e-6, source));
  c.head_dim = get_optional<int>(j, "head_dim", 0, source);
  if (c.head_dim == 0 && c.n_heads > 0) c.head_dim = c.hidden_size / c.n_heads;
  // transformers' default is false for all three architectures (Qwen2 checkpoints that tie say so).
  c.tied_embeddings = get_optional<bool>(j, "tie_word_embeddings", false, source);
  c.rope_layout = RopeLayout::kHalf;
  c.bos_id = get_optional<int>(j, "bos_token_id", 1, source);
  c.eos_ids = parse_eos(j, source);

  const std::string act = get_optional<std::string>(j, "hidden_act", "silu", source);
  if (act != "silu") throw UnsupportedError(fmt::format("{}: hidden_act '{}' is not supported (only silu)", source, act));
  if (get_optional<bool>(j, "mlp_bias", false, source)) {
    throw UnsupportedError(fmt::format("{}: mlp_bias is not supported", source));
  }
  if (arch == "Qwen2ForCausalLM") {
    c.qkv_bias = true;
    if (get_optional<bool>(j, "use_sliding_window", false, source)) {
      throw UnsupportedError(fmt::format("{}: Qwen2 use_sliding_window=true is not supported", source));
    }
  } else {
    c.qkv_bias = get_optional<bool>(j, "attention_bias", false, source);
  }
  if (arch == "MistralForCausalLM") c.sliding_window = get_optional<int>(j, "sliding_window", 0, source);
  parse_rope(j, c, source);
  c.validate(source);
  return c;
}

void ModelConfig::validate(const std::string& source) const {
  auto fail = [&](const std::string& what) { throw FormatError(fmt::format("{}: {}", source, what)); };
  if (hidden_size <= 0 || hidden_size > (1 << 16)) fail(fmt::format("hidden_size {} is out of range", hidden_size));
  if (n_layers <= 0 || n_layers > 1024) fail(fmt::format("num_hidden_layers {} is out of range", n_layers));
  if (n_heads <= 0 || n_heads > 1024) fail(fmt::format("num_attention_heads {} is out of range", n_heads));
  if (n_kv_heads <= 0 || n_kv_heads > n_heads || n_heads % n_kv_heads != 0) {
    fail(fmt::format("num_key_value_heads {} must divide num_attention_heads {}", n_kv_heads, n_heads));
  }
  if (head_dim <= 0 || head_dim % 2 != 0 || head_dim > 1024) fail(fmt::format("head_dim {} must be even and in 2..1024", head_dim));
  if (ffn_hidden <= 0 || ffn_hidden > (1 << 20)) fail(fmt::format("intermediate_size {} is out of range", ffn_hidden));
  if (vocab_size <= 0 || vocab_size > (1 << 24)) fail(fmt::format("vocab_size {} is out of range", vocab_size));
  if (max_ctx <= 0 || max_ctx > (std::int64_t{1} << 32)) fail(fmt::format("max_position_embeddings {} is out of range", max_ctx));
  if (!(norm_eps > 0.0f) || !(norm_eps < 1.0f)) fail(fmt::format("rms_norm_eps {} is out of range", norm_eps));
  if (!(rope_theta > 0.0) || !std::isfinite(rope_theta)) fail(fmt::format("rope_theta {} is out of range", rope_theta));
  if (sliding_window < 0) fail(fmt::format("sliding_window {} is negative", sliding_window));
  if (bos_id < 0 || bos_id >= vocab_size) fail(fmt::format("bos_token_id {} is outside the vocabulary", bos_id));
  for (int e : eos_ids) {
    if (e < 0 || e >= vocab_size) fail(fmt::format("eos_token_id {} is outside the vocabulary", e));
  }
}

std::int64_t ModelConfig::n_params() const {
  const std::int64_t h = hidden_size, q = q_dim(), kv = kv_dim(), f = ffn_hidden, v = vocab_size;
  std::int64_t per_layer = h * q + 2 * h * kv + q * h + 3 * h * f + 2 * h;
  if (qkv_bias) per_layer += q + 2 * kv;
  return v * h * (tied_embeddings ? 1 : 2) + n_layers * per_layer + h;
}

std::string ModelConfig::summary() const {
  return fmt::format("{}: {} layers, hidden {}, {} heads / {} kv heads, head_dim {}, ffn {}, vocab {}, ctx {}{}{}",
                     architecture, n_layers, hidden_size, n_heads, n_kv_heads, head_dim, ffn_hidden, vocab_size,
                     max_ctx, rope_scaling.type == RopeScaling::Type::kLlama3 ? ", llama3 rope scaling" : "",
                     sliding_window > 0 ? fmt::format(", sliding window {}", sliding_window) : std::string());
}

std::vector<double> rope_inv_freq(const ModelConfig& c) {
  const int half = c.head_dim / 2;
  std::vector<double> inv(static_cast<std::size_t>(half));
  for (int i = 0; i < half; ++i) inv[static_cast<std::size_t>(i)] = 1.0 / std::pow(c.rope_theta, (2.0 * i) / c.head_dim);
  if (c.rope_scaling.type == RopeScaling::Type::kLlama3) {
    // Llama 3.1: long wavelengths are slowed by `factor`, short ones kept, a smooth blend between.
    const RopeScaling& s = c.rope_scaling;
    const double low_wavelen = s.original_max_position_embeddings / s.low_freq_factor;
    const double high_wavelen = s.original_max_position_embeddings / s.high_freq_factor;
    for (double& f : inv) {
      const double wavelen = 2.0 * M_PI / f;
      if (wavelen < high_wavelen) continue;
      if (wavelen > low_wavelen) {
        f /= s.factor;
      } else {
        const double smooth = (s.original_max_position_embeddings / wavelen - s.low_freq_factor) /
                              (s.high_freq_factor - s.low_freq_factor);
        f = (1.0 - smooth) * f / s.factor + smooth * f;
      }
    }
  }
  return inv;
}

}  // namespace million
