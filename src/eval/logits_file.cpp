// Logits file writer, validating reader and KL-divergence comparison (see logits_file.h).
#include "eval/logits_file.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "core/half.h"
#include "million/error.h"

namespace million::eval {

namespace {

constexpr char kMagic[8] = {'M', 'L', 'N', 'L', 'O', 'G', 'P', 'R'};
constexpr std::uint32_t kVersion = 1;
constexpr std::uint32_t kDtypeF16 = 1;
constexpr std::uint32_t kMaxString = 4096;
constexpr std::uint64_t kFnvOffset = 14695981039346656037ull;
constexpr std::uint64_t kFnvPrime = 1099511628211ull;
constexpr float kMinLogprob = -65504.0f;

std::uint64_t fnv1a(std::uint64_t h, const std::uint8_t* p, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= kFnvPrime;
  }
  return h;
}

template <class T>
void append(std::string& s, T v) {
  s.append(reinterpret_cast<const char*>(&v), sizeof(T));
}
void append_str(std::string& s, const std::string& v) {
  const std::string t = v.substr(0, kMaxString);
  append<std::uint32_t>(s, static_cast<std::uint32_t>(t.size()));
  s += t;
}

std::string read_str(ByteReader& r, std::string_view field) {
  const auto n = r.read<std::uint32_t>(field);
  if (n > kMaxString) throw FormatError(fmt::format("{} has an implausible length {}", field, n));
  const std::uint8_t* p = r.take(n, field);
  return std::string(reinterpret_cast<const char*>(p), n);
}

std::size_t record_size(int vocab) { return 8 + 4 + 2 * static_cast<std::size_t>(vocab); }

}  // namespace

void round_logprobs_f16(const float* in, float* out, int n) {
  for (int i = 0; i < n; ++i) out[i] = f16_to_f32(f32_to_f16(std::max(in[i], kMinLogprob)));
}

// ---------------------------------------------------------------------------------------------
LogitsFileWriter::LogitsFileWriter(const std::string& path, const LogitsFileHeader& header)
    : path_(path), tmp_path_(path + ".tmp"), header_(header), hash_(kFnvOffset) {
  out_.open(tmp_path_, std::ios::binary | std::ios::trunc);
  if (!out_) throw IoError(fmt::format("cannot write the logits file '{}'", tmp_path_));
  std::string h(kMagic, sizeof(kMagic));
  append<std::uint32_t>(h, kVersion);
  append<std::uint32_t>(h, 0);  // header_bytes, patched below
  append_str(h, header.model.architecture);
  append<std::uint32_t>(h, static_cast<std::uint32_t>(header.model.n_layers));
  append<std::uint32_t>(h, static_cast<std::uint32_t>(header.model.n_kv_heads));
  append<std::uint32_t>(h, static_cast<std::uint32_t>(header.model.head_dim));
  append<std::uint32_t>(h, static_cast<std::uint32_t>(header.model.hidden_size));
  append<std::uint32_t>(h, static_cast<std::uint32_t>(header.model.vocab_size));
  append<std::uint64_t>(h, header.model.config_hash);
  append<std::uint64_t>(h, static_cast<std::uint64_t>(header.ctx));
  append<std::uint64_t>(h, static_cast<std::uint64_t>(header.windows));
  append<std::uint64_t>(h, static_cast<std::uint64_t>(header.tokens_scored));
  append<std::uint64_t>(h, header.tokens_hash);
  append<std::uint32_t>(h, kDtypeF16);
  append_str(h, header.kv);
  append_str(h, header.mode);
  const auto size = static_cast<std::uint32_t>(h.size());
  std::memcpy(h.data() + 12, &size, 4);
  put(h.data(), h.size());
}

LogitsFileWriter::~LogitsFileWriter() {
  if (!finished_) {
    out_.close();
    std::error_code ec;
    std::filesystem::remove(tmp_path_, ec);
  }
}

void LogitsFileWriter::put(const void* data, std::size_t n) {
  hash_ = fnv1a(hash_, static_cast<const std::uint8_t*>(data), n);
  out_.write(static_cast<const char*>(data), static_cast<std::streamsize>(n));
  if (!out_) throw IoError(fmt::format("writing the logits file '{}' failed (disk full?)", tmp_path_));
}

void LogitsFileWriter::add_window(const ScoredWindow& w) {
  MILLION_ASSERT(w.vocab == header_.model.vocab_size);
  const std::size_t rec = record_size(w.vocab);
  buffer_.resize(rec * static_cast<std::size_t>(w.n));
  std::vector<float> lp(static_cast<std::size_t>(w.vocab));
  for (int i = 0; i < w.n; ++i) {
    std::uint8_t* p = buffer_.data() + rec * static_cast<std::size_t>(i);
    log_softmax(w.logits + static_cast<std::size_t>(i) * w.vocab, w.vocab, lp.data());
    const double nll = w.nll[i];
    const std::int32_t am = w.argmax[i];
    std::memcpy(p, &nll, 8);
    std::memcpy(p + 8, &am, 4);
    for (int j = 0; j < w.vocab; ++j) {
      const std::uint16_t hv = f32_to_f16(std::max(lp[static_cast<std::size_t>(j)], kMinLogprob));
      std::memcpy(p + 12 + 2 * static_cast<std::size_t>(j), &hv, 2);
    }
  }
  put(buffer_.data(), buffer_.size());
  tokens_written_ += w.n;
}

void LogitsFileWriter::finish() {
  if (tokens_written_ != header_.tokens_scored) {
    throw InternalError(fmt::format("logits file: {} tokens written, header says {}", tokens_written_,
                                    header_.tokens_scored));
  }
  const std::uint64_t h = hash_;
  out_.write(reinterpret_cast<const char*>(&h), 8);
  out_.close();
  if (!out_) throw IoError(fmt::format("writing the logits file '{}' failed (disk full?)", tmp_path_));
  std::error_code ec;
  std::filesystem::rename(tmp_path_, path_, ec);
  if (ec) throw IoError(fmt::format("cannot move '{}' to '{}': {}", tmp_path_, path_, ec.message()));
  finished_ = true;
}

// ---------------------------------------------------------------------------------------------
LogitsFileReader::LogitsFileReader(const std::string& path) : path_(path), file_(path, "logits file") {
  const std::size_t size = file_.size();
  const std::string what = fmt::format("logits file '{}'", path);
  if (size < sizeof(kMagic) || std::memcmp(file_.data(), kMagic, sizeof(kMagic)) != 0) {
    throw FormatError(fmt::format("{} is not a million logits file (wrong magic; write one with "
                                  "`million perplexity --save-logits`)", what));
  }
  ByteReader r(file_.data(), size, what);
  r.take(sizeof(kMagic), "magic");
  const auto version = r.read<std::uint32_t>("version");
  if (version != kVersion) {
    throw FormatError(fmt::format("{} has format version {}; this build reads version {}", what, version, kVersion));
  }
  const auto header_bytes = r.read<std::uint32_t>("header size");
  LogitsFileHeader& h = header_;
  h.model.architecture = read_str(r, what + ": architecture");
  h.model.n_layers = static_cast<int>(r.read<std::uint32_t>("n_layers"));
  h.model.n_kv_heads = static_cast<int>(r.read<std::uint32_t>("n_kv_heads"));
  h.model.head_dim = static_cast<int>(r.read<std::uint32_t>("head_dim"));
  h.model.hidden_size = static_cast<int>(r.read<std::uint32_t>("hidden_size"));
  const auto vocab = r.read<std::uint32_t>("vocab_size");
  h.model.config_hash = r.read<std::uint64_t>("config hash");
  const auto ctx = r.read<std::uint64_t>("ctx");
  const auto windows = r.read<std::uint64_t>("windows");
  const auto scored = r.read<std::uint64_t>("tokens scored");
  h.tokens_hash = r.read<std::uint64_t>("tokens hash");
  const auto dtype = r.read<std::uint32_t>("log-prob dtype");
  h.kv = read_str(r, what + ": kv");
  h.mode = read_str(r, what + ": mode");
  if (r.offset() != header_bytes) {
    throw FormatError(fmt::format("{} is corrupt: its header says {} bytes but holds {}", what, header_bytes, r.offset()));
  }
  if (dtype != kDtypeF16) throw FormatError(fmt::format("{} is corrupt: unknown log-prob dtype {}", what, dtype));
  if (vocab == 0 || vocab > (1u << 24) || ctx < 2 || ctx > (1ull << 32) || windows == 0 || windows > (1ull << 32) ||
      scored != windows * (ctx - 1)) {
    throw FormatError(fmt::format("{} is corrupt: implausible header (vocab {}, ctx {}, windows {}, tokens {})", what,
                                  vocab, ctx, windows, scored));
  }
  h.model.vocab_size = static_cast<int>(vocab);
  h.ctx = static_cast<std::int64_t>(ctx);
  h.windows = static_cast<std::int64_t>(windows);
  h.tokens_scored = static_cast<std::int64_t>(scored);
  records_offset_ = header_bytes;
  record_bytes_ = record_size(h.model.vocab_size);
  // scored < 2^64 / record_bytes_ is guaranteed by the bounds above (2^32 * 2^32 tokens would
  // overflow, so check in long double to be safe).
  const long double expected_ld = static_cast<long double>(records_offset_) +
                                  static_cast<long double>(scored) * static_cast<long double>(record_bytes_) + 8.0L;
  if (expected_ld > static_cast<long double>(size)) {
    throw FormatError(fmt::format("{} is truncated: {} tokens of vocab {} need {:.0f} bytes, the file has {}", what,
                                  scored, vocab, static_cast<double>(expected_ld), size));
  }
  const std::size_t expected = records_offset_ + static_cast<std::size_t>(scored) * record_bytes_ + 8;
  if (expected != size) {
    throw FormatError(fmt::format("{} is corrupt: {} bytes of trailing data after {} tokens", what, size - expected,
                                  scored));
  }
  std::uint64_t stored = 0;
  std::memcpy(&stored, file_.data() + size - 8, 8);
  if (fnv1a(kFnvOffset, file_.data(), size - 8) != stored) {
    throw FormatError(fmt::format("{} is corrupt: checksum mismatch (the file was changed or damaged)", what));
  }
  for (std::int64_t i = 0; i < h.tokens_scored; ++i) {
    if (argmax(i) < 0 || argmax(i) >= h.model.vocab_size) {
      throw FormatError(fmt::format("{} is corrupt: token {} has argmax {} outside the vocabulary", what, i, argmax(i)));
    }
  }
}

void LogitsFileReader::check_compatible(const LogitsFileHeader& cur) const {
  const LogitsFileHeader& h = header_;
  if (!(h.model == cur.model)) {
    throw InvalidArgumentError(fmt::format("--kl-base '{}' was saved with a different model: {}; this run's model is {}",
                                           path_, h.model.str(), cur.model.str()));
  }
  if (h.ctx != cur.ctx) {
    throw InvalidArgumentError(fmt::format("--kl-base '{}' was saved with --ctx {}; this run uses --ctx {} (use the same)",
                                           path_, h.ctx, cur.ctx));
  }
  if (h.windows != cur.windows) {
    throw InvalidArgumentError(fmt::format(
        "--kl-base '{}' holds {} windows; this run has {} (use the same text and --max-windows)", path_, h.windows,
        cur.windows));
  }
  if (h.tokens_hash != cur.tokens_hash) {
    throw InvalidArgumentError(fmt::format(
        "--kl-base '{}' was saved on different tokens (the text, the --tokens file or the tokenizer differ)", path_));
  }
}

const std::uint8_t* LogitsFileReader::record(std::int64_t token) const {
  MILLION_ASSERT(token >= 0 && token < header_.tokens_scored);
  return file_.data() + records_offset_ + static_cast<std::size_t>(token) * record_bytes_;
}

double LogitsFileReader::nll(std::int64_t token) const {
  double v;
  std::memcpy(&v, record(token), 8);
  return v;
}

int LogitsFileReader::argmax(std::int64_t token) const {
  std::int32_t v;
  std::memcpy(&v, record(token) + 8, 4);
  return v;
}

void LogitsFileReader::logprobs(std::int64_t token, float* out) const {
  const std::uint8_t* p = record(token) + 12;
  for (int j = 0; j < header_.model.vocab_size; ++j) {
    std::uint16_t hv;
    std::memcpy(&hv, p + 2 * static_cast<std::size_t>(j), 2);
    out[j] = f16_to_f32(hv);
  }
}

// ---------------------------------------------------------------------------------------------
void KldAccumulator::add_window(const ScoredWindow& w) {
  MILLION_ASSERT(w.vocab == base_.header().model.vocab_size);
  b_.resize(static_cast<std::size_t>(w.vocab));
  c_.resize(static_cast<std::size_t>(w.vocab));
  const std::int64_t first = w.index * w.n;
  for (int i = 0; i < w.n; ++i) {
    const std::int64_t t = first + i;
    base_.logprobs(t, b_.data());
    log_softmax(w.logits + static_cast<std::size_t>(i) * w.vocab, w.vocab, c_.data());
    round_logprobs_f16(c_.data(), c_.data(), w.vocab);
    kld_.push_back(kl_divergence(b_.data(), c_.data(), w.vocab));
    top1_same_.push_back(base_.argmax(t) == w.argmax[i] ? 1 : 0);
    base_nll_.push_back(base_.nll(t));
    nll_.push_back(w.nll[i]);
  }
}

KldStats KldAccumulator::finish() const { return kld_stats(kld_, top1_same_, base_nll_, nll_); }

}  // namespace million::eval
