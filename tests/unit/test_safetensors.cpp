// Unit tests for the safetensors reader (src/model/safetensors.cpp). Every file is built here,
// byte by byte, in a temporary directory: valid single files and sharded directories load with
// the right dtypes, shapes and bytes; each kind of corruption (and every truncation of a small
// file) throws FormatError or IoError naming the file. No real model weights are used.
#include "common/test_util.h"
#include "model/safetensors.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/test_paths.h"
#include "million/error.h"

namespace million {
namespace {


using nlohmann::json;
using test::temp_dir;
using test::write_file;


// --- building files ------------------------------------------------------------------------

struct Tensor {
  std::string name;
  std::string dtype;
  std::vector<std::int64_t> shape;
  std::string bytes;
};

/// Deterministic, distinct-per-seed filler bytes.
std::string pattern(std::size_t n, int seed) {
  std::string out(n, '\0');
  for (std::size_t i = 0; i < n; ++i) {
    out[i] = static_cast<char>((seed * 37 + static_cast<int>(i) * 11) & 0xff);
  }
  return out;
}

/// 8-byte little-endian header length, the header text, then the data buffer.
std::string raw_file(const std::string& header, const std::string& data = "") {
  std::string out(8, '\0');
  std::uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header + data;
}

/// Overwrites the header length prefix of a file built by raw_file().
void set_header_length(std::string& bytes, std::uint64_t n) {
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((n >> (8 * i)) & 0xff);
}

/// A header and data buffer with the tensors laid out back to back in the order given.
struct Layout {
  json header = json::object();
  std::string data;

  explicit Layout(const std::vector<Tensor>& tensors) {
    for (const Tensor& t : tensors) {
      header[t.name] = {{"dtype", t.dtype},
                        {"shape", t.shape},
                        {"data_offsets", {data.size(), data.size() + t.bytes.size()}}};
      data += t.bytes;
    }
  }
  std::string bytes() const { return raw_file(header.dump(), data); }
};

/// Two small tensors: "w" F32 [2, 3] (24 bytes) then "b" F16 [3] (6 bytes).
Layout small_layout() {
  return Layout({{"w", "F32", {2, 3}, pattern(24, 1)}, {"b", "F16", {3}, pattern(6, 2)}});
}

std::string write_model(const std::string& bytes) {
  std::string path = temp_dir() + "/model.safetensors";
  write_file(path, bytes);
  return path;
}

/// Opens `bytes` as a safetensors file and returns the FormatError's message; records a test
/// failure (and returns "") if the file opens or anything else is thrown.
std::string format_error_of(const std::string& bytes) {
  std::string path = write_model(bytes);
  try {
    SafetensorsFile file(path);
  } catch (const FormatError& e) {
    std::string msg = e.what();
    EXPECT_HAS(msg, path);  // every message names the file
    return msg;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected FormatError, got: " << e.what();
    return "";
  }
  ADD_FAILURE() << "expected FormatError, but the file opened";
  return "";
}

std::string format_error_of(const Layout& layout) {
  return format_error_of(layout.bytes());
}

template <class E>
std::string open_dir_error(const std::string& dir) {
  try {
    SafetensorsModel::open_dir(dir);
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "wrong exception type: " << e.what();
    return "";
  }
  ADD_FAILURE() << "open_dir succeeded unexpectedly";
  return "";
}

std::string bytes_of(const TensorInfo& t) {
  return std::string(reinterpret_cast<const char*>(t.data), t.nbytes);
}

// --- dtypes ----------------------------------------------------------------------------------

TEST(SafetensorsDType, NamesAndSizes) {
  struct Case {
    DType dtype;
    const char* name;
    int size;
  };
  const Case cases[] = {{DType::kF32, "F32", 4},   {DType::kF16, "F16", 2},    {DType::kBF16, "BF16", 2},
                        {DType::kF64, "F64", 8},   {DType::kI64, "I64", 8},    {DType::kI32, "I32", 4},
                        {DType::kI16, "I16", 2},   {DType::kI8, "I8", 1},      {DType::kU8, "U8", 1},
                        {DType::kBool, "BOOL", 1}, {DType::kOther, "other", 0}};
  for (const Case& c : cases) {
    EXPECT_STREQ(dtype_name(c.dtype), c.name);
    EXPECT_EQ(dtype_size(c.dtype), c.size) << c.name;
  }
}

// --- valid files ------------------------------------------------------------------------------

TEST(SafetensorsFile, LoadsF32F16BF16) {
  Layout layout({{"a.f32", "F32", {2, 3}, pattern(24, 1)},
                 {"b.f16", "F16", {4}, pattern(8, 2)},
                 {"c.bf16", "BF16", {2, 1, 2}, pattern(8, 3)},
                 {"d.scalar", "F32", {}, pattern(4, 4)},
                 {"e.empty", "BF16", {0, 5}, ""}});
  layout.header["__metadata__"] = {{"format", "pt"}};
  std::string path = write_model(layout.bytes());

  SafetensorsFile file(path);
  EXPECT_EQ(file.path(), path);
  ASSERT_EQ(file.tensors().size(), 5u);  // __metadata__ is not a tensor
  EXPECT_EQ(file.find("__metadata__"), nullptr);
  EXPECT_EQ(file.find("nope"), nullptr);

  const TensorInfo* a = file.find("a.f32");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->name, "a.f32");
  EXPECT_EQ(a->dtype, DType::kF32);
  EXPECT_EQ(a->dtype_str, "F32");
  EXPECT_EQ(a->shape, (std::vector<std::int64_t>{2, 3}));
  EXPECT_EQ(a->numel(), 6);
  EXPECT_EQ(a->nbytes, 24u);
  EXPECT_EQ(a->file, path);
  EXPECT_EQ(bytes_of(*a), pattern(24, 1));

  const TensorInfo* b = file.find("b.f16");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->dtype, DType::kF16);
  EXPECT_EQ(b->shape, (std::vector<std::int64_t>{4}));
  EXPECT_EQ(b->nbytes, 8u);
  EXPECT_EQ(bytes_of(*b), pattern(8, 2));

  const TensorInfo* c = file.find("c.bf16");
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(c->dtype, DType::kBF16);
  EXPECT_EQ(c->dtype_str, "BF16");
  EXPECT_EQ(c->shape, (std::vector<std::int64_t>{2, 1, 2}));
  EXPECT_EQ(c->numel(), 4);
  EXPECT_EQ(bytes_of(*c), pattern(8, 3));

  const TensorInfo* d = file.find("d.scalar");
  ASSERT_NE(d, nullptr);
  EXPECT_TRUE(d->shape.empty());
  EXPECT_EQ(d->numel(), 1);
  EXPECT_EQ(bytes_of(*d), pattern(4, 4));

  const TensorInfo* e = file.find("e.empty");
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->numel(), 0);
  EXPECT_EQ(e->nbytes, 0u);
}

TEST(SafetensorsFile, DataPointsAtHeaderEndPlusOffset) {
  Layout layout = small_layout();
  std::string header = layout.header.dump();
  std::string path = write_model(raw_file(header, layout.data));
  SafetensorsFile file(path);
  const TensorInfo* w = file.find("w");
  const TensorInfo* b = file.find("b");
  ASSERT_NE(w, nullptr);
  ASSERT_NE(b, nullptr);
  // "w" starts the data buffer, "b" follows it directly.
  EXPECT_EQ(b->data - w->data, 24);
  EXPECT_EQ(std::memcmp(w->data - header.size(), header.data(), header.size()), 0);
}

TEST(SafetensorsFile, AcceptsPaddedHeaderAndTrailingBytes) {
  Layout layout = small_layout();
  std::string header = layout.header.dump() + std::string(5, ' ');  // writers pad to 8 bytes
  SafetensorsFile file(write_model(raw_file(header, layout.data + "tail")));
  ASSERT_NE(file.find("b"), nullptr);
  EXPECT_EQ(bytes_of(*file.find("b")), pattern(6, 2));
}

TEST(SafetensorsFile, F8IsRecordedAsOtherWithOneBytePerElement) {
  Layout layout({{"q", "F8_E4M3", {3, 4}, pattern(12, 5)}, {"r", "F8_E5M2", {2}, pattern(2, 6)}});
  SafetensorsFile file(write_model(layout.bytes()));
  const TensorInfo* q = file.find("q");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->dtype, DType::kOther);
  EXPECT_EQ(q->dtype_str, "F8_E4M3");
  EXPECT_EQ(q->nbytes, 12u);
  EXPECT_EQ(bytes_of(*q), pattern(12, 5));
  ASSERT_NE(file.find("r"), nullptr);
  EXPECT_EQ(file.find("r")->dtype_str, "F8_E5M2");
}

TEST(SafetensorsFile, AllSizedDTypesLoad) {
  Layout layout({{"f64", "F64", {2}, pattern(16, 1)},
                 {"i64", "I64", {1}, pattern(8, 2)},
                 {"i32", "I32", {3}, pattern(12, 3)},
                 {"i16", "I16", {2}, pattern(4, 4)},
                 {"i8", "I8", {5}, pattern(5, 5)},
                 {"u8", "U8", {5}, pattern(5, 6)},
                 {"bool", "BOOL", {3}, pattern(3, 7)}});
  SafetensorsFile file(write_model(layout.bytes()));
  const std::pair<const char*, DType> expected[] = {
      {"f64", DType::kF64}, {"i64", DType::kI64}, {"i32", DType::kI32},  {"i16", DType::kI16},
      {"i8", DType::kI8},   {"u8", DType::kU8},   {"bool", DType::kBool}};
  for (const auto& [name, dtype] : expected) {
    const TensorInfo* t = file.find(name);
    ASSERT_NE(t, nullptr) << name;
    EXPECT_EQ(t->dtype, dtype) << name;
    EXPECT_EQ(static_cast<std::int64_t>(t->nbytes), t->numel() * dtype_size(dtype)) << name;
  }
}

TEST(SafetensorsFile, ZeroSizeTensorsNeverOverlap) {
  Layout layout = small_layout();
  layout.header["empty1"] = {{"dtype", "F32"}, {"shape", {0}}, {"data_offsets", {4, 4}}};  // inside "w"
  layout.header["empty2"] = {{"dtype", "F16"}, {"shape", {3, 0}}, {"data_offsets", {4, 4}}};
  SafetensorsFile file(write_model(layout.bytes()));
  EXPECT_EQ(file.tensors().size(), 4u);
}

// --- corrupt files ---------------------------------------------------------------------------

TEST(SafetensorsCorrupt, MissingFileIsIoError) {
  std::string path = temp_dir() + "/absent.safetensors";
  try {
    SafetensorsFile file(path);
    FAIL() << "opened a missing file";
  } catch (const IoError& e) {
    EXPECT_HAS(std::string(e.what()), path);
  }
}

TEST(SafetensorsCorrupt, ShorterThanLengthPrefix) {
  for (std::size_t n : {0u, 1u, 7u}) {
    SCOPED_TRACE(n);
    std::string msg = format_error_of(std::string(n, '\x01'));
    EXPECT_HAS(msg, "shorter than the 8-byte header length");
    EXPECT_HAS(msg, "truncated");
  }
}

TEST(SafetensorsCorrupt, HeaderLengthPastEndOfFile) {
  std::string bytes = small_layout().bytes();
  const std::uint64_t too_long = bytes.size() - 8 + 1;  // one byte more than the file holds
  set_header_length(bytes, too_long);
  std::string msg = format_error_of(bytes);
  EXPECT_HAS(msg, "header length " + std::to_string(too_long) + " is past the end of the file (" +
                      std::to_string(bytes.size()) + " bytes)");
  EXPECT_HAS(msg, "truncated");
}

TEST(SafetensorsCorrupt, HeaderLengthNearUint64MaxDoesNotWrap) {
  std::string bytes = small_layout().bytes();
  set_header_length(bytes, ~std::uint64_t{0});
  EXPECT_HAS(format_error_of(bytes), "header length 18446744073709551615 is past the end");
}

TEST(SafetensorsCorrupt, HeaderNotJson) {
  EXPECT_HAS(format_error_of(raw_file("{\"w\": {\"dtype\": ", pattern(24, 1))), "header is not valid JSON");
  EXPECT_HAS(format_error_of(raw_file("")), "header is not valid JSON");
  EXPECT_HAS(format_error_of(raw_file("{} {}")), "header is not valid JSON");
  EXPECT_HAS(format_error_of(raw_file("   ")), "header is not valid JSON");
}

TEST(SafetensorsCorrupt, HeaderWithNulInsideJson) {
  EXPECT_HAS(format_error_of(raw_file(std::string("{}\0x", 4))), "header has a NUL byte at offset 10");
  EXPECT_HAS(format_error_of(raw_file(std::string("{\0}", 3))), "header has a NUL byte at offset 9");
  // Trailing NUL padding is tolerated, like trailing spaces.
  EXPECT_NO_THROW(SafetensorsFile{write_model(raw_file(std::string("{} \0\0", 5)))});
}

TEST(SafetensorsCorrupt, HeaderNotAnObject) {
  EXPECT_HAS(format_error_of(raw_file("[1, 2, 3]")), "header is a JSON array, not a JSON object");
  EXPECT_HAS(format_error_of(raw_file("\"w\"")), "not a JSON object");
}

TEST(SafetensorsCorrupt, EntryNotAnObject) {
  Layout layout = small_layout();
  layout.header["w"] = json::array({1, 2});
  EXPECT_HAS(format_error_of(layout), "tensor 'w': entry is a JSON array, not an object");
}

TEST(SafetensorsCorrupt, MissingFields) {
  for (const char* field : {"dtype", "shape", "data_offsets"}) {
    SCOPED_TRACE(field);
    Layout layout = small_layout();
    layout.header["b"].erase(field);
    std::string msg = format_error_of(layout);
    EXPECT_HAS(msg, std::string("tensor 'b': missing field '") + field + "'");
    EXPECT_HAS(msg, "corrupt");
  }
}

TEST(SafetensorsCorrupt, FieldsOfWrongJsonType) {
  struct Case {
    const char* field;
    json value;
    const char* expect;
  };
  const Case cases[] = {
      {"dtype", 32, "'dtype' is a JSON number, not a string"},
      {"shape", "2x3", "'shape' is a JSON string, not an array"},
      {"shape", json::array({2.0, 3}), "not a non-negative integer"},
      {"shape", json::array({"2", 3}), "not a non-negative integer"},
      {"data_offsets", json::array({0}), "not a [begin, end] pair"},
      {"data_offsets", json::array({0, 24, 48}), "not a [begin, end] pair"},
      {"data_offsets", json::object({{"begin", 0}}), "not a [begin, end] pair"},
      {"data_offsets", json::array({0, "24"}), "are not non-negative integers"},
      {"data_offsets", json::array({-8, 16}), "are not non-negative integers"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(std::string(c.field) + " = " + c.value.dump());
    Layout layout = small_layout();
    layout.header["w"][c.field] = c.value;
    std::string msg = format_error_of(layout);
    EXPECT_HAS(msg, "tensor 'w'");
    EXPECT_HAS(msg, c.expect);
  }
}

TEST(SafetensorsCorrupt, NegativeShape) {
  Layout layout = small_layout();
  layout.header["w"]["shape"] = {-2, -3};  // product still 6
  EXPECT_HAS(format_error_of(layout), "has an entry -2 that is not a non-negative integer");
}

TEST(SafetensorsCorrupt, OffsetsPastEndOfData) {
  Layout layout = small_layout();
  layout.header["b"]["data_offsets"] = {26, 32};  // data buffer is 30 bytes
  EXPECT_HAS(format_error_of(layout), "data_offsets [26, 32] run past the end of the data buffer (30 bytes)");
}

TEST(SafetensorsCorrupt, DataBufferTruncated) {
  Layout layout = small_layout();
  layout.data.resize(layout.data.size() - 1);
  EXPECT_HAS(format_error_of(layout),
             "tensor 'b': data_offsets [24, 30] run past the end of the data buffer");
}

TEST(SafetensorsCorrupt, BeginAfterEnd) {
  Layout layout = small_layout();
  layout.header["w"]["data_offsets"] = {24, 0};
  EXPECT_HAS(format_error_of(layout), "data_offsets begin 24 is after end 0");
}

TEST(SafetensorsCorrupt, SizeMismatchBetweenShapeAndOffsets) {
  Layout layout = small_layout();
  layout.header["w"]["shape"] = {2, 2};  // 16 bytes, offsets span 24
  EXPECT_HAS(format_error_of(layout), "shape [2, 2] of F32 needs 16 bytes but data_offsets [0, 24] span 24");

  Layout wrong_dtype = small_layout();
  wrong_dtype.header["w"]["dtype"] = "BF16";  // 12 bytes, offsets span 24
  EXPECT_HAS(format_error_of(wrong_dtype), "needs 12 bytes");
}

TEST(SafetensorsCorrupt, OverlappingTensors) {
  Layout layout = small_layout();
  layout.header["b"]["data_offsets"] = {20, 26};  // last 4 bytes of "w"
  EXPECT_HAS(format_error_of(layout), "tensors 'w' (bytes 0..24) and 'b' (bytes 20..26) overlap");

  Layout same = small_layout();
  same.header["c"] = same.header["w"];  // identical range
  EXPECT_HAS(format_error_of(same), "overlap");
}

TEST(SafetensorsCorrupt, UnknownDType) {
  for (const char* dtype : {"Q4_0", "f32", "", "U64"}) {
    SCOPED_TRACE(dtype);
    Layout layout = small_layout();
    layout.header["w"]["dtype"] = dtype;
    std::string msg = format_error_of(layout);
    EXPECT_HAS(msg, std::string("unknown dtype '") + dtype + "'");
    EXPECT_HAS(msg, "BF16");  // lists what is known
  }
}

TEST(SafetensorsCorrupt, ShapeOverflowing64Bits) {
  Layout numel = small_layout();
  numel.header["w"]["shape"] = {std::int64_t{1} << 32, std::int64_t{1} << 32, 16};  // 2^68 elements
  EXPECT_HAS(format_error_of(numel), "overflows 64 bits");

  Layout bytes = small_layout();
  bytes.header["w"]["shape"] = {std::int64_t{1} << 62};  // fits, but x4 bytes does not
  EXPECT_HAS(format_error_of(bytes), "shape [4611686018427387904] overflows 64 bits");

  Layout too_big = small_layout();
  too_big.header["w"]["shape"] = {std::uint64_t{1} << 63};  // not a signed 64-bit dimension
  EXPECT_HAS(format_error_of(too_big), "not a non-negative integer");
}

TEST(SafetensorsCorrupt, DuplicateTensorName) {
  Layout layout = small_layout();
  std::string header = layout.header.dump();
  header.pop_back();  // drop the closing brace, then repeat "w" pointing at b's bytes
  header += R"(,"w":{"dtype":"F16","shape":[3],"data_offsets":[24,30]}})";
  EXPECT_HAS(format_error_of(raw_file(header, layout.data)), "key 'w' appears twice");
}

TEST(SafetensorsCorrupt, EveryTruncationThrows) {
  const std::string full = small_layout().bytes();
  ASSERT_NO_THROW(SafetensorsFile{write_model(full)});
  for (std::size_t n = 0; n < full.size(); ++n) {
    SCOPED_TRACE("truncated to " + std::to_string(n) + " of " + std::to_string(full.size()) + " bytes");
    std::string path = write_model(full.substr(0, n));
    try {
      SafetensorsFile file(path);
      ADD_FAILURE() << "truncated file opened";
    } catch (const Error& e) {
      EXPECT_TRUE(e.kind() == ErrorKind::kFormat || e.kind() == ErrorKind::kIo) << e.what();
      EXPECT_HAS(std::string(e.what()), path);
    } catch (const std::exception& e) {
      ADD_FAILURE() << "untyped exception: " << e.what();
    }
  }
}

// Every single-byte change either still opens (and is then self-consistent) or throws
// FormatError: never a crash, an out-of-range pointer or a stray exception type.
TEST(SafetensorsCorrupt, ByteFlipsNeverEscapeValidation) {
  const std::string full = small_layout().bytes();
  const std::string dir = temp_dir();
  int opened = 0;
  int rejected = 0;
  for (std::size_t pos = 0; pos < full.size(); ++pos) {
    for (char value : {'\0', '\xff', '9', '"', '-', '['}) {
      std::string bytes = full;
      if (bytes[pos] == value) continue;
      bytes[pos] = value;
      std::string path = dir + "/flip.safetensors";
      write_file(path, bytes);
      try {
        SafetensorsFile file(path);
        ++opened;
        std::size_t total = 0;
        for (const auto& [name, t] : file.tensors()) {
          if (t.dtype != DType::kOther) {
            EXPECT_EQ(static_cast<std::int64_t>(t.nbytes), t.numel() * dtype_size(t.dtype)) << name;
          }
          total += t.nbytes;
        }
        EXPECT_LE(total, bytes.size());
      } catch (const FormatError&) {
        ++rejected;
      } catch (const std::exception& e) {
        ADD_FAILURE() << "byte " << pos << " = " << int(value) << ": untyped exception: " << e.what();
      }
    }
  }
  EXPECT_GT(rejected, 0);
  EXPECT_GT(opened, 0);  // flips inside the data buffer are harmless
}

// --- model directories -----------------------------------------------------------------------

TEST(SafetensorsModel, SingleFileDirectory) {
  std::string dir = temp_dir();
  Layout layout = small_layout();
  write_file(dir + "/model.safetensors", layout.bytes());

  SafetensorsModel model = SafetensorsModel::open_dir(dir);
  EXPECT_EQ(model.names(), (std::vector<std::string>{"b", "w"}));
  EXPECT_EQ(model.total_bytes(), 30);
  EXPECT_EQ(model.get("w").shape, (std::vector<std::int64_t>{2, 3}));
  EXPECT_EQ(bytes_of(model.get("b")), pattern(6, 2));
  EXPECT_EQ(model.find("x"), nullptr);
  EXPECT_EQ(model.find("w"), &model.get("w"));
}

TEST(SafetensorsModel, GetMissingTensorThrowsFormatError) {
  std::string dir = temp_dir();
  write_file(dir + "/model.safetensors", small_layout().bytes());
  SafetensorsModel model = SafetensorsModel::open_dir(dir);
  try {
    model.get("lm_head.weight");
    FAIL() << "get() of a missing tensor returned";
  } catch (const FormatError& e) {
    std::string msg = e.what();
    EXPECT_HAS(msg, "missing tensor 'lm_head.weight'");
    EXPECT_HAS(msg, dir);
  }
}

/// Writes a two-shard model: shard 1 holds "a" and "b", shard 2 holds "c" (+ `extra2`).
struct ShardedDir {
  std::string dir = temp_dir();
  const std::string shard1 = "model-00001-of-00002.safetensors";
  const std::string shard2 = "model-00002-of-00002.safetensors";
  json weight_map = {{"a", shard1}, {"b", shard1}, {"c", shard2}};

  void write(const std::vector<Tensor>& extra2 = {}) const {
    write_file(dir + "/" + shard1,
               Layout({{"a", "F32", {2, 2}, pattern(16, 1)}, {"b", "BF16", {3}, pattern(6, 2)}}).bytes());
    std::vector<Tensor> t2 = {{"c", "F16", {2, 3}, pattern(12, 3)}};
    t2.insert(t2.end(), extra2.begin(), extra2.end());
    write_file(dir + "/" + shard2, Layout(t2).bytes());
    write_index(json{{"metadata", {{"total_size", 34}}}, {"weight_map", weight_map}}.dump());
  }
  void write_index(const std::string& text) const { write_file(dir + "/model.safetensors.index.json", text); }
};

TEST(SafetensorsModel, ShardedDirectoryWithIndex) {
  ShardedDir sharded;
  sharded.write();
  // A stray single file beside the index must be ignored: the index wins.
  write_file(sharded.dir + "/model.safetensors", Layout({{"stray", "F32", {1}, pattern(4, 9)}}).bytes());

  SafetensorsModel model = SafetensorsModel::open_dir(sharded.dir);
  EXPECT_EQ(model.names(), (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_EQ(model.total_bytes(), 16 + 6 + 12);
  EXPECT_EQ(model.get("a").file, sharded.dir + "/" + sharded.shard1);
  EXPECT_EQ(model.get("c").file, sharded.dir + "/" + sharded.shard2);
  EXPECT_EQ(model.get("b").dtype, DType::kBF16);
  EXPECT_EQ(model.get("c").shape, (std::vector<std::int64_t>{2, 3}));
  EXPECT_EQ(bytes_of(model.get("a")), pattern(16, 1));
  EXPECT_EQ(bytes_of(model.get("b")), pattern(6, 2));
  EXPECT_EQ(bytes_of(model.get("c")), pattern(12, 3));
  EXPECT_EQ(model.find("stray"), nullptr);
}

TEST(SafetensorsModel, ModelSurvivesMove) {
  ShardedDir sharded;
  sharded.write();
  SafetensorsModel moved = SafetensorsModel::open_dir(sharded.dir);
  SafetensorsModel model = std::move(moved);
  EXPECT_EQ(bytes_of(model.get("c")), pattern(12, 3));
}

TEST(SafetensorsModel, IndexNamingMissingShard) {
  ShardedDir sharded;
  sharded.weight_map["d"] = "model-00003-of-00002.safetensors";
  sharded.write();
  std::string msg = open_dir_error<IoError>(sharded.dir);
  EXPECT_HAS(msg, "model-00003-of-00002.safetensors");
  EXPECT_HAS(msg, "model.safetensors.index.json");
}

TEST(SafetensorsModel, IndexNamingTensorAbsentFromShard) {
  ShardedDir sharded;
  sharded.weight_map["ghost"] = sharded.shard2;
  sharded.write();
  std::string msg = open_dir_error<FormatError>(sharded.dir);
  EXPECT_HAS(msg,
             "names tensor 'ghost' in shard '" + sharded.shard2 + "', but that shard has no such tensor");
}

TEST(SafetensorsModel, TensorInTwoShards) {
  ShardedDir sharded;
  sharded.write({{"a", "F32", {1}, pattern(4, 7)}});  // "a" is also in shard 1
  std::string msg = open_dir_error<FormatError>(sharded.dir);
  EXPECT_HAS(msg, "tensor 'a' appears in both");
  EXPECT_HAS(msg, sharded.shard1);
  EXPECT_HAS(msg, sharded.shard2);
}

TEST(SafetensorsModel, ShardNamesMustStayInsideTheDirectory) {
  for (const char* shard : {"../model.safetensors", "..", "sub/model.safetensors", "/etc/passwd", ""}) {
    SCOPED_TRACE(shard);
    ShardedDir sharded;
    sharded.weight_map["c"] = shard;
    sharded.write();
    std::string msg = open_dir_error<FormatError>(sharded.dir);
    EXPECT_HAS(msg, std::string("shard name '") + shard + "'");
    EXPECT_HAS(msg, "not a plain file name");
  }
}

TEST(SafetensorsModel, CorruptIndex) {
  struct Case {
    std::string text;
    const char* expect;
  };
  const Case cases[] = {
      {"{\"weight_map\": {", "not valid JSON"},
      {"[]", "not an object"},
      {"{\"metadata\": {}}", "missing 'weight_map'"},
      {"{\"weight_map\": []}", "'weight_map' is a JSON array"},
      {"{\"weight_map\": {}}", "lists no tensors"},
      {"{\"weight_map\": {\"a\": 3}}", "shard of tensor 'a' is a JSON number"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.text);
    ShardedDir sharded;
    sharded.write();
    sharded.write_index(c.text);
    std::string msg = open_dir_error<FormatError>(sharded.dir);
    EXPECT_HAS(msg, "model.safetensors.index.json");
    EXPECT_HAS(msg, c.expect);
  }
}

TEST(SafetensorsModel, CorruptShardIsReported) {
  ShardedDir sharded;
  sharded.write();
  write_file(sharded.dir + "/" + sharded.shard2, "\x02");
  std::string msg = open_dir_error<FormatError>(sharded.dir);
  EXPECT_HAS(msg, sharded.shard2);
  EXPECT_HAS(msg, "shorter than the 8-byte header length");
}

TEST(SafetensorsModel, DirectoryWithoutWeights) {
  std::string dir = temp_dir();
  write_file(dir + "/config.json", "{}");
  std::string msg = open_dir_error<IoError>(dir);
  EXPECT_HAS(msg, "no safetensors weights found in '" + dir + "'");
  EXPECT_HAS(msg, "model.safetensors");
  EXPECT_HAS(msg, "model.safetensors.index.json");
}

TEST(SafetensorsModel, MissingDirectory) {
  std::string dir = temp_dir() + "/does-not-exist";
  std::string msg = open_dir_error<IoError>(dir);
  EXPECT_HAS(msg, dir);
  EXPECT_HAS(msg, "does not exist");
}

}  // namespace
}  // namespace million
