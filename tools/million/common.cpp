// Model + tokenizer loading and runtime options shared by the subcommands.
#include "common.h"

#include <cblas.h>

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include <unistd.h>

#include "core/memory.h"
#include "core/threads.h"
#include "million/error.h"
#include "million/log.h"
#include "million/simd.h"
#include "model/gguf_model.h"

#ifndef MILLION_GIT_COMMIT
#define MILLION_GIT_COMMIT "unknown"
#endif

namespace million::cli {

LoadedModel load_model(const std::string& path, const std::string& tokenizer, bool need_tokenizer,
                       const std::string& weights) {
  if (weights != "native" && weights != "f32") {
    throw InvalidArgumentError(fmt::format("--weights '{}' must be 'native' or 'f32'", weights));
  }
  LoadedModel out;
  out.path = path;
  WeightsOptions wopt;
  wopt.to_f32 = weights == "f32";
  ModelWeights w = load_weights(path, wopt);
  log_info("model: {} ({}; {} of {} weights)", path, w.config.summary(), format_bytes(w.bytes()), w.matrix_dtype());
  // A GGUF model carries its tokenizer; --tokenizer may also name a .gguf file.
  const bool gguf_model = is_gguf_file(path);
  const std::string tok = !tokenizer.empty() ? tokenizer : gguf_model ? path : find_tokenizer_file(path);
  if (!tok.empty()) {
    try {
      out.tokenizer = is_gguf_file(tok) ? load_gguf_tokenizer(tok) : load_tokenizer_file(tok, w.config.vocab_size);
    } catch (const UnsupportedError& e) {
      // A found tokenizer.json of a kind not handled yet must not stop work that needs no text.
      if (need_tokenizer || !tokenizer.empty()) throw;
      log_warn("{} (continuing without a tokenizer)", e.what());
      out.model = std::make_unique<Model>(std::move(w));
      return out;
    }
    if (out.tokenizer->vocab_size() > w.config.vocab_size) {
      throw FormatError(fmt::format("tokenizer '{}' has {} tokens but the model's vocabulary is {}", tok,
                                    out.tokenizer->vocab_size(), w.config.vocab_size));
    }
  } else if (need_tokenizer) {
    throw IoError(fmt::format("no tokenizer found for '{}': expected tokenizer.model or tokenizer.json in the model "
                              "directory or tok512.bin beside a llama2.c checkpoint; pass --tokenizer FILE",
                              path));
  }
  out.model = std::make_unique<Model>(std::move(w));
  return out;
}

std::vector<std::string> text_files(const std::vector<std::string>& paths) {
  namespace fs = std::filesystem;
  std::vector<std::string> files;
  for (const std::string& p : paths) {
    if (fs::is_directory(p)) {
      std::vector<std::string> in_dir;
      for (const auto& e : fs::directory_iterator(p)) {
        if (e.is_regular_file() && e.path().extension() == ".txt") in_dir.push_back(e.path().string());
      }
      std::sort(in_dir.begin(), in_dir.end());
      if (in_dir.empty()) throw IoError(fmt::format("directory '{}' has no .txt files", p));
      files.insert(files.end(), in_dir.begin(), in_dir.end());
    } else if (fs::exists(p)) {
      files.push_back(p);
    } else {
      throw IoError(fmt::format("calibration text '{}' does not exist", p));
    }
  }
  return files;
}

void maybe_reexec_for_blas(char** argv) {
  if (std::getenv("OPENBLAS_CORETYPE") != nullptr || std::getenv("MILLION_KEEP_BLAS_CORE") != nullptr) return;
  std::string core = openblas_get_corename();
  for (char& ch : core) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  if (core != "prescott" && core != "core2" && core != "unknown") return;
  const char* better = simd_level_supported(SimdLevel::kAvx512) ? "SkylakeX"
                       : simd_level_supported(SimdLevel::kAvx2) ? "Haswell"
                                                                : nullptr;
  if (better == nullptr) return;
  ::setenv("OPENBLAS_CORETYPE", better, 1);
  ::execv("/proc/self/exe", argv);  // returns only on failure: carry on with the slow kernels
  ::unsetenv("OPENBLAS_CORETYPE");
}

void apply_runtime_options(int threads, const std::string& simd) {
  set_num_threads(threads);
  if (!simd.empty()) set_simd_level(parse_simd_level(simd));
}

void install_log_sink(int verbosity) {
  set_log_level(verbosity >= 2 ? LogLevel::kDebug : verbosity == 1 ? LogLevel::kInfo : LogLevel::kWarn);
  set_log_sink([](LogLevel level, std::string_view msg) {
    const char* prefix = level == LogLevel::kWarn ? "warning: " : level == LogLevel::kError ? "error: " : "";
    std::fprintf(stderr, "%s%.*s\n", prefix, static_cast<int>(msg.size()), msg.data());
  });
}

std::string machine_description() {
  std::ifstream in("/proc/cpuinfo");
  std::string line, model = "unknown CPU";
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      model = line.substr(line.find(':') + 2);
      break;
    }
  }
  return fmt::format("{} ({} cores, {} available memory)", model, std::thread::hardware_concurrency(),
                     format_bytes(available_memory_bytes()));
}

std::string build_commit() { return MILLION_GIT_COMMIT; }

std::string build_compiler() {
#if defined(__clang__)
  std::string v = "clang " __clang_version__;
#elif defined(__GNUC__)
  std::string v = "gcc " __VERSION__;
#else
  std::string v = "unknown compiler";
#endif
  while (!v.empty() && v.back() == ' ') v.pop_back();
  return v;
}

}  // namespace million::cli
