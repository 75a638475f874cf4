// Chat template recognition and rendering (see chat_template.h).
#include "model/chat_template.h"

#include <nlohmann/json.hpp>

#include <filesystem>

#include "core/mapped_file.h"
#include "million/error.h"
#include "model/gguf.h"

namespace million {

namespace {

// The text between the first `open` and the next `close` after it, or "".
std::string between(const std::string& s, const std::string& open, const std::string& close) {
  const std::size_t a = s.find(open);
  if (a == std::string::npos) return {};
  const std::size_t b = s.find(close, a + open.size());
  if (b == std::string::npos) return {};
  return s.substr(a + open.size(), b - a - open.size());
}

}  // namespace

std::optional<ChatTemplate> parse_chat_template(const std::string& source) {
  if (source.find("<|im_start|>") != std::string::npos && source.find("<|im_end|>") != std::string::npos) {
    // A default system message appears as a literal "<|im_start|>system\n...<|im_end|>".
    std::string sys = between(source, "<|im_start|>system\n", "<|im_end|>");
    if (sys.find("{{") != std::string::npos || sys.find("{%") != std::string::npos) sys.clear();
    return ChatTemplate{ChatFormat::kChatML, sys, "<|im_end|>"};
  }
  if (source.find("<|start_header_id|>") != std::string::npos && source.find("<|eot_id|>") != std::string::npos) {
    return ChatTemplate{ChatFormat::kLlama3, "", "<|eot_id|>"};
  }
  return std::nullopt;
}

std::string render_chat(const ChatTemplate& t, const std::string& user, const std::string& system) {
  const std::string& sys = system.empty() ? t.default_system : system;
  std::string out;
  switch (t.format) {
    case ChatFormat::kChatML:
      if (!sys.empty()) out += "<|im_start|>system\n" + sys + "<|im_end|>\n";
      out += "<|im_start|>user\n" + user + "<|im_end|>\n<|im_start|>assistant\n";
      break;
    case ChatFormat::kLlama3:
      if (!sys.empty()) out += "<|start_header_id|>system<|end_header_id|>\n\n" + sys + "<|eot_id|>";
      out += "<|start_header_id|>user<|end_header_id|>\n\n" + user +
             "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n";
      break;
  }
  return out;
}

std::string find_chat_template_source(const std::string& model_path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::is_regular_file(model_path, ec) && is_gguf_file(model_path)) {
    const GgufFile f(model_path);
    return f.find_string("tokenizer.chat_template").value_or("");
  }
  const fs::path cfg = fs::path(model_path) / "tokenizer_config.json";
  if (!fs::is_directory(model_path, ec) || !fs::exists(cfg, ec)) return {};
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_text_file(cfg.string(), "tokenizer config"));
  } catch (const nlohmann::json::exception& e) {
    throw FormatError("'" + cfg.string() + "' is not valid JSON: " + e.what());
  }
  const auto it = j.find("chat_template");
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

}  // namespace million
