// Chat prompts for instruct models (`million generate --chat`): recognises the model's chat
// template (GGUF `tokenizer.chat_template`, or `chat_template` in a Hugging Face
// tokenizer_config.json) as one of the formats below and renders a single-turn conversation.
// Not a Jinja interpreter: a template that is not one of these formats is reported as
// unsupported rather than guessed at.
//  - ChatML (SmolLM2, Qwen2): <|im_start|>role\ncontent<|im_end|>\n ... <|im_start|>assistant\n;
//    the template's default system message (SmolLM2 has one) is used when none is given.
//  - Llama 3: <|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|> ... (BOS is the
//    tokenizer's business).
#pragma once

#include <optional>
#include <string>

namespace million {

enum class ChatFormat { kChatML, kLlama3 };

struct ChatTemplate {
  ChatFormat format;
  std::string default_system;  ///< the template's own system message, "" when it has none
  std::string end_of_turn;     ///< the token text that ends the assistant's turn
};

/// The format of a chat template's source text, or nullopt when it is not a known one.
std::optional<ChatTemplate> parse_chat_template(const std::string& source);

/// The prompt text for one user message (and an optional system message; empty = the
/// template's default), ending where the assistant's reply starts.
std::string render_chat(const ChatTemplate& t, const std::string& user, const std::string& system = "");

/// The chat template source shipped with a model: GGUF metadata for a .gguf file, else
/// tokenizer_config.json in a Hugging Face directory; "" when there is none.
std::string find_chat_template_source(const std::string& model_path);

}  // namespace million
