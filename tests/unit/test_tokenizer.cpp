// Tokenizer tests: llama2.c tok512.bin (round trips, merges against a direct port of run.c's
// quadratic loop, corrupt files), SentencePiece against golden.json and libsentencepiece's own
// Decode (skipped when ../shared lacks gutenberg-23m), and TextStreamer's UTF-8 hold-back.
// Expected token ids come only from independent references (golden.json, run.c's algorithm).
#include <gtest/gtest.h>
#include <sentencepiece_processor.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/test_paths.h"
#include "million/error.h"
#include "model/tokenizer.h"

namespace million {
namespace {

namespace fs = std::filesystem;

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// True when `s` is well-formed UTF-8 made of complete characters.
bool is_complete_utf8(const std::string& s) {
  for (std::size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    std::size_t n = 0;
    if (c < 0x80) {
      n = 1;
    } else if ((c & 0xE0) == 0xC0) {
      n = 2;
    } else if ((c & 0xF0) == 0xE0) {
      n = 3;
    } else if ((c & 0xF8) == 0xF0) {
      n = 4;
    } else {
      return false;
    }
    if (i + n > s.size()) return false;
    for (std::size_t k = 1; k < n; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    }
    i += n;
  }
  return true;
}

// Streams `rest` after `prefix` and checks every chunk is complete UTF-8; returns the text.
std::string stream_all(const Tokenizer& tok, const std::vector<int>& prefix, const std::vector<int>& rest,
                       int* empty_pushes = nullptr) {
  TextStreamer streamer(tok, prefix);
  std::string out;
  for (int id : rest) {
    const std::string chunk = streamer.push(id);
    EXPECT_TRUE(is_complete_utf8(chunk)) << "chunk cut inside a character";
    if (chunk.empty() && empty_pushes != nullptr) ++*empty_pushes;
    out += chunk;
  }
  return out + streamer.flush();
}

// ---------------------------------------------------------------------------------------------
// llama2.c

const int kVocab = 512;
std::string tok512_path() { return test::source_dir() + "/models/stories260K/tok512.bin"; }

// The tokenizer file parsed directly, for the reference encoder below.
struct RawVocab {
  std::vector<std::string> pieces;
  std::vector<float> scores;
  std::unordered_map<std::string, int> ids;  // first id of each piece
  int lookup(const std::string& s) const {
    auto it = ids.find(s);
    return it == ids.end() ? -1 : it->second;
  }
};

RawVocab read_raw_vocab(const std::string& path, int vocab) {
  const std::string bytes = read_file(path);
  RawVocab v;
  std::size_t off = 4;
  for (int i = 0; i < vocab; ++i) {
    float score;
    std::int32_t len;
    std::memcpy(&score, bytes.data() + off, 4);
    std::memcpy(&len, bytes.data() + off + 4, 4);
    off += 8;
    v.pieces.push_back(bytes.substr(off, static_cast<std::size_t>(len)));
    v.scores.push_back(score);
    v.ids.emplace(v.pieces.back(), i);
    off += static_cast<std::size_t>(len);
  }
  return v;
}

// A direct port of llama2.c run.c encode() (quadratic merge loop), as an independent reference.
std::vector<int> runc_encode(const RawVocab& v, const std::string& text) {
  std::vector<int> tokens;
  if (text.empty()) return tokens;
  tokens.push_back(v.lookup(" "));
  std::string buf;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if ((static_cast<unsigned char>(text[i]) & 0xC0) != 0x80) buf.clear();
    buf.push_back(text[i]);
    if (i + 1 < text.size() && (static_cast<unsigned char>(text[i + 1]) & 0xC0) == 0x80 && buf.size() < 4) continue;
    const int id = v.lookup(buf);
    if (id != -1) {
      tokens.push_back(id);
    } else {
      for (char c : buf) tokens.push_back(static_cast<unsigned char>(c) + 3);
    }
    buf.clear();
  }
  while (true) {
    float best_score = -1e10f;
    int best_id = -1;
    std::size_t best_idx = 0;
    for (std::size_t i = 0; i + 1 < tokens.size(); ++i) {
      const int id = v.lookup(v.pieces[static_cast<std::size_t>(tokens[i])] +
                              v.pieces[static_cast<std::size_t>(tokens[i + 1])]);
      if (id != -1 && v.scores[static_cast<std::size_t>(id)] > best_score) {
        best_score = v.scores[static_cast<std::size_t>(id)];
        best_id = id;
        best_idx = i;
      }
    }
    if (best_id == -1) break;
    tokens[best_idx] = best_id;
    tokens.erase(tokens.begin() + static_cast<std::ptrdiff_t>(best_idx) + 1);
  }
  return tokens;
}

const std::vector<std::string> kSampleTexts = {
    "Once upon a time, there was a little girl named Lily.",
    "Hello\nworld\n\nThe end.\n",
    "caf\xC3\xA9 na\xC3\xAFve \xC3\xA9t\xC3\xA9",                  // café naïve été
    "\xE6\x97\xA5\xE6\x9C\xAC",                                      // 日本
    "emoji \xF0\x9F\x98\x80 and \xF0\x9F\x8E\x89!",                  // 😀 🎉
    "  two leading spaces, trailing space ",
    "tab\there \"quotes\" and 'apostrophes' 12345",
    "Zooo illl hppp balllooon",  // tok512 has "oo", "ll", "pp": equal-score pairs overlap
    "mixed: \xC3\xBC \xE6\x97\xA5 \xF0\x9F\x99\x82\nnext line",
};

class Llama2cTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { tok_ = load_llama2c_tokenizer(tok512_path(), kVocab).release(); }
  static void TearDownTestSuite() {
    delete tok_;
    tok_ = nullptr;
  }
  static Tokenizer* tok_;
};
Tokenizer* Llama2cTest::tok_ = nullptr;

TEST_F(Llama2cTest, LoadsVocabulary) {
  EXPECT_EQ(tok_->vocab_size(), kVocab);
  EXPECT_EQ(tok_->bos_id(), 1);
  EXPECT_EQ(tok_->eos_id(), 2);
  EXPECT_EQ(tok_->piece(3), "<0x00>");
  EXPECT_EQ(tok_->piece(3 + 0x0A), "<0x0A>");
  EXPECT_EQ(tok_->piece(258), "<0xFF>");
  EXPECT_THROW(tok_->piece(-1), InvalidArgumentError);
  EXPECT_THROW(tok_->piece(kVocab), InvalidArgumentError);
}

TEST_F(Llama2cTest, EmptyText) {
  EXPECT_EQ(tok_->encode("", true), std::vector<int>{1});
  EXPECT_TRUE(tok_->encode("", false).empty());
  EXPECT_EQ(tok_->decode({}), "");
  EXPECT_EQ(tok_->decode({1}), "");
}

TEST_F(Llama2cTest, RoundTripsAndIdsInRange) {
  for (const std::string& text : kSampleTexts) {
    const std::vector<int> ids = tok_->encode(text, true);
    ASSERT_FALSE(ids.empty());
    EXPECT_EQ(ids.front(), 1);
    for (int id : ids) {
      EXPECT_GE(id, 0);
      EXPECT_LT(id, kVocab);
    }
    EXPECT_EQ(tok_->decode(ids), text);
    // Without BOS the dummy space stays (run.c strips it only after BOS).
    EXPECT_EQ(tok_->decode(tok_->encode(text, false)), " " + text);
  }
}

TEST_F(Llama2cTest, MatchesRunCReferenceEncoder) {
  const RawVocab raw = read_raw_vocab(tok512_path(), kVocab);
  for (const std::string& text : kSampleTexts) EXPECT_EQ(tok_->encode(text, false), runc_encode(raw, text)) << text;

  // Random texts over an alphabet heavy in mergeable fragments, plus multi-byte characters.
  const std::vector<std::string> parts = {"the", " ", "a", "e", "he", " t", "nd", "Lily", ",", ".", "\n",
                                          "in", "s", "o", "l", "p", "oo", "ll", "\xC3\xA9", "\xE6\x97\xA5", "\xF0\x9F\x98\x80", "  "};
  std::mt19937 rng(12345);
  for (int trial = 0; trial < 200; ++trial) {
    std::string text;
    const int n = static_cast<int>(rng() % 40);
    for (int k = 0; k < n; ++k) text += parts[rng() % parts.size()];
    ASSERT_EQ(tok_->encode(text, false), runc_encode(raw, text)) << "text: '" << text << "'";
  }
}

TEST_F(Llama2cTest, MergesShortenCommonWords) {
  const std::vector<int> ids = tok_->encode(" the", false);  // dummy space + " the": 5 chars
  EXPECT_LT(ids.size(), 5u);
  EXPECT_EQ(tok_->decode(ids), "  the");
}

TEST_F(Llama2cTest, ByteFallbackForUnknownCharacters) {
  const std::string text = "\xE6\x97\xA5";  // 日, not a token in tok512
  std::vector<int> expected;
  for (int id = 0; id < kVocab; ++id) {
    if (tok_->piece(id) == " ") expected.push_back(id);
  }
  ASSERT_EQ(expected.size(), 1u);
  for (char c : text) expected.push_back(3 + static_cast<unsigned char>(c));
  EXPECT_EQ(tok_->encode(text, false), expected);
}

TEST_F(Llama2cTest, DecodeRules) {
  const std::vector<int> ids = tok_->encode("Lily", false);  // piece text begins with ' '
  std::vector<int> with_bos = {1};
  with_bos.insert(with_bos.end(), ids.begin(), ids.end());
  EXPECT_EQ(tok_->decode(with_bos), "Lily");
  EXPECT_EQ(tok_->decode(ids), " Lily");
  std::vector<int> with_eos = with_bos;
  with_eos.push_back(2);
  EXPECT_EQ(tok_->decode(with_eos), "Lily");
  // A BOS in the middle decodes to nothing and the next piece again loses its space.
  std::vector<int> twice = with_bos;
  twice.insert(twice.end(), with_bos.begin(), with_bos.end());
  EXPECT_EQ(tok_->decode(twice), "LilyLily");
  EXPECT_THROW(tok_->decode({1, kVocab}), InvalidArgumentError);
  EXPECT_THROW(tok_->decode({-1}), InvalidArgumentError);
}

TEST(Llama2cFile, MissingFileIsIoError) {
  EXPECT_THROW(load_llama2c_tokenizer(test::temp_dir() + "/nope.bin", kVocab), IoError);
}

TEST(Llama2cFile, VocabSizeTooSmallIsInvalidArgument) {
  EXPECT_THROW(load_llama2c_tokenizer(tok512_path(), 100), InvalidArgumentError);
}

class Llama2cCorruptTest : public ::testing::Test {
 protected:
  void SetUp() override {
    good_ = read_file(tok512_path());
    ASSERT_GT(good_.size(), 100u);
    dir_ = test::temp_dir();
  }
  // Writes `bytes` to a file and expects loading it to throw FormatError naming the file.
  void expect_format_error(const std::string& bytes, int vocab = kVocab) {
    const std::string path = dir_ + "/tok.bin";
    test::write_file(path, bytes);
    try {
      load_llama2c_tokenizer(path, vocab);
      ADD_FAILURE() << "no error for a corrupt file of " << bytes.size() << " bytes";
    } catch (const FormatError& e) {
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    }
  }
  static std::string with_int32(std::string bytes, std::size_t offset, std::int32_t value) {
    std::memcpy(bytes.data() + offset, &value, 4);
    return bytes;
  }
  std::string good_;
  std::string dir_;
};

TEST_F(Llama2cCorruptTest, TruncatedAtEveryLength) {
  // Every length inside the header and the first tokens, then a sample through the rest.
  for (std::size_t len = 0; len < good_.size(); len += (len < 200 ? 1 : 11)) {
    SCOPED_TRACE(len);
    expect_format_error(good_.substr(0, len));
  }
}

TEST_F(Llama2cCorruptTest, BadLengthsAndCounts) {
  const std::size_t first_len = 4 + 4;  // max_token_length, then token 0's score
  std::int32_t max_len;
  std::memcpy(&max_len, good_.data(), 4);
  expect_format_error(with_int32(good_, 0, 4));              // "<unk>" is longer than that
  expect_format_error(with_int32(good_, 0, 0));              // max_token_length 0
  expect_format_error(with_int32(good_, 0, -5));             // negative max_token_length
  expect_format_error(with_int32(good_, first_len, -1));     // negative token length
  expect_format_error(with_int32(good_, first_len, max_len + 1));  // longer than the maximum
  expect_format_error(with_int32(good_, first_len, 1 << 30));      // past the end of the file
  expect_format_error(good_ + "x");                          // trailing bytes
  expect_format_error(good_, kVocab + 1);                    // vocab_size larger than the file
  expect_format_error(good_, kVocab - 1);                    // smaller: bytes left over
  std::string not_bytes = good_;                             // token 3 must be <0x00>
  const std::size_t pos = not_bytes.find("<0x00>");
  ASSERT_NE(pos, std::string::npos);
  not_bytes[pos + 4] = '7';
  expect_format_error(not_bytes);
  std::string nan_score = good_;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::memcpy(nan_score.data() + 4, &nan, 4);
  expect_format_error(nan_score);
}

TEST_F(Llama2cCorruptTest, RandomCorruptionNeverCrashes) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 300; ++trial) {
    std::string bytes = good_;
    for (int k = 0; k < 4; ++k) bytes[rng() % bytes.size()] = static_cast<char>(rng());
    const std::string path = dir_ + "/fuzz.bin";
    test::write_file(path, bytes);
    try {
      auto tok = load_llama2c_tokenizer(path, kVocab);
      (void)tok->decode(tok->encode("Once upon a time \xE6\x97\xA5", true));
    } catch (const FormatError&) {
    }
  }
}

// ---------------------------------------------------------------------------------------------
// SentencePiece (gutenberg-23m)

std::string gutenberg_dir() { return test::shared_dir() + "/models/gutenberg-23m"; }

class SentencePieceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string path = gutenberg_dir() + "/tokenizer.model";
    if (!fs::exists(path)) return;
    tok_ = load_sentencepiece_tokenizer(path).release();
    sp_ = new sentencepiece::SentencePieceProcessor();
    if (!sp_->Load(path).ok()) throw std::runtime_error("libsentencepiece cannot load " + path);
  }
  static void TearDownTestSuite() {
    delete tok_;
    delete sp_;
    tok_ = nullptr;
    sp_ = nullptr;
  }
  void SetUp() override {
    if (tok_ == nullptr) GTEST_SKIP() << "no " << gutenberg_dir() << "/tokenizer.model (set MILLION_SHARED_DIR)";
  }
  // The reference decoder: libsentencepiece's own Decode.
  static std::string sp_decode(const std::vector<int>& ids) { return sp_->DecodeIds(ids); }

  static Tokenizer* tok_;
  static sentencepiece::SentencePieceProcessor* sp_;
};
Tokenizer* SentencePieceTest::tok_ = nullptr;
sentencepiece::SentencePieceProcessor* SentencePieceTest::sp_ = nullptr;

nlohmann::json load_golden() {
  return nlohmann::json::parse(read_file(gutenberg_dir() + "/golden.json"));
}

// First 5000 bytes of the first held-out book, cut at a UTF-8 character boundary.
std::string heldout_text() {
  const fs::path dir = fs::path(test::shared_dir()) / "text" / "heldout-books";
  std::vector<fs::path> books;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().extension() == ".txt") books.push_back(entry.path());
  }
  if (books.empty()) return {};
  std::sort(books.begin(), books.end());
  std::string text = read_file(books.front().string()).substr(0, 5000);
  while (!text.empty() && !is_complete_utf8(text)) text.pop_back();
  return text;
}

TEST_F(SentencePieceTest, Properties) {
  EXPECT_EQ(tok_->vocab_size(), 8192);  // gutenberg-23m README
  EXPECT_EQ(tok_->bos_id(), 1);
  EXPECT_EQ(tok_->eos_id(), 2);
  EXPECT_EQ(tok_->piece(13), "<0x0A>");
  const std::vector<int> ids = tok_->encode("a\nb", false);
  EXPECT_NE(std::find(ids.begin(), ids.end(), 13), ids.end());
  EXPECT_EQ(tok_->encode("", true), std::vector<int>{1});
  EXPECT_THROW(tok_->piece(8192), InvalidArgumentError);
  EXPECT_THROW(tok_->decode({1, 8192}), InvalidArgumentError);
  EXPECT_THROW(tok_->decode({-3}), InvalidArgumentError);
}

TEST_F(SentencePieceTest, MatchesGoldenEncodeAndDecode) {
  const nlohmann::json golden = load_golden();
  ASSERT_FALSE(golden.at("prompts").empty());
  for (const auto& prompt : golden.at("prompts")) {
    SCOPED_TRACE(prompt.value("name", std::string("?")));
    const auto input_ids = prompt.at("input_ids").get<std::vector<int>>();
    const auto greedy_ids = prompt.at("greedy_ids").get<std::vector<int>>();
    EXPECT_EQ(tok_->encode(prompt.at("input_text").get<std::string>(), true), input_ids);
    EXPECT_EQ(tok_->decode(greedy_ids), prompt.at("greedy_text").get<std::string>());
    EXPECT_EQ(tok_->decode(input_ids), prompt.at("input_text").get<std::string>());
    EXPECT_EQ(tok_->decode(input_ids), sp_decode(input_ids));
    EXPECT_EQ(tok_->decode(greedy_ids), sp_decode(greedy_ids));
  }
}

TEST_F(SentencePieceTest, RoundTripsHeldOutText) {
  const std::string text = heldout_text();
  if (text.empty()) GTEST_SKIP() << "no held-out books under " << test::shared_dir() << "/text/heldout-books";
  ASSERT_GT(text.size(), 4000u);
  const std::vector<int> ids = tok_->encode(text, true);
  EXPECT_EQ(tok_->decode(ids), text);
  EXPECT_EQ(tok_->decode(ids), sp_decode(ids));
}

TEST_F(SentencePieceTest, MatchesLibraryDecodeOnVariedText) {
  for (const std::string& text : kSampleTexts) {
    const std::vector<int> ids = tok_->encode(text, true);
    EXPECT_EQ(tok_->decode(ids), text);
    EXPECT_EQ(tok_->decode(ids), sp_decode(ids)) << text;
  }
  // Random sequences of ordinary pieces, no byte pieces (whose incomplete runs the library
  // turns into U+FFFD on purpose). Includes the unknown piece and BOS/EOS.
  std::vector<int> ordinary;
  for (int id = 0; id < tok_->vocab_size(); ++id) {
    if (!sp_->IsByte(id)) ordinary.push_back(id);
  }
  // Edge cases of the leading-space rule: a lone '▁' first, unknown and control pieces first.
  const int space = sp_->PieceToId("\xE2\x96\x81");
  const int the = sp_->PieceToId("\xE2\x96\x81the");
  ASSERT_FALSE(sp_->IsUnknown(space));
  ASSERT_FALSE(sp_->IsUnknown(the));
  const int byte_a = sp_->PieceToId("<0x41>");
  const int byte_space = sp_->PieceToId("<0x20>");
  ASSERT_TRUE(sp_->IsByte(byte_a) && sp_->IsByte(byte_space));
  const int unk = sp_->unk_id(), bos = tok_->bos_id(), eos = tok_->eos_id();
  for (const std::vector<int>& ids : std::vector<std::vector<int>>{
           {the}, {bos, the}, {space, the}, {bos, space, the}, {space, space, the}, {unk, the},
           {eos, the}, {bos, bos, the}, {the, bos, the}, {space}, {bos, space}, {byte_a, the},
           {bos, byte_a, the}, {byte_space, the}, {bos, byte_space, space, the}}) {
    EXPECT_EQ(tok_->decode(ids), sp_decode(ids)) << ::testing::PrintToString(ids);
  }

  std::mt19937 rng(99);
  for (int trial = 0; trial < 500; ++trial) {
    std::vector<int> ids;
    const int n = 1 + static_cast<int>(rng() % 12);
    for (int k = 0; k < n; ++k) ids.push_back(ordinary[rng() % ordinary.size()]);
    ASSERT_EQ(tok_->decode(ids), sp_decode(ids)) << "trial " << trial;
  }
}

TEST_F(SentencePieceTest, ByteTokensDecodeToRawBytes) {
  const std::string text = "na\xC3\xAFve \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x98\x80!";  // naïve 日本 😀!
  const std::vector<int> ids = tok_->encode(text, true);
  bool any_byte_piece = false;
  for (int id : ids) any_byte_piece |= tok_->piece(id).starts_with("<0x");
  ASSERT_TRUE(any_byte_piece) << "test text should need byte fallback";
  // Every prefix of the ids decodes to a byte prefix of the text: no U+FFFD for a cut character.
  for (std::size_t n = 0; n <= ids.size(); ++n) {
    const std::string part = tok_->decode(std::vector<int>(ids.begin(), ids.begin() + static_cast<std::ptrdiff_t>(n)));
    EXPECT_EQ(text.substr(0, part.size()), part) << "prefix of " << n << " ids";
  }
}

TEST(SentencePieceFile, MissingFileIsIoError) {
  EXPECT_THROW(load_sentencepiece_tokenizer(test::temp_dir() + "/nope.model"), IoError);
}

TEST(SentencePieceFile, GarbageFileIsFormatError) {
  const std::string dir = test::temp_dir();
  test::write_file(dir + "/garbage.model", std::string("this is not a protobuf \xFF\xFE\x01\x02 at all", 33));
  EXPECT_THROW(load_sentencepiece_tokenizer(dir + "/garbage.model"), FormatError);
  test::write_file(dir + "/empty.model", "");
  EXPECT_THROW(load_sentencepiece_tokenizer(dir + "/empty.model"), FormatError);
  // A llama2.c tokenizer is not a SentencePiece model either.
  EXPECT_THROW(load_sentencepiece_tokenizer(tok512_path()), FormatError);
}

// ---------------------------------------------------------------------------------------------
// TextStreamer

TEST_F(Llama2cTest, StreamerReturnsCompleteCharactersOnly) {
  const std::string prompt = "Once upon a time";
  const std::string generated = " there was \xE6\x97\xA5\xE6\x9C\xAC, caf\xC3\xA9 and \xF0\x9F\x98\x80.\nThe end";
  const std::vector<int> all = tok_->encode(prompt + generated, true);
  const std::vector<int> prompt_ids = tok_->encode(prompt, true);
  ASSERT_TRUE(std::equal(prompt_ids.begin(), prompt_ids.end(), all.begin())) << "prompt ids should be a prefix";
  const std::vector<int> prefix(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(prompt_ids.size()));
  const std::vector<int> rest(all.begin() + static_cast<std::ptrdiff_t>(prompt_ids.size()), all.end());

  int empty_pushes = 0;
  const std::string streamed = stream_all(*tok_, prefix, rest, &empty_pushes);
  EXPECT_EQ(streamed, tok_->decode(all).substr(tok_->decode(prefix).size()));
  EXPECT_EQ(streamed, generated);
  EXPECT_GT(empty_pushes, 0) << "multi-byte characters made of byte tokens should be held back";
}

TEST_F(Llama2cTest, StreamerFlushReturnsHeldBackTail) {
  const std::string ri = "\xE6\x97\xA5";  // 日 as byte tokens
  TextStreamer streamer(*tok_, {1});
  EXPECT_EQ(streamer.push(3 + static_cast<unsigned char>(ri[0])), "");
  EXPECT_EQ(streamer.push(3 + static_cast<unsigned char>(ri[1])), "");
  EXPECT_EQ(streamer.flush(), ri.substr(0, 2));
  EXPECT_EQ(streamer.flush(), "");

  TextStreamer complete(*tok_, {1});
  std::string out;
  for (char c : ri) out += complete.push(3 + static_cast<unsigned char>(c));
  EXPECT_EQ(out, ri);
  EXPECT_EQ(complete.flush(), "");
}

TEST_F(Llama2cTest, StreamerFromBosDropsTheDummySpace) {
  const std::vector<int> ids = tok_->encode("Once upon a time", false);
  EXPECT_EQ(stream_all(*tok_, {1}, ids), "Once upon a time");
  EXPECT_EQ(stream_all(*tok_, {}, ids), " Once upon a time");
}

TEST_F(SentencePieceTest, StreamerMatchesDecode) {
  const nlohmann::json golden = load_golden();
  for (const auto& prompt : golden.at("prompts")) {
    const auto input_ids = prompt.at("input_ids").get<std::vector<int>>();
    const auto greedy_ids = prompt.at("greedy_ids").get<std::vector<int>>();
    std::vector<int> all = input_ids;
    all.insert(all.end(), greedy_ids.begin(), greedy_ids.end());
    EXPECT_EQ(stream_all(*tok_, input_ids, greedy_ids), tok_->decode(all).substr(tok_->decode(input_ids).size()));
  }
  const std::string text = "Caf\xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC\n\xF0\x9F\x98\x80 end";
  const std::vector<int> ids = tok_->encode(text, false);
  int empty_pushes = 0;
  EXPECT_EQ(stream_all(*tok_, {tok_->bos_id()}, ids, &empty_pushes), text);
  EXPECT_GT(empty_pushes, 0);
}

}  // namespace
}  // namespace million
