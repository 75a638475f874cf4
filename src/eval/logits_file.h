// The file `million perplexity --save-logits` writes and `--kl-base` reads: per scored token the
// whole next-token distribution of a base run (usually the exact f32 cache), so another run on
// the same tokens can be compared with it token by token (KL divergence, top-1, ΔPPL).
//
// Layout (little-endian throughout):
//   header:  char magic[8] = "MLNLOGPR", u32 version = 1, u32 header_bytes (offset of the first
//            record), model fingerprint (str architecture, u32 n_layers, n_kv_heads, head_dim,
//            hidden_size, vocab_size, u64 config_hash), u64 ctx, u64 windows, u64 tokens_scored,
//            u64 tokens_hash (FNV-1a of the windows' token ids), u32 logprob_dtype = 1 (f16),
//            str kv (cache of the base run), str mode (how windows were fed); str = u32 length +
//            bytes (at most 4096).
//   records: tokens_scored times { f64 nll, i32 argmax, f16 logprob[vocab_size] } where
//            logprob is the natural-log softmax (clamped at -65504), in window order.
//   trailer: u64 FNV-1a 64 of every byte before it.
// f16 log-probs keep files at 2 bytes per vocabulary entry (4095 tokens x 8192 vocab = 67 MB,
// x 49152 = 403 MB). Their rounding error perturbs KL only to second order (~1e-8 nats); the
// comparison rounds the current distribution to f16 too, so identical runs give KLD exactly 0.
// NLL and argmax are stored exactly, so ΔPPL and top-1 agreement carry no rounding at all.
//
// Not here: running the model (perplexity.h) or printing.
#pragma once

#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

#include "core/mapped_file.h"
#include "eval/perplexity.h"
#include "pq/codebook.h"

namespace million::eval {

struct LogitsFileHeader {
  ModelFingerprint model;
  std::int64_t ctx = 0;
  std::int64_t windows = 0;
  std::int64_t tokens_scored = 0;  ///< windows * (ctx - 1)
  std::uint64_t tokens_hash = 0;   ///< hash_tokens(tokens, windows * ctx)
  std::string kv;                  ///< informative: the base run's cache
  std::string mode;                ///< informative: "prefill" or "prefill 512 + chunks of 64"
};

/// Streams a logits file to `path` (through `path`.tmp, renamed by finish()). Throws IoError
/// when the file cannot be written.
class LogitsFileWriter {
 public:
  LogitsFileWriter(const std::string& path, const LogitsFileHeader& header);
  ~LogitsFileWriter();  ///< removes the temporary file unless finish() ran
  LogitsFileWriter(const LogitsFileWriter&) = delete;
  LogitsFileWriter& operator=(const LogitsFileWriter&) = delete;

  void add_window(const ScoredWindow& window);
  /// Writes the checksum and moves the file into place; every window must have been added.
  void finish();

 private:
  void put(const void* data, std::size_t n);
  std::string path_, tmp_path_;
  LogitsFileHeader header_;
  std::ofstream out_;
  std::uint64_t hash_;
  std::int64_t tokens_written_ = 0;
  bool finished_ = false;
  std::vector<std::uint8_t> buffer_;
};

/// A logits file, mapped and validated: magic, version, header fields, exact size (a
/// truncated file or one with trailing bytes is refused) and checksum. Every problem throws
/// FormatError naming the file; nothing is read outside the mapping.
class LogitsFileReader {
 public:
  explicit LogitsFileReader(const std::string& path);

  const LogitsFileHeader& header() const { return header_; }
  /// Throws InvalidArgumentError saying what differs (model, ctx, number of windows, tokens)
  /// when a run described by `current` cannot be compared with this file.
  void check_compatible(const LogitsFileHeader& current) const;

  double nll(std::int64_t token) const;
  int argmax(std::int64_t token) const;
  /// Copies the f16 log-probs of scored token `token` (vocab_size entries) as f32 into out.
  void logprobs(std::int64_t token, float* out) const;

 private:
  const std::uint8_t* record(std::int64_t token) const;
  std::string path_;
  MappedFile file_;
  LogitsFileHeader header_;
  std::size_t records_offset_ = 0;
  std::size_t record_bytes_ = 0;
};

/// Compares each window of the current run with the base file (check_compatible first).
class KldAccumulator {
 public:
  explicit KldAccumulator(const LogitsFileReader& base) : base_(base) {}
  void add_window(const ScoredWindow& window);
  KldStats finish() const;

 private:
  const LogitsFileReader& base_;
  std::vector<double> kld_, base_nll_, nll_;
  std::vector<std::uint8_t> top1_same_;
  std::vector<float> b_, c_;
};

/// f32 log-probs rounded through f16 and back, as stored in the file (clamped at -65504).
void round_logprobs_f16(const float* in, float* out, int n);

}  // namespace million::eval
