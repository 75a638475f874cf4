// The tokenizer stored in a GGUF file (see gguf_model.h): tokenizer.ggml.model "gpt2" (byte-level
// BPE) built through make_bpe_tokenizer from the tokens, merges, pre-tokenizer name, token types
// and special ids. SentencePiece-style ("llama") GGUF vocabularies are not supported.
#include <fmt/format.h>

#include <algorithm>

#include "million/error.h"
#include "model/gguf_model.h"
#include "model/tokenizer_bpe.h"

namespace million {

namespace {

/// Honours tokenizer.ggml.add_bos_token = false: BOS only for an empty text (a start token).
class NoBosTokenizer final : public Tokenizer {
 public:
  explicit NoBosTokenizer(std::unique_ptr<Tokenizer> inner) : inner_(std::move(inner)) {}
  std::vector<int> encode(std::string_view text, bool add_bos) const override {
    return inner_->encode(text, add_bos && text.empty());
  }
  std::string decode(const std::vector<int>& ids) const override { return inner_->decode(ids); }
  int vocab_size() const override { return inner_->vocab_size(); }
  int bos_id() const override { return inner_->bos_id(); }
  int eos_id() const override { return inner_->eos_id(); }
  std::string piece(int id) const override { return inner_->piece(id); }

 private:
  std::unique_ptr<Tokenizer> inner_;
};

int special_id(const GgufFile& g, const char* key, std::size_t n_tokens) {
  const auto v = g.find_int(key);
  if (!v) return -1;
  if (*v < 0 || static_cast<std::uint64_t>(*v) >= n_tokens) {
    throw FormatError(fmt::format("{}: metadata '{}' = {} is not a token id (the vocabulary has {} tokens)", g.path(),
                                  key, *v, n_tokens));
  }
  return static_cast<int>(*v);
}

}  // namespace

std::unique_ptr<Tokenizer> make_gguf_tokenizer(const GgufFile& g) {
  const std::string model = g.get_string("tokenizer.ggml.model");
  if (model != "gpt2") {
    throw UnsupportedError(fmt::format("{}: GGUF tokenizer model '{}' is not supported (supported: gpt2, the "
                                       "byte-level BPE of Llama 3, SmolLM2, Qwen2 and GPT-2)",
                                       g.path(), model));
  }
  BpeTokenizerData data;
  data.source = fmt::format("GGUF tokenizer '{}'", g.path());
  data.tokens = g.get_string_array("tokenizer.ggml.tokens");
  data.merges = g.get_string_array("tokenizer.ggml.merges");
  const std::string pre = g.find_string("tokenizer.ggml.pre").value_or("default");
  data.pre = pre == "default" ? "gpt2" : pre;
  if (g.find("tokenizer.ggml.token_type") != nullptr) {
    const std::vector<std::int64_t> types64 = g.get_int_array("tokenizer.ggml.token_type");
    std::vector<int> types;
    types.reserve(types64.size());
    for (std::int64_t t : types64) types.push_back(static_cast<int>(std::clamp<std::int64_t>(t, -1, 100)));
    data.added = bpe_added_tokens_from_types(data.tokens, types);
  }
  data.bos_id = special_id(g, "tokenizer.ggml.bos_token_id", data.tokens.size());
  data.eos_id = special_id(g, "tokenizer.ggml.eos_token_id", data.tokens.size());
  // unk stays -1: bytes without a token are dropped, as llama.cpp and Hugging Face do.
  std::unique_ptr<Tokenizer> tok = make_bpe_tokenizer(std::move(data));
  if (!g.find_bool("tokenizer.ggml.add_bos_token").value_or(true)) tok = std::make_unique<NoBosTokenizer>(std::move(tok));
  return tok;
}

std::unique_ptr<Tokenizer> load_gguf_tokenizer(const std::string& path) { return make_gguf_tokenizer(GgufFile(path)); }

}  // namespace million
