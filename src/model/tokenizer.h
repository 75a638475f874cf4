// Tokenizer interface shared by every format, and the factory that picks one for a model.
// Implementations: llama2.c tok512.bin (tokenizer_llama2c.cpp), SentencePiece tokenizer.model
// (tokenizer_sentencepiece.cpp), byte-level BPE (GPT-2 style) from tokenizer.json, GPT-2 files
// or plain data (tokenizer_bpe.h).
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace million {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  /// Token ids of `text`; with add_bos the BOS id comes first. An empty text with add_bos
  /// gives {bos}. Throws InvalidArgumentError for text the tokenizer cannot represent.
  virtual std::vector<int> encode(std::string_view text, bool add_bos) const = 0;

  /// Text of a whole id sequence, as the format's reference decoder produces it (a leading
  /// BOS is skipped, and the space the format prepends at the start is removed). Ids out of
  /// range throw InvalidArgumentError. May end in an incomplete UTF-8 sequence when the ids
  /// stop in the middle of a character made of byte tokens.
  virtual std::string decode(const std::vector<int>& ids) const = 0;

  virtual int vocab_size() const = 0;
  virtual int bos_id() const = 0;
  virtual int eos_id() const = 0;
  /// Text of one vocabulary entry as stored (for diagnostics: "▁the", "<0x0A>").
  virtual std::string piece(int id) const = 0;
};

/// llama2.c tokenizer file (tok512.bin): float32 score, int32 length, bytes per token.
/// `vocab_size` comes from the model header (the file does not store it).
std::unique_ptr<Tokenizer> load_llama2c_tokenizer(const std::string& path, int vocab_size);

/// SentencePiece model file (tokenizer.model).
std::unique_ptr<Tokenizer> load_sentencepiece_tokenizer(const std::string& path);

/// Hugging Face tokenizer.json with a byte-level BPE model (see tokenizer_bpe.h).
std::unique_ptr<Tokenizer> load_hf_tokenizer_json(const std::string& path);

/// The tokenizer file that goes with a model: in a Hugging Face directory tokenizer.model, else
/// tokenizer.json; beside a llama2.c checkpoint tok512.bin. "" when there is none.
std::string find_tokenizer_file(const std::string& model_path);

/// Loads a tokenizer file by its name: *.bin llama2.c (needs the model's vocab_size), *.json
/// Hugging Face tokenizer.json, anything else a SentencePiece model.
std::unique_ptr<Tokenizer> load_tokenizer_file(const std::string& path, int vocab_size);

/// Streaming text output for generation: feed ids one at a time, get back the new text that
/// is safe to print (complete UTF-8 characters only). Decodes the whole sequence each time, so
/// every format's spacing rules hold exactly as in decode().
class TextStreamer {
 public:
  TextStreamer(const Tokenizer& tokenizer, std::vector<int> prefix_ids);
  /// Appends `id` and returns the text that became printable.
  std::string push(int id);
  /// Whatever is still held back (an incomplete UTF-8 tail), at the end of generation.
  std::string flush();

 private:
  const Tokenizer& tokenizer_;
  std::vector<int> ids_;
  std::size_t prefix_len_ = 0;  // bytes of decode(prefix) that are not ours to print
  std::size_t printed_ = 0;     // bytes of decode(ids_) already returned
};

}  // namespace million
