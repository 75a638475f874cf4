// Byte-level BPE tokenizers (GPT-2 style): the plain description a loader fills in (the fields a
// GGUF file stores), and the factories for Hugging Face tokenizer.json and GPT-2's encoder.json +
// vocab.bpe. Implementation: tokenizer_bpe.cpp (encoding, decoding, pre-tokenizer regexes through
// PCRE2) and tokenizer_bpe_load.cpp (the file formats). No training, no BPE dropout, no
// normalization (an NFC normalizer is accepted and not applied: exact for text already in NFC).
// Encoding is const and keeps no state between calls, so one tokenizer serves many threads.
// Known difference from Hugging Face: characters newer than the Unicode tables of the system's
// PCRE2 (10.42: Unicode 14) have no letter/digit property here (e.g. U+11DE0..U+11DE9).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "model/tokenizer.h"

namespace million {

/// A token matched whole in the input text before pre-tokenization (Hugging Face added tokens;
/// GGUF control and user-defined tokens). Matching is leftmost-longest over all added tokens.
/// Hugging Face's single_word option is not supported (tokenizer.json files set it false).
struct BpeAddedToken {
  int id = -1;
  std::string content;  ///< matched literally; decodes to itself
  bool special = true;  ///< informational (decode keeps every added token's text)
  bool lstrip = false;  ///< the match also takes the ASCII whitespace before it
  bool rstrip = false;  ///< ... and after it
};

/// One pre-tokenizer step. Every piece of text is split by `regex` (PCRE2 with Unicode
/// properties), matches and the text between them becoming pieces (Hugging Face Split with
/// behaviour "Isolated"). With add_prefix_space a piece that does not start with ' ' gets one
/// first (Hugging Face ByteLevel add_prefix_space). An empty regex does not split.
struct BpeSplitStep {
  std::string regex;
  bool literal = false;  ///< `regex` is a plain string (Split pattern {"String": ...})
  bool add_prefix_space = false;
};

/// Everything a byte-level BPE tokenizer is made of, in the form GGUF stores it.
struct BpeTokenizerData {
  std::vector<std::string> tokens;  ///< by id, byte-level text as stored ("Ġthe", "Ċ")
  std::vector<std::string> merges;  ///< "Ġ t": two tokens and one space, highest priority first
  /// Pre-tokenizer by llama.cpp's tokenizer.ggml.pre name: "gpt2" (also "gpt-2"), "llama3"
  /// (also "llama-bpe", "llama-v3"), "qwen2", "smollm". Ignored when pre_steps is not empty.
  std::string pre = "gpt2";
  std::vector<BpeSplitStep> pre_steps;  ///< explicit steps (tokenizer.json), applied in order
  /// A pre-token that is itself in the vocabulary becomes that token without merging (Hugging
  /// Face ignore_merges). Also on for pre "llama3" and its aliases, as llama.cpp does.
  bool ignore_merges = false;
  std::vector<BpeAddedToken> added;  ///< ids may lie beyond tokens (the vocabulary grows)
  int bos_id = -1;                   ///< -1: none (encode with add_bos adds nothing)
  int eos_id = -1;
  /// Stands for a byte that has no token; with -1 such bytes are dropped, as Hugging Face and
  /// llama.cpp do (SmolLM2 has no token for 0x04, 0xC0, 0xF5..0xFF and a few others).
  int unk_id = -1;
  std::string source = "BPE tokenizer";  ///< names the origin in error messages
};

/// The steps of a pre-tokenizer named as in llama.cpp's tokenizer.ggml.pre (see
/// BpeTokenizerData::pre); throws UnsupportedError for other names.
std::vector<BpeSplitStep> bpe_pre_tokenizer_steps(const std::string& name);

/// Added tokens from GGUF tokenizer.ggml.token_type: control (3) and user-defined (4) tokens are
/// matched whole in text, as llama.cpp does. Throws FormatError when the sizes differ.
std::vector<BpeAddedToken> bpe_added_tokens_from_types(const std::vector<std::string>& tokens,
                                                        const std::vector<int>& token_types);

/// Builds a tokenizer from plain data (a GGUF loader's path). Throws FormatError for merges
/// that name unknown tokens or whose result is not a token, bad ids, and regexes PCRE2 rejects;
/// UnsupportedError for an unknown pre-tokenizer name.
std::unique_ptr<Tokenizer> make_bpe_tokenizer(BpeTokenizerData data);

/// Hugging Face tokenizer.json with a BPE model and a ByteLevel pre-tokenizer (Split / Digits /
/// ByteLevel steps). BOS and EOS come from tokenizer_config.json beside it (bos_token,
/// eos_token), else config.json (bos_token_id, eos_token_id), else none.
std::unique_ptr<Tokenizer> load_hf_tokenizer_json(const std::string& path);

/// GPT-2's encoder.json (token -> id) and vocab.bpe (merges). <|endoftext|> is the special
/// token, BOS and EOS.
std::unique_ptr<Tokenizer> load_gpt2_tokenizer(const std::string& encoder_json, const std::string& vocab_bpe);

}  // namespace million
