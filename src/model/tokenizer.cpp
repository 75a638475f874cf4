// Choosing a model's tokenizer file and its loader, and TextStreamer: turns a growing id sequence
// into printable text, one id at a time, by decoding the whole sequence and returning only
// complete UTF-8 characters not returned before. The streamer does not validate UTF-8 beyond
// holding back an incomplete tail: invalid bytes in the middle pass through as decoded.
#include <filesystem>
#include <utility>

#include "model/tokenizer.h"

namespace million {
namespace {

// Bytes at the end of `text` that form the start of a UTF-8 character whose remaining bytes
// have not arrived yet (0 to 3). A tail that can never become valid is not held back.
std::size_t incomplete_utf8_tail(const std::string& text) {
  const std::size_t n = text.size();
  std::size_t continuations = 0;
  while (continuations < 3 && continuations < n &&
         (static_cast<unsigned char>(text[n - 1 - continuations]) & 0xC0) == 0x80) {
    ++continuations;
  }
  if (continuations == n) return 0;
  const auto lead = static_cast<unsigned char>(text[n - 1 - continuations]);
  std::size_t length = 0;  // the character's full length according to its lead byte
  if ((lead & 0xE0) == 0xC0) {
    length = 2;
  } else if ((lead & 0xF0) == 0xE0) {
    length = 3;
  } else if ((lead & 0xF8) == 0xF0) {
    length = 4;
  }
  const std::size_t have = continuations + 1;
  return length > have ? have : 0;
}

}  // namespace

std::string find_tokenizer_file(const std::string& model_path) {
  namespace fs = std::filesystem;
  const fs::path path(model_path);
  if (fs::is_directory(path)) {
    for (const char* name : {"tokenizer.model", "tokenizer.json"}) {
      if (fs::exists(path / name)) return (path / name).string();
    }
    return {};
  }
  if (const fs::path tok = path.parent_path() / "tok512.bin"; fs::exists(tok)) return tok.string();
  return {};
}

std::unique_ptr<Tokenizer> load_tokenizer_file(const std::string& path, int vocab_size) {
  const std::filesystem::path p(path);
  if (p.extension() == ".bin") return load_llama2c_tokenizer(path, vocab_size);
  if (p.extension() == ".json") return load_hf_tokenizer_json(path);
  return load_sentencepiece_tokenizer(path);
}

TextStreamer::TextStreamer(const Tokenizer& tokenizer, std::vector<int> prefix_ids)
    : tokenizer_(tokenizer), ids_(std::move(prefix_ids)) {
  prefix_len_ = tokenizer_.decode(ids_).size();
  printed_ = prefix_len_;
}

// Decoding is expected to extend the previous text. Where a format's rules make the new
// decode differ inside the part already returned (it cannot be taken back), streaming simply
// continues from the byte count: nothing is returned until the text grows past it.
std::string TextStreamer::push(int id) {
  ids_.push_back(id);
  const std::string text = tokenizer_.decode(ids_);
  const std::size_t complete = text.size() - incomplete_utf8_tail(text);
  if (complete <= printed_) return {};
  std::string out = text.substr(printed_, complete - printed_);
  printed_ = complete;
  return out;
}

std::string TextStreamer::flush() {
  const std::string text = tokenizer_.decode(ids_);
  if (text.size() <= printed_) return {};
  std::string out = text.substr(printed_);
  printed_ = text.size();
  return out;
}

}  // namespace million
