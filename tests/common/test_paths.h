// Where test data lives: the source tree (bundled fixtures) and ../shared (larger fixtures).
#pragma once

#include <string>

namespace million::test {

/// Root of the source tree (models/, tests/data/).
std::string source_dir();
/// tests/data/<rel>
std::string data_path(const std::string& rel);
/// The shared data directory: $MILLION_SHARED_DIR, else ../shared beside the source tree.
std::string shared_dir();
/// A fresh empty temporary directory, removed at process exit.
std::string temp_dir();
/// Writes bytes to a file, creating parent directories.
void write_file(const std::string& path, const std::string& bytes);

}  // namespace million::test
