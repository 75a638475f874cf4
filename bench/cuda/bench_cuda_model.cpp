// End-to-end decode benchmark on the GPU (not a test): a Llama-architecture model of a given
// shape (default Llama-3-8B) with random bf16 weights (no weight file needed), its KV cache
// filled synthetically to the context depth (random fp16 values / random PQ codes: no
// million-token prefill), then timed decode steps (CUDA events around --steps steps after two
// warm-up steps; each step waits for the previous one, as sampling would), eager kernel launches
// and one CUDA graph per step side by side. A cache that does not fit is refused up front with the memory it would need,
// and the table says so. Bytes per token: bf16 weights + the cache read by attention.
// Then prefill: a prompt of --prefill tokens (0: none) from an empty cache in prefill() chunks
// of --chunk tokens, for the fp16, pq4w and pq4n caches (the window's codes are written by the
// chunk), attention on tensor cores and (fp16, pq4n) on CUDA cores, timed from the first chunk
// to the last logits.
//   bench_cuda_model [--out FILE] [--steps N] [--batch B] [--contexts 32768,131072]
//                    [--caches f16,pq4,pq4w,pq2] [--pq-1m 1]   (pq-1m: also the 1M-token rows)
//                    [--prefill 8192] [--chunk 512] [--prefill-caches f16,pq4w,pq4n]
// pq4w: 4-bit codes plus the newest 128 tokens exact (fp16 window), encoding on a side stream;
// pq4n: the same with the normalised variant (rotation, key channel-groups of 128, value norms).
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "backends/cuda/cuda_attention.h"
#include "backends/cuda/llama_gpu.h"
#include "million/error.h"

using namespace million;
using namespace million::cuda;

namespace {

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) out.push_back(item);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  std::string out_path;
  int steps = 16, batch = 1, prefill = 8192, chunk = 512;
  bool pq_1m = true;
  std::vector<std::string> contexts{"32768", "131072"}, caches{"f16", "pq4", "pq4w", "pq4n"};
  std::vector<std::string> prefill_caches{"f16", "f16 (CUDA-core attention)", "pq4w", "pq4n",
                                          "pq4n (history decoded per block)", "pq4n (CUDA-core attention)"};
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--out") out_path = v;
    else if (k == "--steps") steps = std::stoi(v);
    else if (k == "--batch") batch = std::stoi(v);
    else if (k == "--contexts") contexts = split(v);
    else if (k == "--caches") caches = split(v);
    else if (k == "--pq-1m") pq_1m = v != "0";
    else if (k == "--prefill") prefill = std::stoi(v);
    else if (k == "--chunk") chunk = std::stoi(v);
    else if (k == "--prefill-caches") prefill_caches = split(v);
    else {
      std::fprintf(stderr, "unknown option %s\n", k.c_str());
      return 2;
    }
  }
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, 0), "device properties");
  const LlamaShape shape = LlamaShape::llama3_8b();
  std::ostringstream md;
  md << "GPU: " << prop.name << ". Model: Llama-3-8B shape (32 layers, 32 / 8 heads, head_dim 128, hidden 4096, ffn "
     << "14336, vocab 128256; " << shape.n_params() / 1e9 << "B parameters), random bf16 weights; KV cache filled "
     << "synthetically (no prefill); " << steps << " timed decode steps per row.\n\n";
  md << "| cache | batch | context | ms / step | tokens/s | bytes / step (GB) | GB/s |\n|---|---:|---:|---:|---:|---:|---:|\n";
  auto row = [&](const std::string& line) {
    md << line;
    std::fputs(line.c_str(), stdout);
    std::fflush(stdout);
  };
  struct Run {
    std::string cache;
    long long ctx;
    bool graph;
  };
  std::vector<Run> runs;
  for (const auto& c : caches) {
    for (const auto& t : contexts) {
      runs.push_back({c, std::stoll(t), false});
      runs.push_back({c, std::stoll(t), true});
    }
  }
  if (pq_1m) {
    runs.push_back({"f16", 1 << 20, true});
    runs.push_back({"pq4", 1 << 20, true});
    runs.push_back({"pq4w", 1 << 20, true});
    runs.push_back({"pq4n", 1 << 20, true});
  }
  for (const Run& r : runs) {
    GpuLlamaOptions o;
    o.batch = batch;
    o.capacity = r.ctx + steps + 3;
    o.cache = r.cache == "f16" ? GpuCache::kF16 : GpuCache::kPQ;
    o.pq_M = r.cache == "pq4" || r.cache == "pq4w" || r.cache == "pq4n" ? 64 : r.cache == "pq2" ? 32 : 0;
    o.pq_window = r.cache == "pq4w" || r.cache == "pq4n" ? 128 : 0;
    o.pq_rotate = o.pq_k_channel_group = o.pq_v_token_norm = r.cache == "pq4n";
    o.cuda_graph = r.graph;
    const std::string name = std::string(r.cache == "f16"    ? "fp16"
                                         : r.cache == "pq4"  ? "pq 4-bit (M=64)"
                                         : r.cache == "pq4w" ? "pq 4-bit (M=64) + exact window 128, async encode"
                                         : r.cache == "pq4n" ? "pq-norm 4-bit (rotation, K groups 128, V norms) + window 128"
                                                             : "pq 2-bit (M=32)") +
                             (r.graph ? ", graph" : ", eager launches");
    char line[600];
    try {
      GpuLlama model(shape, o);
      model.init_random(1);
      model.fill_cache_random(r.ctx, 2);
      std::vector<int> tokens(static_cast<std::size_t>(batch), 1);
      for (int i = 0; i < 2; ++i) model.step(tokens);
      check(cudaStreamSynchronize(model.stream()), "warm-up");
      cudaEvent_t a, b;
      check(cudaEventCreate(&a), "event");
      check(cudaEventCreate(&b), "event");
      check(cudaEventRecord(a, model.stream()), "event");
      for (int i = 0; i < steps; ++i) model.step(tokens);  // each step waits for the one before (decode is sequential)
      check(cudaEventRecord(b, model.stream()), "event");
      check(cudaEventSynchronize(b), "event");
      float ms = 0;
      check(cudaEventElapsedTime(&ms, a, b), "event");
      ms /= static_cast<float>(steps);
      const double kv = o.cache == GpuCache::kF16
                            ? 2.0 * shape.n_layers * shape.n_kv_heads * static_cast<double>(r.ctx) * shape.head_dim * 2 * batch
                            : 2.0 * shape.n_layers * shape.n_kv_heads * static_cast<double>(r.ctx) * o.pq_M * batch;
      const double bytes = static_cast<double>(GpuLlama::weight_bytes(shape)) + kv;
      std::snprintf(line, sizeof line, "| %s | %d | %lld | %.2f | %.1f | %.1f | %.0f |\n", name.c_str(), batch, r.ctx, ms,
                    1000.0 * batch / ms, bytes / 1e9, bytes / (ms * 1e6));
    } catch (const ResourceError& e) {
      std::snprintf(line, sizeof line, "| %s | %d | %lld | refused: %s | | | |\n", name.c_str(), batch, r.ctx, e.what());
    }
    row(line);
  }
  if (prefill > 0) {
    md << "\nPrefill: a " << prefill << "-token prompt (random tokens) from an empty cache in chunks of " << chunk
       << " tokens per sequence (attention in the chunk over exact K/V, earlier chunks read from the cache as decode "
          "reads them; PQ codes written per chunk); timed from the first chunk to the last logits.\n\n"
       << "| cache | batch | prompt | chunk | seconds | tokens/s |\n|---|---:|---:|---:|---:|---:|\n";
    for (const std::string& c : prefill_caches) {
      GpuLlamaOptions o;
      o.prefill_tensor_cores = c.find("CUDA-core") == std::string::npos;
      o.prefill_decode_history = c.find("per block") == std::string::npos && c.find("CUDA-core") == std::string::npos;
      o.batch = batch;
      o.capacity = prefill;
      const bool f16 = c.rfind("f16", 0) == 0, norm = c.rfind("pq4n", 0) == 0;
      o.cache = f16 ? GpuCache::kF16 : GpuCache::kPQ;
      o.pq_M = f16 ? 0 : 64;
      o.pq_window = f16 ? 0 : 128;
      o.pq_rotate = o.pq_k_channel_group = o.pq_v_token_norm = norm;
      o.prefill_chunk = chunk;
      char line[600];
      try {
        GpuLlama model(shape, o);
        model.init_random(1);
        std::vector<int> tokens(static_cast<std::size_t>(batch) * chunk);
        for (std::size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int>((i * 7919) % shape.vocab);
        model.prefill(std::vector<int>(tokens.begin(), tokens.begin() + batch * std::min(chunk, 64)), std::min(chunk, 64));
        model.reset();  // warm-up: cuBLAS heuristics, module loading
        const auto t0 = std::chrono::steady_clock::now();
        for (int done = 0; done < prefill; done += chunk) {
          const int n = std::min(chunk, prefill - done);
          std::vector<int> part;
          for (int b = 0; b < batch; ++b) part.insert(part.end(), tokens.begin() + b * chunk, tokens.begin() + b * chunk + n);
          model.prefill(part, n);  // returns when the chunk's logits are ready
        }
        const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        std::snprintf(line, sizeof line, "| %s | %d | %d | %d | %.2f | %.0f |\n", c.c_str(), batch, prefill, chunk, sec,
                      static_cast<double>(prefill) * batch / sec);
      } catch (const ResourceError& e) {
        std::snprintf(line, sizeof line, "| %s | %d | %d | %d | refused: %s | |\n", c.c_str(), batch, prefill, chunk, e.what());
      }
      row(line);
    }
  }
  std::printf("\n%s", md.str().c_str());
  if (!out_path.empty()) std::ofstream(out_path) << md.str();
  return 0;
}
