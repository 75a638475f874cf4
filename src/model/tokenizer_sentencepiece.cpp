// SentencePiece tokenizer (tokenizer.model) on top of libsentencepiece: loading, encoding, and
// a piece-by-piece decoder that matches SentencePieceProcessor::Decode on complete text but
// returns byte-fallback pieces as raw bytes (Decode would turn an incomplete UTF-8 tail into
// U+FFFD, which would break streaming). It does not train or edit models.
#include <fmt/format.h>
#include <sentencepiece_processor.h>

#include <string>
#include <string_view>
#include <vector>

#include "core/mapped_file.h"
#include "million/error.h"
#include "model/tokenizer.h"

namespace million {
namespace {

constexpr std::string_view kSpaceSymbol = "\xE2\x96\x81";  // U+2581 '▁'

// "<0xAB>" -> 0xAB; -1 if the piece is not in that form.
int parse_byte_piece(std::string_view piece) {
  if (piece.size() != 6 || piece.substr(0, 3) != "<0x" || piece[5] != '>') return -1;
  int value = 0;
  for (char c : piece.substr(3, 2)) {
    int digit;
    if (c >= '0' && c <= '9') {
      digit = c - '0';
    } else if (c >= 'A' && c <= 'F') {
      digit = c - 'A' + 10;
    } else if (c >= 'a' && c <= 'f') {
      digit = c - 'a' + 10;
    } else {
      return -1;
    }
    value = value * 16 + digit;
  }
  return value;
}

// Appends `piece` with every '▁' replaced by ' '.
void append_with_spaces(std::string& out, std::string_view piece) {
  for (std::size_t pos = 0;;) {
    const std::size_t hit = piece.find(kSpaceSymbol, pos);
    out.append(piece.substr(pos, hit - pos));
    if (hit == std::string_view::npos) return;
    out.push_back(' ');
    pos = hit + kSpaceSymbol.size();
  }
}

class SentencePieceTokenizer final : public Tokenizer {
 public:
  explicit SentencePieceTokenizer(const std::string& path);

  std::vector<int> encode(std::string_view text, bool add_bos) const override;
  std::string decode(const std::vector<int>& ids) const override;

  int vocab_size() const override { return vocab_size_; }
  int bos_id() const override { return sp_.bos_id(); }
  int eos_id() const override { return sp_.eos_id(); }
  std::string piece(int id) const override {
    check_id(id);
    return sp_.IdToPiece(id);
  }

 private:
  void check_id(int id) const {
    if (id < 0 || id >= vocab_size_) {
      throw InvalidArgumentError(
          fmt::format("token id {} is out of range for a vocabulary of {} tokens", id, vocab_size_));
    }
  }

  sentencepiece::SentencePieceProcessor sp_;
  int vocab_size_ = 0;
  std::vector<int> byte_of_id_;  // the byte of a byte-fallback piece, else -1
  std::string unk_surface_;      // what the unknown piece decodes to (" ⁇ " by default)
  bool strip_first_space_ = true;  // the model adds a dummy prefix, which decoding removes
};

SentencePieceTokenizer::SentencePieceTokenizer(const std::string& path) {
  const MappedFile file(path, "SentencePiece model");  // IoError if missing or unreadable
  const auto status = sp_.LoadFromSerializedProto(
      std::string_view(reinterpret_cast<const char*>(file.data()), file.size()));
  if (!status.ok()) {
    throw FormatError(
        fmt::format("SentencePiece model '{}' cannot be loaded: {}", path, status.ToString()));
  }
  vocab_size_ = sp_.GetPieceSize();
  if (vocab_size_ <= 0) throw FormatError(fmt::format("SentencePiece model '{}' has no pieces", path));

  byte_of_id_.assign(static_cast<std::size_t>(vocab_size_), -1);
  for (int id = 0; id < vocab_size_; ++id) {
    if (!sp_.IsByte(id)) continue;
    const int byte = parse_byte_piece(sp_.IdToPiece(id));
    if (byte < 0) {
      throw FormatError(fmt::format("SentencePiece model '{}': byte piece {} is '{}', not <0xXX>",
                                    path, id, sp_.IdToPiece(id)));
    }
    byte_of_id_[static_cast<std::size_t>(id)] = byte;
  }

  // Ask the library itself how it decodes, rather than reading the normalizer spec (which
  // would need the protobuf headers): the unknown piece's surface, and whether a leading '▁'
  // of the first piece is dropped (add_dummy_prefix / remove_extra_whitespaces).
  if (sp_.unk_id() >= 0) unk_surface_ = sp_.DecodeIds({sp_.unk_id()});
  for (int id = 0; id < vocab_size_; ++id) {
    const std::string& p = sp_.IdToPiece(id);
    const bool normal = !sp_.IsControl(id) && !sp_.IsUnknown(id) && !sp_.IsByte(id) && !sp_.IsUnused(id);
    if (normal && p.size() > kSpaceSymbol.size() && p.starts_with(kSpaceSymbol) &&
        !std::string_view(p).substr(kSpaceSymbol.size()).starts_with(kSpaceSymbol)) {
      strip_first_space_ = !sp_.DecodeIds({id}).starts_with(' ');
      break;
    }
  }
}

std::vector<int> SentencePieceTokenizer::encode(std::string_view text, bool add_bos) const {
  std::vector<int> ids;
  const auto status = sp_.Encode(text, &ids);
  if (!status.ok()) {
    throw InvalidArgumentError(fmt::format("SentencePiece cannot encode the text: {}", status.ToString()));
  }
  if (add_bos && sp_.bos_id() >= 0) ids.insert(ids.begin(), sp_.bos_id());
  return ids;
}

// Mirrors SentencePieceProcessor::Decode: control pieces vanish, the unknown piece becomes its
// surface, '▁' becomes ' ', and the first piece that produces text loses one leading '▁' when
// the model adds a dummy prefix. Byte pieces are appended as raw bytes (see the file comment).
std::string SentencePieceTokenizer::decode(const std::vector<int>& ids) const {
  for (int id : ids) check_id(id);
  std::string out;
  bool at_start = strip_first_space_;  // still expecting the dummy-prefix space
  for (std::size_t i = 0; i < ids.size(); ++i) {
    const int id = ids[i];
    if (sp_.IsControl(id)) continue;  // BOS, EOS, padding: no text
    if (sp_.IsUnknown(id)) {
      out += unk_surface_;
      at_start = false;
      continue;
    }
    if (const int byte = byte_of_id_[static_cast<std::size_t>(id)]; byte >= 0) {
      out.push_back(static_cast<char>(byte));
      at_start = false;
      continue;
    }
    std::string_view p = sp_.IdToPiece(id);
    if (at_start && p.starts_with(kSpaceSymbol)) p.remove_prefix(kSpaceSymbol.size());
    at_start = false;
    append_with_spaces(out, p);
  }
  return out;
}

}  // namespace

std::unique_ptr<Tokenizer> load_sentencepiece_tokenizer(const std::string& path) {
  return std::make_unique<SentencePieceTokenizer>(path);
}

}  // namespace million
