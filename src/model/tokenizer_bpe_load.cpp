// Loaders for byte-level BPE tokenizer files: Hugging Face tokenizer.json (BPE model; ByteLevel,
// Split and Digits pre-tokenizer steps; added tokens; BOS/EOS from tokenizer_config.json or
// config.json beside it) and GPT-2's encoder.json + vocab.bpe. They only translate files into
// BpeTokenizerData and reject, with the reason, what that cannot represent (Unigram / WordPiece
// models, Metaspace pre-tokenizers, normalizers other than NFC, BPE dropout, byte fallback).
#include <fmt/format.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/mapped_file.h"
#include "million/error.h"
#include "million/log.h"
#include "model/tokenizer_bpe.h"

namespace million {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

json parse_json_file(const std::string& path, std::string_view what) {
  const std::string text = read_text_file(path, what);
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    throw FormatError(fmt::format("{} '{}' is not valid JSON: {}", what, path, e.what()));
  }
}

// Member `key` of `obj` if present and not null, else nullptr; FormatError if obj is no object.
const json* member(const json& obj, const char* key, const std::string& where) {
  if (!obj.is_object()) throw FormatError(fmt::format("{}: expected a JSON object", where));
  const auto it = obj.find(key);
  return it == obj.end() || it->is_null() ? nullptr : &*it;
}

std::string string_member(const json& obj, const char* key, const std::string& where, std::string fallback = {}) {
  const json* v = member(obj, key, where);
  if (v == nullptr) return fallback;
  if (!v->is_string()) throw FormatError(fmt::format("{}: '{}' must be a string", where, key));
  return v->get<std::string>();
}

bool bool_member(const json& obj, const char* key, const std::string& where, bool fallback) {
  const json* v = member(obj, key, where);
  if (v == nullptr) return fallback;
  if (!v->is_boolean()) throw FormatError(fmt::format("{}: '{}' must be true or false", where, key));
  return v->get<bool>();
}

int id_value(const json& v, const std::string& where) {
  constexpr std::int64_t kMaxId = 1 << 24;  // far above any real vocabulary
  if (!v.is_number_integer() || v.get<std::int64_t>() < 0 || v.get<std::int64_t>() >= kMaxId) {
    throw FormatError(fmt::format("{}: token id {} is not an integer in [0, {})", where, v.dump(), kMaxId));
  }
  return static_cast<int>(v.get<std::int64_t>());
}

// token -> id object (tokenizer.json model.vocab, encoder.json) into tokens by id; ids missing
// from the object stay "" (they decode to nothing).
std::vector<std::string> read_vocab(const json& vocab, const std::string& where) {
  if (!vocab.is_object()) throw FormatError(fmt::format("{}: the vocabulary must be a JSON object", where));
  std::vector<std::string> tokens;
  std::vector<bool> seen;
  for (const auto& [text, value] : vocab.items()) {
    const auto id = static_cast<std::size_t>(id_value(value, where));
    if (id >= tokens.size()) {
      tokens.resize(id + 1);
      seen.resize(id + 1);
    }
    if (seen[id]) throw FormatError(fmt::format("{}: tokens '{}' and '{}' share id {}", where, tokens[id], text, id));
    tokens[id] = text;
    seen[id] = true;
  }
  if (tokens.empty()) throw FormatError(fmt::format("{}: the vocabulary is empty", where));
  return tokens;
}

// tokenizer.json merges: "a b" strings (older files) or ["a", "b"] pairs (tokenizers >= 0.20).
std::vector<std::string> read_merges(const json& merges, const std::string& where) {
  if (!merges.is_array()) throw FormatError(fmt::format("{}: model.merges must be an array", where));
  std::vector<std::string> out;
  out.reserve(merges.size());
  for (const json& m : merges) {
    if (m.is_string()) {
      out.push_back(m.get<std::string>());
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      const auto a = m[0].get<std::string>();
      const auto b = m[1].get<std::string>();
      if (a.find(' ') != std::string::npos || b.find(' ') != std::string::npos) {
        throw UnsupportedError(fmt::format("{}: merge {} has a token with a space, which a byte-level "
                                           "vocabulary never has", where, m.dump()));
      }
      out.push_back(a + " " + b);
    } else {
      throw FormatError(fmt::format("{}: merge {} is neither \"a b\" nor [\"a\", \"b\"]", where, m.dump()));
    }
  }
  return out;
}

void read_model(const json& root, const std::string& where, BpeTokenizerData& data) {
  const json* model = member(root, "model", where);
  if (model == nullptr || !model->is_object()) throw FormatError(fmt::format("{}: no 'model' object", where));
  const std::string type = string_member(*model, "type", where + " model", "BPE");
  if (type != "BPE") {
    throw UnsupportedError(fmt::format("{}: model type '{}' is not supported here (byte-level BPE only)", where, type));
  }
  const json* vocab = member(*model, "vocab", where);
  const json* merges = member(*model, "merges", where);
  if (vocab == nullptr) throw FormatError(fmt::format("{}: model has no 'vocab'", where));
  if (merges == nullptr) throw FormatError(fmt::format("{}: model has no 'merges'", where));
  data.tokens = read_vocab(*vocab, where + " model.vocab");
  data.merges = read_merges(*merges, where);
  data.ignore_merges = bool_member(*model, "ignore_merges", where, false);
  if (bool_member(*model, "byte_fallback", where, false)) {
    throw UnsupportedError(fmt::format("{}: BPE byte_fallback is not supported with byte-level BPE", where));
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (!string_member(*model, key, where).empty()) {
      throw UnsupportedError(fmt::format("{}: BPE '{}' is not supported", where, key));
    }
  }
  if (const json* dropout = member(*model, "dropout", where);
      dropout != nullptr && (!dropout->is_number() || dropout->get<double>() > 0.0)) {
    throw UnsupportedError(fmt::format("{}: BPE dropout {} is not supported", where, dropout->dump()));
  }
  if (const std::string unk = string_member(*model, "unk_token", where); !unk.empty()) {
    if (const auto it = vocab->find(unk); it != vocab->end()) data.unk_id = id_value(*it, where);
  }
}

// Appends the steps of one pre-tokenizer node; ByteLevel must come last.
void read_pre_tokenizer(const json& node, const std::string& where, std::vector<BpeSplitStep>& steps,
                        bool& byte_level) {
  const std::string type = string_member(node, "type", where);
  if (byte_level) {
    throw UnsupportedError(fmt::format("{}: pre-tokenizer step '{}' after ByteLevel is not supported", where, type));
  }
  if (type == "Sequence") {
    const json* list = member(node, "pretokenizers", where);
    if (list == nullptr || !list->is_array()) throw FormatError(fmt::format("{}: Sequence without a list", where));
    for (const json& p : *list) read_pre_tokenizer(p, where, steps, byte_level);
  } else if (type == "ByteLevel") {
    BpeSplitStep step;
    if (bool_member(node, "use_regex", where, true)) step.regex = bpe_pre_tokenizer_steps("gpt2").front().regex;
    step.add_prefix_space = bool_member(node, "add_prefix_space", where, true);
    steps.push_back(std::move(step));
    byte_level = true;
  } else if (type == "Split") {
    const json* pattern = member(node, "pattern", where);
    if (pattern == nullptr) throw FormatError(fmt::format("{}: Split without a pattern", where));
    BpeSplitStep step;
    if (member(*pattern, "Regex", where) != nullptr) {
      step.regex = string_member(*pattern, "Regex", where);
    } else {
      step.regex = string_member(*pattern, "String", where);
      step.literal = true;
    }
    if (step.regex.empty()) throw FormatError(fmt::format("{}: Split pattern is empty", where));
    const std::string behavior = string_member(node, "behavior", where);
    if (behavior != "Isolated" || bool_member(node, "invert", where, false)) {
      throw UnsupportedError(fmt::format("{}: Split behavior '{}'{} is not supported (only Isolated)", where,
                                         behavior, bool_member(node, "invert", where, false) ? " inverted" : ""));
    }
    steps.push_back(std::move(step));
  } else if (type == "Digits") {
    steps.push_back({bool_member(node, "individual_digits", where, false) ? R"(\p{N})" : R"(\p{N}+)"});
  } else {
    throw UnsupportedError(fmt::format("{}: pre-tokenizer '{}' is not supported (byte-level BPE only)", where, type));
  }
}

// NFC is accepted and not applied (text already in NFC, nearly all text, tokenizes exactly).
void check_normalizer(const json* node, const std::string& where) {
  if (node == nullptr) return;
  const std::string type = string_member(*node, "type", where);
  if (type == "NFC") {
    log_debug("{}: the NFC normalizer is not applied (exact for text already in NFC)", where);
    return;
  }
  if (type == "Sequence") {
    const json* list = member(*node, "normalizers", where);
    if (list == nullptr || !list->is_array()) throw FormatError(fmt::format("{}: Sequence without a list", where));
    for (const json& n : *list) check_normalizer(&n, where);
    return;
  }
  throw UnsupportedError(fmt::format("{}: normalizer '{}' is not supported", where, type));
}

void check_decoder(const json* node, const std::string& where) {
  if (node == nullptr) return;
  const std::string type = string_member(*node, "type", where);
  if (type != "ByteLevel") {
    throw UnsupportedError(fmt::format("{}: decoder '{}' is not supported (byte-level BPE only)", where, type));
  }
}

std::vector<BpeAddedToken> read_added_tokens(const json* list, const std::string& where) {
  std::vector<BpeAddedToken> added;
  if (list == nullptr) return added;
  if (!list->is_array()) throw FormatError(fmt::format("{}: 'added_tokens' must be an array", where));
  for (const json& t : *list) {
    const json* id = member(t, "id", where + " added_tokens");
    if (id == nullptr) throw FormatError(fmt::format("{}: added token {} has no id", where, t.dump()));
    BpeAddedToken a;
    a.id = id_value(*id, where + " added_tokens");
    a.content = string_member(t, "content", where);
    if (a.content.empty()) throw FormatError(fmt::format("{}: added token {} has no content", where, a.id));
    a.special = bool_member(t, "special", where, false);
    a.lstrip = bool_member(t, "lstrip", where, false);
    a.rstrip = bool_member(t, "rstrip", where, false);
    added.push_back(std::move(a));
  }
  return added;
}

// The id of a token named in tokenizer_config.json: an added token first, else the vocabulary.
int token_id(const BpeTokenizerData& data, const std::string& text) {
  for (const BpeAddedToken& a : data.added) {
    if (a.content == text) return a.id;
  }
  for (std::size_t id = 0; id < data.tokens.size(); ++id) {
    if (data.tokens[id] == text) return static_cast<int>(id);
  }
  return -1;
}

// bos_token / eos_token in tokenizer_config.json: "text" or {"content": "text", ...}.
int config_token(const json& config, const char* key, const std::string& where, const BpeTokenizerData& data) {
  const json* v = member(config, key, where);
  if (v == nullptr) return -1;
  const std::string text = v->is_object() ? string_member(*v, "content", where) : v->is_string() ? v->get<std::string>() : "";
  if (text.empty()) throw FormatError(fmt::format("{}: '{}' must be a string or {{\"content\": ...}}", where, key));
  const int id = token_id(data, text);
  if (id < 0) throw FormatError(fmt::format("{}: {} '{}' is not a token of the tokenizer", where, key, text));
  return id;
}

// bos_token_id / eos_token_id in config.json: an id, or a list of ids (the first counts).
int config_id(const json& config, const char* key, const std::string& where) {
  const json* v = member(config, key, where);
  if (v == nullptr) return -1;
  if (v->is_array()) return v->empty() ? -1 : id_value(v->front(), where);
  return id_value(*v, where);
}

void read_bos_eos(const fs::path& dir, BpeTokenizerData& data) {
  if (const fs::path p = dir / "tokenizer_config.json"; fs::exists(p)) {
    const json config = parse_json_file(p.string(), "tokenizer config");
    data.bos_id = config_token(config, "bos_token", p.string(), data);
    data.eos_id = config_token(config, "eos_token", p.string(), data);
  }
  if (const fs::path p = dir / "config.json"; fs::exists(p) && (data.bos_id < 0 || data.eos_id < 0)) {
    const json config = parse_json_file(p.string(), "model config");
    if (data.bos_id < 0) data.bos_id = config_id(config, "bos_token_id", p.string());
    if (data.eos_id < 0) data.eos_id = config_id(config, "eos_token_id", p.string());
  }
}

}  // namespace

std::unique_ptr<Tokenizer> load_hf_tokenizer_json(const std::string& path) {
  const json root = parse_json_file(path, "tokenizer.json");
  if (!root.is_object()) throw FormatError(fmt::format("tokenizer.json '{}' is not a JSON object", path));
  BpeTokenizerData data;
  data.source = fmt::format("tokenizer.json '{}'", path);
  read_model(root, data.source, data);
  check_normalizer(member(root, "normalizer", data.source), data.source + " normalizer");
  check_decoder(member(root, "decoder", data.source), data.source + " decoder");
  bool byte_level = false;
  if (const json* pre = member(root, "pre_tokenizer", data.source)) {
    read_pre_tokenizer(*pre, data.source + " pre_tokenizer", data.pre_steps, byte_level);
  }
  if (!byte_level) {
    throw UnsupportedError(fmt::format("{}: the pre-tokenizer has no ByteLevel step, so this is not a byte-level "
                                       "BPE tokenizer",
                                       data.source));
  }
  data.added = read_added_tokens(member(root, "added_tokens", data.source), data.source);
  read_bos_eos(fs::path(path).parent_path(), data);
  return make_bpe_tokenizer(std::move(data));
}

std::unique_ptr<Tokenizer> load_gpt2_tokenizer(const std::string& encoder_json, const std::string& vocab_bpe) {
  BpeTokenizerData data;
  data.source = fmt::format("GPT-2 tokenizer '{}'", encoder_json);
  data.tokens = read_vocab(parse_json_file(encoder_json, "GPT-2 encoder.json"), data.source);
  const std::string merges = read_text_file(vocab_bpe, "GPT-2 vocab.bpe");
  for (std::size_t pos = 0; pos < merges.size();) {
    std::size_t end = merges.find('\n', pos);
    if (end == std::string::npos) end = merges.size();
    std::string_view line(merges.data() + pos, end - pos);
    pos = end + 1;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty() || line.starts_with("#version")) continue;
    data.merges.emplace_back(line);
  }
  data.pre = "gpt2";
  if (const int eot = token_id(data, "<|endoftext|>"); eot >= 0) {
    data.added.push_back(BpeAddedToken{eot, "<|endoftext|>", true, false, false});
    data.bos_id = data.eos_id = eot;
  }
  return make_bpe_tokenizer(std::move(data));
}

}  // namespace million
