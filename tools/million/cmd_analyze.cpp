// `million analyze`: why uniform quantization of the KV cache struggles. Runs a model over text,
// reports per-channel statistics of pre-RoPE keys, post-RoPE keys and values (abs max, std,
// kurtosis, outlier channels) and every cache variant's reconstruction error per layer, as
// report.md + CSVs + SVG plots (drawn by gnuplot when it is installed; skipped with a note if not).
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <sys/wait.h>
#include <unistd.h>

#include "common.h"
#include "core/mapped_file.h"
#include "eval/analyze.h"
#include "eval/analyze_report.h"
#include "million/error.h"
#include "million/log.h"
#include "pq/calibrate.h"
#include "pq/codebook_file.h"

namespace million::cli {

namespace {

namespace fs = std::filesystem;

struct AnalyzeArgs {
  std::string model;
  std::string tokenizer;
  std::vector<std::string> texts;
  std::string out = "analyze-out";
  std::string codebook;
  std::int64_t max_tokens = 8192;
  std::int64_t samples = 2048;
  int ctx = 0;
  double outlier_factor = 6.0;
  std::uint64_t seed = 0;
  std::string gnuplot = "gnuplot";
  int threads = 0;
  std::string simd;
  bool quiet = false;
};

std::string sh_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// Runs `gnuplot plots.gp` in dir/plots; returns "" when every SVG was drawn, else why not.
std::string run_gnuplot(const std::string& gnuplot, const fs::path& dir, const std::vector<std::string>& svgs) {
  const fs::path plots = dir / "plots";
  const std::string cmd =
      fmt::format("cd {} && {} plots.gp >gnuplot.log 2>&1", sh_quote(plots.string()), sh_quote(gnuplot));
  const int status = std::system(cmd.c_str());
  const int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  if (code == 127) {
    std::error_code ec;
    fs::remove(plots / "gnuplot.log", ec);
    return fmt::format("'{}' was not found (install gnuplot, e.g. the Debian package gnuplot-nox)", gnuplot);
  }
  if (code != 0) {
    std::ifstream log(plots / "gnuplot.log");
    std::string first, line;
    while (std::getline(log, line)) {
      if (!line.empty()) first = line;  // gnuplot's error is its last non-empty line
    }
    return fmt::format("gnuplot failed (exit {}): {} (see plots/gnuplot.log)", code, first);
  }
  for (const std::string& s : svgs) {
    if (!fs::exists(dir / s)) return fmt::format("gnuplot did not write {} (see plots/gnuplot.log)", s);
  }
  std::error_code ec;
  if (fs::exists(plots / "gnuplot.log") && fs::file_size(plots / "gnuplot.log", ec) == 0) fs::remove(plots / "gnuplot.log", ec);
  return "";
}

// The options that change the result, as a command line for the report.
std::string command_line(const AnalyzeArgs& a) {
  std::string c = "million analyze -m " + a.model;
  for (const std::string& t : a.texts) c += " --text " + t;
  c += fmt::format(" --max-tokens {} --samples {}", a.max_tokens, a.samples);
  if (a.ctx > 0) c += fmt::format(" --ctx {}", a.ctx);
  if (!a.codebook.empty()) c += " --codebook " + a.codebook;
  if (a.outlier_factor != 6.0) c += fmt::format(" --outlier-factor {}", a.outlier_factor);
  if (a.seed != 0) c += fmt::format(" --seed {}", a.seed);
  return c;
}

void run_analyze(const AnalyzeArgs& a, int verbosity, const std::string& command) {
  install_log_sink(a.quiet ? 0 : verbosity);
  apply_runtime_options(a.threads, a.simd);
  LoadedModel lm = load_model(a.model, a.tokenizer, true);
  Model& model = *lm.model;

  AnalyzeOptions opt;
  opt.ctx = a.ctx;
  opt.max_tokens = a.max_tokens;
  opt.sample_tokens = a.samples;
  opt.outlier_factor = a.outlier_factor;
  opt.seed = a.seed;
  if (!a.codebook.empty()) {
    auto set = std::make_shared<CodebookSet>(load_codebooks(a.codebook));
    check_codebooks_match(*set, model_fingerprint(a.model, model.config()), a.codebook);
    opt.codebooks = std::move(set);
  }

  std::vector<std::vector<int>> docs;
  std::int64_t n_tokens = 0;
  const std::vector<std::string> files = text_files(a.texts);
  for (const std::string& f : files) {
    docs.push_back(lm.tokenizer->encode(read_text_file(f, "calibration text"), true));
    n_tokens += static_cast<std::int64_t>(docs.back().size());
  }
  log_info("text: {} file{}, {} tokens; analysing up to {} tokens", files.size(), files.size() == 1 ? "" : "s", n_tokens,
           a.max_tokens);

  const bool show = !a.quiet && verbosity > 0;
  const bool tty = ::isatty(STDERR_FILENO) != 0;
  opt.progress = [show, tty](const AnalyzeProgress& p) {
    if (!show || (!tty && p.done < p.total)) return;
    const double frac = p.total > 0 ? static_cast<double>(p.done) / static_cast<double>(p.total) : 1.0;
    std::fprintf(stderr, "%s%s: %lld / %lld %s (%.0f%%), %.1f s elapsed   ", tty ? "\r" : "", p.stage,
                 static_cast<long long>(p.done), static_cast<long long>(p.total),
                 std::string(p.stage) == "capture" ? "tokens" : "variant x kind", 100.0 * frac, p.elapsed_s);
    if (p.done >= p.total) std::fputc('\n', stderr);
  };
  const AnalysisResult res = analyze(model, docs, opt);

  AnalyzeReportInfo info;
  info.model = a.model;
  info.text = fmt::format("{} file{} ({}{}), {} tokens", files.size(), files.size() == 1 ? "" : "s",
                          fs::path(files.front()).filename().string(), files.size() > 1 ? ", ..." : "", n_tokens);
  info.codebook = a.codebook;
  info.command = command;
  const std::vector<std::string> svgs = write_analysis_data(a.out, res, info);
  if (show) std::fprintf(stderr, "drawing %zu plots with %s\n", svgs.size(), a.gnuplot.c_str());
  const std::string note = run_gnuplot(a.gnuplot, a.out, svgs);
  if (!note.empty()) log_warn("plots skipped: {}; report.md and the CSVs are written", note);
  write_analysis_report(a.out, res, info, svgs, note);

  std::printf("analysed %s: %lld tokens in %lld windows; errors on %lld sampled tokens per layer\n", a.model.c_str(),
              static_cast<long long>(res.tokens), static_cast<long long>(res.windows),
              static_cast<long long>(res.run_tokens));
  std::printf("mean relative squared error over layers (K post-RoPE / V):\n");
  for (const std::string& m : analyze_methods(opt.codebooks != nullptr)) {
    std::string k = "n/a", v = "n/a";
    for (const MethodError& e : res.errors) {
      if (e.method != m || !e.applicable || e.kind == AnalyzeKind::kKeyPreRope) continue;
      double mean = 0;
      for (double x : e.rel_sq) mean += x / static_cast<double>(e.rel_sq.size());
      (e.kind == AnalyzeKind::kKey ? k : v) = fmt::format("{:.3g}", mean);
    }
    std::printf("  %-14s %10s / %s\n", m.c_str(), k.c_str(), v.c_str());
  }
  std::printf("wrote %s/report.md, stats.csv, heads.csv, errors.csv%s\n", a.out.c_str(),
              note.empty() ? fmt::format(" and {} plots in {}/plots", svgs.size(), a.out).c_str() : " (no plots)");
}

}  // namespace

void register_analyze(CLI::App& app, int& verbosity) {
  auto args = std::make_shared<AnalyzeArgs>();
  CLI::App* cmd = app.add_subcommand(
      "analyze",
      "Statistics of a model's keys and values (why uniform quantization struggles): per-channel abs max, std, "
      "kurtosis and outlier channels of pre-RoPE keys, post-RoPE keys and values per layer and kv head, and every "
      "KV-cache variant's reconstruction error per layer. Writes report.md, stats.csv, heads.csv, errors.csv and "
      "plots/*.svg (gnuplot) to --out.");
  cmd->add_option("-m,--model", args->model, "Model: Hugging Face directory, .gguf file or llama2.c .bin")->required();
  cmd->add_option("--tokenizer", args->tokenizer, "Tokenizer file (default: found beside the model)");
  cmd->add_option("--text", args->texts, "Text files, or directories of .txt files, to run the model over")->required();
  cmd->add_option("-o,--out", args->out, "Output directory (created)")->capture_default_str();
  cmd->add_option("--codebook", args->codebook,
                  "Codebook file from `million calibrate`: adds the pq variant's errors and its centroids to the "
                  "histogram");
  cmd->add_option("--max-tokens", args->max_tokens, "Tokens of text to run (windows shuffled with --seed)")
      ->capture_default_str();
  cmd->add_option("--ctx", args->ctx, "Window length in tokens (default: the model's context, at most 4096)");
  cmd->add_option("--samples", args->samples,
                  "Tokens per layer (runs of 32 consecutive tokens) the cache variants encode for the errors")
      ->capture_default_str();
  cmd->add_option("--outlier-factor", args->outlier_factor,
                  "Outlier channel: abs max above this x the median channel abs max of its layer, kv head and kind")
      ->capture_default_str();
  cmd->add_option("--seed", args->seed, "Seed for window order and run sampling")->capture_default_str();
  cmd->add_option("--gnuplot", args->gnuplot, "gnuplot executable (plots are skipped with a note if it is missing)")
      ->capture_default_str();
  cmd->add_option("-t,--threads", args->threads, "Threads (0 = all cores)")->capture_default_str();
  cmd->add_option("--simd", args->simd, "Force a SIMD level: scalar, avx2, avx512 (env MILLION_SIMD)");
  cmd->add_flag("-q,--quiet", args->quiet, "No progress or log lines on stderr");
  cmd->add_flag("-v,--verbose", [&verbosity](std::int64_t n) { verbosity = 1 + static_cast<int>(n); },
                "More logging (repeat for debug: the windows analysed)");
  cmd->callback([args, &verbosity]() { run_analyze(*args, verbosity, command_line(*args)); });
}

}  // namespace million::cli
