// Unit tests for the codebook file (src/pq/codebook_file.cpp, docs/codebook-format.md): random
// codebook sets of every granularity and rotation round-trip bit-identically; the documented byte
// layout is pinned; every corruption (magic, version, truncation, flipped bytes, count fields with
// a recomputed checksum, NaN/Inf, trailing bytes) is a FormatError naming the file and advising
// `million calibrate`, without huge allocations. No trained codebooks or models are used.
#include "common/test_util.h"
#include "pq/codebook_file.h"

#include <gtest/gtest.h>

#include <atomic>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <new>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "common/test_paths.h"
#include "million/error.h"
#include "pq/rotation.h"

// --- allocation tracking: the largest single operator new request while armed ----------------

namespace {
std::atomic<bool> g_track{false};
std::atomic<std::size_t> g_largest{0};
}  // namespace

void* operator new(std::size_t n) {
  if (g_track.load(std::memory_order_relaxed)) {
    std::size_t prev = g_largest.load(std::memory_order_relaxed);
    while (n > prev && !g_largest.compare_exchange_weak(prev, n, std::memory_order_relaxed)) {
    }
  }
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
// GCC 12 at -O3 flags free() on memory from the replaced operator new as "mismatched", though
// this operator new returns malloc's memory.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
#pragma GCC diagnostic pop

namespace million {
namespace {


namespace fs = std::filesystem;
using test::temp_dir;
using test::write_file;


constexpr char kAdvice[] = "re-run `million calibrate` to make a new one";

/// Records the largest single allocation made while alive.
struct AllocationWatch {
  AllocationWatch() {
    g_largest = 0;
    g_track = true;
  }
  ~AllocationWatch() { g_track = false; }
  std::size_t largest() const { return g_largest.load(); }
};

// --- building codebook sets --------------------------------------------------------------------

struct Shape {
  int head_dim;
  PQConfig k, v;
};
// Keys and values deliberately use different M and nbits.
const Shape kShape128{128, {64, 8}, {32, 4}};
const Shape kShape8{8, {8, 8}, {2, 4}};
const Shape kTiny{8, {4, 4}, {2, 4}};  // smallest files, for exhaustive truncation

std::vector<float> random_floats(std::size_t n, std::mt19937& rng) {
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& f : v) f = dist(rng);
  return v;
}

CodebookSet make_set(Granularity g, RotationKind rot, const Shape& s, int n_layers = 3, int n_kv_heads = 2,
                     unsigned seed = 1) {
  std::mt19937 rng(seed);
  CodebookSet set;
  set.model = {"LlamaForCausalLM", n_layers, n_kv_heads, s.head_dim, 4 * s.head_dim, 32000,
               0x0123456789abcdefULL ^ seed};
  set.granularity = g;
  set.rotation = rot;
  set.k_config = s.k;
  set.v_config = s.v;
  set.seed = 0xfeedface00000000ULL + seed;
  for (int gi = 0; gi < set.n_groups(); ++gi) {
    for (int kind = 0; kind < 2; ++kind) {
      const PQConfig& c = kind == 0 ? s.k : s.v;
      PQCodebook e;
      e.head_dim = s.head_dim;
      e.M = c.M;
      e.nbits = c.nbits;
      e.rotation = rot;
      e.n_samples = rng() * 1000003ULL + static_cast<std::uint64_t>(gi);
      if (rot != RotationKind::kNone) {
        e.rotation_matrix = random_floats(static_cast<std::size_t>(s.head_dim) * s.head_dim, rng);
      }
      e.centroids = random_floats(static_cast<std::size_t>(c.M) * c.ksub() * (s.head_dim / c.M), rng);
      set.entries.push_back(std::move(e));
    }
  }
  // Values whose bits a lossy path would change.
  auto& c0 = set.entries[0].centroids;
  c0[0] = -0.0f;
  c0[1] = std::numeric_limits<float>::denorm_min();
  c0[2] = std::numeric_limits<float>::max();
  c0[3] = -std::numeric_limits<float>::min();
  return set;
}

void expect_same_bits(const std::vector<float>& a, const std::vector<float>& b, const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (std::size_t i = 0; i < a.size(); ++i) {
    ASSERT_EQ(std::bit_cast<std::uint32_t>(a[i]), std::bit_cast<std::uint32_t>(b[i])) << what << " index " << i;
  }
}

void expect_identical(const CodebookSet& a, const CodebookSet& b) {
  EXPECT_EQ(a.model.architecture, b.model.architecture);
  EXPECT_EQ(a.model.n_layers, b.model.n_layers);
  EXPECT_EQ(a.model.n_kv_heads, b.model.n_kv_heads);
  EXPECT_EQ(a.model.head_dim, b.model.head_dim);
  EXPECT_EQ(a.model.hidden_size, b.model.hidden_size);
  EXPECT_EQ(a.model.vocab_size, b.model.vocab_size);
  EXPECT_EQ(a.model.config_hash, b.model.config_hash);
  EXPECT_EQ(a.granularity, b.granularity);
  EXPECT_EQ(a.rotation, b.rotation);
  EXPECT_EQ(a.seed, b.seed);
  EXPECT_EQ(a.k_config, b.k_config);
  EXPECT_EQ(a.v_config, b.v_config);
  EXPECT_EQ(a.k_norm, b.k_norm);
  EXPECT_EQ(a.v_norm, b.v_norm);
  EXPECT_EQ(a.norm_group, b.norm_group);
  ASSERT_EQ(a.entries.size(), b.entries.size());
  for (std::size_t i = 0; i < a.entries.size(); ++i) {
    const PQCodebook &x = a.entries[i], &y = b.entries[i];
    EXPECT_EQ(x.head_dim, y.head_dim) << i;
    EXPECT_EQ(x.M, y.M) << i;
    EXPECT_EQ(x.nbits, y.nbits) << i;
    EXPECT_EQ(x.rotation, y.rotation) << i;
    EXPECT_EQ(x.n_samples, y.n_samples) << i;
    EXPECT_EQ(x.norm, y.norm) << i;
    EXPECT_EQ(x.norm_group, y.norm_group) << i;
    expect_same_bits(x.rotation_matrix, y.rotation_matrix, "rotation matrix of entry " + std::to_string(i));
    expect_same_bits(x.centroids, y.centroids, "centroids of entry " + std::to_string(i));
  }
}

// --- raw bytes -----------------------------------------------------------------------------

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::uint32_t get_u32(const std::string& b, std::size_t off) {
  std::uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<std::uint32_t>(static_cast<unsigned char>(b.at(off + i))) << (8 * i);
  return v;
}
std::uint64_t get_u64(const std::string& b, std::size_t off) {
  return get_u32(b, off) | static_cast<std::uint64_t>(get_u32(b, off + 4)) << 32;
}
void put_u32(std::string& b, std::size_t off, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) b.at(off + i) = static_cast<char>((v >> (8 * i)) & 0xff);
}
void put_u64(std::string& b, std::size_t off, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) b.at(off + i) = static_cast<char>((v >> (8 * i)) & 0xff);
}

constexpr std::size_t kHeader = 20;  // magic 8 + version 4 + payload_bytes 8

/// Recomputes payload_bytes from the size and the trailing checksum, as a careful forger would.
void fix_checksum(std::string& b) {
  const std::size_t payload = b.size() - kHeader - 8;
  put_u64(b, 12, payload);
  put_u64(b, b.size() - 8, fnv1a64(b.data() + kHeader, payload));
}

/// Offsets of the documented fields, given the architecture name's length.
struct Offsets {
  std::size_t arch_len = 20, arch = 24, n_layers, n_kv_heads, head_dim, hidden, vocab, config_hash, granularity,
              rotation, seed, k_m, k_nbits, v_m, v_nbits, k_norm, v_norm, norm_group, count, entry0;
  explicit Offsets(std::size_t L) {
    n_layers = arch + L;
    n_kv_heads = n_layers + 4;
    head_dim = n_layers + 8;
    hidden = n_layers + 12;
    vocab = n_layers + 16;
    config_hash = n_layers + 20;
    granularity = n_layers + 28;
    rotation = n_layers + 29;
    seed = n_layers + 30;
    k_m = n_layers + 38;
    k_nbits = n_layers + 42;
    v_m = n_layers + 46;
    v_nbits = n_layers + 50;
    k_norm = n_layers + 54;
    v_norm = n_layers + 55;
    norm_group = n_layers + 56;
    count = n_layers + 60;
    entry0 = n_layers + 64;
  }
  // Within an entry: head_dim +0, M +4, nbits +8, rotation +12, n_samples +13, arrays +21.
};

/// Loads `path`, expecting a FormatError that names the file, ends with the advice and contains
/// every phrase; returns the message.
std::string expect_format_error(const std::string& path, std::initializer_list<const char*> phrases) {
  try {
    load_codebooks(path);
  } catch (const FormatError& e) {
    const std::string msg = e.what();
    EXPECT_EQ(e.kind(), ErrorKind::kFormat);
    EXPECT_HAS(msg, path);
    EXPECT_HAS(msg, "million calibrate");
    EXPECT_TRUE(msg.ends_with(kAdvice)) << msg;
    for (const char* p : phrases) EXPECT_HAS(msg, p);
    return msg;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected FormatError, got: " << e.what();
    return {};
  }
  ADD_FAILURE() << "expected FormatError for " << path << ", but it loaded";
  return {};
}

/// Writes `bytes` to a fresh file and expects a FormatError with `phrases`, allocating nothing big.
std::string expect_rejected(const std::string& bytes, std::initializer_list<const char*> phrases,
                            std::size_t max_alloc = 1 << 20) {
  const std::string path = temp_dir() + "/bad.mpq";
  write_file(path, bytes);
  AllocationWatch watch;
  std::string msg = expect_format_error(path, phrases);
  EXPECT_LT(watch.largest(), max_alloc) << "largest single allocation while loading: " << msg;
  return msg;
}

std::string saved_bytes(const CodebookSet& set) {
  const std::string path = temp_dir() + "/cb.mpq";
  save_codebooks(set, path);
  return read_bytes(path);
}

// --- round trips -----------------------------------------------------------------------------

class RoundTrip : public ::testing::TestWithParam<std::tuple<Granularity, RotationKind, int>> {};

TEST_P(RoundTrip, SaveLoadIsBitIdentical) {
  const auto [g, rot, shape_index] = GetParam();
  const Shape& shape = shape_index == 0 ? kShape128 : kShape8;
  const CodebookSet set = make_set(g, rot, shape, 3, 2, 7 + static_cast<unsigned>(shape_index));
  ASSERT_NO_THROW(set.validate("test set"));
  const std::string dir = temp_dir();
  const std::string path = dir + "/codebooks.mpq";
  save_codebooks(set, path);
  const CodebookSet loaded = load_codebooks(path);
  expect_identical(set, loaded);
  // Saving the loaded set reproduces the file byte for byte.
  const std::string again = dir + "/again.mpq";
  save_codebooks(loaded, again);
  EXPECT_EQ(read_bytes(path), read_bytes(again));
}

INSTANTIATE_TEST_SUITE_P(AllKinds, RoundTrip,
                         ::testing::Combine(::testing::Values(Granularity::kShared, Granularity::kLayer,
                                                              Granularity::kLayerHead),
                                            ::testing::Values(RotationKind::kNone, RotationKind::kHadamard,
                                                              RotationKind::kOpq),
                                            ::testing::Values(0, 1)));

TEST(CodebookFile, EntryCountFollowsGranularity) {
  // 3 layers x 2 kv heads: 2, 6 and 12 codebooks; the loaded set indexes them the same way.
  const int want[] = {2, 6, 12};
  int i = 0;
  for (Granularity g : {Granularity::kShared, Granularity::kLayer, Granularity::kLayerHead}) {
    const CodebookSet set = make_set(g, RotationKind::kNone, kTiny, 3, 2, 3);
    const std::string path = temp_dir() + "/cb.mpq";
    save_codebooks(set, path);
    const CodebookSet loaded = load_codebooks(path);
    EXPECT_EQ(loaded.entries.size(), static_cast<std::size_t>(want[i++]));
    expect_same_bits(loaded.get(2, 1, KVKind::kValue).centroids, set.get(2, 1, KVKind::kValue).centroids, "get");
  }
}

TEST(CodebookFile, ByteLayoutMatchesTheDocumentation) {
  const CodebookSet set = make_set(Granularity::kLayer, RotationKind::kOpq, kShape8, 2, 4, 11);
  const std::string b = saved_bytes(set);
  ASSERT_GT(b.size(), 100u);
  EXPECT_EQ(0, std::memcmp(b.data(), kCodebookMagic, 8));
  EXPECT_EQ(std::string(b.data(), 7), "MLNPQCB");
  EXPECT_EQ(get_u32(b, 8), kCodebookVersion);
  const std::uint64_t payload = get_u64(b, 12);
  EXPECT_EQ(payload, b.size() - 28);
  EXPECT_EQ(get_u64(b, b.size() - 8), fnv1a64(b.data() + 20, payload));

  const Offsets o(set.model.architecture.size());
  EXPECT_EQ(get_u32(b, o.arch_len), set.model.architecture.size());
  EXPECT_EQ(b.substr(o.arch, set.model.architecture.size()), set.model.architecture);
  EXPECT_EQ(get_u32(b, o.n_layers), 2u);
  EXPECT_EQ(get_u32(b, o.n_kv_heads), 4u);
  EXPECT_EQ(get_u32(b, o.head_dim), 8u);
  EXPECT_EQ(get_u32(b, o.hidden), 32u);
  EXPECT_EQ(get_u32(b, o.vocab), 32000u);
  EXPECT_EQ(get_u64(b, o.config_hash), set.model.config_hash);
  EXPECT_EQ(b.at(o.granularity), 1);  // layer
  EXPECT_EQ(b.at(o.rotation), 2);     // opq
  EXPECT_EQ(get_u64(b, o.seed), set.seed);
  EXPECT_EQ(get_u32(b, o.k_m), 8u);
  EXPECT_EQ(get_u32(b, o.k_nbits), 8u);
  EXPECT_EQ(get_u32(b, o.v_m), 2u);
  EXPECT_EQ(get_u32(b, o.v_nbits), 4u);
  EXPECT_EQ(b.at(o.k_norm), 0);
  EXPECT_EQ(b.at(o.v_norm), 0);
  EXPECT_EQ(get_u32(b, o.norm_group), 0u);
  EXPECT_EQ(get_u32(b, o.count), 4u);  // 2 layers, K and V
  const PQCodebook& e0 = set.entries[0];
  EXPECT_EQ(get_u32(b, o.entry0), 8u);
  EXPECT_EQ(get_u32(b, o.entry0 + 4), 8u);
  EXPECT_EQ(get_u32(b, o.entry0 + 8), 8u);
  EXPECT_EQ(b.at(o.entry0 + 12), 2);
  EXPECT_EQ(get_u64(b, o.entry0 + 13), e0.n_samples);
  EXPECT_EQ(get_u32(b, o.entry0 + 21), std::bit_cast<std::uint32_t>(e0.rotation_matrix[0]));
  const std::size_t cent = o.entry0 + 21 + 64 * 4;
  EXPECT_EQ(get_u32(b, cent + 4), std::bit_cast<std::uint32_t>(e0.centroids[1]));
  // Entry 1 (V) starts right after entry 0's centroids (8 * 256 * 1 floats).
  const std::size_t e1 = cent + 8 * 256 * 4;
  EXPECT_EQ(get_u32(b, e1 + 4), 2u);
  EXPECT_EQ(get_u32(b, e1 + 8), 4u);
  // Each entry: 21 + 64*4 rotation; K 2048 centroids, V 16*8 = 128 centroids.
  const std::size_t entries = 2 * ((21 + 256 + 8192) + (21 + 256 + 512));
  EXPECT_EQ(b.size(), o.entry0 + entries + 8);
}

TEST(CodebookFile, NoTemporaryFileIsLeftAndOverwriteReplaces) {
  const std::string dir = temp_dir();
  const std::string path = dir + "/cb.mpq";
  save_codebooks(make_set(Granularity::kShared, RotationKind::kNone, kTiny, 2, 2, 1), path);
  const CodebookSet second = make_set(Granularity::kLayerHead, RotationKind::kHadamard, kTiny, 2, 2, 2);
  save_codebooks(second, path);
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  int n = 0;
  for (const auto& entry : fs::directory_iterator(dir)) {
    ++n;
    EXPECT_EQ(entry.path().filename(), "cb.mpq");
  }
  EXPECT_EQ(n, 1);
  expect_identical(second, load_codebooks(path));
}

// --- header corruption ---------------------------------------------------------------------------

TEST(CodebookFile, WrongMagicIsNotACodebookFile) {
  std::string b = saved_bytes(make_set(Granularity::kShared, RotationKind::kNone, kTiny));
  b[0] = 'X';
  expect_rejected(b, {"not a million codebook file"});
  // A file of something else entirely, long or short.
  expect_rejected(std::string("{\"architectures\": [\"LlamaForCausalLM\"]}"), {"not a million codebook file"});
  expect_rejected(std::string("GGUF"), {"not a million codebook file"});
}

TEST(CodebookFile, WrongVersionNamesBothVersions) {
  std::string b = saved_bytes(make_set(Granularity::kShared, RotationKind::kNone, kTiny));
  put_u32(b, 8, 4);
  std::string msg = expect_rejected(b, {"version 4", "versions 1 to 3"});
  put_u32(b, 8, 0);
  msg = expect_rejected(b, {"version 0", "versions 1 to 3"});
  put_u32(b, 8, 0xffffffffu);
  expect_rejected(b, {"version 4294967295", "not supported"});
}

// Normalised sets (pq/normalize.h): keys per channel-group, values per token.
CodebookSet with_norms(CodebookSet set, VectorNorm k, VectorNorm v, int group) {
  set.k_norm = k;
  set.v_norm = v;
  set.norm_group = (k == VectorNorm::kChannelGroup || v == VectorNorm::kChannelGroup) ? group : 0;
  for (std::size_t i = 0; i < set.entries.size(); ++i) {
    set.entries[i].norm = i % 2 == 0 ? k : v;
    set.entries[i].norm_group = set.entries[i].norm == VectorNorm::kChannelGroup ? group : 0;
  }
  return set;
}

TEST(CodebookFile, NormalisationsRoundTripAndAreValidated) {
  const CodebookSet set =
      with_norms(make_set(Granularity::kLayerHead, RotationKind::kNone, kTiny, 2, 2, 9), VectorNorm::kChannelGroup,
                 VectorNorm::kToken, 128);
  const std::string b = saved_bytes(set);
  const Offsets o(set.model.architecture.size());
  EXPECT_EQ(b.at(o.k_norm), 2);
  EXPECT_EQ(b.at(o.v_norm), 1);
  EXPECT_EQ(get_u32(b, o.norm_group), 128u);
  const std::string path = temp_dir() + "/norms.mpq";
  save_codebooks(set, path);
  expect_identical(load_codebooks(path), set);
  std::remove(path.c_str());
  for (auto [off, value, phrase] : {std::tuple{o.k_norm, 3, "unknown normalisation code 3"},
                                    std::tuple{o.v_norm, 255, "unknown normalisation code 255"},
                                    std::tuple{o.k_norm, 0, "normalisation group 128"}}) {
    std::string f = b;
    f.at(off) = static_cast<char>(value);
    fix_checksum(f);
    SCOPED_TRACE(phrase);
    expect_rejected(f, {phrase});
  }
  for (std::uint32_t group : {0u, 100u, 1u << 21}) {
    std::string f = b;
    put_u32(f, o.norm_group, group);
    fix_checksum(f);
    SCOPED_TRACE(group);
    expect_rejected(f, {"normalisation group"});
  }
  // A channel-group entry whose group is not a multiple of 64 cannot be saved.
  EXPECT_THROW(save_codebooks(with_norms(set, VectorNorm::kChannelGroup, VectorNorm::kNone, 96), path),
               InvalidArgumentError);
}

// A qpca set (version 3): K entries carry T, T^-1 and channel scales; V entries are Hadamard.
CodebookSet qpca_set() {
  CodebookSet set = with_norms(make_set(Granularity::kLayerHead, RotationKind::kNone, kShape8, 1, 2, 21),
                               VectorNorm::kChannelGroup, VectorNorm::kToken, 64);
  set.rotation = RotationKind::kQueryPca;
  const int d = set.model.head_dim;
  for (std::size_t i = 0; i < set.entries.size(); ++i) {
    PQCodebook& e = set.entries[i];
    e.rotation = entry_rotation(set.rotation, static_cast<int>(i % 2));
    e.rotation_matrix = hadamard_rotation(d, i);
    if (i % 2 == 0) {  // T = 2 H, T^-1 = H^T / 2
      e.inverse_matrix.resize(e.rotation_matrix.size());
      for (int r = 0; r < d; ++r) {
        for (int c = 0; c < d; ++c) {
          e.inverse_matrix[static_cast<std::size_t>(c * d + r)] = e.rotation_matrix[static_cast<std::size_t>(r * d + c)] * 0.5f;
        }
      }
      for (float& x : e.rotation_matrix) x *= 2.0f;
      e.channel_scale.assign(static_cast<std::size_t>(d), 1.5f);
      e.channel_scale[1] = 0.25f;
    }
  }
  return set;
}

TEST(CodebookFile, QueryPcaEntriesRoundTripAndAreValidated) {
  const CodebookSet set = qpca_set();
  set.validate("qpca set");
  const std::string path = temp_dir() + "/qpca.mpq";
  save_codebooks(set, path);
  const CodebookSet back = load_codebooks(path);
  expect_identical(back, set);
  for (std::size_t i = 0; i < set.entries.size(); ++i) {
    expect_same_bits(back.entries[i].inverse_matrix, set.entries[i].inverse_matrix, "inverse");
    expect_same_bits(back.entries[i].channel_scale, set.entries[i].channel_scale, "scale");
  }
  std::remove(path.c_str());
  const std::string b = saved_bytes(set);
  const Offsets o(set.model.architecture.size());
  EXPECT_EQ(b.at(o.rotation), 3);
  EXPECT_EQ(b.at(o.entry0 + 12), 3);
  // The inverse follows T; the scale follows the inverse (layout in docs/codebook-format.md).
  const std::size_t inv = o.entry0 + 21 + 64 * 4, scale = inv + 64 * 4;
  EXPECT_EQ(get_u32(b, inv + 4), std::bit_cast<std::uint32_t>(set.entries[0].inverse_matrix[1]));
  EXPECT_EQ(get_u32(b, scale + 4), std::bit_cast<std::uint32_t>(0.25f));
  {  // an inverse that is not T's (one entry changed): rejected before any key is decoded
    std::string f = b;
    put_u32(f, inv, std::bit_cast<std::uint32_t>(set.entries[0].inverse_matrix[0] + 0.5f));
    fix_checksum(f);
    expect_rejected(f, {"inverse", "identity"});
  }
  {  // a channel scale of zero
    std::string f = b;
    put_u32(f, scale, 0u);
    fix_checksum(f);
    expect_rejected(f, {"channel scale"});
  }
  {  // rotation 3 in a version-2 file
    std::string f = b;
    put_u32(f, 8, 2);
    fix_checksum(f);
    expect_rejected(f, {"unknown rotation code 3"});
  }
  // qpca without channel-group keys cannot be saved.
  CodebookSet bad = set;
  bad = with_norms(bad, VectorNorm::kToken, VectorNorm::kToken, 64);
  EXPECT_THROW(save_codebooks(bad, path), InvalidArgumentError);
}

TEST(CodebookFile, Version1FilesLoadWithoutNormalisation) {
  // A version-1 file is a version-2 file without the 6 normalisation bytes.
  const CodebookSet set = make_set(Granularity::kLayer, RotationKind::kHadamard, kTiny, 2, 2, 4);
  std::string b = saved_bytes(set);
  const Offsets o(set.model.architecture.size());
  b.erase(o.k_norm, 6);
  put_u32(b, 8, 1);
  put_u64(b, 12, b.size() - 28);
  fix_checksum(b);
  const std::string path = temp_dir() + "/v1.mpq";
  write_file(path, b);
  expect_identical(load_codebooks(path), set);
  std::remove(path.c_str());
}

TEST(CodebookFile, EveryTruncationOfASmallFileIsRejected) {
  const std::string b = saved_bytes(make_set(Granularity::kLayer, RotationKind::kOpq, kTiny, 2, 1, 5));
  ASSERT_GT(b.size(), 64u);
  const std::string path = temp_dir() + "/cut.mpq";
  for (std::size_t len = 0; len < b.size(); ++len) {
    SCOPED_TRACE(len);
    write_file(path, b.substr(0, len));
    expect_format_error(path, {"truncated"});
  }
  write_file(path, b);
  EXPECT_NO_THROW(load_codebooks(path));
}

TEST(CodebookFile, TruncationsOfALargeFileAreRejected) {
  const std::string b = saved_bytes(make_set(Granularity::kLayerHead, RotationKind::kOpq, kShape128, 2, 2, 9));
  ASSERT_GT(b.size(), 100000u);
  const std::string path = temp_dir() + "/cut.mpq";
  std::vector<std::size_t> lengths;
  for (std::size_t len = 0; len <= 64; ++len) lengths.push_back(len);
  for (std::size_t len = 65; len < b.size(); len += 4093) lengths.push_back(len);
  for (std::size_t back = 1; back <= 16; ++back) lengths.push_back(b.size() - back);
  for (std::size_t len : lengths) {
    SCOPED_TRACE(len);
    write_file(path, b.substr(0, len));
    expect_format_error(path, {"truncated"});
  }
}

TEST(CodebookFile, PayloadSizeFieldIsCheckedAgainstTheFileSize) {
  std::string b = saved_bytes(make_set(Granularity::kShared, RotationKind::kNone, kTiny));
  put_u64(b, 12, std::numeric_limits<std::uint64_t>::max());
  expect_rejected(b, {"truncated"});
  put_u64(b, 12, 1ULL << 40);
  expect_rejected(b, {"truncated"});
  put_u64(b, 12, 0);
  expect_rejected(b, {"trailing"});
}

TEST(CodebookFile, FlippedPayloadByteIsAChecksumMismatch) {
  const std::string b = saved_bytes(make_set(Granularity::kLayer, RotationKind::kHadamard, kShape8, 2, 2, 4));
  int tried = 0;
  for (std::size_t pos = kHeader; pos < b.size(); pos += 97) {
    std::string c = b;
    c[pos] = static_cast<char>(c[pos] ^ 0x10);
    SCOPED_TRACE(pos);
    expect_rejected(c, {"checksum mismatch: the file is corrupt"});
    ++tried;
  }
  EXPECT_GT(tried, 50);
  std::string last = b;
  last[b.size() - 9] = static_cast<char>(last[b.size() - 9] ^ 1);  // last payload byte
  expect_rejected(last, {"checksum mismatch"});
  std::string sum = b;
  sum[b.size() - 1] = static_cast<char>(sum[b.size() - 1] ^ 0x80);  // the checksum itself
  expect_rejected(sum, {"checksum mismatch"});
}

TEST(CodebookFile, TrailingBytesAreRejected) {
  const std::string b = saved_bytes(make_set(Granularity::kShared, RotationKind::kNone, kTiny));
  expect_rejected(b + "garbage", {"trailing"});
  expect_rejected(b + std::string(1, '\0'), {"trailing"});
  // Extra bytes inside the payload, with payload_bytes and checksum made consistent.
  std::string inside = b;
  inside.insert(inside.size() - 8, "\0\0\0\0", 4);
  fix_checksum(inside);
  expect_rejected(inside, {"unexpected bytes"});
}

// --- semantic corruption behind a valid checksum ----------------------------------------------

struct Forged {
  std::string bytes;
  Offsets at;
};

Forged forge_base(Granularity g = Granularity::kLayerHead, RotationKind rot = RotationKind::kOpq) {
  const CodebookSet set = make_set(g, rot, kTiny, 2, 2, 6);
  return {saved_bytes(set), Offsets(set.model.architecture.size())};
}

void expect_forged_u32_rejected(std::size_t off, std::uint32_t value, std::initializer_list<const char*> phrases,
                                Granularity g = Granularity::kLayerHead) {
  Forged f = forge_base(g);
  put_u32(f.bytes, off, value);
  fix_checksum(f.bytes);
  SCOPED_TRACE(testing::Message() << "offset " << off << " value " << value);
  expect_rejected(f.bytes, phrases);
}

TEST(CodebookFile, ForgedEntryCountIsRejectedWithoutAllocating) {
  const Offsets o = forge_base().at;
  expect_forged_u32_rejected(o.count, 0xffffffffu, {"entry count 4294967295"});
  expect_forged_u32_rejected(o.count, 10, {"entry count 10", "8 codebooks"});
  expect_forged_u32_rejected(o.count, 0, {"entry count 0"});
  expect_forged_u32_rejected(o.count, 7, {"entry count 7"});
}

TEST(CodebookFile, ForgedModelShapeIsRejectedWithoutAllocating) {
  const Offsets o = forge_base().at;
  expect_forged_u32_rejected(o.head_dim, 0xffffffffu, {"head_dim"});
  expect_forged_u32_rejected(o.head_dim, 4097, {"head_dim = 4097"});
  expect_forged_u32_rejected(o.head_dim, 0, {"head_dim = 0"});
  expect_forged_u32_rejected(o.head_dim, 4096, {"codebook 0"});  // in range, disagrees with entries
  expect_forged_u32_rejected(o.n_layers, 0xffffffffu, {"n_layers"});
  expect_forged_u32_rejected(o.n_layers, 0, {"n_layers = 0"});
  expect_forged_u32_rejected(o.n_kv_heads, 1u << 20, {"n_kv_heads"});
  expect_forged_u32_rejected(o.hidden, 0x80000000u, {"hidden_size"});
  expect_forged_u32_rejected(o.vocab, 0xffffffffu, {"vocab_size"});
  expect_forged_u32_rejected(o.arch_len, 0xffffffffu, {"architecture"});
  expect_forged_u32_rejected(o.arch_len, 257, {"architecture"});
  // The largest model the limits allow, with a matching (huge) entry count: must not reserve it.
  Forged f = forge_base();
  put_u32(f.bytes, o.n_layers, 1u << 16);
  put_u32(f.bytes, o.n_kv_heads, 1u << 12);
  put_u32(f.bytes, o.count, 1u << 29);
  fix_checksum(f.bytes);
  expect_rejected(f.bytes, {"cannot fit"});
}

TEST(CodebookFile, ForgedConfigsAndEnumsAreRejected) {
  const Offsets o = forge_base().at;
  expect_forged_u32_rejected(o.k_m, 0, {"K config M"});
  expect_forged_u32_rejected(o.k_m, 3, {"does not divide"});
  expect_forged_u32_rejected(o.k_m, 0xffffffffu, {"K config M"});
  expect_forged_u32_rejected(o.k_nbits, 9, {"K config nbits"});
  expect_forged_u32_rejected(o.k_nbits, 0, {"K config nbits"});
  expect_forged_u32_rejected(o.v_nbits, 0xffffffffu, {"V config nbits"});
  expect_forged_u32_rejected(o.v_m, 16, {"V config M"});
  expect_forged_u32_rejected(o.k_m, 8, {"disagrees"});  // valid, but the entries say M=4

  for (auto [off, value, phrase] : {std::tuple{o.granularity, 3, "granularity"}, std::tuple{o.granularity, 255, "granularity"},
                                    std::tuple{o.rotation, 3, "rotation"}, std::tuple{o.rotation, 0, "disagrees"}}) {
    Forged f = forge_base();
    f.bytes.at(off) = static_cast<char>(value);
    fix_checksum(f.bytes);
    SCOPED_TRACE(phrase);
    expect_rejected(f.bytes, {phrase});
  }
}

TEST(CodebookFile, ForgedEntryFieldsAreRejected) {
  const Offsets o = forge_base().at;
  const std::size_t e = o.entry0;
  expect_forged_u32_rejected(e, 0xffffffffu, {"codebook 0 head_dim"});
  expect_forged_u32_rejected(e, 16, {"codebook 0", "disagrees"});
  expect_forged_u32_rejected(e + 4, 0, {"codebook 0 M"});
  expect_forged_u32_rejected(e + 4, 0x7fffffffu, {"codebook 0 M"});
  expect_forged_u32_rejected(e + 4, 2, {"disagrees"});
  expect_forged_u32_rejected(e + 8, 9, {"codebook 0 nbits"});
  expect_forged_u32_rejected(e + 8, 5, {"disagrees"});
  Forged f = forge_base();
  f.bytes.at(e + 12) = 7;
  fix_checksum(f.bytes);
  expect_rejected(f.bytes, {"unknown rotation code 7"});
}

TEST(CodebookFile, NonFiniteValuesAreRejected) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  {
    Forged f = forge_base(Granularity::kLayer, RotationKind::kNone);
    put_u32(f.bytes, f.at.entry0 + 21 + 4 * 5, std::bit_cast<std::uint32_t>(nan));
    fix_checksum(f.bytes);
    expect_rejected(f.bytes, {"non-finite", "centroids"});
  }
  {
    Forged f = forge_base(Granularity::kLayer, RotationKind::kOpq);
    put_u32(f.bytes, f.at.entry0 + 21, std::bit_cast<std::uint32_t>(-inf));
    fix_checksum(f.bytes);
    expect_rejected(f.bytes, {"non-finite", "rotation matrix"});
  }
  {
    // The very last centroid of the last entry.
    Forged f = forge_base(Granularity::kLayerHead, RotationKind::kHadamard);
    put_u32(f.bytes, f.bytes.size() - 12, std::bit_cast<std::uint32_t>(inf));
    fix_checksum(f.bytes);
    expect_rejected(f.bytes, {"entry 7", "non-finite"});
  }
}

TEST(CodebookFile, RandomForgeriesNeverCrash) {
  // Random bytes written into the structured part, checksum fixed: a clean load or a FormatError.
  const Forged base = forge_base(Granularity::kLayerHead, RotationKind::kOpq);
  const std::string path = temp_dir() + "/fuzz.mpq";
  std::mt19937 rng(1234);
  int rejected = 0;
  for (int iter = 0; iter < 1500; ++iter) {
    std::string b = base.bytes;
    const int n = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < n; ++k) {
      const std::size_t pos = kHeader + rng() % (base.at.entry0 + 40 - kHeader);
      b[pos] = static_cast<char>(rng() % 4 == 0 ? 0xff : rng() & 0xff);
    }
    if (rng() % 5 == 0) b.resize(b.size() - rng() % 200);
    if (rng() % 2 == 0) fix_checksum(b);
    write_file(path, b);
    AllocationWatch watch;
    try {
      load_codebooks(path);
    } catch (const FormatError& e) {
      ++rejected;
      EXPECT_TRUE(std::string(e.what()).ends_with(kAdvice)) << e.what();
    } catch (const std::exception& e) {
      ADD_FAILURE() << "iteration " << iter << ": unexpected exception " << e.what();
    }
    EXPECT_LT(watch.largest(), 1u << 20) << "iteration " << iter;
  }
  EXPECT_GT(rejected, 1000);
}

TEST(CodebookFile, AllocationWatchSeesLargeAllocations) {
  // The watch used above must be able to fail.
  AllocationWatch watch;
  std::vector<float> big(1 << 22);
  big[12345] = 1.0f;
  EXPECT_GE(watch.largest(), (1u << 22) * sizeof(float));
  EXPECT_EQ(big[12345], 1.0f);
}

// --- I/O errors and saving -------------------------------------------------------------------

TEST(CodebookFile, MissingFileIsIoError) {
  const std::string path = temp_dir() + "/no-such-codebooks.mpq";
  try {
    load_codebooks(path);
    FAIL() << "loaded a missing file";
  } catch (const IoError& e) {
    EXPECT_HAS(std::string(e.what()), path);
  }
  EXPECT_THROW(load_codebooks(temp_dir()), IoError);  // a directory
}

TEST(CodebookFile, SaveIntoMissingDirectoryIsIoError) {
  const std::string dir = temp_dir() + "/does/not/exist";
  const std::string path = dir + "/cb.mpq";
  try {
    save_codebooks(make_set(Granularity::kShared, RotationKind::kNone, kTiny), path);
    FAIL() << "saved into a missing directory";
  } catch (const IoError& e) {
    EXPECT_HAS(std::string(e.what()), path);
  }
  EXPECT_FALSE(fs::exists(dir));
}

void expect_save_rejected(const CodebookSet& set, const char* phrase) {
  const std::string dir = temp_dir();
  const std::string path = dir + "/cb.mpq";
  try {
    save_codebooks(set, path);
    ADD_FAILURE() << "saved an inconsistent set (" << phrase << ")";
  } catch (const InvalidArgumentError& e) {
    EXPECT_HAS(std::string(e.what()), phrase);
    EXPECT_HAS(std::string(e.what()), path);
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected InvalidArgumentError, got: " << e.what();
  }
  EXPECT_TRUE(fs::is_empty(dir)) << "a file or .tmp was left behind";
}

TEST(CodebookFile, SavingAnInconsistentSetIsInvalidArgument) {
  const CodebookSet good = make_set(Granularity::kLayerHead, RotationKind::kOpq, kTiny, 2, 2);
  {
    CodebookSet s = good;
    s.entries.pop_back();
    expect_save_rejected(s, "7 codebooks, expected 8");
  }
  {
    CodebookSet s = good;
    s.granularity = Granularity::kLayer;  // 4 expected, 8 present
    expect_save_rejected(s, "expected 4");
  }
  {
    CodebookSet s = good;
    s.entries[3].centroids.pop_back();
    expect_save_rejected(s, "centroid values");
  }
  {
    CodebookSet s = good;
    s.entries[2].rotation_matrix.clear();
    expect_save_rejected(s, "rotation matrix");
  }
  {
    CodebookSet s = good;
    s.entries[5].centroids[7] = std::numeric_limits<float>::quiet_NaN();
    expect_save_rejected(s, "non-finite");
  }
  {
    CodebookSet s = good;
    s.model.hidden_size = -1;
    expect_save_rejected(s, "hidden_size");
  }
  {
    CodebookSet s = good;
    s.model.architecture = std::string(300, 'a');
    expect_save_rejected(s, "architecture");
  }
  {
    CodebookSet s = good;
    s.k_config.M = 3;
    expect_save_rejected(s, "does not divide");
  }
}

// --- fingerprint check -----------------------------------------------------------------------

TEST(CodebookFile, MatchingFingerprintPasses) {
  const CodebookSet set = make_set(Granularity::kShared, RotationKind::kNone, kTiny);
  EXPECT_NO_THROW(check_codebooks_match(set, set.model, "cb.mpq"));
}

TEST(CodebookFile, FingerprintMismatchNamesBothSides) {
  const CodebookSet set = make_set(Granularity::kShared, RotationKind::kNone, kTiny);
  ModelFingerprint other = set.model;
  other.config_hash ^= 1;
  try {
    check_codebooks_match(set, other, "/models/x/codebooks.mpq");
    FAIL() << "config hash mismatch not detected";
  } catch (const FormatError& e) {
    const std::string msg = e.what();
    EXPECT_HAS(msg, "/models/x/codebooks.mpq was calibrated for " + set.model.str());
    EXPECT_HAS(msg, "but the model is " + other.str());
    EXPECT_HAS(msg, "config hash");
    EXPECT_TRUE(msg.ends_with("re-run `million calibrate` for this model")) << msg;
  }
  other = set.model;
  other.n_layers = 5;
  try {
    check_codebooks_match(set, other, "cb.mpq");
    FAIL() << "n_layers mismatch not detected";
  } catch (const FormatError& e) {
    const std::string msg = e.what();
    EXPECT_HAS(msg, set.model.str());
    EXPECT_HAS(msg, other.str());
    EXPECT_HAS(msg, "n_layers");
    EXPECT_HAS(msg, "million calibrate");
  }
  other = set.model;
  other.architecture = "Qwen2ForCausalLM";
  EXPECT_THROW(check_codebooks_match(set, other, "cb.mpq"), FormatError);
}

TEST(CodebookFile, LoadedFileChecksAgainstItsModel) {
  const CodebookSet set = make_set(Granularity::kLayer, RotationKind::kHadamard, kShape8, 2, 2, 8);
  const std::string path = temp_dir() + "/cb.mpq";
  save_codebooks(set, path);
  const CodebookSet loaded = load_codebooks(path);
  EXPECT_NO_THROW(check_codebooks_match(loaded, set.model, path));
  ModelFingerprint bigger = set.model;
  bigger.n_layers = 32;
  EXPECT_THROW(check_codebooks_match(loaded, bigger, path), FormatError);
}

}  // namespace
}  // namespace million
