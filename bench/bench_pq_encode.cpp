// PQ encoding speed per SIMD level, with the double-precision scalar reference (pq_encode_ref)
// as the baseline in the same run. Reports vectors encoded per second (items_per_second).
// Shapes: head_dim 128 with M 32 / 64 and nbits 4 / 8, n = 1 (one token per call, the decode
// path) and n = 65536 (a batch: prefill, OpenMP over chunks); plus the k-means assignment shape
// (head_dim = dsub = 2, M = 1, 256 centroids) that training runs over many points.
#include <benchmark/benchmark.h>

#include <random>
#include <string>
#include <vector>

#include "pq/encode.h"

namespace million {
namespace {

constexpr int kRefLevel = -1;  // the "level" argument that selects pq_encode_ref

PQCodebook make_codebook(int head_dim, int M, int nbits) {
  PQCodebook cb;
  cb.head_dim = head_dim;
  cb.M = M;
  cb.nbits = nbits;
  cb.centroids.resize(static_cast<std::size_t>(M) * cb.ksub() * cb.dsub());
  std::mt19937 rng(1);
  std::normal_distribution<float> dist;
  for (auto& c : cb.centroids) c = dist(rng);
  return cb;
}

// args: level (kRefLevel or a SimdLevel), head_dim, M, nbits, n
void BM_PQEncode(benchmark::State& state) {
  const int level_arg = static_cast<int>(state.range(0));
  const int head_dim = static_cast<int>(state.range(1)), M = static_cast<int>(state.range(2));
  const int nbits = static_cast<int>(state.range(3));
  const std::int64_t n = state.range(4);
  const auto level = static_cast<SimdLevel>(level_arg < 0 ? 0 : level_arg);
  if (level_arg >= 0 && !simd_level_supported(level)) {
    state.SkipWithError("SIMD level not supported on this CPU");
    return;
  }
  const PQCodebook cb = make_codebook(head_dim, M, nbits);
  const PQEncoder enc(cb);
  std::vector<float> x(static_cast<std::size_t>(n * head_dim));  // [n, head_dim] f32
  std::mt19937 rng(2);
  std::normal_distribution<float> dist;
  for (auto& v : x) v = dist(rng);
  std::vector<std::uint8_t> codes(static_cast<std::size_t>(n * M));  // [n, M] u8
  for (auto _ : state) {
    if (level_arg == kRefLevel) {
      pq_encode_ref(cb, x.data(), n, codes.data());
    } else {
      enc.encode(x.data(), n, codes.data(), level);
    }
    benchmark::DoNotOptimize(codes.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * n);
  state.SetLabel(std::string(level_arg == kRefLevel ? "ref(double)" : simd_level_name(level)) +
                 " head_dim=" + std::to_string(head_dim) + " M=" + std::to_string(M) + " nbits=" +
                 std::to_string(nbits) + " n=" + std::to_string(n));
}

void Args(benchmark::internal::Benchmark* b) {
  constexpr int kTokenN = 1, kBatchN = 65536;
  for (int n : {kTokenN, kBatchN}) {
    for (int M : {32, 64}) {
      for (int nbits : {4, 8}) {
        for (int level : {kRefLevel, 0, 1, 2}) b->Args({level, 128, M, nbits, n});
      }
    }
  }
  // k-means assignment step (train.cpp): one subspace, 2 dims, 256 centroids, many points.
  constexpr int kKmeansN = 1 << 20;
  for (int level : {kRefLevel, 0, 1, 2}) b->Args({level, 2, 1, 8, kKmeansN});
}

BENCHMARK(BM_PQEncode)->Apply(Args)->Unit(benchmark::kMicrosecond)->UseRealTime();

}  // namespace
}  // namespace million

BENCHMARK_MAIN();
