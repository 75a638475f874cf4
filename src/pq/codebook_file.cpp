// Reads and writes the versioned little-endian codebook file (layout: docs/codebook-format.md).
// Loading checks magic, version, sizes against the file size and the checksum before parsing,
// bounds-checks every read and every count before allocating, and reports any problem as a
// FormatError naming the file and ending with the advice to re-run `million calibrate`.
// Not here: training the codebooks (pq/train.h) or using them (pq/encode.h).
#include "pq/codebook_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>

#include "core/checked.h"
#include "core/mapped_file.h"
#include "million/error.h"

namespace million {
namespace {

constexpr std::size_t kMagicBytes = sizeof(kCodebookMagic);
constexpr std::size_t kHeaderBytes = kMagicBytes + 4 + 8;  // magic, version, payload_bytes
constexpr std::size_t kChecksumBytes = 8;
constexpr char kAdvice[] = "re-run `million calibrate` to make a new one";

// Limits that a loaded file must respect (and that save checks too, so what is saved loads).
constexpr std::uint32_t kMaxArchitectureBytes = 256;
constexpr std::uint32_t kMaxLayers = 1u << 16;
constexpr std::uint32_t kMaxKvHeads = 1u << 12;
constexpr std::uint32_t kMaxHeadDim = 4096;
constexpr std::uint32_t kMaxModelDim = static_cast<std::uint32_t>(std::numeric_limits<int>::max());

// --- writing ---------------------------------------------------------------------------------

class Writer {
 public:
  void u8(std::uint8_t v) { out_.push_back(static_cast<char>(v)); }
  void u32(std::uint32_t v) {
    for (int i = 0; i < 4; ++i) out_.push_back(static_cast<char>((v >> (8 * i)) & 0xffu));
  }
  void u64(std::uint64_t v) {
    for (int i = 0; i < 8; ++i) out_.push_back(static_cast<char>((v >> (8 * i)) & 0xffu));
  }
  void bytes(const void* p, std::size_t n) { out_.append(static_cast<const char*>(p), n); }
  void f32s(const std::vector<float>& v) {
    if constexpr (std::endian::native == std::endian::little) {
      bytes(v.data(), v.size() * sizeof(float));
    } else {
      for (float f : v) u32(std::bit_cast<std::uint32_t>(f));
    }
  }
  std::string& str() { return out_; }

 private:
  std::string out_;
};

void write_payload(Writer& w, const CodebookSet& set) {
  const ModelFingerprint& m = set.model;
  w.u32(static_cast<std::uint32_t>(m.architecture.size()));
  w.bytes(m.architecture.data(), m.architecture.size());
  w.u32(static_cast<std::uint32_t>(m.n_layers));
  w.u32(static_cast<std::uint32_t>(m.n_kv_heads));
  w.u32(static_cast<std::uint32_t>(m.head_dim));
  w.u32(static_cast<std::uint32_t>(m.hidden_size));
  w.u32(static_cast<std::uint32_t>(m.vocab_size));
  w.u64(m.config_hash);
  w.u8(static_cast<std::uint8_t>(set.granularity));
  w.u8(static_cast<std::uint8_t>(set.rotation));
  w.u64(set.seed);
  w.u32(static_cast<std::uint32_t>(set.k_config.M));
  w.u32(static_cast<std::uint32_t>(set.k_config.nbits));
  w.u32(static_cast<std::uint32_t>(set.v_config.M));
  w.u32(static_cast<std::uint32_t>(set.v_config.nbits));
  w.u8(static_cast<std::uint8_t>(set.k_norm));  // version 2
  w.u8(static_cast<std::uint8_t>(set.v_norm));
  w.u32(static_cast<std::uint32_t>(set.norm_group));
  w.u32(static_cast<std::uint32_t>(set.entries.size()));
  for (const PQCodebook& e : set.entries) {
    w.u32(static_cast<std::uint32_t>(e.head_dim));
    w.u32(static_cast<std::uint32_t>(e.M));
    w.u32(static_cast<std::uint32_t>(e.nbits));
    w.u8(static_cast<std::uint8_t>(e.rotation));
    w.u64(e.n_samples);
    if (e.rotation != RotationKind::kNone) w.f32s(e.rotation_matrix);
    if (e.rotation == RotationKind::kQueryPca) {  // version 3
      w.f32s(e.inverse_matrix);
      w.f32s(e.channel_scale);
    }
    w.f32s(e.centroids);
  }
}

// --- checks shared by save and load (FormatError, without the advice) -----------------------

bool valid_granularity(std::uint32_t g) { return g <= static_cast<std::uint32_t>(Granularity::kLayerHead); }
bool valid_rotation(std::uint32_t r) { return r <= static_cast<std::uint32_t>(RotationKind::kQueryPca); }

void check_range(std::int64_t value, std::int64_t lo, std::int64_t hi, const std::string& source,
                 std::string_view field) {
  if (value < lo || value > hi) {
    throw FormatError(fmt::format("{}: {} = {} is outside the supported range {}..{}", source, field, value, lo, hi));
  }
}

void check_architecture(const std::string& arch, const std::string& source) {
  if (arch.size() > kMaxArchitectureBytes) {
    throw FormatError(fmt::format("{}: architecture name is {} bytes long, at most {} are supported", source,
                                  arch.size(), kMaxArchitectureBytes));
  }
  for (char c : arch) {
    if (c < 0x20 || c > 0x7e) {
      throw FormatError(fmt::format("{}: architecture name contains a non-printable byte 0x{:02x}", source,
                                    static_cast<unsigned char>(c)));
    }
  }
}

void check_fingerprint(const ModelFingerprint& m, const std::string& source) {
  check_architecture(m.architecture, source);
  check_range(m.n_layers, 1, kMaxLayers, source, "n_layers");
  check_range(m.n_kv_heads, 1, kMaxKvHeads, source, "n_kv_heads");
  check_range(m.head_dim, 1, kMaxHeadDim, source, "head_dim");
  check_range(m.hidden_size, 0, kMaxModelDim, source, "hidden_size");
  check_range(m.vocab_size, 0, kMaxModelDim, source, "vocab_size");
}

void check_config(const PQConfig& c, int head_dim, const std::string& source, std::string_view kind) {
  if (c.M < 1 || c.M > head_dim || head_dim % c.M != 0) {
    throw FormatError(fmt::format("{}: {} config M = {} does not divide head_dim {}", source, kind, c.M, head_dim));
  }
  if (c.nbits < 4 || c.nbits > 8) {
    throw FormatError(fmt::format("{}: {} config nbits = {} is outside 4..8", source, kind, c.nbits));
  }
}

void check_finite(const std::vector<float>& v, const std::string& source, std::size_t entry, std::string_view what) {
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (!std::isfinite(v[i])) {
      throw FormatError(fmt::format("{}: entry {} has a non-finite value ({}) in its {} at index {}", source, entry,
                                    v[i], what, i));
    }
  }
}

/// Everything save requires and load re-checks: header ranges, the set's own validate(), finite
/// values. Throws FormatError.
void check_set(const CodebookSet& set, const std::string& source) {
  check_fingerprint(set.model, source);
  if (!valid_granularity(static_cast<std::uint32_t>(set.granularity))) {
    throw FormatError(fmt::format("{}: unknown granularity {}", source, static_cast<int>(set.granularity)));
  }
  if (!valid_rotation(static_cast<std::uint32_t>(set.rotation))) {
    throw FormatError(fmt::format("{}: unknown rotation {}", source, static_cast<int>(set.rotation)));
  }
  check_config(set.k_config, set.model.head_dim, source, "K");
  check_config(set.v_config, set.model.head_dim, source, "V");
  set.validate(source);
  for (std::size_t i = 0; i < set.entries.size(); ++i) {
    check_finite(set.entries[i].rotation_matrix, source, i, "rotation matrix");
    check_finite(set.entries[i].inverse_matrix, source, i, "inverse matrix");
    check_finite(set.entries[i].channel_scale, source, i, "channel scale");
    check_finite(set.entries[i].centroids, source, i, "centroids");
  }
}

// --- reading ---------------------------------------------------------------------------------

std::uint32_t le32(const std::uint8_t* p) {
  return static_cast<std::uint32_t>(p[0]) | static_cast<std::uint32_t>(p[1]) << 8 |
         static_cast<std::uint32_t>(p[2]) << 16 | static_cast<std::uint32_t>(p[3]) << 24;
}
std::uint64_t le64(const std::uint8_t* p) {
  return static_cast<std::uint64_t>(le32(p)) | static_cast<std::uint64_t>(le32(p + 4)) << 32;
}

class Reader {
 public:
  Reader(const std::uint8_t* data, std::size_t size, const std::string& source)
      : r_(data, size, source), source_(source) {}
  std::uint8_t u8(std::string_view field) { return *r_.take(1, field); }
  std::uint32_t u32(std::string_view field) { return le32(r_.take(4, field)); }
  std::uint64_t u64(std::string_view field) { return le64(r_.take(8, field)); }
  /// A u32 that must lie in lo..hi, returned as int.
  int u32_in(std::string_view field, std::uint32_t lo, std::uint32_t hi) {
    const std::uint32_t v = u32(field);
    check_range(v, lo, hi, source_, field);
    return static_cast<int>(v);
  }
  /// n f32 values; the byte count is bounds-checked before anything is allocated.
  std::vector<float> f32s(std::size_t n, std::string_view field) {
    const std::int64_t nbytes = checked_mul(static_cast<std::int64_t>(n), 4, source_ + ": " + std::string(field));
    const std::uint8_t* p = r_.take(static_cast<std::size_t>(nbytes), field);
    std::vector<float> v(n);
    if constexpr (std::endian::native == std::endian::little) {
      std::memcpy(v.data(), p, static_cast<std::size_t>(nbytes));
    } else {
      for (std::size_t i = 0; i < n; ++i) v[i] = std::bit_cast<float>(le32(p + 4 * i));
    }
    return v;
  }
  std::size_t remaining() const { return r_.remaining(); }
  const std::uint8_t* take(std::size_t n, std::string_view field) { return r_.take(n, field); }

 private:
  ByteReader r_;
  const std::string& source_;
};

CodebookSet parse_payload(const std::uint8_t* data, std::size_t size, const std::string& path, std::uint32_t version) {
  Reader r(data, size, path);
  CodebookSet set;
  ModelFingerprint& m = set.model;

  const std::uint32_t arch_len = r.u32("architecture length");
  if (arch_len > kMaxArchitectureBytes) {
    throw FormatError(fmt::format("{}: architecture name length {} exceeds the limit of {} bytes", path, arch_len,
                                  kMaxArchitectureBytes));
  }
  const std::uint8_t* arch = r.take(arch_len, "architecture name");
  m.architecture.assign(reinterpret_cast<const char*>(arch), arch_len);
  check_architecture(m.architecture, path);
  m.n_layers = r.u32_in("n_layers", 1, kMaxLayers);
  m.n_kv_heads = r.u32_in("n_kv_heads", 1, kMaxKvHeads);
  m.head_dim = r.u32_in("head_dim", 1, kMaxHeadDim);
  m.hidden_size = r.u32_in("hidden_size", 0, kMaxModelDim);
  m.vocab_size = r.u32_in("vocab_size", 0, kMaxModelDim);
  m.config_hash = r.u64("config_hash");

  const std::uint8_t gran = r.u8("granularity");
  if (!valid_granularity(gran)) {
    throw FormatError(fmt::format("{}: unknown granularity code {} (known: 0 shared, 1 layer, 2 layer-head)", path, gran));
  }
  set.granularity = static_cast<Granularity>(gran);
  const std::uint8_t rot = r.u8("rotation");
  if (!valid_rotation(rot) || (version < 3 && rot == static_cast<std::uint8_t>(RotationKind::kQueryPca))) {
    throw FormatError(fmt::format("{}: unknown rotation code {} (known: 0 none, 1 hadamard, 2 opq, 3 qpca from "
                                  "version 3)", path, rot));
  }
  set.rotation = static_cast<RotationKind>(rot);
  set.seed = r.u64("seed");
  set.k_config.M = r.u32_in("K config M", 1, kMaxHeadDim);
  set.k_config.nbits = r.u32_in("K config nbits", 4, 8);
  set.v_config.M = r.u32_in("V config M", 1, kMaxHeadDim);
  set.v_config.nbits = r.u32_in("V config nbits", 4, 8);
  check_config(set.k_config, m.head_dim, path, "K");
  check_config(set.v_config, m.head_dim, path, "V");
  if (version >= 2) {
    for (VectorNorm* n : {&set.k_norm, &set.v_norm}) {
      const std::uint8_t code = r.u8(n == &set.k_norm ? "K normalisation" : "V normalisation");
      if (!valid_vector_norm(code)) {
        throw FormatError(fmt::format("{}: unknown normalisation code {} (known: 0 none, 1 token, 2 channel-group)",
                                      path, code));
      }
      *n = static_cast<VectorNorm>(code);
    }
    set.norm_group = r.u32_in("normalisation group", 0, 1u << 20);
    const bool grouped = set.k_norm == VectorNorm::kChannelGroup || set.v_norm == VectorNorm::kChannelGroup;
    if (grouped ? (set.norm_group < 64 || set.norm_group % 64 != 0) : set.norm_group != 0) {
      throw FormatError(fmt::format("{}: normalisation group {} (channel-group needs a positive multiple of 64, "
                                    "otherwise it must be 0)", path, set.norm_group));
    }
  }

  const std::uint32_t count = r.u32("entry count");
  const std::int64_t want = 2 * static_cast<std::int64_t>(set.n_groups());
  if (count != want) {
    throw FormatError(fmt::format("{}: entry count {} does not match the {} codebooks that granularity {} needs for "
                                  "{} layers and {} kv heads",
                                  path, count, want, granularity_name(set.granularity), m.n_layers, m.n_kv_heads));
  }
  // Smallest possible entry: 4 u32/u8 fields + n_samples + 16 centroids of one dimension.
  constexpr std::size_t kMinEntryBytes = 4 + 4 + 4 + 1 + 8 + 16 * 4;
  if (count > r.remaining() / kMinEntryBytes) {
    throw FormatError(fmt::format("{}: {} codebooks cannot fit in the {} payload bytes that remain", path, count,
                                  r.remaining()));
  }
  set.entries.reserve(count);
  for (std::uint32_t i = 0; i < count; ++i) {
    const std::string field = fmt::format("codebook {}", i);
    PQCodebook e;
    e.head_dim = r.u32_in(field + " head_dim", 1, kMaxHeadDim);
    e.M = r.u32_in(field + " M", 1, kMaxHeadDim);
    e.nbits = r.u32_in(field + " nbits", 4, 8);
    const std::uint8_t erot = r.u8(field + " rotation");
    if (!valid_rotation(erot)) throw FormatError(fmt::format("{}: {} has unknown rotation code {}", path, field, erot));
    e.rotation = static_cast<RotationKind>(erot);
    e.n_samples = r.u64(field + " n_samples");
    e.norm = i % 2 == 0 ? set.k_norm : set.v_norm;
    e.norm_group = e.norm == VectorNorm::kChannelGroup ? set.norm_group : 0;
    // Agree with the header before reading the arrays, so their sizes come from checked fields.
    const PQConfig& cfg = i % 2 == 0 ? set.k_config : set.v_config;
    const RotationKind want_rot = entry_rotation(set.rotation, static_cast<int>(i % 2));
    if (e.head_dim != m.head_dim || e.M != cfg.M || e.nbits != cfg.nbits || e.rotation != want_rot) {
      throw FormatError(fmt::format("{}: {} (head_dim {}, M {}, nbits {}, rotation {}) disagrees with the file header "
                                    "(head_dim {}, {}, rotation {})",
                                    path, field, e.head_dim, e.M, e.nbits, rotation_name(e.rotation), m.head_dim,
                                    cfg.str(), rotation_name(want_rot)));
    }
    const auto hd = static_cast<std::size_t>(e.head_dim);
    if (e.rotation != RotationKind::kNone) e.rotation_matrix = r.f32s(hd * hd, field + " rotation matrix");
    if (e.rotation == RotationKind::kQueryPca) {
      e.inverse_matrix = r.f32s(hd * hd, field + " inverse matrix");
      e.channel_scale = r.f32s(hd, field + " channel scale");
    }
    e.centroids = r.f32s(static_cast<std::size_t>(e.M) * static_cast<std::size_t>(e.ksub()) *
                             static_cast<std::size_t>(e.dsub()),
                         field + " centroids");
    check_finite(e.rotation_matrix, path, i, "rotation matrix");
    check_finite(e.inverse_matrix, path, i, "inverse matrix");
    check_finite(e.channel_scale, path, i, "channel scale");
    check_finite(e.centroids, path, i, "centroids");
    set.entries.push_back(std::move(e));
  }
  if (r.remaining() != 0) {
    throw FormatError(fmt::format("{}: {} unexpected bytes after the last codebook inside the payload", path,
                                  r.remaining()));
  }
  set.validate(path);
  return set;
}

CodebookSet load_mapped(const MappedFile& file, const std::string& path) {
  const std::uint8_t* data = file.data();
  const std::size_t size = file.size();
  // Magic first (as much of it as there is), so a foreign file is named as such.
  const std::size_t have = std::min(size, kMagicBytes);
  if (have > 0 && std::memcmp(data, kCodebookMagic, have) != 0) {
    throw FormatError(fmt::format("{}: not a million codebook file (wrong magic bytes)", path));
  }
  if (size < kHeaderBytes + kChecksumBytes) {
    throw FormatError(fmt::format("{}: truncated: {} bytes, smaller than the {}-byte header and checksum", path, size,
                                  kHeaderBytes + kChecksumBytes));
  }
  const std::uint32_t version = le32(data + kMagicBytes);
  if (version < 1 || version > kCodebookVersion) {
    throw FormatError(fmt::format("{}: codebook file version {} is not supported (this build reads versions 1 to {})",
                                  path, version, kCodebookVersion));
  }
  const std::uint64_t payload_bytes = le64(data + kMagicBytes + 4);
  const std::size_t available = size - kHeaderBytes - kChecksumBytes;
  if (payload_bytes > available) {
    throw FormatError(fmt::format("{}: truncated: the header announces a {}-byte payload but the file holds {} bytes "
                                  "after the header (with the checksum)",
                                  path, payload_bytes, size - kHeaderBytes));
  }
  if (payload_bytes < available) {
    throw FormatError(fmt::format("{}: {} trailing bytes after the checksum (file is {} bytes, header implies {})",
                                  path, available - payload_bytes, size,
                                  kHeaderBytes + payload_bytes + kChecksumBytes));
  }
  const std::uint8_t* payload = data + kHeaderBytes;
  const std::uint64_t stored = le64(payload + payload_bytes);
  const std::uint64_t actual = fnv1a64(payload, payload_bytes);
  if (stored != actual) {
    throw FormatError(fmt::format("{}: checksum mismatch: the file is corrupt (stored {:016x}, computed {:016x})", path,
                                  stored, actual));
  }
  return parse_payload(payload, payload_bytes, path, version);
}

[[noreturn]] void fail_io(const std::string& what, const std::string& path, int err) {
  throw IoError(fmt::format("cannot {} codebook file '{}': {}", what, path, std::strerror(err)));
}

}  // namespace

void save_codebooks(const CodebookSet& set, const std::string& path) {
  try {
    check_set(set, path);
  } catch (const FormatError& e) {
    throw InvalidArgumentError(fmt::format("cannot save inconsistent codebooks: {}", e.what()));
  }
  Writer w;
  w.bytes(kCodebookMagic, kMagicBytes);
  w.u32(kCodebookVersion);
  w.u64(0);  // payload_bytes, patched below
  write_payload(w, set);
  std::string& bytes = w.str();
  const std::uint64_t payload_bytes = bytes.size() - kHeaderBytes;
  for (int i = 0; i < 8; ++i) bytes[kMagicBytes + 4 + i] = static_cast<char>((payload_bytes >> (8 * i)) & 0xffu);
  w.u64(fnv1a64(bytes.data() + kHeaderBytes, payload_bytes));

  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail_io("create", tmp, errno);
  auto abandon = [&](const char* what, int err) {
    ::close(fd);
    ::unlink(tmp.c_str());
    fail_io(what, tmp, err);
  };
  std::size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      abandon("write", errno);
    }
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) abandon("sync", errno);
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    fail_io("close", tmp, err);
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    throw IoError(fmt::format("cannot rename '{}' to codebook file '{}': {}", tmp, path, std::strerror(err)));
  }
}

CodebookSet load_codebooks(const std::string& path) {
  const MappedFile file(path, "codebook file");  // IoError when missing or unreadable
  try {
    return load_mapped(file, path);
  } catch (const FormatError& e) {
    std::string msg = e.what();
    if (msg.find(path) == std::string::npos) msg = fmt::format("{}: {}", path, msg);
    throw FormatError(fmt::format("{}; {}", msg, kAdvice));
  }
}

void check_codebooks_match(const CodebookSet& set, const ModelFingerprint& model, const std::string& source) {
  if (set.model == model) return;
  const ModelFingerprint& a = set.model;
  std::string diff;
  auto note = [&](bool differs, std::string_view name) {
    if (!differs) return;
    if (!diff.empty()) diff += ", ";
    diff += name;
  };
  note(a.architecture != model.architecture, "architecture");
  note(a.n_layers != model.n_layers, "n_layers");
  note(a.n_kv_heads != model.n_kv_heads, "n_kv_heads");
  note(a.head_dim != model.head_dim, "head_dim");
  note(a.hidden_size != model.hidden_size, "hidden_size");
  note(a.vocab_size != model.vocab_size, "vocab_size");
  note(a.config_hash != model.config_hash, "config hash");
  throw FormatError(fmt::format("{} was calibrated for {} but the model is {} (differs in: {}); re-run `million "
                                "calibrate` for this model",
                                source, a.str(), model.str(), diff));
}

}  // namespace million
