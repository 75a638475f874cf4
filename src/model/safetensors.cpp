// Safetensors reader: maps each file, parses its JSON header and validates every entry (dtype,
// shape, offsets, sizes, overlaps) against the mapped size before handing out pointers into the
// mapping. Also resolves a model directory (single file or index + shards). It does not convert
// or copy tensor data, check alignment, or know which tensors a model needs (see weights.cpp).
#include "model/safetensors.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string_view>
#include <utility>

#include "core/checked.h"
#include "million/error.h"

namespace million {

namespace {

using nlohmann::json;

constexpr std::size_t kLengthPrefixBytes = 8;
constexpr const char* kSingleFileName = "model.safetensors";
constexpr const char* kIndexFileName = "model.safetensors.index.json";

struct DTypeEntry {
  std::string_view name;
  DType dtype;
  int size;
};

// Every dtype string we accept. F8 variants are recorded as kOther (1 byte each) so a file
// holding a few of them still opens; callers that convert tensors must refuse kOther.
constexpr DTypeEntry kDTypes[] = {
    {"F32", DType::kF32, 4},       {"F16", DType::kF16, 2},       {"BF16", DType::kBF16, 2},
    {"F64", DType::kF64, 8},       {"I64", DType::kI64, 8},       {"I32", DType::kI32, 4},
    {"I16", DType::kI16, 2},       {"I8", DType::kI8, 1},         {"U8", DType::kU8, 1},
    {"BOOL", DType::kBool, 1},     {"F8_E4M3", DType::kOther, 1}, {"F8_E5M2", DType::kOther, 1},
    {"F8_E8M0", DType::kOther, 1},
};

const DTypeEntry* find_dtype(std::string_view name) {
  for (const DTypeEntry& e : kDTypes) {
    if (e.name == name) return &e;
  }
  return nullptr;
}

std::string known_dtype_list() {
  std::string out;
  for (const DTypeEntry& e : kDTypes) {
    if (!out.empty()) out += ", ";
    out += e.name;
  }
  return out;
}

std::string shape_str(const std::vector<std::int64_t>& shape) {
  std::string out = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

// Parses `text` as JSON, rejecting duplicate keys in the top-level object (nlohmann would
// otherwise keep the last one silently). Throws json::parse_error or FormatError.
json parse_rejecting_duplicate_keys(std::string_view text, const std::string& where) {
  std::set<std::string> seen;
  auto callback = [&](int depth, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::key && depth == 1) {
      std::string key = parsed.get<std::string>();
      if (!seen.insert(key).second) {
        throw FormatError(
            fmt::format("{}: key '{}' appears twice in the header; the file is corrupt", where, key));
      }
    }
    return true;
  };
  return json::parse(text.begin(), text.end(), callback);
}

// A JSON integer in [0, INT64_MAX], or nullopt for anything else (negative, float, too big).
std::optional<std::int64_t> non_negative_int(const json& j) {
  if (j.is_number_unsigned()) {
    auto v = j.get<std::uint64_t>();
    if (v <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
      return static_cast<std::int64_t>(v);
    }
    return std::nullopt;
  }
  if (j.is_number_integer()) {
    auto v = j.get<std::int64_t>();
    if (v >= 0) return v;
  }
  return std::nullopt;
}

struct Span {
  std::int64_t begin;
  std::int64_t end;
  const std::string* name;
};

}  // namespace

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kF32: return "F32";
    case DType::kF16: return "F16";
    case DType::kBF16: return "BF16";
    case DType::kF64: return "F64";
    case DType::kI64: return "I64";
    case DType::kI32: return "I32";
    case DType::kI16: return "I16";
    case DType::kI8: return "I8";
    case DType::kU8: return "U8";
    case DType::kBool: return "BOOL";
    case DType::kOther: return "other";
  }
  return "other";
}

int dtype_size(DType dtype) {
  switch (dtype) {
    case DType::kF64:
    case DType::kI64: return 8;
    case DType::kF32:
    case DType::kI32: return 4;
    case DType::kF16:
    case DType::kBF16:
    case DType::kI16: return 2;
    case DType::kI8:
    case DType::kU8:
    case DType::kBool: return 1;
    case DType::kOther: return 0;
  }
  return 0;
}

std::int64_t TensorInfo::numel() const {
  std::int64_t n = 1;
  for (std::int64_t d : shape) n = checked_mul(n, d, "tensor element count");
  return n;
}

// ---------------------------------------------------------------------------------------------
// SafetensorsFile

SafetensorsFile::SafetensorsFile(const std::string& path) : file_(path, "safetensors file") {
  const std::size_t file_size = file_.size();
  auto corrupt = [&](const std::string& what) {
    return FormatError(
        fmt::format("{}: {}; the file is corrupt, truncated or not a safetensors file", path, what));
  };

  // 1. Header length prefix.
  if (file_size < kLengthPrefixBytes) {
    throw corrupt(fmt::format("file is {} bytes, shorter than the 8-byte header length", file_size));
  }
  std::uint64_t header_len = 0;
  for (std::size_t i = 0; i < kLengthPrefixBytes; ++i) {
    header_len |= static_cast<std::uint64_t>(file_.data()[i]) << (8 * i);
  }
  if (header_len > file_size - kLengthPrefixBytes) {
    throw corrupt(
        fmt::format("header length {} is past the end of the file ({} bytes)", header_len, file_size));
  }
  const std::size_t data_start = kLengthPrefixBytes + static_cast<std::size_t>(header_len);
  const auto data_size = static_cast<std::int64_t>(file_size - data_start);

  // 2. Header JSON.
  std::string_view header_text(reinterpret_cast<const char*>(file_.data()) + kLengthPrefixBytes,
                               static_cast<std::size_t>(header_len));
  // Writers pad the header with spaces; tolerate trailing NULs too, but no NUL inside the JSON
  // (nlohmann would silently stop parsing there).
  header_text = header_text.substr(0, header_text.find_last_not_of(std::string_view(" \0", 2)) + 1);
  if (std::size_t nul = header_text.find('\0'); nul != std::string_view::npos) {
    throw corrupt(fmt::format("header has a NUL byte at offset {}", kLengthPrefixBytes + nul));
  }
  json header;
  try {
    header = parse_rejecting_duplicate_keys(header_text, path);
  } catch (const json::exception& e) {
    throw corrupt(fmt::format("header is not valid JSON ({})", e.what()));
  }
  if (!header.is_object()) {
    throw corrupt(fmt::format("header is a JSON {}, not a JSON object", header.type_name()));
  }

  // 3. Each tensor entry, checked field by field before anything is recorded.
  std::vector<Span> spans;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") continue;
    auto bad = [&](const std::string& what) { return corrupt(fmt::format("tensor '{}': {}", name, what)); };
    if (!entry.is_object()) throw bad(fmt::format("entry is a JSON {}, not an object", entry.type_name()));
    for (const char* field : {"dtype", "shape", "data_offsets"}) {
      if (!entry.contains(field)) throw bad(fmt::format("missing field '{}'", field));
    }
    const json& dtype_j = entry["dtype"];
    const json& shape_j = entry["shape"];
    const json& offsets_j = entry["data_offsets"];

    if (!dtype_j.is_string()) {
      throw bad(fmt::format("'dtype' is a JSON {}, not a string", dtype_j.type_name()));
    }
    const std::string dtype_str = dtype_j.get<std::string>();
    const DTypeEntry* dtype = find_dtype(dtype_str);
    if (dtype == nullptr) {
      throw bad(fmt::format("unknown dtype '{}' (known: {})", dtype_str, known_dtype_list()));
    }

    if (!shape_j.is_array()) {
      throw bad(fmt::format("'shape' is a JSON {}, not an array", shape_j.type_name()));
    }
    std::vector<std::int64_t> shape;
    for (const json& d : shape_j) {
      std::optional<std::int64_t> v = non_negative_int(d);
      if (!v) {
        throw bad(fmt::format("shape {} has an entry {} that is not a non-negative integer", shape_j.dump(),
                              d.dump()));
      }
      shape.push_back(*v);
    }

    if (!offsets_j.is_array() || offsets_j.size() != 2) {
      throw bad(fmt::format("'data_offsets' is {}, not a [begin, end] pair", offsets_j.dump()));
    }
    std::optional<std::int64_t> begin = non_negative_int(offsets_j[0]);
    std::optional<std::int64_t> end = non_negative_int(offsets_j[1]);
    if (!begin || !end) {
      throw bad(fmt::format("'data_offsets' {} are not non-negative integers", offsets_j.dump()));
    }
    if (*begin > *end) throw bad(fmt::format("data_offsets begin {} is after end {}", *begin, *end));
    if (*end > data_size) {
      throw bad(fmt::format("data_offsets [{}, {}] run past the end of the data buffer ({} bytes)", *begin,
                            *end, data_size));
    }

    std::int64_t nbytes = 0;
    try {
      std::int64_t numel = 1;
      for (std::int64_t d : shape) numel = checked_mul(numel, d, "element count");
      nbytes = checked_mul(numel, dtype->size, "byte size");
    } catch (const FormatError&) {
      throw bad(fmt::format("shape {} overflows 64 bits", shape_str(shape)));
    }
    if (*end - *begin != nbytes) {
      throw bad(fmt::format("shape {} of {} needs {} bytes but data_offsets [{}, {}] span {}",
                            shape_str(shape), dtype_str, nbytes, *begin, *end, *end - *begin));
    }

    TensorInfo info;
    info.name = name;
    info.dtype = dtype->dtype;
    info.dtype_str = dtype_str;
    info.shape = std::move(shape);
    info.data = file_.data() + data_start + static_cast<std::size_t>(*begin);
    info.nbytes = static_cast<std::size_t>(nbytes);
    info.file = path;
    auto it = tensors_.emplace(name, std::move(info)).first;
    if (nbytes > 0) spans.push_back({*begin, *end, &it->first});
  }

  // 4. No two tensors may share bytes.
  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) { return a.begin < b.begin; });
  for (std::size_t i = 1; i < spans.size(); ++i) {
    const Span& prev = spans[i - 1];
    const Span& cur = spans[i];
    if (cur.begin < prev.end) {
      throw corrupt(fmt::format("tensors '{}' (bytes {}..{}) and '{}' (bytes {}..{}) overlap", *prev.name,
                                prev.begin, prev.end, *cur.name, cur.begin, cur.end));
    }
  }
}

const TensorInfo* SafetensorsFile::find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

// ---------------------------------------------------------------------------------------------
// SafetensorsModel

namespace {

// Reads the index's weight_map: tensor name -> shard file name, shard names checked to be plain
// file names inside the model directory.
std::map<std::string, std::string> read_weight_map(const std::string& index_path) {
  auto corrupt = [&](const std::string& what) {
    return FormatError(fmt::format("{}: {}; the index is corrupt", index_path, what));
  };
  json index;
  try {
    index = json::parse(read_text_file(index_path, "safetensors index"));
  } catch (const json::exception& e) {
    throw corrupt(fmt::format("not valid JSON ({})", e.what()));
  }
  if (!index.is_object()) {
    throw corrupt(fmt::format("top level is a JSON {}, not an object", index.type_name()));
  }
  auto wm = index.find("weight_map");
  if (wm == index.end()) throw corrupt("missing 'weight_map'");
  if (!wm->is_object()) {
    throw corrupt(fmt::format("'weight_map' is a JSON {}, not an object", wm->type_name()));
  }
  if (wm->empty()) throw corrupt("'weight_map' lists no tensors");

  std::map<std::string, std::string> out;
  for (const auto& [tensor, shard_j] : wm->items()) {
    if (!shard_j.is_string()) {
      throw corrupt(
          fmt::format("shard of tensor '{}' is a JSON {}, not a file name", tensor, shard_j.type_name()));
    }
    std::string shard = shard_j.get<std::string>();
    if (shard.empty() || shard.find('/') != std::string::npos || shard.find('\\') != std::string::npos ||
        shard.find("..") != std::string::npos || shard.find('\0') != std::string::npos) {
      throw corrupt(fmt::format(
          "shard name '{}' of tensor '{}' is not a plain file name in the model directory", shard, tensor));
    }
    out.emplace(tensor, std::move(shard));
  }
  return out;
}

}  // namespace

SafetensorsModel SafetensorsModel::open_dir(const std::string& dir) {
  namespace fs = std::filesystem;
  SafetensorsModel model;
  model.dir_ = dir;
  const fs::path root(dir);
  const std::string index_path = (root / kIndexFileName).string();
  const std::string single_path = (root / kSingleFileName).string();

  std::error_code ec;
  if (fs::exists(index_path, ec)) {
    const std::map<std::string, std::string> weight_map = read_weight_map(index_path);

    // Open each distinct shard once.
    std::map<std::string, const SafetensorsFile*> shards;
    for (const auto& [tensor, shard] : weight_map) {
      if (shards.count(shard)) continue;
      try {
        model.files_.push_back(std::make_unique<SafetensorsFile>((root / shard).string()));
      } catch (const IoError& e) {
        throw IoError(
            fmt::format("{} (shard listed in {}; the download may be incomplete)", e.what(), index_path));
      }
      shards.emplace(shard, model.files_.back().get());
    }

    // Every tensor the index names must be where it says.
    for (const auto& [tensor, shard] : weight_map) {
      if (shards.at(shard)->find(tensor) == nullptr) {
        throw FormatError(
            fmt::format("{}: names tensor '{}' in shard '{}', but that shard has no such tensor; "
                        "the index and shards do not match (incomplete or mixed download?)",
                        index_path, tensor, shard));
      }
    }
  } else if (fs::exists(single_path, ec)) {
    model.files_.push_back(std::make_unique<SafetensorsFile>(single_path));
  } else if (!fs::is_directory(root, ec)) {
    throw IoError(fmt::format("model directory '{}' does not exist or is not a directory", dir));
  } else {
    throw IoError(fmt::format("no safetensors weights found in '{}': expected {} or {} (with its shards)",
                              dir, kSingleFileName, kIndexFileName));
  }

  // Index every tensor of every file; a name may live in only one shard.
  for (const auto& file : model.files_) {
    for (const auto& [name, info] : file->tensors()) {
      auto [it, inserted] = model.index_.emplace(name, &info);
      if (!inserted) {
        throw FormatError(
            fmt::format("tensor '{}' appears in both {} and {} (in {}); the shards are inconsistent", name,
                        it->second->file, info.file, dir));
      }
    }
  }
  return model;
}

const TensorInfo& SafetensorsModel::get(const std::string& name) const {
  const TensorInfo* info = find(name);
  if (info == nullptr) throw FormatError(fmt::format("missing tensor '{}' in {}", name, dir_));
  return *info;
}

const TensorInfo* SafetensorsModel::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : it->second;
}

std::vector<std::string> SafetensorsModel::names() const {
  std::vector<std::string> out;
  out.reserve(index_.size());
  for (const auto& [name, info] : index_) out.push_back(name);
  return out;
}

std::int64_t SafetensorsModel::total_bytes() const {
  std::int64_t total = 0;
  for (const auto& [name, info] : index_) {
    total = checked_add(total, static_cast<std::int64_t>(info->nbytes), "total tensor bytes");
  }
  return total;
}

}  // namespace million
