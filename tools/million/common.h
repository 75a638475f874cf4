// Shared pieces of the million subcommands: loading a model with its tokenizer, applying the
// thread / SIMD options, and the stderr log sink.
#pragma once

#include <memory>
#include <string>

#include "model/model.h"
#include "model/tokenizer.h"

namespace million::cli {

struct LoadedModel {
  std::unique_ptr<Model> model;
  std::unique_ptr<Tokenizer> tokenizer;  // null when the model has none and none was given
  std::string path;
};

/// Loads weights from `path` (HF directory or llama2.c .bin) and its tokenizer: `tokenizer`
/// if given, else tokenizer.model in the directory, else tok512.bin beside a .bin file.
/// `weights`: "native" (matrices stay in the file's dtype) or "f32" (converted at load).
LoadedModel load_model(const std::string& path, const std::string& tokenizer, bool need_tokenizer,
                       const std::string& weights = "native");

/// Applies --threads and --simd (empty = keep detection / $MILLION_SIMD).
void apply_runtime_options(int threads, const std::string& simd);

/// Installs the stderr sink; verbosity 0 = warnings only, 1 = info, 2 = debug.
void install_log_sink(int verbosity);

/// "AMD EPYC ... (2 cores)": CPU model name and core count, for benchmark tables.
std::string machine_description();
/// The commit this binary was configured from (or "unknown").
std::string build_commit();

}  // namespace million::cli
