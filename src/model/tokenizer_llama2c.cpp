// llama2.c tokenizer (tok512.bin, tokenizer.bin): loading with full validation, encoding with
// run.c's rules (dummy space, per-codepoint lookup with byte fallback, best-score pair merges)
// and decoding (no leading space after BOS, <0xXX> pieces as raw bytes).
// It does not normalize text or handle any other tokenizer format.
#include <fmt/format.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <queue>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/mapped_file.h"
#include "million/error.h"
#include "model/tokenizer.h"

namespace million {
namespace {

constexpr int kBosId = 1;
constexpr int kEosId = 2;
constexpr int kFirstByteId = 3;  // ids 3..258 are the byte tokens <0x00>..<0xFF>
constexpr int kMinVocab = kFirstByteId + 256;

class Llama2cTokenizer final : public Tokenizer {
 public:
  Llama2cTokenizer(const std::string& path, int vocab_size) { load(path, vocab_size); }

  std::vector<int> encode(std::string_view text, bool add_bos) const override;
  std::string decode(const std::vector<int>& ids) const override;

  int vocab_size() const override { return static_cast<int>(pieces_.size()); }
  int bos_id() const override { return kBosId; }
  int eos_id() const override { return kEosId; }
  std::string piece(int id) const override {
    check_id(id);
    return pieces_[static_cast<std::size_t>(id)];
  }

 private:
  void load(const std::string& path, int vocab_size);
  void check_id(int id) const {
    if (id < 0 || id >= vocab_size()) {
      throw InvalidArgumentError(
          fmt::format("token id {} is out of range for a vocabulary of {} tokens", id, vocab_size()));
    }
  }
  int lookup(const std::string& s) const {
    auto it = ids_.find(s);
    return it == ids_.end() ? -1 : it->second;
  }

  std::vector<std::string> pieces_;
  std::vector<float> scores_;
  std::unordered_map<std::string, int> ids_;  // piece -> lowest id with that piece
};

void Llama2cTokenizer::load(const std::string& path, int vocab_size) {
  if (vocab_size < kMinVocab) {
    throw InvalidArgumentError(fmt::format(
        "llama2.c tokenizer '{}': vocab_size {} is too small (needs at least {}: <unk>, BOS, EOS and "
        "256 byte tokens)",
        path, vocab_size, kMinVocab));
  }
  MappedFile file(path, "llama2.c tokenizer");
  const std::string what = fmt::format("llama2.c tokenizer '{}'", path);
  ByteReader reader(file.data(), file.size(), what);

  const auto max_len = reader.read<std::int32_t>("max_token_length");
  if (max_len <= 0) {
    throw FormatError(fmt::format("{}: max_token_length is {}, must be positive", what, max_len));
  }
  pieces_.reserve(static_cast<std::size_t>(vocab_size));
  scores_.reserve(static_cast<std::size_t>(vocab_size));
  for (int id = 0; id < vocab_size; ++id) {
    const auto score = reader.read<float>("token score");
    const auto len = reader.read<std::int32_t>("token length");
    if (!std::isfinite(score)) {
      throw FormatError(fmt::format("{}: token {} has a non-finite score", what, id));
    }
    if (len < 0 || len > max_len) {
      throw FormatError(fmt::format("{}: token {} has length {}, outside 0..max_token_length ({})",
                                    what, id, len, max_len));
    }
    const std::uint8_t* bytes = reader.take(static_cast<std::size_t>(len), "token bytes");
    pieces_.emplace_back(reinterpret_cast<const char*>(bytes), static_cast<std::size_t>(len));
    scores_.push_back(score);
    ids_.emplace(pieces_.back(), id);  // keeps the first id of a duplicated piece
  }
  if (reader.remaining() != 0) {
    throw FormatError(fmt::format(
        "{}: {} bytes left after {} tokens (does vocab_size match the model?)", what,
        reader.remaining(), vocab_size));
  }
  for (int b = 0; b < 256; ++b) {
    const std::string expected = fmt::format("<0x{:02X}>", b);
    if (pieces_[static_cast<std::size_t>(kFirstByteId + b)] != expected) {
      throw FormatError(fmt::format("{}: token {} should be the byte token {}", what,
                                    kFirstByteId + b, expected));
    }
  }
}

// Length of the UTF-8 sequence starting at text[i] as run.c groups it: a byte plus the
// continuation bytes (10xxxxxx) that follow it, at most 4 bytes in all.
std::size_t codepoint_length(std::string_view text, std::size_t i) {
  std::size_t n = 1;
  while (n < 4 && i + n < text.size() && (static_cast<unsigned char>(text[i + n]) & 0xC0) == 0x80) ++n;
  return n;
}

std::vector<int> Llama2cTokenizer::encode(std::string_view text, bool add_bos) const {
  std::vector<int> out;
  if (add_bos) out.push_back(kBosId);
  if (text.empty()) return out;

  // Initial symbols: the dummy space, then one per codepoint (or per byte when the codepoint
  // is not a token). Symbols form a linked list so merges are O(1).
  struct Symbol {
    int id;
    int prev;
    int next;  // -1 at the ends
  };
  std::vector<Symbol> syms;
  auto add_symbol = [&](int id) {
    const int idx = static_cast<int>(syms.size());
    syms.push_back({id, idx - 1, -1});
    if (idx > 0) syms[static_cast<std::size_t>(idx - 1)].next = idx;
  };
  auto add_codepoint = [&](std::string_view cp) {
    const int id = lookup(std::string(cp));
    if (id >= 0) {
      add_symbol(id);
    } else {
      for (char byte : cp) add_symbol(kFirstByteId + static_cast<unsigned char>(byte));
    }
  };
  add_codepoint(" ");  // the dummy prefix
  for (std::size_t i = 0; i < text.size();) {
    const std::size_t n = codepoint_length(text, i);
    add_codepoint(text.substr(i, n));
    i += n;
  }

  // Merge candidates, best first: highest score, then leftmost. A symbol keeps the index of its
  // leftmost original position, so index order is text order. Entries go stale when either side
  // is merged away; they are skipped when popped. This picks exactly the pair run.c's
  // quadratic scan would pick at each step.
  struct Candidate {
    float score;
    int left;
    int right;
    int left_id;
    int right_id;
    int merged_id;
  };
  auto worse = [](const Candidate& a, const Candidate& b) {
    if (a.score != b.score) return a.score < b.score;
    return a.left > b.left;
  };
  std::priority_queue<Candidate, std::vector<Candidate>, decltype(worse)> queue(worse);
  auto consider = [&](int left) {
    if (left < 0) return;
    const Symbol& l = syms[static_cast<std::size_t>(left)];
    if (l.next < 0) return;
    const Symbol& r = syms[static_cast<std::size_t>(l.next)];
    const int merged = lookup(pieces_[static_cast<std::size_t>(l.id)] + pieces_[static_cast<std::size_t>(r.id)]);
    if (merged >= 0) {
      queue.push({scores_[static_cast<std::size_t>(merged)], left, l.next, l.id, r.id, merged});
    }
  };
  for (int i = 0; i < static_cast<int>(syms.size()); ++i) consider(i);

  std::vector<bool> alive(syms.size(), true);
  while (!queue.empty()) {
    const Candidate c = queue.top();
    queue.pop();
    Symbol& l = syms[static_cast<std::size_t>(c.left)];
    if (!alive[static_cast<std::size_t>(c.left)] || !alive[static_cast<std::size_t>(c.right)] ||
        l.next != c.right || l.id != c.left_id || syms[static_cast<std::size_t>(c.right)].id != c.right_id) {
      continue;  // stale
    }
    Symbol& r = syms[static_cast<std::size_t>(c.right)];
    l.id = c.merged_id;
    l.next = r.next;
    if (r.next >= 0) syms[static_cast<std::size_t>(r.next)].prev = c.left;
    alive[static_cast<std::size_t>(c.right)] = false;
    consider(l.prev);
    consider(c.left);
  }

  for (int i = 0; i >= 0; i = syms[static_cast<std::size_t>(i)].next) {
    out.push_back(syms[static_cast<std::size_t>(i)].id);
  }
  return out;
}

std::string Llama2cTokenizer::decode(const std::vector<int>& ids) const {
  for (int id : ids) check_id(id);
  std::string out;
  for (std::size_t i = 0; i < ids.size(); ++i) {
    const int id = ids[i];
    if (id == kBosId || id == kEosId) continue;
    if (id >= kFirstByteId && id < kFirstByteId + 256) {
      out.push_back(static_cast<char>(id - kFirstByteId));
      continue;
    }
    std::string_view p = pieces_[static_cast<std::size_t>(id)];
    if (i > 0 && ids[i - 1] == kBosId && !p.empty() && p.front() == ' ') p.remove_prefix(1);
    out.append(p);
  }
  return out;
}

}  // namespace

std::unique_ptr<Tokenizer> load_llama2c_tokenizer(const std::string& path, int vocab_size) {
  return std::make_unique<Llama2cTokenizer>(path, vocab_size);
}

}  // namespace million
