// `million perplexity`: perplexity of a model on a text or token file, with a KV cache of choice,
// as ../shared/docs/EVALUATION.md defines it (non-overlapping windows of --ctx tokens, each run
// from an empty cache, every token but the window's first scored); optionally saves the
// per-token distributions (--save-logits) or compares against saved ones (--kl-base: KLD,
// top-1 agreement, ΔPPL). Results go to stdout (text or --json), progress and logs to stderr.
// The computation lives in src/eval/ (perplexity.h, logits_file.h); this file only reads the
// inputs, wires the options and prints.
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>

#include "common.h"
#include "core/mapped_file.h"
#include "core/memory.h"
#include "eval/logits_file.h"
#include "eval/perplexity.h"
#include "million/error.h"
#include "million/log.h"
#include "pq/calibrate.h"

namespace million::cli {

namespace {

namespace fs = std::filesystem;

struct PerplexityArgs {
  std::string model = "models/stories260K/stories260K.bin";
  std::string tokenizer;
  std::string text;
  std::string tokens;
  std::int64_t ctx = 0;
  std::string kv = "f32";
  std::string kv_k, kv_v;
  std::string codebook;
  int chunk = 0;
  int prefill = 0;
  std::int64_t max_windows = 0;
  int threads = 0;
  std::string simd;
  std::string weights = "native";
  std::string save_logits;
  std::string kl_base;
  bool json = false;
  bool quiet = false;
};

// Token stream of --text: one document per file (BOS + text with '\r' removed), files of a
// directory as *.txt in sorted order.
std::vector<int> tokens_from_text(const std::string& path, const Tokenizer& tok, std::size_t* n_docs) {
  std::vector<std::string> files;
  if (fs::is_directory(path)) {
    for (const auto& e : fs::directory_iterator(path)) {
      if (e.is_regular_file() && e.path().extension() == ".txt") files.push_back(e.path().string());
    }
    std::sort(files.begin(), files.end());
    if (files.empty()) throw IoError(fmt::format("directory '{}' has no .txt files", path));
  } else if (fs::exists(path)) {
    files.push_back(path);
  } else {
    throw IoError(fmt::format("text '{}' does not exist", path));
  }
  std::vector<int> out;
  for (const std::string& f : files) {
    std::string s = read_text_file(f, "text");
    s.erase(std::remove(s.begin(), s.end(), '\r'), s.end());
    const std::vector<int> ids = tok.encode(s, /*add_bos=*/true);
    out.insert(out.end(), ids.begin(), ids.end());
  }
  *n_docs = files.size();
  return out;
}

// --tokens: raw little-endian uint16 ids.
std::vector<int> tokens_from_file(const std::string& path, int vocab) {
  if (!fs::exists(path)) throw IoError(fmt::format("token file '{}' does not exist", path));
  MappedFile f(path, "token file");
  if (f.size() % 2 != 0) {
    throw FormatError(fmt::format("token file '{}' has {} bytes, not a whole number of uint16 ids", path, f.size()));
  }
  std::vector<int> out(f.size() / 2);
  for (std::size_t i = 0; i < out.size(); ++i) {
    const int id = f.data()[2 * i] | (f.data()[2 * i + 1] << 8);
    if (id >= vocab) {
      throw FormatError(fmt::format("token file '{}': token {} has id {}, outside the model's vocabulary of {}", path,
                                    i, id, vocab));
    }
    out[i] = id;
  }
  return out;
}

nlohmann::json nll_json(const eval::NllStats& s) {
  return {{"ppl", s.ppl}, {"ppl_ci95", {s.ppl_low, s.ppl_high}}, {"mean_nll", s.mean_nll}, {"se_nll", s.se_nll},
          {"tokens", s.n}};
}

void run_perplexity(const PerplexityArgs& a, int verbosity) {
  install_log_sink(a.quiet ? 0 : verbosity);
  apply_runtime_options(a.threads, a.simd);
  if (a.text.empty() == a.tokens.empty()) throw InvalidArgumentError("give exactly one of --text and --tokens");
  if (a.prefill > 0 && a.chunk == 0) throw InvalidArgumentError("--prefill needs --chunk");
  if (!a.save_logits.empty() && fs::path(a.save_logits).has_parent_path() &&
      !fs::is_directory(fs::path(a.save_logits).parent_path())) {
    throw IoError(fmt::format("cannot write '{}': directory '{}' does not exist", a.save_logits,
                              fs::path(a.save_logits).parent_path().string()));
  }
  LoadedModel lm = load_model(a.model, a.tokenizer, !a.text.empty(), a.weights);
  Model& model = *lm.model;
  const ModelConfig& cfg = model.config();

  std::vector<int> tokens;
  std::string source;
  if (!a.text.empty()) {
    std::size_t docs = 0;
    tokens = tokens_from_text(a.text, *lm.tokenizer, &docs);
    source = fmt::format("{} ({} document{})", a.text, docs, docs == 1 ? "" : "s");
  } else {
    tokens = tokens_from_file(a.tokens, cfg.vocab_size);
    source = a.tokens;
  }

  if (a.ctx < 0) throw InvalidArgumentError("--ctx must be positive");
  if (a.ctx > cfg.max_ctx) {
    throw ContextLimitError(fmt::format("--ctx {} is larger than the model's maximum context of {} tokens", a.ctx,
                                        cfg.max_ctx));
  }
  eval::PerplexityOptions opt;
  opt.ctx = a.ctx > 0 ? a.ctx : std::min<std::int64_t>(cfg.max_ctx, 4096);
  opt.chunk = a.chunk;
  opt.prefill = a.prefill;
  opt.max_windows = a.max_windows;
  const std::int64_t windows = eval::count_windows(static_cast<std::int64_t>(tokens.size()), opt);
  const int prefill = a.chunk > 0 ? static_cast<int>(std::min<std::int64_t>(
                                        opt.ctx - 1, a.prefill > 0 ? a.prefill : std::max<std::int64_t>(1, opt.ctx / 2)))
                                  : 0;
  const std::string mode =
      a.chunk == 0 ? "prefill (whole window in one pass)"
                   : (a.chunk == 1 ? fmt::format("prefill {} + decode token by token", prefill)
                                   : fmt::format("prefill {} + chunks of {}", prefill, a.chunk));

  const ModelFingerprint fingerprint = model_fingerprint(a.model, cfg);
  const std::string k_spec = a.kv_k.empty() ? a.kv : a.kv_k, v_spec = a.kv_v.empty() ? a.kv : a.kv_v;
  std::unique_ptr<KVCache> cache = make_kv_cache(k_spec, v_spec, model.cache_shape(opt.ctx), {a.codebook, &fingerprint});

  eval::LogitsFileHeader header;
  header.model = fingerprint;
  header.ctx = opt.ctx;
  header.windows = windows;
  header.tokens_scored = windows * (opt.ctx - 1);
  header.tokens_hash = eval::hash_tokens(tokens, windows * opt.ctx);
  header.kv = cache->name();
  header.mode = mode;

  // Validate the base file before any work, and open the output early so a bad path fails now.
  std::optional<eval::LogitsFileReader> base;
  std::optional<eval::KldAccumulator> kld;
  if (!a.kl_base.empty()) {
    base.emplace(a.kl_base);
    base->check_compatible(header);
    kld.emplace(*base);
  }
  std::unique_ptr<eval::LogitsFileWriter> writer;
  if (!a.save_logits.empty()) writer = std::make_unique<eval::LogitsFileWriter>(a.save_logits, header);

  log_info("text: {}: {} tokens; {} windows of {} tokens ({} scored); {}", source, tokens.size(), windows, opt.ctx,
           header.tokens_scored, mode);
  log_info("kv cache: {} ({:.2f} bits/element); logits buffer {}; {} threads", cache->name(),
           cache->bits_per_element(),
           format_bytes(static_cast<std::int64_t>(opt.ctx - 1) * cfg.vocab_size * static_cast<std::int64_t>(sizeof(float))),
           a.threads > 0 ? a.threads : 0);
  if (writer) {
    log_info("saving log-probs (f16) to {} ({})", a.save_logits,
             format_bytes(header.tokens_scored * (12 + 2 * static_cast<std::int64_t>(cfg.vocab_size))));
  }

  const bool show = !a.quiet && verbosity > 0;
  const bool tty = ::isatty(STDERR_FILENO) != 0;
  double last_print = -1e9;
  auto progress = [&](std::int64_t done, std::int64_t total, double elapsed, double mean_nll) {
    if (!show) return;
    const bool last = done == total;
    if (!tty && !last && elapsed - last_print < 10.0) return;  // a log file gets a line every 10 s
    last_print = elapsed;
    const double eta = elapsed * static_cast<double>(total - done) / static_cast<double>(done);
    std::fprintf(stderr, "%swindow %lld/%lld: ppl %.4f so far, %.1f s elapsed, ETA %.0f s   %s", tty ? "\r" : "",
                 static_cast<long long>(done), static_cast<long long>(total), std::exp(mean_nll), elapsed, eta,
                 tty && !last ? "" : "\n");
    std::fflush(stderr);
  };
  auto on_window = [&](const eval::ScoredWindow& w) {
    if (writer) writer->add_window(w);
    if (kld) kld->add_window(w);
  };
  const eval::PerplexityResult r = eval::compute_perplexity(model, *cache, tokens, opt, on_window, progress);
  if (writer) writer->finish();
  const double tok_s = static_cast<double>(r.tokens_scored) / std::max(r.seconds, 1e-9);
  std::optional<eval::KldStats> ks;
  if (kld) ks = kld->finish();

  if (a.json) {
    nlohmann::json j = {{"model", a.model},
                        {"source", source},
                        {"kv", cache->name()},
                        {"bits_per_element", cache->bits_per_element()},
                        {"coded_bits_per_element", cache->coded_bits_per_element()},
                        {"mode", mode},
                        {"chunk", a.chunk},
                        {"prefill", prefill},
                        {"ctx", opt.ctx},
                        {"windows", r.windows},
                        {"tokens_scored", r.tokens_scored},
                        {"ppl", r.stats.ppl},
                        {"ppl_ci95", {r.stats.ppl_low, r.stats.ppl_high}},
                        {"mean_nll", r.stats.mean_nll},
                        {"se_nll", r.stats.se_nll},
                        {"seconds", r.seconds},
                        {"tokens_per_second", tok_s}};
    if (!a.save_logits.empty()) j["saved_logits"] = a.save_logits;
    if (ks) {
      j["kl_base"] = {{"file", a.kl_base},
                      {"base_kv", base->header().kv},
                      {"base_mode", base->header().mode},
                      {"mean_kld", ks->mean},
                      {"se_kld", ks->se},
                      {"median_kld", ks->median},
                      {"p90_kld", ks->p90},
                      {"p99_kld", ks->p99},
                      {"max_kld", ks->max},
                      {"top1_agreement_pct", ks->top1_agree_pct},
                      {"base", nll_json(ks->base)},
                      {"delta_ppl", ks->delta_ppl},
                      {"delta_ppl_pct", ks->delta_ppl_pct},
                      {"mean_delta_nll", ks->mean_delta_nll},
                      {"se_delta_nll", ks->se_delta_nll}};
    }
    std::printf("%s\n", j.dump(1).c_str());
    return;
  }
  std::printf("perplexity: %.4f (95%% CI %.4f - %.4f), mean NLL %.5f +/- %.5f\n", r.stats.ppl, r.stats.ppl_low,
              r.stats.ppl_high, r.stats.mean_nll, r.stats.se_nll);
  std::printf("scored %lld tokens in %lld windows of ctx %lld; kv %s; %s\n", static_cast<long long>(r.tokens_scored),
              static_cast<long long>(r.windows), static_cast<long long>(opt.ctx), cache->name().c_str(), mode.c_str());
  std::printf("time: %.2f s, %.1f tok/s\n", r.seconds, tok_s);
  if (ks) {
    std::printf("vs %s (kv %s, %s):\n", a.kl_base.c_str(), base->header().kv.c_str(), base->header().mode.c_str());
    std::printf("  mean KLD %.6g +/- %.2g; median %.6g, p90 %.6g, p99 %.6g, max %.6g\n", ks->mean, ks->se, ks->median,
                ks->p90, ks->p99, ks->max);
    std::printf("  top-1 agreement %.3f%%\n", ks->top1_agree_pct);
    std::printf("  base PPL %.4f, delta PPL %+.4f (%+.3f%%), mean delta NLL %+.6f +/- %.6f\n", ks->base.ppl,
                ks->delta_ppl, ks->delta_ppl_pct, ks->mean_delta_nll, ks->se_delta_nll);
  }
  if (writer) std::printf("saved log-probs to %s\n", a.save_logits.c_str());
}

}  // namespace

void register_perplexity(CLI::App& app, int& verbosity) {
  auto args = std::make_shared<PerplexityArgs>();
  CLI::App* cmd = app.add_subcommand(
      "perplexity",
      "Perplexity on a text or token file (windows of --ctx tokens, each from an empty cache, every token but the "
      "first scored); --save-logits / --kl-base compare caches by KL divergence.");
  cmd->add_option("-m,--model", args->model, "Model directory, llama2.c .bin or .gguf")->capture_default_str();
  cmd->add_option("--tokenizer", args->tokenizer, "Tokenizer file (default: found beside the model)");
  auto* text = cmd->add_option("--text", args->text,
                               "Text file, or a directory whose *.txt files (sorted) are each one document "
                               "(BOS + text, '\\r' removed), concatenated");
  cmd->add_option("--tokens", args->tokens, "Raw little-endian uint16 token-id file (used as is, no BOS added)")
      ->excludes(text);
  cmd->add_option("-c,--ctx", args->ctx, "Window length in tokens (default: the model's maximum context, at most 4096)");
  cmd->add_option("--kv", args->kv, "KV cache for keys and values: " + kv_cache_names())->capture_default_str();
  cmd->add_option("--kv-k", args->kv_k, "KV cache format for keys (overrides --kv)");
  cmd->add_option("--kv-v", args->kv_v, "KV cache format for values (overrides --kv)");
  cmd->add_option("--codebook", args->codebook, "Codebook file for --kv pq / pq-paper (from `million calibrate`)");
  cmd->add_option("--chunk", args->chunk,
                  "Run each window as a prefill (--prefill tokens) then chunks of N tokens, so later tokens read "
                  "the cache's coded history (1 = decode token by token; default 0: the whole window in one pass)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--prefill", args->prefill, "With --chunk: tokens of each window in the first pass (default ctx/2)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--max-windows", args->max_windows, "Score at most this many windows (0 = all)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("-t,--threads", args->threads, "Threads (0 = all cores)")->capture_default_str();
  cmd->add_option("--simd", args->simd, "Force a SIMD level: scalar, avx2, avx512");
  cmd->add_option("--weights", args->weights, "Weight matrices in memory: native or f32")->capture_default_str();
  cmd->add_option("--save-logits", args->save_logits,
                  "Write every scored token's log-probabilities (f16) to this file, for a later --kl-base");
  cmd->add_option("--kl-base", args->kl_base,
                  "Compare with a --save-logits file of the same model, tokens and ctx: KL divergence, top-1 "
                  "agreement, delta PPL");
  cmd->add_flag("--json", args->json, "Print the results as one JSON object on stdout");
  cmd->add_flag("-q,--quiet", args->quiet, "Only warnings and errors on stderr (no progress line)");
  cmd->add_flag("-v,--verbose", [&verbosity](std::int64_t n) { verbosity = 1 + static_cast<int>(n); }, "More logging");
  cmd->callback([args, &verbosity]() { run_perplexity(*args, verbosity); });
}

}  // namespace million::cli
