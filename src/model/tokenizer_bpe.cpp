// Byte-level BPE encoding and decoding (GPT-2 style), matching Hugging Face tokenizers: added
// tokens are cut out of the text first (leftmost-longest), every stretch between them is split by
// the pre-tokenizer regexes (PCRE2 with Unicode properties, JIT-compiled where available), and the
// bytes of every piece are merged by rank through a priority queue. Decoding maps each token back
// to the raw bytes it stands for. It does not read files (tokenizer_bpe_load.cpp does) and does
// not normalize text.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <fmt/format.h>
#include <pcre2.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <queue>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "million/error.h"
#include "model/tokenizer_bpe.h"

namespace million {
namespace {

// The pre-tokenizer regexes, as Hugging Face tokenizer.json files write them.

// GPT-2, also Hugging Face's ByteLevel use_regex split.
constexpr std::string_view kGpt2Regex =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
// Llama 3 (tiktoken cl100k style): digits in groups of up to three.
constexpr std::string_view kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
// Qwen2: as Llama 3 with single digits.
constexpr std::string_view kQwen2Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
// SmolLM / StarCoder: every digit on its own (Hugging Face Digits(individual_digits)) first.
constexpr std::string_view kDigitRegex = R"(\p{N})";

// ---------------------------------------------------------------------------------------------
// GPT-2's byte <-> character table (bytes_to_unicode in GPT-2's encoder.py): the printable
// Latin-1 bytes stand for themselves; the other 68 (controls, space, 0x7F-0xA0, 0xAD) become
// U+0100.. U+0143 in byte order. Byte-level tokens are stored in these characters.

constexpr int kMaxTableChar = 0x100 + 68;  // one past the last character in the table

struct ByteLevelTable {
  std::array<int, kMaxTableChar> byte_of_char{};  // -1 where the character stands for no byte
};

const ByteLevelTable& byte_level_table() {
  static const ByteLevelTable table = [] {
    ByteLevelTable t;
    t.byte_of_char.fill(-1);
    char32_t next = 0x100;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      const char32_t c = printable ? static_cast<char32_t>(b) : next++;
      t.byte_of_char[c] = b;
    }
    return t;
  }();
  return table;
}

// The code point starting at s[i] (advancing i past it), or -1 for invalid UTF-8 (i moves by 1).
int32_t next_code_point(std::string_view s, std::size_t& i) {
  const auto lead = static_cast<unsigned char>(s[i]);
  int len = 0;
  int32_t cp = 0;
  if (lead < 0x80) {
    ++i;
    return lead;
  } else if ((lead & 0xE0) == 0xC0) {
    len = 2;
    cp = lead & 0x1F;
  } else if ((lead & 0xF0) == 0xE0) {
    len = 3;
    cp = lead & 0x0F;
  } else if ((lead & 0xF8) == 0xF0) {
    len = 4;
    cp = lead & 0x07;
  } else {
    ++i;
    return -1;
  }
  if (i + static_cast<std::size_t>(len) > s.size()) {
    ++i;
    return -1;
  }
  for (int k = 1; k < len; ++k) {
    const auto c = static_cast<unsigned char>(s[i + static_cast<std::size_t>(k)]);
    if ((c & 0xC0) != 0x80) {
      ++i;
      return -1;
    }
    cp = (cp << 6) | (c & 0x3F);
  }
  i += static_cast<std::size_t>(len);
  return cp;
}

// The bytes a byte-level string stands for; nullopt when a character is not in the table.
std::optional<std::string> byte_level_to_bytes(std::string_view text) {
  const ByteLevelTable& t = byte_level_table();
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size();) {
    const int32_t cp = next_code_point(text, i);
    if (cp < 0 || cp >= kMaxTableChar || t.byte_of_char[static_cast<std::size_t>(cp)] < 0) return std::nullopt;
    out.push_back(static_cast<char>(t.byte_of_char[static_cast<std::size_t>(cp)]));
  }
  return out;
}

// What a token decodes to: its byte-level characters mapped back to bytes, or the text itself
// when some character is not byte-level (Hugging Face's ByteLevel decoder does the same).
std::string decoded_bytes(std::string_view text) {
  if (auto bytes = byte_level_to_bytes(text)) return std::move(*bytes);
  return std::string(text);
}

// ---------------------------------------------------------------------------------------------
// PCRE2

std::string pcre2_message(int code) {
  std::array<PCRE2_UCHAR, 256> buf{};
  pcre2_get_error_message(code, buf.data(), buf.size());
  return reinterpret_cast<const char*>(buf.data());
}

struct CodeFree {
  void operator()(pcre2_code* c) const { pcre2_code_free(c); }
};
struct MatchDataFree {
  void operator()(pcre2_match_data* m) const { pcre2_match_data_free(m); }
};
using MatchData = std::unique_ptr<pcre2_match_data, MatchDataFree>;

// Hugging Face runs its regexes on Oniguruma, where \s is the Unicode White_Space property;
// PCRE2's \s in UCP mode also takes U+180E (Mongolian vowel separator, no longer White_Space
// since Unicode 6.3). Rewrites \s / \S (inside classes too) to the property itself.
std::string oniguruma_to_pcre2(std::string_view pattern) {
  std::string out;
  out.reserve(pattern.size() + 32);
  for (std::size_t i = 0; i < pattern.size(); ++i) {
    if (pattern[i] != '\\' || i + 1 == pattern.size()) {
      out.push_back(pattern[i]);
      continue;
    }
    const char next = pattern[++i];
    if (next == 's') {
      out += "\\p{White_Space}";
    } else if (next == 'S') {
      out += "\\P{White_Space}";
    } else {
      out.push_back('\\');
      out.push_back(next);
    }
  }
  return out;
}

// A compiled pattern. Invalid UTF-8 in a subject matches nothing (PCRE2_MATCH_INVALID_UTF), so
// such bytes end up in the gaps between matches and still reach the byte-level encoder.
class Regex {
 public:
  Regex(std::string_view pattern, bool literal, const std::string& source) {
    int error = 0;
    PCRE2_SIZE offset = 0;
    const uint32_t options = PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF | (literal ? PCRE2_LITERAL : 0);
    const std::string translated = literal ? std::string(pattern) : oniguruma_to_pcre2(pattern);
    code_.reset(pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(), options, &error,
                              &offset, nullptr));
    if (!code_) {
      throw FormatError(fmt::format("{}: pre-tokenizer regex '{}' is not valid for PCRE2 (at offset {} of '{}': {})",
                                    source, pattern, offset, translated, pcre2_message(error)));
    }
    pcre2_jit_compile(code_.get(), PCRE2_JIT_COMPLETE);  // failure (no JIT) leaves the interpreter
  }

  MatchData match_data() const { return MatchData(pcre2_match_data_create_from_pattern(code_.get(), nullptr)); }

  // Calls emit(begin, end) for every match in `subject` and every non-empty stretch between
  // matches, in order (Hugging Face Split with behaviour "Isolated"). Empty matches are skipped.
  void split(std::string_view subject, pcre2_match_data* md,
             const std::function<void(std::size_t, std::size_t)>& emit) const {
    const auto* s = reinterpret_cast<PCRE2_SPTR>(subject.data());
    std::size_t gap = 0;  // start of the text not yet emitted
    while (gap < subject.size()) {
      int rc = pcre2_match(code_.get(), s, subject.size(), gap, PCRE2_NOTEMPTY, md, nullptr);
      if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
        rc = pcre2_match(code_.get(), s, subject.size(), gap, PCRE2_NOTEMPTY | PCRE2_NO_JIT, md, nullptr);
      }
      if (rc == PCRE2_ERROR_NOMATCH) break;
      if (rc < 0) {
        throw InvalidArgumentError(fmt::format("pre-tokenizer regex failed on the text: {}", pcre2_message(rc)));
      }
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
      const std::size_t begin = ov[0];
      const std::size_t end = ov[1];
      if (begin > gap) emit(gap, begin);
      emit(begin, end);
      gap = end;
    }
    if (gap < subject.size()) emit(gap, subject.size());
  }

 private:
  std::unique_ptr<pcre2_code, CodeFree> code_;
};

// ---------------------------------------------------------------------------------------------

struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
template <class V>
using StringMap = std::unordered_map<std::string, V, StringHash, std::equal_to<>>;

bool is_ascii_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

class BpeTokenizer final : public Tokenizer {
 public:
  explicit BpeTokenizer(BpeTokenizerData data);

  std::vector<int> encode(std::string_view text, bool add_bos) const override;
  std::string decode(const std::vector<int>& ids) const override;
  int vocab_size() const override { return static_cast<int>(pieces_.size()); }
  int bos_id() const override { return bos_; }
  int eos_id() const override { return eos_; }
  std::string piece(int id) const override {
    check_id(id);
    return pieces_[static_cast<std::size_t>(id)];
  }

 private:
  struct Merge {
    int rank;
    int new_id;
  };
  struct Step {
    std::unique_ptr<Regex> regex;  // null: no split
    bool add_prefix_space = false;
  };
  // Per-call state: match data for every step, and the ids of pieces already merged (texts
  // repeat words constantly; with the cache 230 KB of mixed text encodes in ~20 ms).
  struct Scratch {
    std::vector<MatchData> match_data;
    StringMap<std::pair<std::uint32_t, std::uint32_t>> cache;  // piece -> (offset, count) in cached_ids
    std::vector<int> cached_ids;
  };
  struct AddedMatch {
    std::size_t begin = std::string_view::npos;  // includes the whitespace lstrip takes
    std::size_t end = 0;                         // includes the whitespace rstrip takes
    int id = -1;
  };

  void build_vocabulary(const BpeTokenizerData& data);
  void build_merges(const BpeTokenizerData& data);
  void build_added(const BpeTokenizerData& data);
  void build_pre_tokenizer(const BpeTokenizerData& data);
  void check_special_id(int id, const char* what) const;
  void check_id(int id) const;

  AddedMatch find_added(std::string_view text, std::size_t from) const;
  void encode_stretch(std::string_view text, std::size_t step, Scratch& scratch, std::vector<int>& out) const;
  void encode_piece(std::string_view piece, Scratch& scratch, std::vector<int>& out) const;
  void merge_piece(std::string_view piece, std::vector<int>& out) const;
  const Merge* find_merge(int left, int right) const {
    const auto it = merges_.find((static_cast<std::uint64_t>(static_cast<std::uint32_t>(left)) << 32) |
                                 static_cast<std::uint32_t>(right));
    return it == merges_.end() ? nullptr : &it->second;
  }

  std::string source_;
  std::vector<std::string> pieces_;  // by id, as stored (byte-level text, added-token content)
  std::vector<std::string> bytes_;   // by id, the bytes decode() writes
  StringMap<int> id_of_bytes_;       // the byte-level vocabulary, by the bytes each token stands for
  std::array<int, 256> id_of_byte_{};  // the token of each single byte, -1 if none
  std::unordered_map<std::uint64_t, Merge> merges_;  // (left id << 32 | right id) -> rank, result
  std::vector<BpeAddedToken> added_;
  std::array<std::vector<int>, 256> added_by_first_byte_;  // indices into added_, longest first
  std::vector<Step> steps_;
  bool ignore_merges_ = false;
  int bos_ = -1;
  int eos_ = -1;
  int unk_ = -1;
};

BpeTokenizer::BpeTokenizer(BpeTokenizerData data) : source_(std::move(data.source)) {
  build_vocabulary(data);
  build_added(data);
  build_merges(data);
  build_pre_tokenizer(data);
  bos_ = data.bos_id;
  eos_ = data.eos_id;
  unk_ = data.unk_id;
  check_special_id(bos_, "BOS");
  check_special_id(eos_, "EOS");
  check_special_id(unk_, "unknown-token");
  for (int b = 0; b < 256; ++b) {
    const auto it = id_of_bytes_.find(std::string_view(std::string(1, static_cast<char>(b))));
    id_of_byte_[static_cast<std::size_t>(b)] = it == id_of_bytes_.end() ? -1 : it->second;
  }
}

void BpeTokenizer::build_vocabulary(const BpeTokenizerData& data) {
  if (data.tokens.empty()) throw FormatError(fmt::format("{}: the vocabulary is empty", source_));
  pieces_ = data.tokens;
  bytes_.reserve(pieces_.size());
  for (std::size_t id = 0; id < pieces_.size(); ++id) {
    auto bytes = byte_level_to_bytes(pieces_[id]);
    if (bytes && !bytes->empty()) id_of_bytes_.try_emplace(*bytes, static_cast<int>(id));
    bytes_.push_back(bytes ? std::move(*bytes) : pieces_[id]);
  }
}

// Added tokens take their ids' places in the vocabulary (growing it when they lie beyond). They
// are cut out of the text before BPE, so the byte-level lookup never sees their text.
void BpeTokenizer::build_added(const BpeTokenizerData& data) {
  added_ = data.added;
  constexpr int kMaxId = 1 << 24;  // far above any real vocabulary; guards the resize below
  for (std::size_t i = 0; i < added_.size(); ++i) {
    const BpeAddedToken& a = added_[i];
    if (a.id < 0 || a.id >= kMaxId) {
      throw FormatError(fmt::format("{}: added token '{}' has id {}, out of range", source_, a.content, a.id));
    }
    if (a.content.empty()) throw FormatError(fmt::format("{}: added token {} has empty content", source_, a.id));
    const auto id = static_cast<std::size_t>(a.id);
    if (id >= pieces_.size()) {
      pieces_.resize(id + 1);
      bytes_.resize(id + 1);
    }
    pieces_[id] = a.content;
    bytes_[id] = decoded_bytes(a.content);
    added_by_first_byte_[static_cast<unsigned char>(a.content[0])].push_back(static_cast<int>(i));
  }
  for (auto& list : added_by_first_byte_) {
    std::stable_sort(list.begin(), list.end(), [&](int x, int y) {
      return added_[static_cast<std::size_t>(x)].content.size() > added_[static_cast<std::size_t>(y)].content.size();
    });
  }
}

// Merges name tokens by their stored text; the first occurrence of a pair sets its rank.
void BpeTokenizer::build_merges(const BpeTokenizerData& data) {
  StringMap<int> id_of_piece;
  id_of_piece.reserve(data.tokens.size());
  for (std::size_t id = 0; id < data.tokens.size(); ++id) id_of_piece.try_emplace(data.tokens[id], static_cast<int>(id));
  auto lookup = [&](std::string_view text, std::size_t rank, std::string_view merge) {
    const auto it = id_of_piece.find(text);
    if (it == id_of_piece.end()) {
      throw FormatError(fmt::format("{}: merge {} '{}' refers to '{}', which is not in the vocabulary", source_,
                                    rank, merge, text));
    }
    return it->second;
  };
  merges_.reserve(data.merges.size());
  std::string joined;
  for (std::size_t rank = 0; rank < data.merges.size(); ++rank) {
    const std::string_view m = data.merges[rank];
    const std::size_t space = m.find(' ');
    if (space == std::string_view::npos || space == 0 || space + 1 == m.size() ||
        m.find(' ', space + 1) != std::string_view::npos) {
      throw FormatError(fmt::format("{}: merge {} '{}' is not two tokens separated by one space", source_, rank, m));
    }
    const int left = lookup(m.substr(0, space), rank, m);
    const int right = lookup(m.substr(space + 1), rank, m);
    joined.assign(m.substr(0, space));
    joined.append(m.substr(space + 1));
    const int result = lookup(joined, rank, m);
    const std::uint64_t key =
        (static_cast<std::uint64_t>(static_cast<std::uint32_t>(left)) << 32) | static_cast<std::uint32_t>(right);
    merges_.try_emplace(key, Merge{static_cast<int>(rank), result});
  }
}

void BpeTokenizer::build_pre_tokenizer(const BpeTokenizerData& data) {
  ignore_merges_ = data.ignore_merges;
  std::vector<BpeSplitStep> steps = data.pre_steps;
  if (steps.empty()) {
    steps = bpe_pre_tokenizer_steps(data.pre);
    if (data.pre == "llama3" || data.pre == "llama-bpe" || data.pre == "llama-v3") ignore_merges_ = true;
  }
  for (const BpeSplitStep& s : steps) {
    Step step;
    if (!s.regex.empty()) step.regex = std::make_unique<Regex>(s.regex, s.literal, source_);
    step.add_prefix_space = s.add_prefix_space;
    if (step.regex || step.add_prefix_space) steps_.push_back(std::move(step));
  }
}

void BpeTokenizer::check_special_id(int id, const char* what) const {
  if (id < -1 || id >= vocab_size()) {
    throw FormatError(fmt::format("{}: {} id {} is outside the vocabulary of {} tokens", source_, what, id, vocab_size()));
  }
}

void BpeTokenizer::check_id(int id) const {
  if (id < 0 || id >= vocab_size()) {
    throw InvalidArgumentError(
        fmt::format("token id {} is out of range for a vocabulary of {} tokens", id, vocab_size()));
  }
}

// The leftmost added token at or after `from`, the longest one where several start there.
BpeTokenizer::AddedMatch BpeTokenizer::find_added(std::string_view text, std::size_t from) const {
  for (std::size_t i = from; i < text.size(); ++i) {
    for (const int index : added_by_first_byte_[static_cast<unsigned char>(text[i])]) {
      const BpeAddedToken& a = added_[static_cast<std::size_t>(index)];
      if (text.compare(i, a.content.size(), a.content) != 0) continue;
      AddedMatch m{i, i + a.content.size(), a.id};
      if (a.lstrip) {
        while (m.begin > from && is_ascii_space(text[m.begin - 1])) --m.begin;
      }
      if (a.rstrip) {
        while (m.end < text.size() && is_ascii_space(text[m.end])) ++m.end;
      }
      return m;
    }
  }
  return {};
}

std::vector<int> BpeTokenizer::encode(std::string_view text, bool add_bos) const {
  std::vector<int> ids;
  ids.reserve(text.size() / 3 + 2);
  if (add_bos && bos_ >= 0) ids.push_back(bos_);
  Scratch scratch;
  for (const Step& s : steps_) scratch.match_data.push_back(s.regex ? s.regex->match_data() : MatchData());
  for (std::size_t pos = 0; pos < text.size();) {
    const AddedMatch m = added_.empty() ? AddedMatch{} : find_added(text, pos);
    const std::size_t stop = std::min(m.begin, text.size());
    if (stop > pos) encode_stretch(text.substr(pos, stop - pos), 0, scratch, ids);
    if (m.id < 0) break;
    ids.push_back(m.id);
    pos = m.end;
  }
  return ids;
}

// Applies pre-tokenizer steps [step, end) to `text`, then merges every resulting piece.
void BpeTokenizer::encode_stretch(std::string_view text, std::size_t step, Scratch& scratch,
                                  std::vector<int>& out) const {
  if (text.empty()) return;
  if (step == steps_.size()) {
    encode_piece(text, scratch, out);
    return;
  }
  const Step& s = steps_[step];
  std::string prefixed;
  if (s.add_prefix_space && text.front() != ' ') {
    prefixed.reserve(text.size() + 1);
    prefixed.push_back(' ');
    prefixed.append(text);
    text = prefixed;
  }
  if (!s.regex) {
    encode_stretch(text, step + 1, scratch, out);
    return;
  }
  s.regex->split(text, scratch.match_data[step].get(), [&](std::size_t begin, std::size_t end) {
    encode_stretch(text.substr(begin, end - begin), step + 1, scratch, out);
  });
}

void BpeTokenizer::encode_piece(std::string_view piece, Scratch& scratch, std::vector<int>& out) const {
  if (ignore_merges_) {
    if (const auto it = id_of_bytes_.find(piece); it != id_of_bytes_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  constexpr std::size_t kMaxCachedPiece = 64;  // longer pieces are rare and seldom repeat
  if (piece.size() > kMaxCachedPiece) {
    merge_piece(piece, out);
    return;
  }
  if (const auto it = scratch.cache.find(piece); it != scratch.cache.end()) {
    const auto [offset, count] = it->second;
    out.insert(out.end(), scratch.cached_ids.begin() + offset, scratch.cached_ids.begin() + offset + count);
    return;
  }
  const std::size_t first = out.size();
  merge_piece(piece, out);
  const auto offset = static_cast<std::uint32_t>(scratch.cached_ids.size());
  scratch.cached_ids.insert(scratch.cached_ids.end(), out.begin() + static_cast<std::ptrdiff_t>(first), out.end());
  scratch.cache.emplace(std::string(piece), std::make_pair(offset, static_cast<std::uint32_t>(out.size() - first)));
}

// Byte-pair merging as Hugging Face's Word::merge_all: one symbol per byte, a min-heap of
// (rank, position) candidates; a popped candidate is dropped when its symbols have changed.
void BpeTokenizer::merge_piece(std::string_view piece, std::vector<int>& out) const {
  struct Symbol {
    int id;    // -1 once merged into the symbol on its left
    int prev;  // index of the symbol on the left, -1 at the start
    int next;  // index of the symbol on the right, -1 at the end
  };
  struct Candidate {
    int rank;
    int pos;
    int new_id;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::vector<Symbol> symbols;
  symbols.reserve(piece.size());
  for (const char byte : piece) {
    int id = id_of_byte_[static_cast<unsigned char>(byte)];
    if (id < 0) id = unk_;
    if (id < 0) continue;  // a byte with no token and no unknown token: dropped, as Hugging Face does
    symbols.push_back(Symbol{id, static_cast<int>(symbols.size()) - 1, static_cast<int>(symbols.size()) + 1});
  }
  const int n = static_cast<int>(symbols.size());
  if (n == 0) return;
  symbols.back().next = -1;
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue;
  auto consider = [&](int pos) {
    const Symbol& left = symbols[static_cast<std::size_t>(pos)];
    if (left.next < 0) return;
    if (const Merge* m = find_merge(left.id, symbols[static_cast<std::size_t>(left.next)].id)) {
      queue.push(Candidate{m->rank, pos, m->new_id});
    }
  };
  for (int i = 0; i + 1 < n; ++i) consider(i);
  while (!queue.empty()) {
    const Candidate c = queue.top();
    queue.pop();
    Symbol& left = symbols[static_cast<std::size_t>(c.pos)];
    if (left.id < 0 || left.next < 0) continue;
    Symbol& right = symbols[static_cast<std::size_t>(left.next)];
    const Merge* m = find_merge(left.id, right.id);
    if (m == nullptr || m->new_id != c.new_id) continue;
    left.id = c.new_id;
    right.id = -1;
    left.next = right.next;
    if (left.next >= 0) symbols[static_cast<std::size_t>(left.next)].prev = c.pos;
    if (left.prev >= 0) consider(left.prev);
    consider(c.pos);
  }
  for (int i = 0; i >= 0 && i < n; i = symbols[static_cast<std::size_t>(i)].next) {
    out.push_back(symbols[static_cast<std::size_t>(i)].id);
  }
}

// Raw bytes of every token after a leading BOS; the result may end inside a UTF-8 character.
std::string BpeTokenizer::decode(const std::vector<int>& ids) const {
  for (const int id : ids) check_id(id);
  const std::size_t first = !ids.empty() && bos_ >= 0 && ids.front() == bos_ ? 1 : 0;
  std::string out;
  for (std::size_t i = first; i < ids.size(); ++i) out += bytes_[static_cast<std::size_t>(ids[i])];
  return out;
}

}  // namespace

std::vector<BpeSplitStep> bpe_pre_tokenizer_steps(const std::string& name) {
  if (name == "gpt2" || name == "gpt-2") return {{std::string(kGpt2Regex)}};
  if (name == "llama3" || name == "llama-bpe" || name == "llama-v3") return {{std::string(kLlama3Regex)}};
  if (name == "qwen2") return {{std::string(kQwen2Regex)}};
  if (name == "smollm") return {{std::string(kDigitRegex)}, {std::string(kGpt2Regex)}};
  throw UnsupportedError(fmt::format("byte-level BPE pre-tokenizer '{}' is not supported (known: gpt2, gpt-2, "
                                     "llama3, llama-bpe, llama-v3, qwen2, smollm)",
                                     name));
}

std::vector<BpeAddedToken> bpe_added_tokens_from_types(const std::vector<std::string>& tokens,
                                                        const std::vector<int>& token_types) {
  if (tokens.size() != token_types.size()) {
    throw FormatError(fmt::format("{} token types for {} tokens", token_types.size(), tokens.size()));
  }
  constexpr int kControl = 3;
  constexpr int kUserDefined = 4;
  std::vector<BpeAddedToken> added;
  for (std::size_t id = 0; id < tokens.size(); ++id) {
    const int type = token_types[id];
    if ((type != kControl && type != kUserDefined) || tokens[id].empty()) continue;
    BpeAddedToken a;
    a.id = static_cast<int>(id);
    a.content = tokens[id];
    a.special = type == kControl;
    added.push_back(std::move(a));
  }
  return added;
}

std::unique_ptr<Tokenizer> make_bpe_tokenizer(BpeTokenizerData data) {
  return std::make_unique<BpeTokenizer>(std::move(data));
}

}  // namespace million
