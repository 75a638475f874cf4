// GGUF reader (llama.cpp's model file format, versions 2 and 3, little-endian): memory-maps the
// file and parses the header, every metadata key/value (all scalar types, strings, arrays of any
// of them, arrays of arrays) and the tensor infos. Every count, length, dimension and offset is
// checked against the bytes that are left BEFORE it is used, so a truncated or hostile file gives
// a FormatError naming the field, never an out-of-bounds read or a huge allocation. Tensor data is
// not read here: each TensorInfo points into the mapping. Mapping tensors onto a model and
// dequantizing them is in gguf_model.h / gguf_weights.cpp; the block formats in gguf_quant.h.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/mapped_file.h"

namespace million {

/// Metadata value types as numbered in the file.
enum class GgufType : std::uint32_t {
  kUint8 = 0, kInt8 = 1, kUint16 = 2, kInt16 = 3, kUint32 = 4, kInt32 = 5, kFloat32 = 6, kBool = 7,
  kString = 8, kArray = 9, kUint64 = 10, kInt64 = 11, kFloat64 = 12,
};
const char* gguf_type_name(GgufType type);

struct GgufArray;

/// One metadata value. Integers and bools are held in `i` (signed types, bool) or `u` (unsigned
/// types), floats in `f`, strings in `s`, arrays in `array`.
struct GgufValue {
  GgufType type = GgufType::kUint8;
  std::int64_t i = 0;
  std::uint64_t u = 0;
  double f = 0.0;
  std::string s;
  std::shared_ptr<const GgufArray> array;

  bool is_integer() const;
  /// The integer value when it is an integer type (or bool) that fits int64; nullopt otherwise.
  std::optional<std::int64_t> as_int() const;
};

/// An array value: `count` elements of `type`, stored by kind (only one vector is used).
struct GgufArray {
  GgufType type = GgufType::kUint8;
  std::vector<std::int64_t> ints;    ///< signed integer types and bool
  std::vector<std::uint64_t> uints;  ///< unsigned integer types
  std::vector<double> floats;        ///< float32 / float64
  std::vector<std::string> strings;  ///< string
  std::vector<GgufValue> arrays;     ///< nested arrays (each GgufValue has type kArray)
  std::size_t size() const;
};

/// ggml tensor types (the numbers stored in tensor infos). Only some can be loaded as weights
/// (gguf_quant.h); the others are known so their sizes can be validated and named in errors.
enum class GgmlType : std::uint32_t {
  kF32 = 0, kF16 = 1, kQ4_0 = 2, kQ4_1 = 3, kQ5_0 = 6, kQ5_1 = 7, kQ8_0 = 8, kQ8_1 = 9,
  kQ2_K = 10, kQ3_K = 11, kQ4_K = 12, kQ5_K = 13, kQ6_K = 14, kQ8_K = 15, kBF16 = 30,
};

struct GgmlTypeInfo {
  const char* name;
  std::int64_t block_size;  ///< elements per block
  std::int64_t type_size;   ///< bytes per block
};
/// Facts about a ggml type id, or nullptr when the id is unknown.
const GgmlTypeInfo* ggml_type_info(std::uint32_t type);
std::string ggml_type_name(GgmlType type);

struct GgufTensorInfo {
  std::string name;
  std::vector<std::int64_t> dims;  ///< ggml order: dims[0] is the innermost (row length)
  GgmlType type = GgmlType::kF32;
  std::uint64_t offset = 0;        ///< from the start of the data section
  const std::uint8_t* data = nullptr;  ///< into the mapping; nbytes long
  std::size_t nbytes = 0;
  std::int64_t numel = 0;
  /// dims as text, ggml order: "[576, 49152]".
  std::string dims_str() const;
};

class GgufFile {
 public:
  /// Maps and validates `path`. IoError when it cannot be opened, FormatError for anything
  /// malformed (the message names the file and the field).
  explicit GgufFile(const std::string& path);

  const std::string& path() const { return file_.path(); }
  std::uint32_t version() const { return version_; }
  std::uint64_t alignment() const { return alignment_; }
  std::size_t file_size() const { return file_.size(); }

  const std::map<std::string, GgufValue>& metadata() const { return kv_; }
  const GgufValue* find(const std::string& key) const;
  /// Typed metadata getters. get_* throw FormatError when the key is missing; all throw
  /// FormatError when the value has another type (any integer type counts as integer; floats
  /// accept float32 and float64).
  std::optional<std::string> find_string(const std::string& key) const;
  std::optional<std::int64_t> find_int(const std::string& key) const;
  std::optional<double> find_float(const std::string& key) const;
  std::optional<bool> find_bool(const std::string& key) const;
  std::string get_string(const std::string& key) const;
  std::int64_t get_int(const std::string& key) const;
  double get_float(const std::string& key) const;
  /// Arrays of strings / of integers (any integer type, bool included).
  std::vector<std::string> get_string_array(const std::string& key) const;
  std::vector<std::int64_t> get_int_array(const std::string& key) const;

  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* find_tensor(const std::string& name) const;
  /// Throws FormatError("missing tensor ...") when absent.
  const GgufTensorInfo& get_tensor(const std::string& name) const;

 private:
  MappedFile file_;
  std::uint32_t version_ = 0;
  std::uint64_t alignment_ = 32;
  std::map<std::string, GgufValue> kv_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, std::size_t> tensor_index_;
};

/// True when `path` is a regular file whose first four bytes are "GGUF".
bool is_gguf_file(const std::string& path);

}  // namespace million
