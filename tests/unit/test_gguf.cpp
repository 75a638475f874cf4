// Unit tests for the GGUF reader (src/model/gguf.cpp) and the ggml dequantizers
// (src/backends/cpu/dequant_*.cpp): a file written by the python `gguf` package
// (tests/data/gguf/reference.gguf, scripts/fixtures/make_gguf_quant_reference.py) reads back with
// every metadata type and its tensors dequantize to numpy's values; files built here by
// tests/common/gguf_writer.h test alignment and each kind of corruption (every truncation, huge
// counts, bad magic / version, offsets past the end, unknown types) -> FormatError. Every SIMD
// level must match the scalar reference bit for bit.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "backends/cpu/dequant_kernels.h"
#include "common/gguf_writer.h"
#include "common/test_paths.h"
#include "common/test_util.h"
#include "core/half.h"
#include "million/error.h"
#include "model/gguf.h"
#include "model/gguf_model.h"

namespace million {
namespace {

using test::GgufTensorSpec;
using test::GgufWriter;
namespace enc = test::gguf_enc;

std::string write_gguf(const std::string& bytes, const std::string& name = "m.gguf") {
  const std::string path = test::temp_dir() + "/" + name;
  test::write_file(path, bytes);
  return path;
}

// --- the python-written reference file -------------------------------------------------------

TEST(Gguf, ReadsEveryMetadataTypeFromPythonWriter) {
  GgufFile g(test::data_path("gguf/reference.gguf"));
  EXPECT_EQ(g.version(), 3u);
  EXPECT_EQ(g.alignment(), 32u);
  EXPECT_EQ(g.get_string("general.architecture"), "test");
  EXPECT_EQ(g.get_int("t.u8"), 250);
  EXPECT_EQ(g.get_int("t.i8"), -120);
  EXPECT_EQ(g.get_int("t.u16"), 65000);
  EXPECT_EQ(g.get_int("t.i16"), -32000);
  EXPECT_EQ(g.get_int("t.u32"), 4000000000LL);
  EXPECT_EQ(g.get_int("t.i32"), -2000000000LL);
  EXPECT_EQ(g.find("t.u64")->u, 18000000000000000000ULL);
  EXPECT_HAS(test::throws<FormatError>([&] { g.get_int("t.u64"); }), "out of range");
  EXPECT_EQ(g.get_int("t.i64"), -9000000000000000000LL);
  EXPECT_EQ(g.get_float("t.f32"), 1.5);
  EXPECT_EQ(g.get_float("t.f64"), -2.25);
  EXPECT_EQ(g.find_bool("t.bool"), true);
  EXPECT_EQ(g.get_string("t.str"), "h\xc3\xa9llo");
  EXPECT_EQ(g.get_int_array("t.arr_i32"), (std::vector<std::int64_t>{1, -2, 3}));
  EXPECT_EQ(g.find("t.arr_f32")->array->floats, (std::vector<double>{0.5, -1.0}));
  EXPECT_EQ(g.get_int_array("t.arr_bool"), (std::vector<std::int64_t>{1, 0, 1}));
  EXPECT_EQ(g.get_string_array("t.arr_str"), (std::vector<std::string>{"a", "", "ccc"}));
  const GgufArray& nested = *g.find("t.arr_arr_str")->array;
  ASSERT_EQ(nested.type, GgufType::kArray);
  ASSERT_EQ(nested.arrays.size(), 2u);
  EXPECT_EQ(nested.arrays[0].array->strings, (std::vector<std::string>{"x", "yy"}));
  EXPECT_EQ(nested.arrays[1].array->strings, (std::vector<std::string>{"zzz"}));
  // Wrong-type access names the key and both types.
  const std::string msg = test::throws<FormatError>([&] { g.get_string("t.u32"); });
  EXPECT_HAS(msg, "'t.u32' is a uint32, expected a string");
  EXPECT_HAS(test::throws<FormatError>([&] { g.get_int("absent.key"); }), "missing required metadata 'absent.key'");
}

TEST(Gguf, DequantizesLikeNumpyAtEveryLevel) {
  GgufFile g(test::data_path("gguf/reference.gguf"));
  for (const char* name : {"f32", "f16", "bf16", "q8_0", "q4_0", "q4_1"}) {
    SCOPED_TRACE(name);
    const GgufTensorInfo& t = g.get_tensor(name);
    const GgufTensorInfo& ref = g.get_tensor(std::string(name) + ".ref");
    ASSERT_EQ(t.dims, (std::vector<std::int64_t>{64, 4}));
    ASSERT_EQ(ref.type, GgmlType::kF32);
    std::vector<float> want(static_cast<std::size_t>(ref.numel));
    std::memcpy(want.data(), ref.data, ref.nbytes);
    for (SimdLevel level : supported_simd_levels()) {
      std::vector<float> got(want.size());
      ggml_dequantize(t.type, t.data, got.data(), t.numel, level);
      for (std::size_t i = 0; i < got.size(); ++i) {
        ASSERT_EQ(got[i], want[i]) << simd_level_name(level) << " element " << i;
      }
    }
  }
}

// --- hand-computed blocks and random blocks at every level ------------------------------------

std::string half_bytes(float f) { return enc::le<std::uint16_t>(f32_to_f16(f)); }

TEST(GgufDequant, HandComputedBlocks) {
  // Q4_1: d = 0.5, m = -1; byte j holds element j (low nibble) and j + 16 (high nibble).
  std::string q41 = half_bytes(0.5f) + half_bytes(-1.0f);
  for (int j = 0; j < 16; ++j) q41 += static_cast<char>((j & 15) | ((15 - j) << 4));
  std::vector<float> out(32);
  ggml_dequantize(GgmlType::kQ4_1, reinterpret_cast<const std::uint8_t*>(q41.data()), out.data(), 32, SimdLevel::kScalar);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(out[j], j * 0.5f - 1.0f);
    EXPECT_EQ(out[j + 16], (15 - j) * 0.5f - 1.0f);
  }
  // Q4_0: d = 2; value = (nibble - 8) * d.
  std::string q40 = half_bytes(2.0f);
  for (int j = 0; j < 16; ++j) q40 += static_cast<char>(j | (3 << 4));
  ggml_dequantize(GgmlType::kQ4_0, reinterpret_cast<const std::uint8_t*>(q40.data()), out.data(), 32, SimdLevel::kScalar);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(out[j], (j - 8) * 2.0f);
    EXPECT_EQ(out[j + 16], -10.0f);
  }
  // Q8_0: d = 0.25; int8 values -128..
  std::string q80 = half_bytes(0.25f);
  for (int j = 0; j < 32; ++j) q80 += static_cast<char>(static_cast<std::int8_t>(j * 8 - 128));
  ggml_dequantize(GgmlType::kQ8_0, reinterpret_cast<const std::uint8_t*>(q80.data()), out.data(), 32, SimdLevel::kScalar);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(out[j], (j * 8 - 128) * 0.25f);
}

TEST(GgufDequant, EverySimdLevelMatchesTheReference) {
  std::mt19937 rng(7);
  const int n_blocks = 37;
  for (GgmlType type : {GgmlType::kQ8_0, GgmlType::kQ4_0, GgmlType::kQ4_1}) {
    const int block = type == GgmlType::kQ8_0 ? kQ8_0Bytes : type == GgmlType::kQ4_0 ? kQ4_0Bytes : kQ4_1Bytes;
    std::vector<std::uint8_t> raw(static_cast<std::size_t>(n_blocks * block) + 1);  // +1: test odd addresses
    for (auto& b : raw) b = static_cast<std::uint8_t>(rng());
    // Scales: finite halves of every magnitude, subnormals and zero included.
    for (int b = 0; b < n_blocks; ++b) {
      for (int h = 0; h < (type == GgmlType::kQ4_1 ? 2 : 1); ++h) {
        std::uint16_t v = static_cast<std::uint16_t>(rng()) & 0xfbff;  // exponent never all ones
        if (b == 0) v = 0;
        if (b == 1) v = 0x0001;  // smallest subnormal
        std::memcpy(raw.data() + 1 + b * block + 2 * h, &v, 2);
      }
    }
    const std::uint8_t* src = raw.data() + 1;
    std::vector<float> want(static_cast<std::size_t>(n_blocks * kQuantBlock));
    ggml_dequantize(type, src, want.data(), n_blocks * kQuantBlock, SimdLevel::kScalar);
    for (SimdLevel level : supported_simd_levels()) {
      std::vector<float> got(want.size());
      ggml_dequantize(type, src, got.data(), n_blocks * kQuantBlock, level);
      EXPECT_EQ(0, std::memcmp(got.data(), want.data(), want.size() * 4))
          << ggml_type_name(type) << " at " << simd_level_name(level);
    }
  }
}

// --- files built here ---------------------------------------------------------------------

/// A small valid file: a few key/values of different types and two tensors.
GgufWriter small_writer() {
  GgufWriter w;
  w.str("general.architecture", "test");
  w.u32("a.u32", 7);
  w.str_array("a.strs", {"one", "two"});
  w.kv("a.nested", 9, enc::array(9, {enc::str_array({"p", "q"}), enc::i32_array({5})}));
  w.tensor({"w", {4, 2}, 0, std::string(32, '\x11')});
  w.tensor({"b", {32}, 8, std::string(34, '\x22')});  // one Q8_0 block
  return w;
}

TEST(Gguf, SmallFileRoundTrips) {
  GgufFile g(write_gguf(small_writer().bytes()));
  EXPECT_EQ(g.get_int("a.u32"), 7);
  EXPECT_EQ(g.get_string_array("a.strs"), (std::vector<std::string>{"one", "two"}));
  EXPECT_EQ(g.find("a.nested")->array->arrays[1].array->ints, (std::vector<std::int64_t>{5}));
  ASSERT_EQ(g.tensors().size(), 2u);
  const GgufTensorInfo& w = g.get_tensor("w");
  EXPECT_EQ(w.dims, (std::vector<std::int64_t>{4, 2}));
  EXPECT_EQ(w.nbytes, 32u);
  EXPECT_EQ(w.data[0], 0x11);
  const GgufTensorInfo& b = g.get_tensor("b");
  EXPECT_EQ(b.type, GgmlType::kQ8_0);
  EXPECT_EQ(b.nbytes, 34u);
  EXPECT_EQ(b.offset, 32u);
  EXPECT_EQ(b.data[33], 0x22);
  EXPECT_HAS(test::throws<FormatError>([&] { g.get_tensor("nope"); }), "missing tensor 'nope'");
}

TEST(Gguf, CustomAlignmentAndVersion2) {
  GgufWriter w = small_writer();
  w.version = 2;
  w.alignment = 64;
  w.u32("general.alignment", 64);
  GgufFile g(write_gguf(w.bytes()));
  EXPECT_EQ(g.version(), 2u);
  EXPECT_EQ(g.alignment(), 64u);
  EXPECT_EQ(g.get_tensor("b").offset, 64u);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(g.get_tensor("w").data) % 64, 0u);
}

TEST(Gguf, EveryTruncationIsAFormatError) {
  const std::string bytes = small_writer().bytes();
  for (std::size_t n = 0; n < bytes.size(); ++n) {
    SCOPED_TRACE(n);
    const std::string path = write_gguf(bytes.substr(0, n), "trunc.gguf");
    const std::string msg = test::throws<FormatError>([&] { GgufFile g(path); });
    EXPECT_HAS(msg, path);
  }
}

std::string expect_format_error(const std::string& bytes) {
  const std::string path = write_gguf(bytes, "bad.gguf");
  return test::throws<FormatError>([&] { GgufFile g(path); });
}

TEST(Gguf, BadMagicAndVersions) {
  std::string bytes = small_writer().bytes();
  std::string bad = bytes;
  bad[0] = 'X';
  EXPECT_HAS(expect_format_error(bad), "not a GGUF file");
  for (std::uint32_t v : {0u, 1u, 4u, 0x03000000u}) {
    GgufWriter w = small_writer();
    w.version = v;
    const std::string msg = expect_format_error(w.bytes());
    EXPECT_HAS(msg, v == 1 ? "version 1" : v == 0x03000000u ? "big-endian" : "unknown GGUF version");
  }
}

TEST(Gguf, HugeCountsAreRejectedBeforeAllocating) {
  {
    GgufWriter w = small_writer();
    w.kv_count = ~std::uint64_t{0};
    EXPECT_HAS(expect_format_error(w.bytes()), "metadata key/values");
  }
  {
    GgufWriter w = small_writer();
    w.tensor_count = std::uint64_t{1} << 60;
    EXPECT_HAS(expect_format_error(w.bytes()), "tensors");
  }
  {  // string length near 2^64
    GgufWriter w;
    w.kv("k", 8, enc::le<std::uint64_t>(~std::uint64_t{0} - 3) + "abc");
    EXPECT_HAS(expect_format_error(w.bytes()), "metadata 'k' has length");
  }
  {  // array count near 2^64, of strings and of arrays
    for (std::uint32_t t : {0u, 8u, 9u, 12u}) {
      GgufWriter w;
      w.kv("arr", 9, enc::le(t) + enc::le<std::uint64_t>(std::uint64_t{1} << 62));
      EXPECT_HAS(expect_format_error(w.bytes()), "claims 4611686018427387904 elements");
    }
  }
  {  // key length
    std::string bytes = small_writer().bytes();
    const std::uint64_t huge = std::uint64_t{1} << 40;
    std::memcpy(bytes.data() + GgufWriter::kv_start(), &huge, 8);
    EXPECT_HAS(expect_format_error(bytes), "key has length");
  }
}

TEST(Gguf, MalformedValuesAndTensors) {
  {
    GgufWriter w;
    w.kv("t", 13, "");
    EXPECT_HAS(expect_format_error(w.bytes()), "not a GGUF value type");
  }
  {
    GgufWriter w;
    w.kv("b", 7, std::string(1, '\2'));
    EXPECT_HAS(expect_format_error(w.bytes()), "bool with byte value 2");
  }
  {  // arrays nested deeper than the limit
    std::string v = enc::str_array({"x"});
    for (int d = 0; d < 12; ++d) v = enc::array(9, {v});
    GgufWriter w;
    w.kv("deep", 9, v);
    EXPECT_HAS(expect_format_error(w.bytes()), "nests arrays");
  }
  {
    GgufWriter w = small_writer();
    w.u32("a.u32", 8);
    EXPECT_HAS(expect_format_error(w.bytes()), "'a.u32' appears twice");
  }
  {
    GgufWriter w = small_writer();
    w.u32("general.alignment", 24);
    EXPECT_HAS(expect_format_error(w.bytes()), "general.alignment");
  }
  auto with_tensor = [](GgufTensorSpec t) {
    GgufWriter w;
    w.tensor(std::move(t));
    return expect_format_error(w.bytes());
  };
  EXPECT_HAS(with_tensor({"t", {4}, 99, std::string(16, '\0')}), "unknown ggml type 99");
  EXPECT_HAS(with_tensor({"t", {}, 0, ""}), "0 dimensions");
  EXPECT_HAS(with_tensor({"t", {1, 1, 1, 1, 1}, 0, std::string(4, '\0')}), "5 dimensions");
  EXPECT_HAS(with_tensor({"t", {4, 0}, 0, ""}), "dimension 1 = 0");
  EXPECT_HAS(with_tensor({"t", {std::uint64_t{1} << 40, std::uint64_t{1} << 40}, 0, ""}), "overflows 64 bits");
  EXPECT_HAS(with_tensor({"t", {16}, 8, std::string(34, '\0')}), "not a multiple of its block size 32");
  EXPECT_HAS(with_tensor({"t", {8}, 0, std::string(16, '\0')}), "extends past the end of the file");
  EXPECT_HAS(with_tensor({"t", {4}, 0, std::string(16, '\0'), std::uint64_t{1} << 50}), "extends past the end");
  EXPECT_HAS(with_tensor({"t", {4}, 0, std::string(16, '\0'), 8}), "not a multiple of the alignment 32");
  {
    GgufWriter w;
    w.tensor({"t", {4}, 0, std::string(16, '\0')});
    w.tensor({"t", {4}, 0, std::string(16, '\0')});
    EXPECT_HAS(expect_format_error(w.bytes()), "tensor 't' appears twice");
  }
  {
    GgufWriter w;
    w.tensor({"a", {16}, 0, std::string(64, '\0')});
    w.tensor({"b", {4}, 0, std::string(16, '\0'), 32});
    EXPECT_HAS(expect_format_error(w.bytes()), "overlap");
  }
}

TEST(Gguf, MissingFileIsIoErrorAndMagicSniffing) {
  EXPECT_HAS(test::throws<IoError>([] { GgufFile g("/nonexistent/x.gguf"); }), "/nonexistent/x.gguf");
  EXPECT_TRUE(is_gguf_file(test::data_path("gguf/reference.gguf")));
  EXPECT_FALSE(is_gguf_file(test::data_path("hf-tiny/mistral-sw/config.json")));
  EXPECT_FALSE(is_gguf_file("/nonexistent/x.gguf"));
}

}  // namespace
}  // namespace million
