// Chat templates: the SmolLM2 (ChatML with a default system message) and Llama 3 templates
// as the models ship them are recognised and render the conversation those templates produce
// for one user message with add_generation_prompt (expected strings written from the Jinja
// sources quoted below); unknown templates are rejected rather than guessed.
#include <gtest/gtest.h>

#include "model/chat_template.h"

namespace million {
namespace {

// tokenizer.chat_template of SmolLM2-135M-Instruct's GGUF.
const char* kSmolLM2 =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

// chat_template of Llama 3's tokenizer_config.json.
const char* kLlama3 =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{{ '<|start_header_id|>assistant"
    "<|end_header_id|>\n\n' }}";

TEST(ChatTemplate, SmolLM2ChatMLWithDefaultSystem) {
  const auto t = parse_chat_template(kSmolLM2);
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->format, ChatFormat::kChatML);
  EXPECT_EQ(t->end_of_turn, "<|im_end|>");
  EXPECT_EQ(render_chat(*t, "Hi"),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(render_chat(*t, "Hi", "Be brief."),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
}

TEST(ChatTemplate, Llama3) {
  const auto t = parse_chat_template(kLlama3);
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->format, ChatFormat::kLlama3);
  EXPECT_EQ(render_chat(*t, "Hi"),
            "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
}

TEST(ChatTemplate, UnknownTemplatesAreRejected) {
  EXPECT_FALSE(parse_chat_template("").has_value());
  EXPECT_FALSE(parse_chat_template("{{ bos_token }}[INST] {{ message['content'] }} [/INST]").has_value());
}

}  // namespace
}  // namespace million
