// Byte-level BPE tokenizer tests: token ids equal Hugging Face tokenizers' on a 231 KB corpus
// (tests/data/bpe, made by scripts/fixtures/make_bpe_reference.py) for GPT-2 (encoder.json +
// vocab.bpe), Llama 3 (tokenizer.json) and SmolLM2 (GGUF-style plain data, and its real
// tokenizer.json when models/smollm2-135m/ has it); decode round trips; special tokens; encode
// speed; a toy vocabulary with hand-checked merges; malformed files. GPT-2 and Llama 3 files come
// from ../shared/tokenizers (skipped with the reason when absent).
// Tolerance: none. Every id must match.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/test_paths.h"
#include "common/test_util.h"
#include "million/error.h"
#include "model/tokenizer.h"
#include "model/tokenizer_bpe.h"

namespace million {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

std::vector<std::string> read_lines(const std::string& path) {
  std::vector<std::string> lines;
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in) << path;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

std::vector<std::string> corpus() {
  static const std::vector<std::string> cases =
      json::parse(test::slurp(test::data_path("bpe/corpus.json"))).get<std::vector<std::string>>();
  return cases;
}

// <name>.ids: int32 little-endian n_cases, then per case n_ids and the ids.
std::vector<std::vector<int>> reference_ids(const std::string& name) {
  const std::string bytes = test::slurp(test::data_path("bpe/" + name + ".ids"));
  std::size_t pos = 0;
  auto next = [&] {
    std::int32_t v = 0;
    if (pos + 4 > bytes.size()) throw std::runtime_error(name + ".ids is truncated");
    std::memcpy(&v, bytes.data() + pos, 4);
    pos += 4;
    return static_cast<int>(v);
  };
  std::vector<std::vector<int>> out(static_cast<std::size_t>(next()));
  for (auto& ids : out) {
    ids.resize(static_cast<std::size_t>(next()));
    for (int& id : ids) id = next();
  }
  return out;
}

std::string gpt2_dir() { return test::shared_dir() + "/tokenizers/gpt2"; }
std::string llama3_json() { return test::shared_dir() + "/tokenizers/llama3/tokenizer.json"; }

// SmolLM2-135M's vocabulary as GGUF stores it, built the way a GGUF loader does.
std::unique_ptr<Tokenizer> load_smollm2() {
  BpeTokenizerData data;
  data.tokens = read_lines(test::data_path("bpe/smollm2-tokens.txt"));
  data.merges = read_lines(test::data_path("bpe/smollm2-merges.txt"));
  std::vector<int> types(data.tokens.size(), 1);
  for (const std::string& line : read_lines(test::data_path("bpe/smollm2-types.txt"))) {
    const auto space = line.find(' ');
    types.at(std::stoul(line.substr(0, space))) = std::stoi(line.substr(space + 1));
  }
  data.added = bpe_added_tokens_from_types(data.tokens, types);
  data.pre = "smollm";
  data.bos_id = 1;
  data.eos_id = 2;
  data.source = "SmolLM2 test data";
  return make_bpe_tokenizer(std::move(data));
}

// The tokenizer under test, or "" and the reason it is not available.
std::unique_ptr<Tokenizer> load_named(const std::string& name, std::string& skip_reason) {
  if (name == "gpt2") {
    if (!fs::exists(gpt2_dir() + "/encoder.json")) {
      skip_reason = "GPT-2 tokenizer not found in " + gpt2_dir() + " (set MILLION_SHARED_DIR)";
      return nullptr;
    }
    return load_gpt2_tokenizer(gpt2_dir() + "/encoder.json", gpt2_dir() + "/vocab.bpe");
  }
  if (name == "llama3") {
    if (!fs::exists(llama3_json())) {
      skip_reason = "Llama 3 tokenizer not found: " + llama3_json() + " (set MILLION_SHARED_DIR)";
      return nullptr;
    }
    return load_hf_tokenizer_json(llama3_json());
  }
  if (name == "smollm2_json") {  // the real tokenizer.json, where someone has downloaded the model
    const std::string path = test::source_dir() + "/models/smollm2-135m/tokenizer.json";
    if (!fs::exists(path)) {
      skip_reason = "SmolLM2 tokenizer.json not found: " + path + " (optional: the smollm2 case covers it)";
      return nullptr;
    }
    return load_hf_tokenizer_json(path);
  }
  return load_smollm2();
}

// The reference ids of a tokenizer under test (smollm2_json shares SmolLM2's).
std::string reference_name(const std::string& name) { return name == "smollm2_json" ? "smollm2" : name; }

std::string show_ids(const Tokenizer& tok, const std::vector<int>& ids, std::size_t from, std::size_t n) {
  std::string out;
  for (std::size_t i = from; i < ids.size() && i < from + n; ++i) {
    out += std::to_string(ids[i]) + "'" + tok.piece(ids[i]) + "' ";
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Real tokenizers against the Hugging Face reference ids

class BpeReferenceTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    std::string reason;
    tok_ = load_named(GetParam(), reason);
    if (!tok_) GTEST_SKIP() << reason;
  }
  std::unique_ptr<Tokenizer> tok_;
};

TEST_P(BpeReferenceTest, IdsMatchHuggingFaceOnCorpus) {
  const auto cases = corpus();
  const auto expected = reference_ids(reference_name(GetParam()));
  ASSERT_EQ(cases.size(), expected.size());
  std::size_t bytes = 0, tokens = 0, mismatched_cases = 0;
  for (std::size_t c = 0; c < cases.size(); ++c) {
    const std::vector<int> ids = tok_->encode(cases[c], false);
    bytes += cases[c].size();
    tokens += expected[c].size();
    if (ids == expected[c]) continue;
    ++mismatched_cases;
    std::size_t first = 0;
    while (first < ids.size() && first < expected[c].size() && ids[first] == expected[c][first]) ++first;
    const std::size_t from = first > 3 ? first - 3 : 0;
    ADD_FAILURE() << GetParam() << " case " << c << " (" << cases[c].size() << " bytes: \""
                  << cases[c].substr(0, 60) << "\"): first difference at id " << first << "\n  got      "
                  << show_ids(*tok_, ids, from, 8) << "\n  expected " << show_ids(*tok_, expected[c], from, 8);
  }
  EXPECT_EQ(mismatched_cases, 0u);
  std::cout << "[ info ] " << GetParam() << ": " << cases.size() << " cases, " << bytes << " bytes, " << tokens
            << " reference ids compared\n";
}

// `text` without the bytes the vocabulary has no token for (encoding drops them).
std::string representable(const Tokenizer& tok, const std::string& text) {
  std::string out;
  for (const char c : text) {
    if (!tok.encode(std::string(1, c), false).empty()) out.push_back(c);
  }
  return out;
}

TEST_P(BpeReferenceTest, DecodeReversesEncode) {
  for (const std::string& text : corpus()) {
    const std::vector<int> ids = tok_->encode(text, false);
    std::string expected = representable(*tok_, text);
    // decode() skips a leading BOS, also one the text itself spelled out.
    if (!ids.empty() && ids.front() == tok_->bos_id()) expected.erase(0, tok_->piece(tok_->bos_id()).size());
    EXPECT_EQ(tok_->decode(ids), expected);
    if (tok_->bos_id() >= 0) {
      const auto with_bos = tok_->encode(text, true);
      ASSERT_FALSE(with_bos.empty());
      EXPECT_EQ(with_bos.front(), tok_->bos_id());
      EXPECT_EQ(tok_->decode(with_bos), representable(*tok_, text)) << "a leading BOS decodes to nothing";
    }
  }
}

// The whole corpus as one text (long inputs, every case boundary inside one call). Its time is
// printed for information only: speed is a benchmark's business, not a test's.
TEST_P(BpeReferenceTest, EncodesWholeCorpusAtOnce) {
  std::string all;
  for (const std::string& text : corpus()) all += text;
  const auto start = std::chrono::steady_clock::now();
  const std::vector<int> ids = tok_->encode(all, false);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::cout << "[ info ] " << GetParam() << ": encoded " << all.size() << " bytes into " << ids.size()
            << " tokens in " << seconds * 1e3 << " ms (" << all.size() / seconds / 1e6 << " MB/s)\n";
  EXPECT_TRUE(tok_->decode(ids) == representable(*tok_, all)) << "decode(encode(corpus)) differs";
}

TEST_P(BpeReferenceTest, EmptyTextAndOutOfRangeIds) {
  EXPECT_TRUE(tok_->encode("", false).empty());
  if (tok_->bos_id() >= 0) {
    EXPECT_EQ(tok_->encode("", true), std::vector<int>{tok_->bos_id()});
  }
  test::throws<InvalidArgumentError>([&] { tok_->decode({tok_->vocab_size()}); });
  test::throws<InvalidArgumentError>([&] { tok_->decode({-1}); });
  test::throws<InvalidArgumentError>([&] { tok_->piece(tok_->vocab_size()); });
}

TEST_P(BpeReferenceTest, InvalidUtf8IsEncodedByteByByte) {
  const std::string text = std::string("ab\xff\xfe cd \xe4\xb8") + "\x80\xc3(x";
  const auto ids = tok_->encode(text, false);
  EXPECT_EQ(tok_->decode(ids), representable(*tok_, text));
}

INSTANTIATE_TEST_SUITE_P(Tokenizers, BpeReferenceTest, ::testing::Values("gpt2", "llama3", "smollm2", "smollm2_json"),
                         [](const auto& p) { return p.param; });

// ---------------------------------------------------------------------------------------------
// Special tokens and vocabulary facts of the real tokenizers

TEST(BpeTokenizerTest, Gpt2SpecialTokenAndVocabulary) {
  std::string reason;
  auto tok = load_named("gpt2", reason);
  if (!tok) GTEST_SKIP() << reason;
  EXPECT_EQ(tok->vocab_size(), 50257);
  EXPECT_EQ(tok->bos_id(), 50256);
  EXPECT_EQ(tok->eos_id(), 50256);
  EXPECT_EQ(tok->piece(50256), "<|endoftext|>");
  EXPECT_EQ(tok->piece(262), "\xC4\xA0the");  // "Ġthe"
  EXPECT_EQ(tok->encode("<|endoftext|>", false), std::vector<int>{50256});
  EXPECT_EQ(tok->encode("Hello world", false), (std::vector<int>{15496, 995}));
  EXPECT_EQ(tok->encode("a<|endoftext|>b", false), (std::vector<int>{64, 50256, 65}));
  // A partial special token is plain text.
  const auto partial = tok->encode("<|endoftext", false);
  EXPECT_EQ(std::count(partial.begin(), partial.end(), 50256), 0);
  EXPECT_EQ(tok->decode({15496, 50256, 995}), "Hello<|endoftext|> world");
}

TEST(BpeTokenizerTest, Llama3SpecialTokensAndBosFromTokenizerConfig) {
  std::string reason;
  auto tok = load_named("llama3", reason);
  if (!tok) GTEST_SKIP() << reason;
  EXPECT_EQ(tok->vocab_size(), 128256);
  EXPECT_EQ(tok->bos_id(), 128000);  // <|begin_of_text|> from tokenizer_config.json
  EXPECT_EQ(tok->eos_id(), 128001);  // <|end_of_text|>
  const auto ids = tok->encode("<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>", true);
  ASSERT_GE(ids.size(), 6u);
  EXPECT_EQ(ids[0], 128000);
  EXPECT_EQ(ids[1], 128006);
  EXPECT_EQ(ids.back(), 128009);
  EXPECT_EQ(tok->piece(128009), "<|eot_id|>");
}

TEST(BpeTokenizerTest, SmolLM2ChatTokensAndDigits) {
  auto tok = load_smollm2();
  EXPECT_EQ(tok->vocab_size(), 49152);
  const auto ids = tok->encode("<|im_start|>user\n2024<|im_end|>", false);
  ASSERT_EQ(ids.size(), 8u);  // im_start, "user", "\n", 2, 0, 2, 4, im_end: digits one by one
  EXPECT_EQ(ids.front(), 1);
  EXPECT_EQ(ids.back(), 2);
  for (std::size_t i = 3; i < 7; ++i) EXPECT_EQ(tok->decode({ids[i]}).size(), 1u);
}

TEST(BpeTokenizerTest, DecodeCanEndInsideACharacter) {
  auto tok = load_smollm2();
  const std::string text = "\xF0\xA0\xAE\xB7";  // U+20BB7, a rare CJK character: byte tokens
  const auto ids = tok->encode(text, false);
  ASSERT_GT(ids.size(), 1u);
  const std::string head = tok->decode(std::vector<int>(ids.begin(), ids.end() - 1));
  EXPECT_LT(head.size(), text.size());
  EXPECT_EQ(head, text.substr(0, head.size()));
  TextStreamer streamer(*tok, {});
  std::string streamed;
  for (std::size_t i = 0; i + 1 < ids.size(); ++i) streamed += streamer.push(ids[i]);
  EXPECT_EQ(streamed, "") << "incomplete UTF-8 is held back";
  streamed += streamer.push(ids.back());
  EXPECT_EQ(streamed, text);
}

// ---------------------------------------------------------------------------------------------
// A toy vocabulary: merges checked by hand

// GPT-2's bytes_to_unicode, written out independently of the library.
std::string byte_level(const std::string& bytes) {
  std::string out;
  for (unsigned char b : bytes) {
    unsigned cp = b;
    if (!((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE)) {
      unsigned n = 0;
      for (unsigned x = 0; x < b; ++x) {
        if (!((x >= 0x21 && x <= 0x7E) || (x >= 0xA1 && x <= 0xAC) || x >= 0xAE)) ++n;
      }
      cp = 0x100 + n;
    }
    if (cp < 0x80) {
      out.push_back(static_cast<char>(cp));
    } else {
      out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
  }
  return out;
}

// 256 byte tokens (id = byte), then the merge results in merge order.
BpeTokenizerData toy_data() {
  BpeTokenizerData d;
  for (int b = 0; b < 256; ++b) d.tokens.push_back(byte_level(std::string(1, static_cast<char>(b))));
  const std::vector<std::pair<std::string, std::string>> merges = {
      {"a", "a"}, {"aa", "a"}, {" ", "b"}, {"aa", "aa"}, {"c", "d"}, {" b", "cd"}};
  for (const auto& [l, r] : merges) {
    d.merges.push_back(byte_level(l) + " " + byte_level(r));
    d.tokens.push_back(byte_level(l + r));  // ids 256.. in merge order
  }
  d.added = {{262, "<sep>", true, false, false}};
  d.tokens.push_back("<sep>");
  d.bos_id = 262;
  d.source = "toy";
  return d;
}

TEST(BpeToyTest, MergesByRankLeftToRight) {
  auto tok = make_bpe_tokenizer(toy_data());
  EXPECT_EQ(tok->vocab_size(), 263);
  // "aaaa": (a,a) rank 0 merges at 0 then 2 -> [aa, aa]; then (aa,aa) rank 3 -> aaaa (259).
  EXPECT_EQ(tok->encode("aaaa", false), std::vector<int>{259});
  // "aaa": (a,a) at 0 -> [aa, a]; then (aa,a) -> aaa (257).
  EXPECT_EQ(tok->encode("aaa", false), std::vector<int>{257});
  // " bcd" stays one gpt2 pre-token: " b" (258) + "cd" (260) -> " bcd" (261).
  EXPECT_EQ(tok->encode(" bcd", false), std::vector<int>{261});
  EXPECT_EQ(tok->encode("x<sep>aa", true), (std::vector<int>{262, 'x', 262, 256}));
  EXPECT_EQ(tok->decode({262, 'x', 262, 256}), "x<sep>aa");
}

TEST(BpeToyTest, AddedTokensLeftmostLongestAndStrip) {
  BpeTokenizerData d = toy_data();
  d.tokens.push_back("<sep>!");
  d.added.push_back({263, "<sep>!", true, true, true});
  auto tok = make_bpe_tokenizer(std::move(d));
  // The longer token wins where both start; lstrip/rstrip take the spaces around it.
  EXPECT_EQ(tok->encode("c  <sep>!  d", false), (std::vector<int>{'c', 263, 'd'}));
  EXPECT_EQ(tok->encode("c <sep> d", false), (std::vector<int>{'c', ' ', 262, ' ', 'd'}));
}

TEST(BpeToyTest, IgnoreMergesTakesWholeVocabularyWords) {
  BpeTokenizerData d = toy_data();
  // "ab" is in the vocabulary but no merge makes it.
  d.tokens.push_back(byte_level("ab"));
  const int ab = static_cast<int>(d.tokens.size()) - 1;
  auto plain = make_bpe_tokenizer(d);
  EXPECT_EQ(plain->encode("ab", false), (std::vector<int>{'a', 'b'}));
  d.ignore_merges = true;
  EXPECT_EQ(make_bpe_tokenizer(d)->encode("ab", false), std::vector<int>{ab});
}

TEST(BpeToyTest, PreTokenizerNames) {
  for (const char* name : {"gpt2", "gpt-2", "llama3", "llama-bpe", "qwen2", "smollm"}) {
    BpeTokenizerData d = toy_data();
    d.pre = name;
    auto tok = make_bpe_tokenizer(std::move(d));
    const std::string text = "It's 12345 apples,  and\n\n  more!";
    EXPECT_EQ(tok->decode(tok->encode(text, false)), text) << name;
  }
  BpeTokenizerData d = toy_data();
  d.pre = "no-such-pre";
  EXPECT_HAS(test::throws<UnsupportedError>([&] { make_bpe_tokenizer(d); }), "no-such-pre");
}

TEST(BpeToyTest, BadDataThrowsFormatError) {
  {
    BpeTokenizerData d = toy_data();
    d.merges.push_back(byte_level("x") + " " + byte_level("zz"));  // "zz" is no token
    EXPECT_HAS(test::throws<FormatError>([&] { make_bpe_tokenizer(d); }), "not in the vocabulary");
  }
  {
    BpeTokenizerData d = toy_data();
    d.merges.push_back("xy");  // no space
    EXPECT_HAS(test::throws<FormatError>([&] { make_bpe_tokenizer(d); }), "separated by one space");
  }
  {
    BpeTokenizerData d = toy_data();
    d.merges.push_back("x y");  // "xy" is not a token
    EXPECT_HAS(test::throws<FormatError>([&] { make_bpe_tokenizer(d); }), "'xy'");
  }
  {
    BpeTokenizerData d = toy_data();
    d.eos_id = 100000;
    EXPECT_HAS(test::throws<FormatError>([&] { make_bpe_tokenizer(d); }), "EOS id 100000");
  }
  {
    BpeTokenizerData d = toy_data();
    d.pre_steps = {{"(unclosed"}};
    EXPECT_HAS(test::throws<FormatError>([&] { make_bpe_tokenizer(d); }), "PCRE2");
  }
  {
    BpeTokenizerData d = toy_data();
    d.tokens.clear();
    test::throws<FormatError>([&] { make_bpe_tokenizer(d); });
  }
  test::throws<FormatError>([] { bpe_added_tokens_from_types({"a", "b"}, {1}); });
}

TEST(BpeToyTest, ByteWithoutTokenIsDroppedOrUnknown) {
  BpeTokenizerData d;
  d.tokens = {"a", "b", "ab"};
  d.merges = {"a b"};
  auto tok = make_bpe_tokenizer(d);
  EXPECT_EQ(tok->encode("ab", false), std::vector<int>{2});
  EXPECT_EQ(tok->encode("abc", false), std::vector<int>{2}) << "dropped, as Hugging Face does";
  EXPECT_EQ(tok->encode("acb", false), std::vector<int>{2}) << "its neighbours then merge";
  d.tokens.push_back("<unk>");
  d.unk_id = 3;
  EXPECT_EQ(make_bpe_tokenizer(d)->encode("abc", false), (std::vector<int>{2, 3}));
}

// ---------------------------------------------------------------------------------------------
// tokenizer.json files

// A small valid tokenizer.json (the toy vocabulary) as a JSON object to break in tests.
json toy_json() {
  const BpeTokenizerData d = toy_data();
  json vocab = json::object();
  for (std::size_t i = 0; i < d.tokens.size(); ++i) vocab[d.tokens[i]] = i;
  return json{
      {"version", "1.0"},
      {"added_tokens", json::array({{{"id", 262}, {"content", "<sep>"}, {"special", true}}})},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers", json::array({{{"type", "Digits"}, {"individual_digits", true}},
                                       {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}})}}},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", d.merges}, {"ignore_merges", false}}},
  };
}

std::string write_json(const std::string& dir, const json& j) {
  const std::string path = dir + "/tokenizer.json";
  test::write_file(path, j.dump());
  return path;
}

TEST(BpeJsonTest, LoadsToyTokenizerJsonWithConfigTokens) {
  const std::string dir = test::temp_dir();
  const std::string path = write_json(dir, toy_json());
  test::write_file(dir + "/tokenizer_config.json", R"({"bos_token": "<sep>", "eos_token": {"content": "aa"}})");
  auto tok = load_hf_tokenizer_json(path);
  EXPECT_EQ(tok->bos_id(), 262);
  EXPECT_EQ(tok->eos_id(), 256);
  EXPECT_EQ(tok->encode("aaaa<sep> bcd", true), (std::vector<int>{262, 259, 262, 261}));
  // Merges as ["a", "b"] pairs (tokenizers >= 0.20) load the same way.
  json pairs = toy_json();
  json list = json::array();
  for (const std::string& m : toy_data().merges) list.push_back({m.substr(0, m.find(' ')), m.substr(m.find(' ') + 1)});
  pairs["model"]["merges"] = list;
  EXPECT_EQ(load_hf_tokenizer_json(write_json(test::temp_dir(), pairs))->encode("aaaa", false), std::vector<int>{259});
}

TEST(BpeJsonTest, ModelDirectorySelection) {
  const std::string dir = test::temp_dir();
  write_json(dir, toy_json());
  test::write_file(dir + "/config.json", R"({"bos_token_id": 262, "eos_token_id": [256, 257]})");
  EXPECT_EQ(find_tokenizer_file(dir), dir + "/tokenizer.json");
  auto tok = load_tokenizer_file(find_tokenizer_file(dir), 263);
  EXPECT_EQ(tok->bos_id(), 262);
  EXPECT_EQ(tok->eos_id(), 256);
  test::write_file(dir + "/tokenizer.model", "x");
  EXPECT_EQ(find_tokenizer_file(dir), dir + "/tokenizer.model") << "SentencePiece first where both exist";
}

TEST(BpeJsonTest, MalformedFilesThrowTypedErrors) {
  struct Case {
    const char* what;
    std::function<void(json&)> edit;
    ErrorKind kind;
    const char* message;
  };
  const std::vector<Case> cases = {
      {"no model", [](json& j) { j.erase("model"); }, ErrorKind::kFormat, "no 'model'"},
      {"model not an object", [](json& j) { j["model"] = 3; }, ErrorKind::kFormat, "no 'model'"},
      {"Unigram", [](json& j) { j["model"]["type"] = "Unigram"; }, ErrorKind::kUnsupported, "Unigram"},
      {"no vocab", [](json& j) { j["model"].erase("vocab"); }, ErrorKind::kFormat, "no 'vocab'"},
      {"vocab array", [](json& j) { j["model"]["vocab"] = json::array(); }, ErrorKind::kFormat, "JSON object"},
      {"negative id", [](json& j) { j["model"]["vocab"]["zz"] = -5; }, ErrorKind::kFormat, "-5"},
      {"shared id", [](json& j) { j["model"]["vocab"]["zz"] = 3; }, ErrorKind::kFormat, "share id 3"},
      {"no merges", [](json& j) { j["model"].erase("merges"); }, ErrorKind::kFormat, "no 'merges'"},
      {"merge of unknown token", [](json& j) { j["model"]["merges"].push_back("q \xC4\xA0zz"); }, ErrorKind::kFormat,
       "not in the vocabulary"},
      {"merge not a string", [](json& j) { j["model"]["merges"].push_back(7); }, ErrorKind::kFormat, "neither"},
      {"byte fallback", [](json& j) { j["model"]["byte_fallback"] = true; }, ErrorKind::kUnsupported, "byte_fallback"},
      {"dropout", [](json& j) { j["model"]["dropout"] = 0.1; }, ErrorKind::kUnsupported, "dropout"},
      {"Metaspace", [](json& j) { j["pre_tokenizer"] = {{"type", "Metaspace"}}; }, ErrorKind::kUnsupported,
       "Metaspace"},
      {"no pre-tokenizer", [](json& j) { j["pre_tokenizer"] = nullptr; }, ErrorKind::kUnsupported, "no ByteLevel"},
      {"bad regex",
       [](json& j) {
         j["pre_tokenizer"]["pretokenizers"][0] = {
             {"type", "Split"}, {"pattern", {{"Regex", "[a-"}}}, {"behavior", "Isolated"}, {"invert", false}};
       },
       ErrorKind::kFormat, "PCRE2"},
      {"Split Removed",
       [](json& j) {
         j["pre_tokenizer"]["pretokenizers"][0] = {
             {"type", "Split"}, {"pattern", {{"String", " "}}}, {"behavior", "Removed"}, {"invert", false}};
       },
       ErrorKind::kUnsupported, "Removed"},
      {"Lowercase", [](json& j) { j["normalizer"] = {{"type", "Lowercase"}}; }, ErrorKind::kUnsupported,
       "Lowercase"},
      {"Metaspace decoder", [](json& j) { j["decoder"] = {{"type", "Metaspace"}}; }, ErrorKind::kUnsupported,
       "decoder"},
      {"added token without id", [](json& j) { j["added_tokens"].push_back({{"content", "x"}}); },
       ErrorKind::kFormat, "no id"},
      {"added token bad id", [](json& j) { j["added_tokens"][0]["id"] = "x"; }, ErrorKind::kFormat, "not an integer"},
      {"added token empty", [](json& j) { j["added_tokens"][0]["content"] = ""; }, ErrorKind::kFormat,
       "no content"},
      {"special flag not bool", [](json& j) { j["added_tokens"][0]["special"] = "yes"; }, ErrorKind::kFormat,
       "true or false"},
  };
  for (const Case& c : cases) {
    json j = toy_json();
    c.edit(j);
    const std::string path = write_json(test::temp_dir(), j);
    try {
      load_hf_tokenizer_json(path);
      ADD_FAILURE() << c.what << ": no error";
    } catch (const Error& e) {
      EXPECT_EQ(static_cast<int>(e.kind()), static_cast<int>(c.kind)) << c.what << ": " << e.what();
      EXPECT_HAS(e.what(), c.message) << c.what;
    }
  }
}

TEST(BpeJsonTest, UnreadableOrBrokenFiles) {
  const std::string dir = test::temp_dir();
  test::throws<IoError>([&] { load_hf_tokenizer_json(dir + "/missing.json"); });
  test::write_file(dir + "/tokenizer.json", "{\"model\": ");
  EXPECT_HAS(test::throws<FormatError>([&] { load_hf_tokenizer_json(dir + "/tokenizer.json"); }), "not valid JSON");
  test::write_file(dir + "/tokenizer.json", "[1, 2]");
  test::throws<FormatError>([&] { load_hf_tokenizer_json(dir + "/tokenizer.json"); });
  write_json(dir, toy_json());
  test::write_file(dir + "/tokenizer_config.json", R"({"bos_token": "<nope>"})");
  EXPECT_HAS(test::throws<FormatError>([&] { load_hf_tokenizer_json(dir + "/tokenizer.json"); }), "<nope>");
  test::write_file(dir + "/encoder.json", R"({"a": 0, "b": 1})");
  test::write_file(dir + "/vocab.bpe", "#version: 0.2\na b\n");
  EXPECT_HAS(test::throws<FormatError>([&] { load_gpt2_tokenizer(dir + "/encoder.json", dir + "/vocab.bpe"); }),
             "'ab'");
  test::throws<IoError>([&] { load_gpt2_tokenizer(dir + "/encoder.json", dir + "/none.bpe"); });
}

}  // namespace
}  // namespace million
