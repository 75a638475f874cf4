// million: one binary, one subcommand per file (cmd_*.cpp). This file only parses the command
// line, installs the log sink and turns million::Error into a one-line message + exit code.
#include <CLI/CLI.hpp>
#include <cstdio>

#include "common.h"
#include "million/error.h"

namespace million::cli {
void register_generate(CLI::App& app, int& verbosity);
void register_bench(CLI::App& app, int& verbosity);
void register_calibrate(CLI::App& app, int& verbosity);
void register_perplexity(CLI::App& app, int& verbosity);
void register_analyze(CLI::App& app, int& verbosity);
}  // namespace million::cli

int main(int argc, char** argv) {
  million::cli::maybe_reexec_for_blas(argv);
  CLI::App app{
      "million: LLM inference with product-quantized KV caches (MILLION, DAC 2025).\n"
      "Runs Llama-family models (Hugging Face directories, llama2.c checkpoints) on the CPU."};
  app.require_subcommand(1);
  int verbosity = 1;
  million::cli::register_generate(app, verbosity);
  million::cli::register_bench(app, verbosity);
  million::cli::register_calibrate(app, verbosity);
  million::cli::register_perplexity(app, verbosity);
  million::cli::register_analyze(app, verbosity);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const million::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
  return 0;
}
