// million-gpu: the GPU decoder (GpuLlama) from the command line, for a CUDA build that may lack
// the CPU engine (no tokenizer here: prompts and texts are token files).
//   million-gpu perplexity: EVALUATION.md's protocol on a token file — windows of --ctx tokens,
//     each from an empty cache, the first --first tokens prefilled, the rest fed in prefill chunks
//     of --chunk (so later tokens read the cache's coded history); every token but a window's
//     first scored. The fp16 cache and the cache under test run side by side on the same tokens:
//     PPL of each (95% CI), delta PPL, mean / p99 KLD of the test cache from the fp16 one, top-1
//     agreement, tokens/s.
// Not here: text input and tokenizers, sampling / generation, the CPU engine's caches (q4_0,
// KIVI): see the `million` CLI.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "backends/cuda/cuda_attention.h"
#include "backends/cuda/llama_gpu.h"
#include "million/error.h"

using namespace million;
using namespace million::cuda;

namespace {

constexpr const char* kUsage = R"(million-gpu perplexity: KV-cache quality on the GPU (EVALUATION.md's protocol)

  million-gpu perplexity --model PATH --tokens FILE [options]

  --model PATH      Hugging Face Llama directory (config.json + safetensors) or llama2.c .bin
  --tokens FILE     uint16 token ids (e.g. gutenberg-23m's eval-tokens/heldout_eval.bin)
  --ctx N           window length (default 4096)
  --windows N       windows to score (default: all that fit)
  --first N         tokens prefilled at the start of each window (default 64)
  --chunk N         tokens per prefill call after that (default 64; 1 = token by token)
  --kv f16|pq       the cache under test (default pq when --codebook is given, else f16 alone)
  --codebook FILE   `million calibrate` codebook file (sets M and the normalisations)
  --window N        PQ: newest tokens kept exact (default 128; 0 = stress mode, plain PQ only)
  --sinks N         PQ: first tokens kept exact (default 4 with a normalised codebook, else 0)
  --json FILE       also write the results as JSON
  --help            this text

Both caches run with bf16 weights on the same tokens in one process; KLD is the test cache's
next-token distribution against the fp16 cache's. Errors (missing files, tokens outside the
vocabulary, a cache that does not fit) are reported with the reason and exit status 1.
)";

struct Options {
  std::string model, tokens, kv, codebook, json;
  int ctx = 4096, windows = 0, first = 64, chunk = 64, window = 128, sinks = -1;
};

[[noreturn]] void usage_error(const std::string& what) {
  std::fprintf(stderr, "million-gpu: %s\n(million-gpu perplexity --help for the options)\n", what.c_str());
  std::exit(2);
}

int to_int(const std::string& flag, const std::string& v) {
  try {
    std::size_t used = 0;
    const int x = std::stoi(v, &used);
    if (used == v.size()) return x;
  } catch (const std::exception&) {
  }
  usage_error(flag + " expects an integer, got '" + v + "'");
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 2; i < argc; ++i) {
    const std::string k = argv[i];
    if (k == "--help" || k == "-h") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    }
    if (i + 1 >= argc) usage_error(k + " needs a value");
    const std::string v = argv[++i];
    if (k == "--model") o.model = v;
    else if (k == "--tokens") o.tokens = v;
    else if (k == "--kv") o.kv = v;
    else if (k == "--codebook") o.codebook = v;
    else if (k == "--json") o.json = v;
    else if (k == "--ctx") o.ctx = to_int(k, v);
    else if (k == "--windows") o.windows = to_int(k, v);
    else if (k == "--first") o.first = to_int(k, v);
    else if (k == "--chunk") o.chunk = to_int(k, v);
    else if (k == "--window") o.window = to_int(k, v);
    else if (k == "--sinks") o.sinks = to_int(k, v);
    else usage_error("unknown option " + k);
  }
  if (o.model.empty() || o.tokens.empty()) usage_error("--model and --tokens are required");
  if (o.kv.empty()) o.kv = o.codebook.empty() ? "f16" : "pq";
  if (o.kv != "f16" && o.kv != "pq") usage_error("--kv must be f16 or pq");
  if (o.kv == "pq" && o.codebook.empty()) usage_error("--kv pq needs --codebook");
  if (o.ctx < 2 || o.first < 1 || o.chunk < 1 || o.windows < 0 || o.window < 0) usage_error("bad sizes");
  if (o.first > o.ctx) o.first = o.ctx;
  return o;
}

std::vector<std::uint16_t> read_tokens(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) throw IoError("cannot open token file " + path);
  const std::streamsize n = in.tellg();
  if (n <= 0 || n % 2 != 0) throw FormatError(path + ": not a uint16 token file (" + std::to_string(n) + " bytes)");
  std::vector<std::uint16_t> t(static_cast<std::size_t>(n / 2));
  in.seekg(0);
  in.read(reinterpret_cast<char*>(t.data()), n);
  return t;
}

// Log-softmax of one row (double sums).
void log_softmax(const float* x, std::size_t n, std::vector<double>& out) {
  out.resize(n);
  const double mx = *std::max_element(x, x + n);
  double z = 0;
  for (std::size_t i = 0; i < n; ++i) z += std::exp(x[i] - mx);
  const double lz = mx + std::log(z);
  for (std::size_t i = 0; i < n; ++i) out[i] = x[i] - lz;
}

struct Stats {
  double nll = 0, nll_sq = 0;  // sums over scored tokens
  double seconds = 0;
  std::int64_t n = 0;
  void add(double x) {
    nll += x;
    nll_sq += x * x;
    ++n;
  }
  double ppl() const { return std::exp(nll / static_cast<double>(n)); }
  // 95% CI of exp(mean NLL) from the NLL's standard error.
  std::pair<double, double> ci() const {
    const double m = nll / static_cast<double>(n), var = std::max(0.0, nll_sq / static_cast<double>(n) - m * m);
    const double se = std::sqrt(var / static_cast<double>(n));
    return {std::exp(m - 1.96 * se), std::exp(m + 1.96 * se)};
  }
};

int perplexity(const Options& o) {
  LlamaShape shape;
  const bool dir = std::filesystem::is_directory(o.model);
  if (!dir && !std::filesystem::exists(o.model)) throw IoError("no model at " + o.model);
  const LlamaHostWeights w = dir ? load_llama_hf(o.model, shape) : load_llama2c(o.model, shape);
  const std::vector<std::uint16_t> toks = read_tokens(o.tokens);
  for (std::uint16_t t : toks) {
    if (t >= shape.vocab) {
      throw InvalidArgumentError(o.tokens + ": token " + std::to_string(t) + " outside the model's vocabulary (" +
                                 std::to_string(shape.vocab) + "): tokens of another tokenizer?");
    }
  }
  const int max_windows = static_cast<int>(toks.size() / static_cast<std::size_t>(o.ctx));
  if (max_windows < 1) {
    throw InvalidArgumentError(o.tokens + ": " + std::to_string(toks.size()) + " tokens, shorter than one window of " +
                               std::to_string(o.ctx));
  }
  const int windows = o.windows > 0 ? std::min(o.windows, max_windows) : max_windows;

  GpuLlamaOptions base;
  base.capacity = o.ctx;
  base.prefill_chunk = std::max(o.first, o.chunk);
  base.prefill_all_logits = true;
  base.cuda_graph = false;
  GpuLlamaOptions test = base;
  LlamaHostCodebooks cb;
  const bool pq = o.kv == "pq";
  if (pq) {
    test.cache = GpuCache::kPQ;
    cb = load_codebooks_for_gpu(o.codebook, shape, test);
    test.pq_window = o.window;
    const bool normalised = test.pq_rotate || test.pq_k_channel_group || test.pq_v_token_norm;
    test.pq_sinks = o.sinks >= 0 ? o.sinks : (normalised && o.window > 0 ? 4 : 0);
  }
  GpuLlama m_base(shape, base);
  m_base.upload_weights(w);
  std::unique_ptr<GpuLlama> m_test;
  if (pq) {
    m_test = std::make_unique<GpuLlama>(shape, test);
    m_test->upload_weights(w);
    m_test->upload_codebooks(cb);
  }
  const std::size_t V = static_cast<std::size_t>(shape.vocab);
  Stats sb, st;
  std::vector<double> kld;
  std::int64_t agree = 0;
  std::vector<float> lb, lt;
  std::fprintf(stderr, "million-gpu: %d windows of %d tokens, first %d prefilled, then chunks of %d%s\n", windows, o.ctx,
               o.first, o.chunk, pq ? "; fp16 cache and the PQ cache side by side" : "");
  for (int win = 0; win < windows; ++win) {
    const std::uint16_t* wt = toks.data() + static_cast<std::size_t>(win) * o.ctx;
    m_base.reset();
    if (m_test) m_test->reset();
    for (int p0 = 0; p0 < o.ctx;) {
      const int n = std::min(p0 == 0 ? o.first : o.chunk, o.ctx - p0);
      const std::vector<int> chunk(wt + p0, wt + p0 + n);
      auto run = [&](GpuLlama& m, std::vector<float>& logits, Stats& s) {
        const auto t0 = std::chrono::steady_clock::now();
        const float* d = m.prefill(chunk, n);  // synchronised
        s.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        logits.resize(static_cast<std::size_t>(n) * V);
        check(cudaMemcpy(logits.data(), d, logits.size() * sizeof(float), cudaMemcpyDeviceToHost), "logits");
      };
      run(m_base, lb, sb);
      if (m_test) run(*m_test, lt, st);
      // Per position (the window's last predicts nothing in it): NLLs, KLD, top-1; in parallel.
      const int scored = std::min(n, o.ctx - 1 - p0);
      std::vector<double> nb(static_cast<std::size_t>(std::max(scored, 0))), nt(nb.size()), kl(nb.size());
      std::vector<char> same(nb.size());
#pragma omp parallel for schedule(static)
      for (int j = 0; j < scored; ++j) {
        std::vector<double> pb, pt;
        const auto target = static_cast<std::size_t>(wt[p0 + j + 1]);
        const auto u = static_cast<std::size_t>(j);
        log_softmax(lb.data() + u * V, V, pb);
        nb[u] = -pb[target];
        if (!m_test) continue;
        log_softmax(lt.data() + u * V, V, pt);
        nt[u] = -pt[target];
        double k = 0;
        for (std::size_t i = 0; i < V; ++i) k += std::exp(pb[i]) * (pb[i] - pt[i]);
        kl[u] = std::max(0.0, k);
        same[u] = std::max_element(pb.begin(), pb.end()) - pb.begin() == std::max_element(pt.begin(), pt.end()) - pt.begin();
      }
      for (std::size_t u = 0; u < nb.size(); ++u) {
        sb.add(nb[u]);
        if (!m_test) continue;
        st.add(nt[u]);
        kld.push_back(kl[u]);
        agree += same[u];
      }
      p0 += n;
    }
    std::fprintf(stderr, "\rwindow %d/%d: fp16 PPL %.4f%s", win + 1, windows, sb.ppl(),
                 m_test ? (" test PPL " + std::to_string(st.ppl())).c_str() : "");
  }
  std::fprintf(stderr, "\n");
  const auto [lo, hi] = sb.ci();
  std::printf("tokens %s, %d windows of %d (first %d prefilled, chunks of %d), %lld tokens scored\n", o.tokens.c_str(), windows,
              o.ctx, o.first, o.chunk, static_cast<long long>(sb.n));
  std::printf("fp16 cache: PPL %.4f (95%% CI %.3f-%.3f), %.0f tokens/s\n", sb.ppl(), lo, hi,
              static_cast<double>(windows) * o.ctx / sb.seconds);
  std::map<std::string, double> res{{"ppl_f16", sb.ppl()}, {"tok_s_f16", windows * o.ctx / sb.seconds}};
  if (m_test) {
    std::vector<double> sorted = kld;
    std::sort(sorted.begin(), sorted.end());
    double mean = 0;
    for (double k : kld) mean += k;
    mean /= static_cast<double>(kld.size());
    const double p99 = sorted[std::min(sorted.size() - 1, static_cast<std::size_t>(0.99 * static_cast<double>(sorted.size())))];
    const double top1 = 100.0 * static_cast<double>(agree) / static_cast<double>(kld.size());
    const double dppl = 100.0 * (st.ppl() / sb.ppl() - 1.0);
    std::printf("pq cache (%s, M %d, window %d, sinks %d%s): PPL %.4f (%+.3f%%), mean KLD %.5f, p99 KLD %.4f, top-1 %.2f%%, "
                "%.0f tokens/s\n",
                o.codebook.c_str(), test.pq_M, test.pq_window, test.pq_sinks,
                test.pq_rotate ? ", normalised" : "", st.ppl(), dppl, mean, p99, top1,
                static_cast<double>(windows) * o.ctx / st.seconds);
    res.insert({{"ppl_pq", st.ppl()}, {"delta_ppl_pct", dppl}, {"mean_kld", mean}, {"p99_kld", p99}, {"top1_pct", top1},
                {"tok_s_pq", windows * o.ctx / st.seconds}, {"window", test.pq_window}, {"sinks", test.pq_sinks},
                {"M", test.pq_M}});
  }
  if (!o.json.empty()) {
    std::ofstream js(o.json);
    if (!js) throw IoError("cannot write " + o.json);
    js << "{\"tokens\": \"" << o.tokens << "\", \"ctx\": " << o.ctx << ", \"windows\": " << windows << ", \"first\": " << o.first
       << ", \"chunk\": " << o.chunk << ", \"scored\": " << sb.n;
    char buf[64];
    for (const auto& [k, v] : res) {
      std::snprintf(buf, sizeof buf, "%.6g", v);
      js << ", \"" << k << "\": " << buf;
    }
    js << "}\n";
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  if (std::string(argv[1]) != "perplexity") usage_error(std::string("unknown command ") + argv[1]);
  const Options o = parse(argc, argv);
  try {
    return perplexity(o);
  } catch (const Error& e) {
    std::fprintf(stderr, "\nmillion-gpu: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "\nmillion-gpu: %s\n", e.what());
    return 1;
  }
}
