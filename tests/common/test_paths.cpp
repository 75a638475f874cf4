// Test data locations and small file helpers.
#include "common/test_paths.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <vector>

namespace million::test {

namespace fs = std::filesystem;

std::string source_dir() { return MILLION_SOURCE_DIR; }
std::string data_path(const std::string& rel) { return source_dir() + "/tests/data/" + rel; }

std::string shared_dir() {
  if (const char* env = std::getenv("MILLION_SHARED_DIR"); env != nullptr && *env != '\0') return env;
  return MILLION_DEFAULT_SHARED_DIR;
}

namespace {
struct TempDirs {
  std::vector<fs::path> dirs;
  ~TempDirs() {
    for (const auto& d : dirs) {
      std::error_code ec;
      fs::remove_all(d, ec);
    }
  }
};
TempDirs& temp_dirs() {
  static TempDirs t;
  return t;
}
}  // namespace

std::string temp_dir() {
  std::string tmpl = (fs::temp_directory_path() / "million-test-XXXXXX").string();
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (mkdtemp(buf.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  temp_dirs().dirs.emplace_back(buf.data());
  return buf.data();
}

void write_file(const std::string& path, const std::string& bytes) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + path);
}

}  // namespace million::test
