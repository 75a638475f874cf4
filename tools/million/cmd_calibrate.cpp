// `million calibrate`: learn PQ codebooks for a model's keys and values from calibration text
// and write them to a codebook file; prints per-layer held-out reconstruction errors.
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>

#include <unistd.h>

#include "common.h"
#include "core/mapped_file.h"
#include "core/memory.h"
#include "million/error.h"
#include "million/log.h"
#include "pq/calibrate.h"
#include "pq/codebook_file.h"

namespace million::cli {

namespace {

namespace fs = std::filesystem;

struct CalibrateArgs {
  std::string model;
  std::string tokenizer;
  std::vector<std::string> texts;
  std::string out;
  std::string k = "pq:M=64,nbits=8";
  std::string v = "pq:M=64,nbits=8";
  std::string granularity = "layer-head";
  std::string rotation = "auto";
  std::string k_norm = "channel-group";
  std::string v_norm = "token";
  int norm_group = 128;
  std::int64_t samples = 0;
  std::int64_t max_tokens = 0;
  int ctx = 0;
  int iters = 25;
  std::uint64_t seed = 0;
  int threads = 0;
  std::string simd;
  bool quiet = false;
};

void run_calibrate(const CalibrateArgs& a, int verbosity) {
  install_log_sink(a.quiet ? 0 : verbosity);
  apply_runtime_options(a.threads, a.simd);
  LoadedModel lm = load_model(a.model, a.tokenizer, true);
  Model& model = *lm.model;

  CalibrateOptions opt;
  opt.k_config = parse_pq_config(a.k);
  opt.v_config = parse_pq_config(a.v);
  opt.granularity = parse_granularity(a.granularity);
  const int head_dim = model.config().head_dim;
  const bool pow2 = head_dim > 0 && (head_dim & (head_dim - 1)) == 0;
  opt.k_norm = parse_vector_norm(a.k_norm);
  // auto: the best variant measured (docs/pq-research.md) where it applies: qpca needs a
  // power-of-two head_dim (its values are Hadamard-rotated) and key channel-groups.
  if (a.rotation == "auto") {
    opt.rotation = !pow2 ? RotationKind::kNone
                   : opt.k_norm == VectorNorm::kChannelGroup ? RotationKind::kQueryPca
                                                             : RotationKind::kHadamard;
  } else {
    opt.rotation = parse_rotation(a.rotation);
  }
  opt.v_norm = parse_vector_norm(a.v_norm);
  opt.norm_group = a.norm_group;
  opt.samples = a.samples;
  opt.max_tokens = a.max_tokens;
  opt.ctx = a.ctx;
  opt.seed = a.seed;
  opt.kmeans.niter = a.iters;
  if (a.iters < 1) throw InvalidArgumentError("--iters must be positive");
  opt.k_config.validate(model.config().head_dim);
  opt.v_config.validate(model.config().head_dim);
  if (fs::path(a.out).has_parent_path() && !fs::is_directory(fs::path(a.out).parent_path())) {
    throw IoError(fmt::format("cannot write '{}': directory '{}' does not exist", a.out, fs::path(a.out).parent_path().string()));
  }

  std::vector<std::vector<int>> docs;
  std::int64_t n_tokens = 0;
  for (const std::string& f : text_files(a.texts)) {
    docs.push_back(lm.tokenizer->encode(read_text_file(f, "calibration text"), true));
    n_tokens += static_cast<std::int64_t>(docs.back().size());
  }
  log_info("calibration text: {} files, {} tokens; K {} ({:.2f} bits/element), V {} ({:.2f} bits/element), "
           "granularity {}, rotation {}, normalisation K {} V {}",
           docs.size(), n_tokens, opt.k_config.str(),
           opt.k_config.bits_per_element(model.config().head_dim) +
               vector_norm_bits(opt.k_norm, model.config().head_dim, opt.norm_group),
           opt.v_config.str(),
           opt.v_config.bits_per_element(model.config().head_dim) +
               vector_norm_bits(opt.v_norm, model.config().head_dim, opt.norm_group),
           a.granularity, rotation_name(opt.rotation), a.k_norm, a.v_norm);

  // A live progress line on a terminal; in a log file only each stage's last line.
  const bool show = !a.quiet && verbosity > 0;
  const bool tty = ::isatty(STDERR_FILENO) != 0;
  opt.progress = [show, tty](const CalibrateProgress& p) {
    if (!show || (!tty && p.done < p.total)) return;
    const double frac = p.total > 0 ? static_cast<double>(p.done) / static_cast<double>(p.total) : 1.0;
    const double eta = frac > 0 ? p.elapsed_s * (1.0 - frac) / frac : 0.0;
    std::fprintf(stderr, "%s%s: %lld / %lld %s (%.0f%%), %.1f s elapsed, ~%.0f s left   ", tty ? "\r" : "", p.stage,
                 static_cast<long long>(p.done), static_cast<long long>(p.total),
                 std::string(p.stage) == "train" ? "codebooks" : "tokens", 100.0 * frac, p.elapsed_s, eta);
    if (p.done >= p.total) std::fputc('\n', stderr);
  };
  CalibrateReport rep;
  const CodebookSet set = calibrate(model, model_fingerprint(a.model, model.config()), docs, opt, &rep);
  save_codebooks(set, a.out);

  std::printf("calibrated %s: %lld tokens in %lld windows; %lld training / %lld held-out vectors per "
              "(layer, kv head, kind); capture %.1f s, training %.1f s\n",
              a.model.c_str(), static_cast<long long>(rep.tokens), static_cast<long long>(rep.windows),
              static_cast<long long>(rep.train_vectors), static_cast<long long>(rep.heldout_vectors),
              rep.capture_seconds, rep.train_seconds);
  std::printf("relative reconstruction error on held-out vectors (||x - x_hat|| / ||x||)%s:\n",
              opt.k_norm != VectorNorm::kNone || opt.v_norm != VectorNorm::kNone
                  ? ", measured on the normalised vectors k-means saw (channel-group offsets make K's look small)"
                  : "");
  std::printf("| layer | K | V |\n|---:|---:|---:|\n");
  for (std::size_t l = 0; l < rep.layers.size(); ++l) {
    std::printf("| %zu | %.4f | %.4f |\n", l, rep.layers[l].k, rep.layers[l].v);
  }
  std::printf("wrote %s (%s)\n", a.out.c_str(), format_bytes(static_cast<std::int64_t>(fs::file_size(a.out))).c_str());
}

}  // namespace

void register_calibrate(CLI::App& app, int& verbosity) {
  auto args = std::make_shared<CalibrateArgs>();
  CLI::App* cmd = app.add_subcommand(
      "calibrate",
      "Learn PQ codebooks for a model's keys and values from calibration text (writes a codebook file).\n"
      "Defaults (the most accurate variant measured, docs/pq-research.md): one codebook per (layer, kv head), "
      "keys through the query-aware transform qpca and normalised per channel over groups of 128 tokens, "
      "values Hadamard-rotated and divided by their per-token norm; 4 bits per element (M=64, nbits=8) plus "
      "0.25 (K) / 0.125 (V) for the normalisation. 2 bits: --k pq:M=32,nbits=8 --v pq:M=32,nbits=8 (head_dim 128). "
      "--rotation none --k-norm none --v-norm none gives plain PQ; --granularity shared the paper's public code.");
  cmd->add_option("-m,--model", args->model, "Model: Hugging Face directory, .gguf file or llama2.c .bin")->required();
  cmd->add_option("--tokenizer", args->tokenizer, "Tokenizer file (default: found beside the model)");
  cmd->add_option("--text", args->texts, "Calibration text files, or directories of .txt files (never evaluation text)")
      ->required();
  cmd->add_option("-o,--out", args->out, "Codebook file to write")->required();
  cmd->add_option("--k", args->k, "Key quantizer: pq:M=<subspaces>,nbits=<4..8>")->capture_default_str();
  cmd->add_option("--v", args->v, "Value quantizer: pq:M=<subspaces>,nbits=<4..8>")->capture_default_str();
  cmd->add_option("--granularity", args->granularity, "Codebook sharing: shared, layer, layer-head")->capture_default_str();
  cmd->add_option("--rotation", args->rotation,
                  "Rotation before PQ: none, hadamard, opq, qpca (keys by a query-aware learned transform, values "
                  "hadamard; needs --k-norm channel-group; a second pass over the text), auto (qpca when head_dim "
                  "is a power of two and keys are channel-grouped, else hadamard for a power of two, else none)")
      ->capture_default_str();
  cmd->add_option("--k-norm", args->k_norm,
                  "Key normalisation after the rotation: none, token (per-token norm, +16 bits per token), "
                  "channel-group (per-channel min/range over --norm-group tokens, +32/group bits per element)")
      ->capture_default_str();
  cmd->add_option("--v-norm", args->v_norm, "Value normalisation: none, token, channel-group")->capture_default_str();
  cmd->add_option("--norm-group", args->norm_group, "Tokens per channel-group (a multiple of 64)")->capture_default_str();
  cmd->add_option("--samples", args->samples,
                  "Training vectors per (layer, kv head, kind) (default: 64 per centroid, 16384 for nbits 8)");
  cmd->add_option("--max-tokens", args->max_tokens, "Tokens of text to run (default: just enough for --samples)");
  cmd->add_option("--ctx", args->ctx, "Window length in tokens (default: the model's context, at most 4096)");
  cmd->add_option("--iters", args->iters, "k-means iterations")->capture_default_str();
  cmd->add_option("--seed", args->seed, "Seed for window order, sampling, k-means and rotations")->capture_default_str();
  cmd->add_option("-t,--threads", args->threads, "Threads (0 = all cores)")->capture_default_str();
  cmd->add_option("--simd", args->simd, "Force the encoders' SIMD level: scalar, avx2, avx512 (env MILLION_SIMD)");
  cmd->add_flag("-q,--quiet", args->quiet, "No progress or log lines on stderr");
  cmd->callback([args, &verbosity]() { run_calibrate(*args, verbosity); });
}

}  // namespace million::cli
