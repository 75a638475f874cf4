// A tiny GGUF writer for tests: metadata key/values (already encoded, with helpers for the
// common types) and tensors with raw bytes, laid out as llama.cpp does (header, key/values, tensor
// infos, padding to the alignment, tensor data each at an aligned offset). Fields can be
// overridden (version, counts, a tensor's offset, dims or type) to build corrupt files. Records
// nothing about validity: that is the reader's job. Not a general-purpose writer.
#pragma once

#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

namespace million::test {

namespace gguf_enc {
template <class T>
std::string le(T v) {
  std::string out(sizeof(T), '\0');
  std::memcpy(out.data(), &v, sizeof(T));
  return out;
}
inline std::string str(const std::string& s) { return le<std::uint64_t>(s.size()) + s; }
/// An array value body: element type, count, then the encoded elements.
inline std::string array(std::uint32_t elem_type, const std::vector<std::string>& encoded) {
  std::string out = le(elem_type) + le<std::uint64_t>(encoded.size());
  for (const auto& e : encoded) out += e;
  return out;
}
inline std::string str_array(const std::vector<std::string>& v) {
  std::vector<std::string> enc;
  for (const auto& s : v) enc.push_back(str(s));
  return array(8, enc);
}
inline std::string i32_array(const std::vector<std::int32_t>& v) {
  std::vector<std::string> enc;
  for (auto x : v) enc.push_back(le(x));
  return array(5, enc);
}
}  // namespace gguf_enc

struct GgufTensorSpec {
  std::string name;
  std::vector<std::uint64_t> dims;  // ggml order
  std::uint32_t type = 0;
  std::string data;
  std::optional<std::uint64_t> offset;  // override the computed data offset
};

class GgufWriter {
 public:
  std::uint32_t version = 3;
  std::uint64_t alignment = 32;
  std::optional<std::uint64_t> kv_count, tensor_count;  // override the real counts

  /// A key/value whose value is already encoded (type id + bytes).
  void kv(const std::string& key, std::uint32_t type, const std::string& value) {
    kvs_ += gguf_enc::str(key) + gguf_enc::le(type) + value;
    ++n_kv_;
  }
  void u32(const std::string& k, std::uint32_t v) { kv(k, 4, gguf_enc::le(v)); }
  void i32(const std::string& k, std::int32_t v) { kv(k, 5, gguf_enc::le(v)); }
  void f32(const std::string& k, float v) { kv(k, 6, gguf_enc::le(v)); }
  void boolean(const std::string& k, bool v) { kv(k, 7, std::string(1, v ? '\1' : '\0')); }
  void str(const std::string& k, const std::string& v) { kv(k, 8, gguf_enc::str(v)); }
  void str_array(const std::string& k, const std::vector<std::string>& v) { kv(k, 9, gguf_enc::str_array(v)); }
  void i32_array(const std::string& k, const std::vector<std::int32_t>& v) { kv(k, 9, gguf_enc::i32_array(v)); }

  void tensor(GgufTensorSpec t) { tensors_.push_back(std::move(t)); }

  /// Byte offset where the key/value section starts (after magic, version, two counts).
  static constexpr std::size_t kv_start() { return 24; }

  std::string bytes() const {
    std::string out = "GGUF" + gguf_enc::le(version) + gguf_enc::le<std::uint64_t>(tensor_count.value_or(tensors_.size())) +
                      gguf_enc::le<std::uint64_t>(kv_count.value_or(n_kv_)) + kvs_;
    std::string data;
    for (const auto& t : tensors_) {
      while (data.size() % alignment != 0) data += '\0';
      out += gguf_enc::str(t.name) + gguf_enc::le<std::uint32_t>(static_cast<std::uint32_t>(t.dims.size()));
      for (auto d : t.dims) out += gguf_enc::le(d);
      out += gguf_enc::le(t.type) + gguf_enc::le<std::uint64_t>(t.offset.value_or(data.size()));
      data += t.data;
    }
    while (out.size() % alignment != 0) out += '\0';
    return out + data;
  }

 private:
  std::string kvs_;
  std::uint64_t n_kv_ = 0;
  std::vector<GgufTensorSpec> tensors_;
};

}  // namespace million::test
