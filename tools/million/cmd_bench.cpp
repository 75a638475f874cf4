// `million bench`: prefill and decode speed of a model at several context depths, thread
// counts and KV caches, as a markdown table (stdout) plus an optional CSV file. Token ids are
// drawn at random (speed does not depend on them). Not a test: nothing here can fail a build.
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <random>

#include "common.h"
#include "core/memory.h"
#include "core/threads.h"
#include "million/error.h"
#include "million/log.h"
#include "pq/calibrate.h"

namespace million::cli {

namespace {

struct BenchArgs {
  std::string model = "models/stories260K/stories260K.bin";
  std::vector<std::int64_t> depths{512, 2048, 4096};
  std::vector<int> threads{1, 2};
  std::vector<std::string> kvs{"f32"};
  std::vector<std::string> weights{"native"};
  int n_decode = 32;
  int reps = 3;
  int chunk = 512;
  std::string csv;
  std::string simd;
  std::string codebook;
};

struct Stat {
  double mean = 0, sd = 0;
};
Stat stats(const std::vector<double>& v) {
  Stat s;
  for (double x : v) s.mean += x;
  s.mean /= static_cast<double>(v.size());
  for (double x : v) s.sd += (x - s.mean) * (x - s.mean);
  s.sd = v.size() > 1 ? std::sqrt(s.sd / static_cast<double>(v.size() - 1)) : 0.0;
  return s;
}

// One row per (kv, threads, depth) for the model loaded with one weights mode.
void bench_model(const BenchArgs& a, const std::string& wmode, std::ofstream& csv) {
  LoadedModel lm = load_model(a.model, "", false, wmode);
  Model& model = *lm.model;
  const ModelConfig& cfg = model.config();
  const double weight_bytes = static_cast<double>(model.weights().bytes());
  const std::string wname = model.weights().matrix_dtype();
  const ModelFingerprint fingerprint = model_fingerprint(a.model, cfg);
  std::mt19937 rng(42);
  std::uniform_int_distribution<int> tok(0, cfg.vocab_size - 1);
  for (const std::string& kv : a.kvs) {
    for (int th : a.threads) {
      set_num_threads(th);
      for (std::int64_t depth : a.depths) {
        if (depth > cfg.max_ctx) {
          log_warn("depth {} is beyond the model's trained context of {}; skipped", depth, cfg.max_ctx);
          continue;
        }
        auto cache = make_kv_cache(kv, model.cache_shape(depth), {a.codebook, &fingerprint});
        const std::int64_t n_prefill = depth - a.n_decode;
        if (n_prefill < 1) throw InvalidArgumentError(fmt::format("depth {} leaves no room for {} decode tokens", depth, a.n_decode));
        std::vector<double> pf, dc;
        std::vector<float> logits(static_cast<std::size_t>(cfg.vocab_size));
        for (int r = 0; r < a.reps + 1; ++r) {  // first repetition is a warm-up
          std::vector<int> prompt(static_cast<std::size_t>(n_prefill));
          for (int& t : prompt) t = tok(rng);
          cache->clear();
          auto t0 = std::chrono::steady_clock::now();
          model.prefill(prompt, *cache, logits.data(), a.chunk);
          auto t1 = std::chrono::steady_clock::now();
          for (int i = 0; i < a.n_decode; ++i) {
            const int next = tok(rng);
            model.forward(&next, 1, n_prefill + i, *cache, logits.data());
          }
          auto t2 = std::chrono::steady_clock::now();
          if (r == 0) continue;
          pf.push_back(static_cast<double>(n_prefill) / std::chrono::duration<double>(t1 - t0).count());
          dc.push_back(a.n_decode / std::chrono::duration<double>(t2 - t1).count());
        }
        const Stat p = stats(pf), d = stats(dc);
        // Bytes one decode step reads: all weights once + K/V of the average depth of the timed steps.
        const double kv_read = cache->bytes_per_token() * (static_cast<double>(n_prefill) + a.n_decode / 2.0);
        const double gbs = (weight_bytes + kv_read) * d.mean / 1e9;
        std::string row = fmt::format("| {} | {} | {} | {} | {:.1f} ± {:.1f} | {:.1f} ± {:.1f} | {:.2f} | {:.1f} |\n",
                                      wname, kv, th, depth, p.mean, p.sd, d.mean, d.sd, 1000.0 / d.mean, gbs);
        std::fputs(row.c_str(), stdout);
        std::fflush(stdout);
        if (csv) {
          csv << fmt::format("{},{},{},{},{},{:.2f},{:.2f},{:.2f},{:.2f},{:.2f},{},{}\n", a.model, wname, kv, th, depth,
                             p.mean, p.sd, d.mean, d.sd, gbs, build_commit(), simd_level_name(active_simd_level()));
        }
      }
    }
  }
}

void run_bench(const BenchArgs& a, int verbosity) {
  install_log_sink(verbosity);
  if (!a.simd.empty()) set_simd_level(parse_simd_level(a.simd));
  const std::string header = fmt::format(
      "model: {}\nmachine: {}\ncommit: {}; simd {}; prefill chunk {}; {} decode tokens timed after each "
      "prefill; {} repetitions after a warm-up (mean ± sd); random token ids\n\n",
      a.model, machine_description(), build_commit(), simd_level_name(active_simd_level()), a.chunk, a.n_decode, a.reps);
  const std::string table_head =
      "| weights | kv | threads | depth | prefill tok/s | decode tok/s | decode ms/tok | decode GB/s (weights + KV read) |\n"
      "|---|---|---:|---:|---:|---:|---:|---:|\n";
  std::ofstream csv;
  if (!a.csv.empty()) {
    csv.open(a.csv);
    if (!csv) throw IoError("cannot write " + a.csv);
    csv << "model,weights,kv,threads,depth,prefill_tok_s_mean,prefill_tok_s_sd,decode_tok_s_mean,decode_tok_s_sd,"
           "decode_gb_s,commit,simd\n";
  }
  std::fputs(header.c_str(), stdout);
  std::fputs(table_head.c_str(), stdout);
  for (const std::string& wmode : a.weights) bench_model(a, wmode, csv);
}

}  // namespace

void register_bench(CLI::App& app, int& verbosity) {
  auto args = std::make_shared<BenchArgs>();
  CLI::App* cmd = app.add_subcommand("bench", "Measure prefill and decode tokens/s at several context depths.");
  cmd->add_option("-m,--model", args->model, "Model: Hugging Face directory, .gguf file or llama2.c .bin")->capture_default_str();
  cmd->add_option("-d,--depth", args->depths, "Context depths (tokens in the cache when decode is timed)")
      ->delimiter(',')->capture_default_str();
  cmd->add_option("-t,--threads", args->threads, "Thread counts to measure")->delimiter(',')->capture_default_str();
  cmd->add_option("--kv", args->kvs,
                  "KV caches to measure, space-separated or repeated (their options use commas): " + kv_cache_names())
      ->capture_default_str();
  cmd->add_option("--weights", args->weights, "Weight modes to measure: native, f32")->delimiter(',')->capture_default_str();
  cmd->add_option("--n-decode", args->n_decode, "Decode steps timed per repetition")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("-r,--reps", args->reps, "Repetitions (after one warm-up)")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--chunk", args->chunk, "Prefill chunk")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--csv", args->csv, "Also write the rows to this CSV file");
  cmd->add_option("--codebook", args->codebook, "Codebook file for --kv pq / pq-paper");
  cmd->add_option("--simd", args->simd, "Force a SIMD level: scalar, avx2, avx512");
  cmd->callback([args, &verbosity]() { run_bench(*args, verbosity); });
}

}  // namespace million::cli
