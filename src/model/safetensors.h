// Safetensors reader: memory-maps a .safetensors file (or a sharded set described by
// model.safetensors.index.json) and validates the whole header against the file size before
// any tensor byte is touched: header length, dtypes, shapes, data offsets in range and
// consistent with shape x dtype size, no two tensors overlapping. Converting tensors to f32
// (with shape checks against what the model config implies) is in weights.cpp.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/mapped_file.h"

namespace million {

enum class DType { kF32, kF16, kBF16, kF64, kI64, kI32, kI16, kI8, kU8, kBool, kOther };

const char* dtype_name(DType dtype);
/// Bytes per element, 0 for kOther (dtypes we can describe but not size, e.g. F8 variants are
/// sized 1 and reported as kOther only if unknown).
int dtype_size(DType dtype);

struct TensorInfo {
  std::string name;
  DType dtype = DType::kOther;
  std::string dtype_str;            // as written in the header ("BF16")
  std::vector<std::int64_t> shape;  // row-major, outermost first
  const std::uint8_t* data = nullptr;  // points into the mapped file; nbytes long
  std::size_t nbytes = 0;
  std::string file;  // path of the file it lives in (for error messages)
  std::int64_t numel() const;
};

/// One mapped .safetensors file.
class SafetensorsFile {
 public:
  /// Throws IoError (missing/unreadable) or FormatError (anything inconsistent in the header).
  explicit SafetensorsFile(const std::string& path);
  const std::map<std::string, TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* find(const std::string& name) const;
  const std::string& path() const { return file_.path(); }

 private:
  MappedFile file_;
  std::map<std::string, TensorInfo> tensors_;
};

/// All tensors of a model directory: `model.safetensors`, or the shards listed in
/// `model.safetensors.index.json` (each shard opened once; every tensor the index names must
/// exist in the shard it names; a tensor present in two shards is an error).
class SafetensorsModel {
 public:
  static SafetensorsModel open_dir(const std::string& dir);
  /// Throws FormatError("missing tensor '<name>' ...") when absent.
  const TensorInfo& get(const std::string& name) const;
  const TensorInfo* find(const std::string& name) const;
  std::vector<std::string> names() const;
  std::int64_t total_bytes() const;

 private:
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const TensorInfo*> index_;
  std::string dir_;
};

}  // namespace million
