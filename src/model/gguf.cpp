// GGUF parsing and validation (see gguf.h). Reads through ByteReader, whose every take() is
// bounds-checked; counts are additionally checked against the bytes left (each element needs at
// least its minimum encoded size) before anything is reserved, so hostile counts cannot allocate.
#include "model/gguf.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <limits>

#include "core/checked.h"
#include "million/error.h"

namespace million {

namespace {

constexpr int kMaxArrayDepth = 8;
constexpr std::uint32_t kMaxDims = 4;  // GGML_MAX_DIMS

const GgmlTypeInfo* type_table(std::uint32_t t) {
  static const GgmlTypeInfo kF32{"F32", 1, 4}, kF16{"F16", 1, 2}, kQ4_0{"Q4_0", 32, 18}, kQ4_1{"Q4_1", 32, 20},
      kQ5_0{"Q5_0", 32, 22}, kQ5_1{"Q5_1", 32, 24}, kQ8_0{"Q8_0", 32, 34}, kQ8_1{"Q8_1", 32, 36},
      kQ2_K{"Q2_K", 256, 84}, kQ3_K{"Q3_K", 256, 110}, kQ4_K{"Q4_K", 256, 144}, kQ5_K{"Q5_K", 256, 176},
      kQ6_K{"Q6_K", 256, 210}, kQ8_K{"Q8_K", 256, 292}, kIQ2_XXS{"IQ2_XXS", 256, 66}, kIQ2_XS{"IQ2_XS", 256, 74},
      kIQ3_XXS{"IQ3_XXS", 256, 98}, kIQ1_S{"IQ1_S", 256, 50}, kIQ4_NL{"IQ4_NL", 32, 18}, kIQ3_S{"IQ3_S", 256, 110},
      kIQ2_S{"IQ2_S", 256, 82}, kIQ4_XS{"IQ4_XS", 256, 136}, kI8{"I8", 1, 1}, kI16{"I16", 1, 2}, kI32{"I32", 1, 4},
      kI64{"I64", 1, 8}, kF64{"F64", 1, 8}, kIQ1_M{"IQ1_M", 256, 56}, kBF16{"BF16", 1, 2},
      kTQ1_0{"TQ1_0", 256, 54}, kTQ2_0{"TQ2_0", 256, 66};
  switch (t) {
    case 0: return &kF32;
    case 1: return &kF16;
    case 2: return &kQ4_0;
    case 3: return &kQ4_1;
    case 6: return &kQ5_0;
    case 7: return &kQ5_1;
    case 8: return &kQ8_0;
    case 9: return &kQ8_1;
    case 10: return &kQ2_K;
    case 11: return &kQ3_K;
    case 12: return &kQ4_K;
    case 13: return &kQ5_K;
    case 14: return &kQ6_K;
    case 15: return &kQ8_K;
    case 16: return &kIQ2_XXS;
    case 17: return &kIQ2_XS;
    case 18: return &kIQ3_XXS;
    case 19: return &kIQ1_S;
    case 20: return &kIQ4_NL;
    case 21: return &kIQ3_S;
    case 22: return &kIQ2_S;
    case 23: return &kIQ4_XS;
    case 24: return &kI8;
    case 25: return &kI16;
    case 26: return &kI32;
    case 27: return &kI64;
    case 28: return &kF64;
    case 29: return &kIQ1_M;
    case 30: return &kBF16;
    case 34: return &kTQ1_0;
    case 35: return &kTQ2_0;
    default: return nullptr;
  }
}

/// Encoded size of a scalar type; 0 for string/array (variable).
std::size_t scalar_size(GgufType t) {
  switch (t) {
    case GgufType::kUint8: case GgufType::kInt8: case GgufType::kBool: return 1;
    case GgufType::kUint16: case GgufType::kInt16: return 2;
    case GgufType::kUint32: case GgufType::kInt32: case GgufType::kFloat32: return 4;
    case GgufType::kUint64: case GgufType::kInt64: case GgufType::kFloat64: return 8;
    case GgufType::kString: case GgufType::kArray: return 0;
  }
  return 0;
}

/// Smallest number of bytes one element of type t can take (string: its length; array: type + count).
std::size_t min_encoded_size(GgufType t) {
  if (t == GgufType::kString) return 8;
  if (t == GgufType::kArray) return 12;
  return scalar_size(t);
}

class Parser {
 public:
  Parser(const std::uint8_t* data, std::size_t size, const std::string& path) : r_(data, size, path), path_(path) {}

  ByteReader& reader() { return r_; }

  [[noreturn]] void fail(const std::string& what) const { throw FormatError(fmt::format("{}: {}", path_, what)); }

  std::uint64_t u64(const std::string& field) { return r_.read<std::uint64_t>(field); }
  std::uint32_t u32(const std::string& field) { return r_.read<std::uint32_t>(field); }

  std::string string(const std::string& field) {
    const std::uint64_t n = u64(field + " length");
    if (n > r_.remaining()) {
      fail(fmt::format("{} has length {} but only {} bytes are left in the file", field, n, r_.remaining()));
    }
    const std::uint8_t* p = r_.take(static_cast<std::size_t>(n), field);
    return std::string(reinterpret_cast<const char*>(p), static_cast<std::size_t>(n));
  }

  GgufType type(const std::string& field) {
    const std::uint32_t t = u32(field);
    if (t > static_cast<std::uint32_t>(GgufType::kFloat64)) fail(fmt::format("{} is {}, not a GGUF value type", field, t));
    return static_cast<GgufType>(t);
  }

  GgufValue value(GgufType t, const std::string& field, int depth) {
    GgufValue v;
    v.type = t;
    switch (t) {
      case GgufType::kUint8: v.u = r_.read<std::uint8_t>(field); break;
      case GgufType::kInt8: v.i = r_.read<std::int8_t>(field); break;
      case GgufType::kUint16: v.u = r_.read<std::uint16_t>(field); break;
      case GgufType::kInt16: v.i = r_.read<std::int16_t>(field); break;
      case GgufType::kUint32: v.u = r_.read<std::uint32_t>(field); break;
      case GgufType::kInt32: v.i = r_.read<std::int32_t>(field); break;
      case GgufType::kUint64: v.u = r_.read<std::uint64_t>(field); break;
      case GgufType::kInt64: v.i = r_.read<std::int64_t>(field); break;
      case GgufType::kFloat32: v.f = r_.read<float>(field); break;
      case GgufType::kFloat64: v.f = r_.read<double>(field); break;
      case GgufType::kBool: {
        const std::uint8_t b = r_.read<std::uint8_t>(field);
        if (b > 1) fail(fmt::format("{} is a bool with byte value {}", field, b));
        v.i = b;
        break;
      }
      case GgufType::kString: v.s = string(field); break;
      case GgufType::kArray: v.array = array(field, depth + 1); break;
    }
    return v;
  }

  std::shared_ptr<const GgufArray> array(const std::string& field, int depth) {
    if (depth > kMaxArrayDepth) fail(fmt::format("{} nests arrays more than {} deep", field, kMaxArrayDepth));
    auto a = std::make_shared<GgufArray>();
    a->type = type(field + " element type");
    const std::uint64_t n = u64(field + " element count");
    const std::size_t min = min_encoded_size(a->type);
    if (n > r_.remaining() / min) {
      fail(fmt::format("{} claims {} elements of type {} but only {} bytes are left in the file", field, n,
                       gguf_type_name(a->type), r_.remaining()));
    }
    const auto count = static_cast<std::size_t>(n);
    switch (a->type) {
      case GgufType::kString:
        a->strings.reserve(count);
        for (std::size_t k = 0; k < count; ++k) a->strings.push_back(string(field));
        break;
      case GgufType::kArray:
        a->arrays.reserve(count);
        for (std::size_t k = 0; k < count; ++k) a->arrays.push_back(value(GgufType::kArray, field, depth));
        break;
      case GgufType::kFloat32: case GgufType::kFloat64:
        a->floats.reserve(count);
        for (std::size_t k = 0; k < count; ++k) a->floats.push_back(value(a->type, field, depth).f);
        break;
      case GgufType::kUint8: case GgufType::kUint16: case GgufType::kUint32: case GgufType::kUint64:
        a->uints.reserve(count);
        for (std::size_t k = 0; k < count; ++k) a->uints.push_back(value(a->type, field, depth).u);
        break;
      default:
        a->ints.reserve(count);
        for (std::size_t k = 0; k < count; ++k) a->ints.push_back(value(a->type, field, depth).i);
        break;
    }
    return a;
  }

 private:
  ByteReader r_;
  std::string path_;
};

}  // namespace

const char* gguf_type_name(GgufType type) {
  switch (type) {
    case GgufType::kUint8: return "uint8";
    case GgufType::kInt8: return "int8";
    case GgufType::kUint16: return "uint16";
    case GgufType::kInt16: return "int16";
    case GgufType::kUint32: return "uint32";
    case GgufType::kInt32: return "int32";
    case GgufType::kFloat32: return "float32";
    case GgufType::kBool: return "bool";
    case GgufType::kString: return "string";
    case GgufType::kArray: return "array";
    case GgufType::kUint64: return "uint64";
    case GgufType::kInt64: return "int64";
    case GgufType::kFloat64: return "float64";
  }
  return "?";
}

bool GgufValue::is_integer() const {
  return type != GgufType::kFloat32 && type != GgufType::kFloat64 && type != GgufType::kString &&
         type != GgufType::kArray;
}

std::optional<std::int64_t> GgufValue::as_int() const {
  if (!is_integer()) return std::nullopt;
  switch (type) {
    case GgufType::kUint8: case GgufType::kUint16: case GgufType::kUint32: case GgufType::kUint64:
      if (u > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) return std::nullopt;
      return static_cast<std::int64_t>(u);
    default: return i;
  }
}

std::size_t GgufArray::size() const {
  return ints.size() + uints.size() + floats.size() + strings.size() + arrays.size();
}

const GgmlTypeInfo* ggml_type_info(std::uint32_t type) { return type_table(type); }

std::string ggml_type_name(GgmlType type) {
  const GgmlTypeInfo* info = type_table(static_cast<std::uint32_t>(type));
  return info ? info->name : fmt::format("type {}", static_cast<std::uint32_t>(type));
}

std::string GgufTensorInfo::dims_str() const {
  std::string out = "[";
  for (std::size_t k = 0; k < dims.size(); ++k) out += (k ? ", " : "") + std::to_string(dims[k]);
  return out + "]";
}

GgufFile::GgufFile(const std::string& path) : file_(path, "GGUF file") {
  Parser p(file_.data(), file_.size(), path);
  ByteReader& r = p.reader();
  const std::uint8_t* magic = r.take(4, "magic");
  if (std::memcmp(magic, "GGUF", 4) != 0) p.fail("not a GGUF file (the first four bytes are not 'GGUF')");
  version_ = p.u32("version");
  if (version_ == 0x02000000u || version_ == 0x03000000u) p.fail("big-endian GGUF files are not supported");
  if (version_ == 1) p.fail("GGUF version 1 is not supported (re-convert the model: versions 2 and 3 are)");
  if (version_ != 2 && version_ != 3) p.fail(fmt::format("unknown GGUF version {} (supported: 2, 3)", version_));
  const std::uint64_t n_tensors = p.u64("tensor count");
  const std::uint64_t n_kv = p.u64("metadata key/value count");
  // A key/value takes at least 8 (key length) + 4 (type) + 1 bytes; a tensor info 8 + 4 + 4 + 8.
  if (n_kv > r.remaining() / 13) {
    p.fail(fmt::format("header claims {} metadata key/values but only {} bytes are left", n_kv, r.remaining()));
  }
  for (std::uint64_t k = 0; k < n_kv; ++k) {
    const std::string field = fmt::format("metadata key/value #{}", k);
    std::string key = p.string(field + " key");
    const std::string vfield = fmt::format("metadata '{}'", key);
    const GgufType t = p.type(vfield + " type");
    GgufValue v = p.value(t, vfield, 0);
    if (!kv_.emplace(key, std::move(v)).second) p.fail(fmt::format("metadata key '{}' appears twice", key));
  }
  if (const GgufValue* a = find("general.alignment")) {
    const auto n = a->as_int();
    if (!n || *n <= 0 || (*n & (*n - 1)) != 0 || *n > (1 << 20)) {
      p.fail("general.alignment must be a power of two integer (at most 1 MiB)");
    }
    alignment_ = static_cast<std::uint64_t>(*n);
  }

  if (n_tensors > r.remaining() / 24) {
    p.fail(fmt::format("header claims {} tensors but only {} bytes are left", n_tensors, r.remaining()));
  }
  tensors_.reserve(static_cast<std::size_t>(n_tensors));
  for (std::uint64_t k = 0; k < n_tensors; ++k) {
    GgufTensorInfo t;
    t.name = p.string(fmt::format("tensor info #{} name", k));
    const std::string field = fmt::format("tensor '{}'", t.name);
    const std::uint32_t n_dims = p.u32(field + " dimension count");
    if (n_dims == 0 || n_dims > kMaxDims) p.fail(fmt::format("{} has {} dimensions (1..{} allowed)", field, n_dims, kMaxDims));
    t.numel = 1;
    for (std::uint32_t d = 0; d < n_dims; ++d) {
      const std::uint64_t n = p.u64(field + " dimension");
      if (n == 0 || n > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
        p.fail(fmt::format("{} has dimension {} = {}", field, d, n));
      }
      t.dims.push_back(static_cast<std::int64_t>(n));
      t.numel = checked_mul(t.numel, t.dims.back(), path + ": " + field + " element count");
    }
    const std::uint32_t type = p.u32(field + " type");
    const GgmlTypeInfo* info = type_table(type);
    if (info == nullptr) p.fail(fmt::format("{} has unknown ggml type {}", field, type));
    t.type = static_cast<GgmlType>(type);
    if (t.dims[0] % info->block_size != 0) {
      p.fail(fmt::format("{} of type {} has row length {}, not a multiple of its block size {}", field, info->name,
                         t.dims[0], info->block_size));
    }
    t.nbytes = static_cast<std::size_t>(checked_mul(t.numel / info->block_size, info->type_size, path + ": " + field + " size"));
    t.offset = p.u64(field + " data offset");
    if (!tensor_index_.emplace(t.name, tensors_.size()).second) p.fail(fmt::format("tensor '{}' appears twice", t.name));
    tensors_.push_back(std::move(t));
  }

  // The data section starts at the next multiple of the alignment after the header.
  const std::uint64_t header_end = r.offset();
  const std::uint64_t data_start = (header_end + alignment_ - 1) / alignment_ * alignment_;
  const std::uint64_t size = file_.size();
  if (!tensors_.empty() && data_start > size) {
    p.fail(fmt::format("the tensor data section would start at offset {} but the file has {} bytes", data_start, size));
  }
  const std::uint64_t data_size = data_start > size ? 0 : size - data_start;
  for (GgufTensorInfo& t : tensors_) {
    if (t.offset % alignment_ != 0) {
      p.fail(fmt::format("tensor '{}' data offset {} is not a multiple of the alignment {}", t.name, t.offset, alignment_));
    }
    if (t.offset > data_size || t.nbytes > data_size - t.offset) {
      p.fail(fmt::format("tensor '{}' ({} {}, {} bytes at data offset {}) extends past the end of the file (data "
                         "section has {} bytes); the file is truncated",
                         t.name, ggml_type_name(t.type), t.dims_str(), t.nbytes, t.offset, data_size));
    }
    t.data = file_.data() + data_start + t.offset;
  }
  std::vector<const GgufTensorInfo*> by_offset;
  for (const auto& t : tensors_) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(), [](auto* a, auto* b) { return a->offset < b->offset; });
  for (std::size_t k = 1; k < by_offset.size(); ++k) {
    const GgufTensorInfo& a = *by_offset[k - 1];
    if (a.offset + a.nbytes > by_offset[k]->offset) {
      p.fail(fmt::format("tensors '{}' and '{}' overlap in the data section", a.name, by_offset[k]->name));
    }
  }
}

const GgufValue* GgufFile::find(const std::string& key) const {
  auto it = kv_.find(key);
  return it == kv_.end() ? nullptr : &it->second;
}

namespace {
[[noreturn]] void wrong_type(const std::string& path, const std::string& key, const GgufValue& v, const char* want) {
  throw FormatError(fmt::format("{}: metadata '{}' is a {}{}, expected {}", path, key, gguf_type_name(v.type),
                                v.array ? fmt::format(" of {}", gguf_type_name(v.array->type)) : "", want));
}
[[noreturn]] void missing(const std::string& path, const std::string& key) {
  throw FormatError(fmt::format("{}: missing required metadata '{}'", path, key));
}
}  // namespace

std::optional<std::string> GgufFile::find_string(const std::string& key) const {
  const GgufValue* v = find(key);
  if (v == nullptr) return std::nullopt;
  if (v->type != GgufType::kString) wrong_type(path(), key, *v, "a string");
  return v->s;
}

std::optional<std::int64_t> GgufFile::find_int(const std::string& key) const {
  const GgufValue* v = find(key);
  if (v == nullptr) return std::nullopt;
  const auto n = v->as_int();
  if (!n) {
    if (v->is_integer()) throw FormatError(fmt::format("{}: metadata '{}' = {} is out of range", path(), key, v->u));
    wrong_type(path(), key, *v, "an integer");
  }
  return n;
}

std::optional<double> GgufFile::find_float(const std::string& key) const {
  const GgufValue* v = find(key);
  if (v == nullptr) return std::nullopt;
  if (v->type != GgufType::kFloat32 && v->type != GgufType::kFloat64) wrong_type(path(), key, *v, "a float");
  return v->f;
}

std::optional<bool> GgufFile::find_bool(const std::string& key) const {
  const GgufValue* v = find(key);
  if (v == nullptr) return std::nullopt;
  if (v->type != GgufType::kBool) wrong_type(path(), key, *v, "a bool");
  return v->i != 0;
}

std::string GgufFile::get_string(const std::string& key) const {
  auto v = find_string(key);
  if (!v) missing(path(), key);
  return *v;
}

std::int64_t GgufFile::get_int(const std::string& key) const {
  auto v = find_int(key);
  if (!v) missing(path(), key);
  return *v;
}

double GgufFile::get_float(const std::string& key) const {
  auto v = find_float(key);
  if (!v) missing(path(), key);
  return *v;
}

std::vector<std::string> GgufFile::get_string_array(const std::string& key) const {
  const GgufValue* v = find(key);
  if (v == nullptr) missing(path(), key);
  if (v->type != GgufType::kArray || v->array->type != GgufType::kString) wrong_type(path(), key, *v, "an array of strings");
  return v->array->strings;
}

std::vector<std::int64_t> GgufFile::get_int_array(const std::string& key) const {
  const GgufValue* v = find(key);
  if (v == nullptr) missing(path(), key);
  if (v->type != GgufType::kArray) wrong_type(path(), key, *v, "an array of integers");
  const GgufArray& a = *v->array;
  if (!a.ints.empty() || a.size() == 0) return a.ints;
  if (a.uints.empty()) wrong_type(path(), key, *v, "an array of integers");
  std::vector<std::int64_t> out;
  out.reserve(a.uints.size());
  for (std::uint64_t u : a.uints) {
    if (u > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
      throw FormatError(fmt::format("{}: metadata '{}' has an element out of range ({})", path(), key, u));
    }
    out.push_back(static_cast<std::int64_t>(u));
  }
  return out;
}

const GgufTensorInfo* GgufFile::find_tensor(const std::string& name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

const GgufTensorInfo& GgufFile::get_tensor(const std::string& name) const {
  const GgufTensorInfo* t = find_tensor(name);
  if (t == nullptr) throw FormatError(fmt::format("{}: missing tensor '{}'", path(), name));
  return *t;
}

bool is_gguf_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char magic[4] = {};
  return in.read(magic, 4) && std::memcmp(magic, "GGUF", 4) == 0;
}

}  // namespace million
