// Dense decode attention (one query token) per SIMD level at several context lengths, with a
// memcpy of the same number of bytes as the bandwidth baseline measured in the same run.
// Reports bytes of K/V read per second (the kernel is memory-bound: ~2 flops per byte at f16).
// Shapes: Llama-3-8B layer (32 heads / 8 kv heads, head_dim 128) and gutenberg-23m (4 / 2).
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "core/half.h"
#include "kernels/dense_attention.h"

namespace million {
namespace {

struct Shape {
  int n_heads, n_kv_heads, head_dim;
};
constexpr Shape kShapes[] = {{32, 8, 128}, {4, 2, 128}};

struct Data {
  std::vector<float> q, out;
  std::vector<float> kf, vf;
  std::vector<std::uint16_t> kh, vh;
};

Data make_data(const Shape& s, std::int64_t ctx) {
  Data d;
  std::mt19937 rng(1);
  std::normal_distribution<float> dist;
  d.q.resize(static_cast<std::size_t>(s.n_heads * s.head_dim));
  d.out.resize(d.q.size());
  for (auto& x : d.q) x = dist(rng);
  const std::size_t n = static_cast<std::size_t>(s.n_kv_heads * ctx * s.head_dim);
  d.kf.resize(n);
  d.vf.resize(n);
  d.kh.resize(n);
  d.vh.resize(n);
  for (std::size_t i = 0; i < n; ++i) {
    d.kf[i] = dist(rng);
    d.vf[i] = dist(rng);
    d.kh[i] = f32_to_f16(d.kf[i]);
    d.vh[i] = f32_to_f16(d.vf[i]);
  }
  return d;
}

// args: shape index, context, dtype (0 f32, 1 f16), level
void BM_DecodeAttention(benchmark::State& state) {
  const Shape& s = kShapes[state.range(0)];
  const std::int64_t ctx = state.range(1);
  const KVDType dtype = state.range(2) == 0 ? KVDType::kF32 : KVDType::kF16;
  const auto level = static_cast<SimdLevel>(state.range(3));
  if (!simd_level_supported(level)) {
    state.SkipWithError("SIMD level not supported on this CPU");
    return;
  }
  Data d = make_data(s, ctx);
  DenseAttentionArgs a;
  a.n_queries = 1;
  a.pos0 = ctx - 1;
  a.n_heads = s.n_heads;
  a.n_kv_heads = s.n_kv_heads;
  a.head_dim = s.head_dim;
  a.scale = static_cast<float>(1.0 / std::sqrt(s.head_dim));
  a.q = d.q.data();
  a.k = dtype == KVDType::kF32 ? static_cast<const void*>(d.kf.data()) : d.kh.data();
  a.v = dtype == KVDType::kF32 ? static_cast<const void*>(d.vf.data()) : d.vh.data();
  a.kv_head_stride = ctx * s.head_dim;
  a.kv_dtype = dtype;
  a.out = d.out.data();
  for (auto _ : state) {
    dense_attention(a, level);
    benchmark::DoNotOptimize(d.out.data());
  }
  const double bytes = 2.0 * static_cast<double>(d.kf.size()) * (dtype == KVDType::kF32 ? 4 : 2);
  state.SetBytesProcessed(static_cast<std::int64_t>(bytes) * state.iterations());
  state.SetLabel(std::string(simd_level_name(level)) + (dtype == KVDType::kF32 ? " f32" : " f16") + " heads " +
                 std::to_string(s.n_heads) + "/" + std::to_string(s.n_kv_heads));
}

// Baseline: memcpy of the bytes the f16 kernel reads (read + write counted, as a copy moves both).
void BM_MemcpyBaseline(benchmark::State& state) {
  const std::size_t bytes = static_cast<std::size_t>(state.range(0));
  std::vector<char> src(bytes, 1), dst(bytes, 0);
  for (auto _ : state) {
    std::memcpy(dst.data(), src.data(), bytes);
    benchmark::DoNotOptimize(dst.data());
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(2 * bytes) * state.iterations());
  state.SetLabel("memcpy, read + write");
}

void decode_args(benchmark::internal::Benchmark* b) {
  for (int shape : {0, 1}) {
    for (std::int64_t ctx : {1024, 4096, 16384, 32768}) {
      for (int dtype : {0, 1}) {
        for (int level : {0, 1, 2}) b->Args({shape, ctx, dtype, level});
      }
    }
  }
}

BENCHMARK(BM_DecodeAttention)->Apply(decode_args)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_MemcpyBaseline)->Arg(8 << 20)->Arg(64 << 20)->Arg(256 << 20)->UseRealTime()->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace million

BENCHMARK_MAIN();
