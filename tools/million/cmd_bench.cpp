// `million bench`: a llama-bench-style speed table. For every weights mode, KV cache, thread
// count and context depth it measures
//   prefill: tokens/s of one --n-prompt batch run on top of a cache already holding `depth` tokens;
//   decode:  tokens/s of --n-gen single-token steps starting at `depth`;
// each as mean ± sd over -r repetitions after a warm-up, with the cache's bytes per token and the
// decode's achieved bandwidth ((weight bytes + KV bytes read per step) x tokens/s). Output is a
// markdown table, CSV or JSON (stdout, --out FILE also); every CSV/JSON row carries the commit,
// compiler, SIMD level, threads and machine (the markdown table puts the constant ones above it).
//
// Filling the cache to `depth` is never timed. --fill synthetic (the default) replays K/V rows
// captured from one short real prefill (keys re-rotated by RoPE to their new positions) straight
// through KVCache::append/commit, so a quantized cache really encodes every row (the encoding
// finishes before the clock starts); --fill model runs the model over random tokens instead
// (only within the trained context). Timings do not depend on the cached values, so the two give
// the same speeds; synthetic is much faster at long depths. Depths beyond the model's trained
// context are allowed here on purpose (generate / perplexity refuse them): RoPE is just computed
// at larger positions, the rows are filled synthetically and marked, and they say nothing about
// quality. Token ids are random (speed does not depend on them). Not a test, not a quality tool.
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <fstream>
#include <random>

#include "common.h"
#include "core/memory.h"
#include "core/threads.h"
#include "kernels/ops.h"
#include "million/error.h"
#include "million/log.h"
#include "model/kv/quantized_cache.h"
#include "pq/calibrate.h"

namespace million::cli {

namespace {

struct BenchArgs {
  std::string model = "models/stories260K/stories260K.bin";
  std::vector<std::int64_t> depths{512, 4096};
  std::vector<int> threads{1, 2};
  std::vector<std::string> kvs{"f32"};
  std::vector<std::string> weights{"native"};
  int n_prompt = 512;
  int n_gen = 64;
  int reps = 3;
  int chunk = 512;
  std::string fill = "synthetic";
  std::string output = "md";
  std::string out_file;
  std::string simd;
  std::string codebook;
  bool quiet = false;
};

constexpr int kSampleTokens = 256;  // tokens of the real prefill that synthetic fills replay
constexpr int kFillChunk = 256;     // rows appended per layer per step of a synthetic fill

struct Stat {
  double mean = 0, sd = 0;
};
Stat stats(const std::vector<double>& v) {
  Stat s;
  if (v.empty()) return s;
  for (double x : v) s.mean += x;
  s.mean /= static_cast<double>(v.size());
  for (double x : v) s.sd += (x - s.mean) * (x - s.mean);
  s.sd = v.size() > 1 ? std::sqrt(s.sd / static_cast<double>(v.size() - 1)) : 0.0;
  return s;
}

// What stays the same over one run.
struct RunInfo {
  std::string commit, compiler, simd, machine, model;
  std::int64_t trained_ctx = 0;
  int n_prompt = 0, n_gen = 0, reps = 0, chunk = 0;
};

struct Row {
  std::string weights, kv, fill, time;
  int threads = 0;
  std::int64_t depth = 0;
  bool beyond = false;  // some timed position is past the trained context
  double weight_bytes = 0, kv_bytes_per_token = 0, kv_bits = 0;
  Stat prefill, decode;  // tokens/s
  double decode_gb_s = 0;
};

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

// Writes the chosen format to stdout and, with --out, to a file too; rows as they come.
class Report {
 public:
  Report(const BenchArgs& a, RunInfo info) : format_(a.output), info_(std::move(info)) {
    if (!a.out_file.empty()) {
      file_.open(a.out_file);
      if (!file_) throw IoError("cannot write " + a.out_file);
    }
  }

  /// Writes the header once; the trained context is known after the first model load.
  void begin(std::int64_t trained_ctx) {
    if (begun_) return;
    begun_ = true;
    info_.trained_ctx = trained_ctx;
    const RunInfo& i = info_;
    if (format_ == "md") {
      emit(fmt::format(
          "model: {} (trained context {} tokens)\nmachine: {}\ncommit {}; {}; simd {}\n"
          "prefill: {} tokens (chunk {}) on top of `depth` cached tokens; decode: {} single-token steps from "
          "`depth`; {} repetitions after a warm-up, mean ± sd; random token ids\n"
          "fill (not timed): synthetic = K/V of one real {}-token prefill replayed through the cache's "
          "append/commit (keys re-rotated by RoPE to their positions; quantized caches encode them before the "
          "clock starts), model = the model run over random tokens, none = depth 0\n"
          "KV bytes/token: the cache's own figure at capacity depth + max(n_prompt, n_gen), its exact window "
          "amortised over that capacity\n"
          "decode GB/s = (weight bytes + KV bytes/token x (depth + n_gen/2)) x decode tok/s\n"
          "depth* = timed positions beyond the trained context of {} tokens: RoPE at untrained positions, filled "
          "synthetically; speed only, not quality\n\n"
          "| weights | kv | threads | depth | fill | prefill tok/s | decode tok/s | decode ms/tok | KV bytes/token "
          "| decode GB/s |\n"
          "|---|---|---:|---:|---|---:|---:|---:|---:|---:|\n",
          i.model, i.trained_ctx, i.machine, i.commit, i.compiler, i.simd, i.n_prompt, i.chunk, i.n_gen, i.reps,
          kSampleTokens, i.trained_ctx));
    } else if (format_ == "csv") {
      emit("commit,compiler,simd,machine,time,model,weights,kv,kv_bits_per_element,kv_bytes_per_token,threads,depth,"
           "trained_ctx,beyond_trained_ctx,fill,n_prompt,n_gen,reps,prefill_tok_s_mean,prefill_tok_s_sd,"
           "decode_tok_s_mean,decode_tok_s_sd,decode_ms_per_tok,weight_bytes,decode_gb_s\n");
    } else {
      emit("[\n");
    }
  }

  void row(const Row& r) {
    const RunInfo& i = info_;
    const bool pp = i.n_prompt > 0, tg = i.n_gen > 0;
    if (format_ == "md") {
      const std::string na = "-";
      emit(fmt::format("| {} | {} | {} | {}{} | {} | {} | {} | {} | {:.0f} | {} |\n", r.weights, r.kv, r.threads, r.depth,
                       r.beyond ? "*" : "", r.fill, pp ? fmt::format("{:.1f} ± {:.1f}", r.prefill.mean, r.prefill.sd) : na,
                       tg ? fmt::format("{:.1f} ± {:.1f}", r.decode.mean, r.decode.sd) : na,
                       tg ? fmt::format("{:.3f}", 1000.0 / r.decode.mean) : na, r.kv_bytes_per_token,
                       tg ? fmt::format("{:.2f}", r.decode_gb_s) : na));
    } else if (format_ == "csv") {
      const auto num = [](bool have, double x) { return have ? fmt::format("{:.6g}", x) : std::string(); };
      emit(fmt::format("{},{},{},{},{},{},{},{},{:.4f},{:.1f},{},{},{},{},{},{},{},{},{},{},{},{},{},{:.0f},{}\n",
                       csv_field(i.commit), csv_field(i.compiler), i.simd, csv_field(i.machine), r.time,
                       csv_field(i.model), r.weights, csv_field(r.kv), r.kv_bits, r.kv_bytes_per_token, r.threads,
                       r.depth, i.trained_ctx, r.beyond ? "true" : "false", r.fill, i.n_prompt, i.n_gen, i.reps,
                       num(pp, r.prefill.mean), num(pp, r.prefill.sd), num(tg, r.decode.mean), num(tg, r.decode.sd),
                       num(tg, 1000.0 / r.decode.mean), r.weight_bytes, num(tg, r.decode_gb_s)));
    } else {
      const auto num = [](bool have, double x) { return have ? nlohmann::json(x) : nlohmann::json(nullptr); };
      const nlohmann::json j = {{"commit", i.commit},
                                {"compiler", i.compiler},
                                {"simd", i.simd},
                                {"machine", i.machine},
                                {"time", r.time},
                                {"model", i.model},
                                {"weights", r.weights},
                                {"kv", r.kv},
                                {"kv_bits_per_element", r.kv_bits},
                                {"kv_bytes_per_token", r.kv_bytes_per_token},
                                {"threads", r.threads},
                                {"depth", r.depth},
                                {"trained_ctx", i.trained_ctx},
                                {"beyond_trained_ctx", r.beyond},
                                {"fill", r.fill},
                                {"n_prompt", i.n_prompt},
                                {"n_gen", i.n_gen},
                                {"reps", i.reps},
                                {"prefill_tok_s_mean", num(pp, r.prefill.mean)},
                                {"prefill_tok_s_sd", num(pp, r.prefill.sd)},
                                {"decode_tok_s_mean", num(tg, r.decode.mean)},
                                {"decode_tok_s_sd", num(tg, r.decode.sd)},
                                {"decode_ms_per_tok", num(tg, 1000.0 / r.decode.mean)},
                                {"weight_bytes", r.weight_bytes},
                                {"decode_gb_s", num(tg, r.decode_gb_s)}};
      emit((rows_ > 0 ? ",\n  " : "  ") + j.dump());
    }
    ++rows_;
  }

  void end() {
    if (format_ == "json") emit(rows_ > 0 ? "\n]\n" : "]\n");
  }

 private:
  void emit(const std::string& s) {
    std::fputs(s.c_str(), stdout);
    std::fflush(stdout);
    if (file_.is_open()) {
      file_ << s;
      file_.flush();
    }
  }

  std::string format_;
  RunInfo info_;
  std::ofstream file_;
  int rows_ = 0;
  bool begun_ = false;
};

// K/V of a short real prefill: keys before RoPE (from the model's key observer) and values, per
// layer [n, kv_dim]. Synthetic fills replay them.
struct KVSample {
  int n = 0;
  std::vector<std::vector<float>> keys, values;
};

// A dense f32 cache that also records every appended value row (for KVSample).
class RecordingCache final : public KVCache {
 public:
  RecordingCache(const KVCacheShape& shape, KVSample& sample)
      : KVCache(shape), inner_(make_kv_cache("f32", shape)), sample_(sample) {}
  std::string name() const override { return "recording"; }
  void append(int layer, std::int64_t pos0, int n, const float* k, const float* v) override {
    auto& dst = sample_.values[static_cast<std::size_t>(layer)];
    dst.insert(dst.end(), v, v + static_cast<std::int64_t>(n) * shape_.n_kv_heads * shape_.head_dim);
    inner_->append(layer, pos0, n, k, v);
  }
  void attend(int layer, std::int64_t pos0, int n, const float* q, float* out) override {
    inner_->attend(layer, pos0, n, q, out);
  }
  void commit(std::int64_t n_tokens) override { inner_->commit(n_tokens); }
  void clear() override { inner_->clear(); }
  std::int64_t n_tokens() const override { return inner_->n_tokens(); }
  std::int64_t bytes_allocated() const override { return inner_->bytes_allocated(); }
  double bytes_per_token() const override { return inner_->bytes_per_token(); }

 private:
  std::unique_ptr<KVCache> inner_;
  KVSample& sample_;
};

KVSample capture_sample(Model& model, std::mt19937& rng) {
  const ModelConfig& cfg = model.config();
  KVSample s;
  s.n = static_cast<int>(std::min<std::int64_t>(kSampleTokens, cfg.max_ctx > 0 ? cfg.max_ctx : kSampleTokens));
  s.keys.resize(static_cast<std::size_t>(cfg.n_layers));
  s.values.resize(static_cast<std::size_t>(cfg.n_layers));
  RecordingCache rec(model.cache_shape(s.n), s);
  model.set_pre_rope_key_observer([&s, &cfg](int layer, std::int64_t, int n, const float* k) {
    auto& dst = s.keys[static_cast<std::size_t>(layer)];
    dst.insert(dst.end(), k, k + static_cast<std::int64_t>(n) * cfg.kv_dim());
  });
  std::uniform_int_distribution<int> tok(0, cfg.vocab_size - 1);
  std::vector<int> tokens(static_cast<std::size_t>(s.n));
  for (int& t : tokens) t = tok(rng);
  try {
    model.prefill(tokens, rec, nullptr);
  } catch (...) {
    model.set_pre_rope_key_observer({});
    throw;
  }
  model.set_pre_rope_key_observer({});
  return s;
}

// Waits until a quantized cache has encoded everything it was handed (background encoding).
void drain(KVCache& cache) {
  if (auto* q = dynamic_cast<QuantizedKVCache*>(&cache)) {
    for (int l = 0; l < cache.shape().n_layers; ++l) q->coded_tokens(l);
  }
}

// Appends positions [0, depth) to an empty cache: token p replays sample row p mod n, its key
// rotated by RoPE at p, through append/commit like a forward pass would (without attending).
void fill_synthetic(KVCache& cache, const KVSample& s, const ModelConfig& cfg, const std::vector<float>& inv_freq,
                    std::int64_t depth) {
  const std::int64_t row = cfg.kv_dim();
  std::vector<float> k(static_cast<std::size_t>(kFillChunk * row)), v(k.size());
  RopeTable rope;
  for (std::int64_t pos0 = 0; pos0 < depth; pos0 += kFillChunk) {
    const int n = static_cast<int>(std::min<std::int64_t>(kFillChunk, depth - pos0));
    rope.compute(inv_freq, pos0, n);
    for (int layer = 0; layer < cfg.n_layers; ++layer) {
      const auto& sk = s.keys[static_cast<std::size_t>(layer)];
      const auto& sv = s.values[static_cast<std::size_t>(layer)];
      for (int t = 0; t < n; ++t) {
        const std::int64_t src = (pos0 + t) % s.n;
        std::copy_n(sk.begin() + src * row, row, k.begin() + t * row);
        std::copy_n(sv.begin() + src * row, row, v.begin() + t * row);
      }
      rope_apply(k.data(), n, cfg.n_kv_heads, cfg.head_dim, cfg.rope_layout, rope);
      cache.append(layer, pos0, n, k.data(), v.data());
    }
    cache.commit(pos0 + n);
  }
  drain(cache);
}

std::vector<int> random_tokens(std::int64_t n, std::mt19937& rng, int vocab) {
  std::uniform_int_distribution<int> tok(0, vocab - 1);
  std::vector<int> out(static_cast<std::size_t>(n));
  for (int& t : out) t = tok(rng);
  return out;
}

// Bytes a `spec` cache of `capacity` tokens allocates, from two small probe caches (the size is
// linear in the capacity once it exceeds the exact window). Probes have one layer where the
// cache allows it (pq codebooks must match the model's layer count).
std::int64_t estimate_cache_bytes(const std::string& spec, const Model& model, std::int64_t capacity,
                                  const KVCacheResources& res) {
  KVCacheShape s = model.cache_shape(1);
  const int layers = s.n_layers;
  const bool whole_model = spec.rfind("pq", 0) == 0;
  if (!whole_model) s.n_layers = 1;
  constexpr std::int64_t c1 = 1024, c2 = 2048;
  s.capacity = c1;
  const double b1 = static_cast<double>(make_kv_cache(spec, s, res)->bytes_allocated());
  s.capacity = c2;
  const double b2 = static_cast<double>(make_kv_cache(spec, s, res)->bytes_allocated());
  const double per_token = (b2 - b1) / static_cast<double>(c2 - c1);
  const double cap = static_cast<double>(capacity);
  const double bytes = std::max(b1 + per_token * (cap - static_cast<double>(c1)), per_token * cap);
  return static_cast<std::int64_t>(bytes * (whole_model ? 1 : layers));
}

// One row per (kv, threads, depth) for the model loaded with one weights mode.
void bench_model(const BenchArgs& a, const std::string& wmode, Report& report, std::mt19937& rng) {
  LoadedModel lm = load_model(a.model, "", false, wmode);
  Model& model = *lm.model;
  const ModelConfig& cfg = model.config();
  const double weight_bytes = static_cast<double>(model.weights().bytes());
  const std::string wname = model.weights().matrix_dtype();
  const ModelFingerprint fingerprint = model_fingerprint(a.model, cfg);
  const KVCacheResources res{a.codebook, &fingerprint};
  const std::int64_t extra = std::max(a.n_prompt, a.n_gen);
  const std::int64_t max_depth = *std::max_element(a.depths.begin(), a.depths.end());

  // Refuse before measuring anything when the deepest cache of some variant would not fit.
  for (const std::string& kv : a.kvs) {
    require_memory(estimate_cache_bytes(kv, model, max_depth + extra, res),
                   fmt::format("the {} KV cache at depth {} (+{} tokens)", kv, max_depth, extra));
  }
  report.begin(cfg.max_ctx);
  std::vector<float> inv_freq;
  for (double f : rope_inv_freq(cfg)) inv_freq.push_back(static_cast<float>(f));
  const bool any_synthetic = a.fill == "synthetic" || max_depth > cfg.max_ctx;
  const KVSample sample = any_synthetic ? capture_sample(model, rng) : KVSample{};
  if (max_depth + extra > cfg.max_ctx) {
    log_info("positions up to {} are beyond the model's trained context of {}: those rows are filled synthetically "
             "and measure speed only",
             max_depth + extra, cfg.max_ctx);
  }

  std::vector<float> logits(static_cast<std::size_t>(cfg.vocab_size));
  for (const std::string& kv : a.kvs) {
    for (int th : a.threads) {
      set_num_threads(th);
      for (std::int64_t depth : a.depths) {
        Row row;
        row.weights = wname;
        row.kv = kv;
        row.threads = th;
        row.depth = depth;
        row.beyond = depth + extra > cfg.max_ctx;
        row.weight_bytes = weight_bytes;
        const bool synthetic = a.fill == "synthetic" || depth > cfg.max_ctx;
        row.fill = depth == 0 ? "none" : synthetic ? "synthetic" : "model";
        auto cache = make_kv_cache(kv, model.cache_shape(depth + extra), res);
        row.kv_bytes_per_token = cache->bytes_per_token();
        row.kv_bits = cache->bits_per_element();
        const auto fill = [&] {
          cache->clear();
          if (depth == 0) return;
          if (synthetic) {
            fill_synthetic(*cache, sample, cfg, inv_freq, depth);
          } else {
            model.prefill(random_tokens(depth, rng, cfg.vocab_size), *cache, nullptr, a.chunk);
            drain(*cache);
          }
        };
        log_info("bench: {} weights, kv {}, {} threads, depth {} ({} fill), {} repetitions", wname, kv, th, depth,
                 row.fill, a.reps);
        // Warm-up at depth 0: weights paged in, scratch sized, thread pools started.
        cache->clear();
        if (a.n_prompt > 0) model.prefill(random_tokens(a.n_prompt, rng, cfg.vocab_size), *cache, logits.data(), a.chunk);
        cache->clear();
        for (int i = 0; i < std::min(a.n_gen, 4); ++i) {
          const int t = random_tokens(1, rng, cfg.vocab_size)[0];
          model.forward(&t, 1, i, *cache, logits.data());
        }
        drain(*cache);

        std::vector<double> pf, dc;
        for (int r = 0; r < a.reps; ++r) {
          if (a.n_prompt > 0) {
            fill();
            const std::vector<int> prompt = random_tokens(a.n_prompt, rng, cfg.vocab_size);
            const auto t0 = std::chrono::steady_clock::now();
            model.prefill(prompt, *cache, logits.data(), a.chunk);
            drain(*cache);  // its tokens' encoding is part of prefill
            const auto t1 = std::chrono::steady_clock::now();
            pf.push_back(a.n_prompt / std::chrono::duration<double>(t1 - t0).count());
          }
          if (a.n_gen > 0) {
            fill();
            const std::vector<int> gen = random_tokens(a.n_gen, rng, cfg.vocab_size);
            const auto t0 = std::chrono::steady_clock::now();
            for (int i = 0; i < a.n_gen; ++i) {
              model.forward(&gen[static_cast<std::size_t>(i)], 1, depth + i, *cache, logits.data());
            }
            drain(*cache);
            const auto t1 = std::chrono::steady_clock::now();
            dc.push_back(a.n_gen / std::chrono::duration<double>(t1 - t0).count());
          }
          log_debug("bench: repetition {} of {} done", r + 1, a.reps);
        }
        row.prefill = stats(pf);
        row.decode = stats(dc);
        // Bytes one decode step reads: all weights once + the K/V of the timed steps' mean depth.
        const double kv_read = row.kv_bytes_per_token * (static_cast<double>(depth) + a.n_gen / 2.0);
        row.decode_gb_s = (weight_bytes + kv_read) * row.decode.mean / 1e9;
        row.time = utc_now();
        report.row(row);
      }
    }
  }
}

void run_bench(const BenchArgs& a, int verbosity) {
  install_log_sink(a.quiet ? 0 : verbosity);
  if (!a.simd.empty()) set_simd_level(parse_simd_level(a.simd));
  if (a.n_prompt == 0 && a.n_gen == 0) throw InvalidArgumentError("--n-prompt and --n-gen are both 0: nothing to time");
  for (std::int64_t d : a.depths) {
    if (d < 0) throw InvalidArgumentError(fmt::format("--depth {} is negative", d));
  }
  if (a.depths.empty() || a.threads.empty() || a.kvs.empty() || a.weights.empty()) {
    throw InvalidArgumentError("--depth, --threads, --kv and --weights need at least one value each");
  }
  RunInfo info;
  info.commit = build_commit();
  info.compiler = build_compiler();
  info.simd = simd_level_name(active_simd_level());
  info.machine = machine_description();
  info.model = a.model;
  info.n_prompt = a.n_prompt;
  info.n_gen = a.n_gen;
  info.reps = a.reps;
  info.chunk = a.chunk;
  std::mt19937 rng(42);
  Report report(a, info);
  for (const std::string& wmode : a.weights) bench_model(a, wmode, report, rng);
  report.end();
}

}  // namespace

void register_bench(CLI::App& app, int& verbosity) {
  auto args = std::make_shared<BenchArgs>();
  CLI::App* cmd = app.add_subcommand(
      "bench",
      "Measure prefill and decode tokens/s at several context depths, thread counts and KV caches (llama-bench "
      "style). Depths beyond the model's trained context are filled synthetically and marked.");
  cmd->add_option("-m,--model", args->model, "Model: Hugging Face directory, .gguf file or llama2.c .bin")->capture_default_str();
  cmd->add_option("-d,--depth", args->depths, "Context depths: tokens already in the cache when prefill / decode are timed")
      ->delimiter(',')->capture_default_str();
  cmd->add_option("-p,--n-prompt", args->n_prompt, "Prefill batch timed on top of each depth (0: no prefill timing)")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  cmd->add_option("-n,--n-gen,--n-decode", args->n_gen, "Decode steps timed from each depth (0: no decode timing)")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  cmd->add_option("-t,--threads", args->threads, "Thread counts to measure")->delimiter(',')->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--kv", args->kvs,
                  "KV caches to measure, space-separated or repeated (their options use commas): " + kv_cache_names())
      ->capture_default_str();
  cmd->add_option("--weights", args->weights, "Weight modes to measure: native, f32")->delimiter(',')->capture_default_str();
  cmd->add_option("-r,--reps", args->reps, "Repetitions (after one warm-up)")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--chunk", args->chunk, "Prefill chunk (tokens per forward pass)")->capture_default_str()->check(CLI::PositiveNumber);
  cmd->add_option("--fill", args->fill,
                  "How the cache reaches each depth (not timed): synthetic (replayed K/V of a short real prefill; "
                  "fast) or model (run the model; only within the trained context, synthetic beyond)")
      ->capture_default_str()->check(CLI::IsMember({"synthetic", "model"}));
  cmd->add_option("-o,--output", args->output, "Output format: md, csv, json")
      ->capture_default_str()->check(CLI::IsMember({"md", "csv", "json"}));
  cmd->add_option("--out", args->out_file, "Also write the output to this file");
  cmd->add_option("--codebook", args->codebook, "Codebook file for --kv pq / pq-paper");
  cmd->add_option("--simd", args->simd, "Force a SIMD level: scalar, avx2, avx512");
  cmd->add_flag("-q,--quiet", args->quiet, "Only warnings and errors on stderr (no progress lines)");
  cmd->add_flag("-v,--verbose", [&verbosity](std::int64_t n) { verbosity = 1 + static_cast<int>(n); },
                "More logging (repeat for one line per repetition)");
  cmd->callback([args, &verbosity]() { run_bench(*args, verbosity); });
}

}  // namespace million::cli
