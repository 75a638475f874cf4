// GPU decode-attention benchmark (not a test): one query token per sequence, the Llama-3-8B
// head configuration (32 query heads, 8 kv heads, head_dim 128), batch 1 and 8, contexts 4K to
// 1M; our dense fp16 kernel and the PQ kernel at 4 bits (M = 64) and 2 bits (M = 32), beside
// the card's device-to-device copy bandwidth measured in the same run. Caches are filled with
// random values (no prefill). Bytes counted: K and V read once (codes for PQ; the 64 KiB
// codebooks per kv head are not counted). pq-norm: the normalised codebooks of the default
// candidate, keys channel-group (128 tokens) + values token norms (CUDA cores; bytes: codes +
// f16 norms + f16 group min / range). Median of --reps timed runs (CUDA events) after
// warm-up. Prints a markdown table and writes it to --out.
//   bench_cuda_attention [--out FILE] [--reps N] [--batches 1,8] [--contexts 4096,...]
//                        [--norm-parts 1]   (also pq-norm 4-bit with one normalisation at a time)
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "backends/cuda/cuda_attention.h"
#include "backends/cuda/device_buffer.h"
#include "core/half.h"

using namespace million;
using namespace million::cuda;

namespace {

std::vector<long long> parse_list(const std::string& s) {
  std::vector<long long> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) out.push_back(std::stoll(item));
  return out;
}

using Bytes = DeviceBuffer<std::uint8_t>;

// Fills `bytes` of device memory by repeating a random host pattern of up to 64 MiB.
void fill(void* dst, std::size_t bytes, const std::vector<std::uint8_t>& pattern) {
  const std::size_t chunk = std::min(bytes, pattern.size());
  check(cudaMemcpy(dst, pattern.data(), chunk, cudaMemcpyHostToDevice), "fill upload");
  for (std::size_t off = chunk; off < bytes; off += chunk) {
    check(cudaMemcpy(static_cast<char*>(dst) + off, dst, std::min(chunk, bytes - off), cudaMemcpyDeviceToDevice),
          "fill copy");
  }
}

template <typename F>
double median_us(F&& run, int reps) {
  cudaEvent_t a, b;
  check(cudaEventCreate(&a), "event");
  check(cudaEventCreate(&b), "event");
  for (int i = 0; i < 3; ++i) run();
  check(cudaDeviceSynchronize(), "warm-up");
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    check(cudaEventRecord(a), "record");
    run();
    check(cudaEventRecord(b), "record");
    check(cudaEventSynchronize(b), "sync");
    float ms = 0;
    check(cudaEventElapsedTime(&ms, a, b), "elapsed");
    t.push_back(ms * 1e3);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  std::string out_path;
  int reps = 20;
  bool norm_parts = false;
  std::vector<long long> batches{1, 8}, contexts{4096, 32768, 131072, 524288, 1048576};
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--out") out_path = v;
    else if (k == "--reps") reps = std::stoi(v);
    else if (k == "--batches") batches = parse_list(v);
    else if (k == "--contexts") contexts = parse_list(v);
    else if (k == "--norm-parts") norm_parts = v == "1";
  }
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
  std::mt19937 rng(1);
  std::normal_distribution<float> dist;
  std::vector<std::uint8_t> halves(64u << 20), codes(64u << 20);
  for (std::size_t i = 0; i + 1 < halves.size(); i += 2) {
    const std::uint16_t h = f32_to_f16(dist(rng));
    halves[i] = static_cast<std::uint8_t>(h & 0xff);
    halves[i + 1] = static_cast<std::uint8_t>(h >> 8);
  }
  for (auto& c : codes) c = static_cast<std::uint8_t>(rng());

  std::ostringstream md;
  // Copy bandwidth: 2 GiB device to device, bytes read + written.
  double copy_gbs = 0;
  {
    const std::size_t n = 2ull << 30;
    Bytes a(n), b(n);
    fill(a.get(), n, halves);
    const double us = median_us([&] { check(cudaMemcpyAsync(b.get(), a.get(), n, cudaMemcpyDeviceToDevice), "copy"); }, reps);
    copy_gbs = 2.0 * n / (us * 1e3);
  }
  md << "GPU: " << prop.name << ", " << prop.multiProcessorCount << " SMs, " << (prop.totalGlobalMem >> 30)
     << " GiB. Device-to-device copy (2 GiB, read + write): " << static_cast<int>(copy_gbs) << " GB/s.\n\n";
  md << "| kernel | batch | context | time (us) | K/V bytes read (MiB) | GB/s | % of copy |\n";
  md << "|---|---:|---:|---:|---:|---:|---:|\n";

  const int H = 32, Hkv = 8, D = 128;
  constexpr std::int64_t kNormGroup = 128;
  for (long long B : batches) {
    for (long long T : contexts) {
      const DecodeShape s{static_cast<int>(B), H, Hkv, D, T, T};
      const int splits = choose_splits(s, prop.multiProcessorCount);
      DeviceBuffer<float> q(static_cast<std::size_t>(B) * H * D), out(static_cast<std::size_t>(B) * H * D),
          ws(decode_workspace_floats(s, splits));
      {
        std::vector<float> hq(static_cast<std::size_t>(B) * H * D);
        for (auto& x : hq) x = dist(rng);
        q.upload(hq);
      }
      auto row = [&](const std::string& name, double us, double bytes) {
        const double gbs = bytes / (us * 1e3);
        char line[256];
        std::snprintf(line, sizeof line, "| %s | %lld | %lld | %.1f | %.1f | %.0f | %.0f%% |\n", name.c_str(), B, T, us,
                      bytes / (1 << 20), gbs, 100.0 * gbs / copy_gbs);
        md << line;
        std::fputs(line, stdout);
        std::fflush(stdout);
      };
      std::size_t free_b = 0, total_b = 0;
      check(cudaMemGetInfo(&free_b, &total_b), "cudaMemGetInfo");
      const double dense_bytes = 2.0 * B * Hkv * T * D * 2;
      if (dense_bytes * 1.02 > static_cast<double>(free_b)) {
        char line[256];
        std::snprintf(line, sizeof line, "| fp16 (ours) | %lld | %lld | does not fit: needs %.1f GiB, %.1f GiB free | | | |\n",
                      B, T, dense_bytes / (1ull << 30), static_cast<double>(free_b) / (1ull << 30));
        md << line;
        std::fputs(line, stdout);
      } else {
        Bytes k(static_cast<std::size_t>(dense_bytes / 2)), v(static_cast<std::size_t>(dense_bytes / 2));
        fill(k.get(), k.bytes(), halves);
        fill(v.get(), v.bytes(), halves);
        DenseDecodeArgs a{s, k.get(), v.get(), q.get(), out.get(), 1.0f / std::sqrt(128.0f)};
        row("fp16 (ours)", median_us([&] { dense_decode_attention(a, ws.get(), splits, nullptr); }, reps),
            dense_bytes);
      }
      for (int M : {64, 32}) {
        const std::size_t code_bytes = static_cast<std::size_t>(B) * Hkv * T * M;
        const std::size_t cb_elems = static_cast<std::size_t>(M) * 256 * (D / M);
        Bytes ck(code_bytes), cv(code_bytes), bk(cb_elems * Hkv * 2), bv(cb_elems * Hkv * 2);
        fill(ck.get(), ck.bytes(), codes);
        fill(cv.get(), cv.bytes(), codes);
        fill(bk.get(), bk.bytes(), halves);
        fill(bv.get(), bv.bytes(), halves);
        PQDecodeArgs a;
        a.shape = s;
        a.M = M;
        a.ksub = 256;
        a.codes_k = ck.get();
        a.codes_v = cv.get();
        a.cb_k = bk.get();
        a.cb_v = bv.get();
        a.cb_k_head_stride = a.cb_v_head_stride = static_cast<std::int64_t>(cb_elems);
        a.q = q.get();
        a.out = out.get();
        a.scale = 1.0f / std::sqrt(128.0f);
        // The mma kernel runs with its own splits (one wave of blocks); random codes read in
        // either layout cost the same.
        const int mma_splits = choose_splits_mma(s, prop.multiProcessorCount, pq_mma_blocks_per_sm(a));
        DeviceBuffer<float> mma_ws(decode_workspace_floats(s, mma_splits));
        auto time_pq = [&](PQKernel kernel) {
          a.kernel = kernel;
          if (kernel == PQKernel::kMma) {
            return median_us([&] { pq_decode_attention(a, mma_ws.get(), mma_splits, nullptr); }, reps);
          }
          return median_us([&] { pq_decode_attention(a, ws.get(), splits, nullptr); }, reps);
        };
        for (PQKernel kernel : {PQKernel::kMma, PQKernel::kCudaCores}) {
          const std::string name = std::string(M == 64 ? "pq 4-bit (M=64)" : "pq 2-bit (M=32)") +
                                   (kernel == PQKernel::kMma ? ", mma" : ", CUDA cores");
          row(name, time_pq(kernel), 2.0 * static_cast<double>(code_bytes));
        }
        // pq-norm: keys channel-group (128 tokens: f16 min + range per channel), values token
        // norms (f16 per token), CUDA cores. Bytes: codes + norms + group parameters.
        const std::int64_t n_groups = (T + kNormGroup - 1) / kNormGroup;
        const std::size_t norm_bytes = static_cast<std::size_t>(B) * Hkv * T * 2;
        const std::size_t group_bytes = static_cast<std::size_t>(B) * Hkv * n_groups * 2 * D * 2;
        Bytes vn(norm_bytes), kg(group_bytes);
        fill(vn.get(), vn.bytes(), halves);
        fill(kg.get(), kg.bytes(), halves);
        a.k_group_params = kg.get();
        a.v_token_norm = vn.get();
        a.norm_group = kNormGroup;
        for (PQKernel kernel : {PQKernel::kMma, PQKernel::kCudaCores}) {
          row(std::string(M == 64 ? "pq-norm 4-bit (M=64)" : "pq-norm 2-bit (M=32)") +
                  (kernel == PQKernel::kMma ? ", mma" : ", CUDA cores"),
              time_pq(kernel), 2.0 * static_cast<double>(code_bytes) + static_cast<double>(norm_bytes + group_bytes));
        }
        a.kernel = PQKernel::kCudaCores;
        if (M == 64) {  // the other value normalisation: channel-groups on both sides
          Bytes vg(group_bytes);
          fill(vg.get(), vg.bytes(), halves);
          a.v_token_norm = nullptr;
          a.v_group_params = vg.get();
          row("pq-norm 4-bit (M=64), K+V channel-group, CUDA cores",
              median_us([&] { pq_decode_attention(a, ws.get(), splits, nullptr); }, reps),
              2.0 * static_cast<double>(code_bytes + group_bytes));
          if (norm_parts) {  // one normalisation at a time: what each costs
            struct Part {
              const char* name;
              const void *kn, *vn, *kg, *vg;
              std::size_t extra;
            };
            const Part parts[] = {{"K token", vn.get(), nullptr, nullptr, nullptr, norm_bytes},
                                  {"K channel-group", nullptr, nullptr, kg.get(), nullptr, group_bytes},
                                  {"V token", nullptr, vn.get(), nullptr, nullptr, norm_bytes},
                                  {"V channel-group", nullptr, nullptr, nullptr, vg.get(), group_bytes}};
            for (const Part& part : parts) {
              a.k_token_norm = part.kn;
              a.v_token_norm = part.vn;
              a.k_group_params = part.kg;
              a.v_group_params = part.vg;
              row(std::string("pq-norm 4-bit (M=64), ") + part.name + " only, CUDA cores",
                  median_us([&] { pq_decode_attention(a, ws.get(), splits, nullptr); }, reps),
                  2.0 * static_cast<double>(code_bytes) + static_cast<double>(part.extra));
            }
          }
        }
      }
    }
  }
  std::printf("\n%s", md.str().c_str());
  if (!out_path.empty()) std::ofstream(out_path) << md.str();
  return 0;
}
