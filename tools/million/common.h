// Shared pieces of the million subcommands: loading a model with its tokenizer, listing --text
// files, applying the thread / SIMD options, and the stderr log sink.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "model/model.h"
#include "model/tokenizer.h"

namespace million::cli {

struct LoadedModel {
  std::unique_ptr<Model> model;
  std::unique_ptr<Tokenizer> tokenizer;  // null when the model has none and none was given
  std::string path;
};

/// Loads weights from `path` (HF directory or llama2.c .bin) and its tokenizer: `tokenizer`
/// if given, else tokenizer.model or tokenizer.json in the directory, else tok512.bin beside a
/// .bin file (find_tokenizer_file).
/// `weights`: "native" (matrices stay in the file's dtype) or "f32" (converted at load).
LoadedModel load_model(const std::string& path, const std::string& tokenizer, bool need_tokenizer,
                       const std::string& weights = "native");

/// OpenBLAS 0.3.21 (Debian 12) does not recognise some recent Xeons and falls back to its SSE3
/// "Prescott" kernels, which run prefill GEMMs ~2.8x slower than its AVX-512 ones on such a CPU.
/// The kernel set is fixed when the library loads, so when that happened on a CPU with AVX-512
/// (or AVX2) and the user did not choose OPENBLAS_CORETYPE, this re-executes the program once
/// with OPENBLAS_CORETYPE=SkylakeX (or Haswell). MILLION_KEEP_BLAS_CORE=1 disables it.
void maybe_reexec_for_blas(char** argv);

/// Applies --threads and --simd (empty = keep detection / $MILLION_SIMD).
void apply_runtime_options(int threads, const std::string& simd);

/// Installs the stderr sink; verbosity 0 = warnings only, 1 = info, 2 = debug.
void install_log_sink(int verbosity);

/// Regular files named on the command line, and the *.txt files of named directories (sorted);
/// for --text of calibrate and analyze. Throws IoError for a missing path or a directory without
/// .txt files.
std::vector<std::string> text_files(const std::vector<std::string>& paths);

/// "AMD EPYC ... (2 cores)": CPU model name and core count, for benchmark tables.
std::string machine_description();
/// The commit this binary was configured from (or "unknown").
std::string build_commit();
/// The compiler that built this binary, from its predefined macros: "gcc 12.2.0", "clang 16.0.6".
std::string build_compiler();

}  // namespace million::cli
