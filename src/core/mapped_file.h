// Read-only memory-mapped file. Opening a missing or unreadable file throws IoError naming the
// path. Callers validate every offset against size() before reading (see ByteReader below).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace million {

class MappedFile {
 public:
  MappedFile() = default;
  /// Maps `path` read-only. `what` names the file's role in error messages ("model weights").
  explicit MappedFile(const std::string& path, std::string_view what = "file");
  ~MappedFile();
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::uint8_t* data() const { return data_; }
  std::size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  void reset();
  const std::uint8_t* data_ = nullptr;
  std::size_t size_ = 0;
  std::string path_;
};

/// Bounds-checked sequential reader over a byte range; every read past the end throws
/// FormatError("<what>: truncated ...").
class ByteReader {
 public:
  ByteReader(const std::uint8_t* data, std::size_t size, std::string what)
      : data_(data), size_(size), what_(std::move(what)) {}

  std::size_t offset() const { return offset_; }
  std::size_t remaining() const { return size_ - offset_; }
  /// Returns a pointer to the next n bytes and advances past them.
  const std::uint8_t* take(std::size_t n, std::string_view field);
  template <class T>
  T read(std::string_view field) {
    T value;
    const std::uint8_t* p = take(sizeof(T), field);
    __builtin_memcpy(&value, p, sizeof(T));
    return value;
  }

 private:
  const std::uint8_t* data_;
  std::size_t size_;
  std::size_t offset_ = 0;
  std::string what_;
};

/// Reads a whole (small) file into a string; throws IoError if it cannot.
std::string read_text_file(const std::string& path, std::string_view what = "file");

}  // namespace million
