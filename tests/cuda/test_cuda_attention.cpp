// CUDA decode attention against the CPU references (built only with -DMILLION_CUDA=ON; run on
// the GPU machine by scripts/gpu-check.sh).
//  - dense fp16: dense_attention_ref over the same fp16 K/V (double accumulation).
//  - PQ: the codes decoded on the host with the same fp16 centroids, then dense_attention_ref:
//    the invariant "PQ attention equals dense attention over the decoded K/V".
// Sweep: head_dim 64/128 (dense also 8, 32, 96: the generic kernel), GQA 1/2/4/8 (and 3/5/6/7 for the dense and mma kernels), batch 1-3,
// contexts 1 .. 4099 (tile edges 255/256/257),
// splits 1 / automatic / one per tile (tiles: 256 tokens dense, 512 PQ), PQ dsub 2 and 4, ksub 16, 64, 256, per-head and shared
// codebooks. Bound: relative max-abs error <= 2e-5 of the output scale (f32 sums in another
// order, __expf) for the CUDA-core kernels, 4e-3 for the PQ tensor-core (mma) kernel (fp16 Q and
// probabilities). Outputs start as NaN and sit between guard regions that must stay intact.
// Normalised codebooks (token norms, channel-groups of 64-1024 tokens, K and V each) against
// the same reference over K/V denormalised on the host with the f16 parameters.
// Prefill attention (a chunk of queries, causal) against dense_attention_ref over the K/V every
// position holds in its source: an fp16 cache; PQ codes only (stress mode); and codes + sinks +
// ring + the chunk's own f32 K/V (GpuLlama's window), with normalised codes, where the ring
// slot the chunk must not see is NaN.
#include <cuda_fp16.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "backends/cuda/cuda_attention.h"
#include "backends/cuda/device_buffer.h"
#include "backends/cuda/prefill_attention.h"
#include "core/half.h"
#include "kernels/dense_attention.h"
#include "million/error.h"
#include "pq/codebook.h"
#include "pq/encode.h"

namespace million::cuda {
namespace {

constexpr int kGuard = 256;
constexpr float kPoison = -1.2345678e30f;

int sm_count() {
  int dev = 0, n = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  check(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev), "SM count");
  return n;
}

// Output buffer [kGuard | n | kGuard] poisoned; returns the device pointer of the n floats.
struct GuardedOut {
  explicit GuardedOut(std::size_t count) : n(count), buf(count + 2 * kGuard) {
    std::vector<float> init(count + 2 * kGuard, kPoison);
    for (std::size_t i = 0; i < count; ++i) init[kGuard + i] = std::nanf("");
    buf.upload(init);
  }
  float* out() { return buf.get() + kGuard; }
  std::vector<float> result(bool& guards_ok) const {
    const auto all = buf.download();
    guards_ok = true;
    for (int i = 0; i < kGuard; ++i) {
      if (std::memcmp(&all[static_cast<std::size_t>(i)], &kPoison, 4) != 0) guards_ok = false;
      if (std::memcmp(&all[kGuard + n + static_cast<std::size_t>(i)], &kPoison, 4) != 0) guards_ok = false;
    }
    return {all.begin() + kGuard, all.begin() + kGuard + static_cast<std::ptrdiff_t>(n)};
  }
  std::size_t n;
  DeviceBuffer<float> buf;
};

// Reference for batch element b: dense_attention_ref over K/V [n_kv_heads, capacity, D].
std::vector<float> reference(const DecodeShape& s, const void* k, const void* v, KVDType dtype, const float* q) {
  std::vector<float> out(static_cast<std::size_t>(s.n_heads) * s.head_dim);
  DenseAttentionArgs a;
  a.n_queries = 1;
  a.pos0 = s.n_tokens - 1;
  a.n_heads = s.n_heads;
  a.n_kv_heads = s.n_kv_heads;
  a.head_dim = s.head_dim;
  a.scale = 1.0f / std::sqrt(static_cast<float>(s.head_dim));
  a.q = q;
  a.k = k;
  a.v = v;
  a.kv_head_stride = s.capacity * s.head_dim;
  a.kv_dtype = dtype;
  a.out = out.data();
  dense_attention_ref(a);
  return out;
}

// Returns the worst error relative to the output scale (max |want|); fails above `bound`.
double expect_close(const std::vector<float>& got, const std::vector<float>& want, const std::string& what,
                    double bound = 2e-5) {
  EXPECT_EQ(got.size(), want.size());
  double scale = 1e-3, worst = 0.0;
  for (float w : want) scale = std::max(scale, static_cast<double>(std::fabs(w)));
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i])) {
      ADD_FAILURE() << what << " element " << i << " not written or not finite";
      return 1.0;
    }
    worst = std::max(worst, std::fabs(static_cast<double>(got[i]) - want[i]));
  }
  EXPECT_LE(worst, bound * scale) << what;
  return worst / scale;
}

std::vector<int> split_choices(const DecodeShape& s, int tile) {
  const int tiles = static_cast<int>((s.n_tokens + tile - 1) / tile);
  std::vector<int> out{1, choose_splits(s, sm_count()), tiles};
  return out;
}

struct Shape {
  int batch, n_heads, n_kv_heads, head_dim;
  std::int64_t n_tokens;
};

std::vector<Shape> shapes() {
  std::vector<Shape> out;
  const std::int64_t contexts[] = {1, 7, 255, 256, 257, 1000, 4099};
  int k = 0;
  for (int D : {64, 128}) {
    for (int G : {1, 2, 4, 8}) {
      for (int rep = 0; rep < 2; ++rep, ++k) {
        const int n_kv = G == 8 ? 2 : 4;
        out.push_back({1 + k % 3, G * n_kv, n_kv, D, contexts[(k * 3) % 7]});
      }
    }
  }
  return out;
}

// GQA groups that are not powers of two (SmolLM2: 3, Qwen2.5-0.5B: 7): the dense and mma kernels.
std::vector<Shape> odd_group_shapes() {
  return {{1, 9, 3, 64, 1000}, {2, 12, 2, 128, 300}, {1, 14, 2, 128, 257}, {1, 15, 3, 128, 40}};
}

TEST(CudaDecodeAttention, DenseF16MatchesReference) {
  std::mt19937 rng(1);
  std::normal_distribution<float> dist;
  std::vector<Shape> all = shapes();
  // The generic kernel for other head_dims (small models): stories260K's 8, and 32, 96.
  all.push_back({1, 8, 4, 8, 257});
  all.push_back({2, 4, 1, 32, 1000});
  all.push_back({1, 16, 2, 96, 129});
  for (const Shape& sh : odd_group_shapes()) all.push_back(sh);
  all.push_back({1, 6, 2, 32, 100});  // GQA 3 in the generic kernel
  for (const Shape& sh : all) {
    DecodeShape s{sh.batch, sh.n_heads, sh.n_kv_heads, sh.head_dim, sh.n_tokens, sh.n_tokens + 3};
    const std::size_t kv_n = static_cast<std::size_t>(s.batch) * s.n_kv_heads * s.capacity * s.head_dim;
    std::vector<std::uint16_t> k(kv_n), v(kv_n);
    for (auto& x : k) x = f32_to_f16(dist(rng));
    for (auto& x : v) x = f32_to_f16(dist(rng));
    std::vector<float> q(static_cast<std::size_t>(s.batch) * s.n_heads * s.head_dim);
    for (auto& x : q) x = dist(rng);
    DeviceBuffer<std::uint16_t> dk(kv_n), dv(kv_n);
    DeviceBuffer<float> dq(q.size());
    dk.upload(k);
    dv.upload(v);
    dq.upload(q);
    for (int splits : split_choices(s, 256)) {
      const std::string what = "dense B=" + std::to_string(s.batch) + " H=" + std::to_string(s.n_heads) + "/" +
                               std::to_string(s.n_kv_heads) + " D=" + std::to_string(s.head_dim) +
                               " T=" + std::to_string(s.n_tokens) + " splits=" + std::to_string(splits);
      DeviceBuffer<float> ws(decode_workspace_floats(s, splits));
      GuardedOut out(q.size());
      dense_decode_attention({s, dk.get(), dv.get(), dq.get(), out.out(), 1.0f / std::sqrt(float(s.head_dim))}, ws.get(),
                             splits, nullptr);
      check(cudaDeviceSynchronize(), "sync");
      bool guards = false;
      const auto got = out.result(guards);
      EXPECT_TRUE(guards) << what;
      const std::size_t per_b = static_cast<std::size_t>(s.n_kv_heads) * s.capacity * s.head_dim;
      for (int b = 0; b < s.batch; ++b) {
        const auto want = reference(s, k.data() + b * per_b, v.data() + b * per_b, KVDType::kF16,
                                    q.data() + static_cast<std::size_t>(b) * s.n_heads * s.head_dim);
        const auto first = got.begin() + static_cast<std::ptrdiff_t>(b) * s.n_heads * s.head_dim;
        expect_close(std::vector<float>(first, first + static_cast<std::ptrdiff_t>(want.size())), want,
                     what + " b=" + std::to_string(b));
      }
    }
  }
}

// The tensor-core kernel rounds Q and the probabilities to fp16 (2^-11 relative each).
constexpr double kTensorCoreBound = 4e-3;

TEST(CudaDecodeAttention, PQEqualsDenseAttentionOverDecodedKV) {
  double worst_f32 = 0.0, worst_tc = 0.0;
  std::mt19937 rng(2);
  std::normal_distribution<float> dist;
  int k_case = 0;
  std::vector<Shape> all = shapes();
  for (const Shape& sh : odd_group_shapes()) all.push_back(sh);
  for (const Shape& sh : all) {
    for (int dsub : {2, 4}) {
      ++k_case;
      const int D = sh.head_dim, M = D / dsub;
      const int ksub = k_case % 3 == 0 ? 16 : k_case % 5 == 0 ? 64 : 256;  // 64: the runtime-ksub kernels
      const bool shared = k_case % 4 == 1;
      DecodeShape s{sh.batch, sh.n_heads, sh.n_kv_heads, D, sh.n_tokens, sh.n_tokens + 5};
      const std::size_t cb_elems = static_cast<std::size_t>(M) * ksub * dsub;
      const int n_books = shared ? 1 : s.n_kv_heads;
      std::vector<std::uint16_t> cbk(cb_elems * n_books), cbv(cbk.size());
      for (auto& x : cbk) x = f32_to_f16(dist(rng));
      for (auto& x : cbv) x = f32_to_f16(dist(rng));
      const std::size_t code_n = static_cast<std::size_t>(s.batch) * s.n_kv_heads * s.capacity * M;
      std::vector<std::uint8_t> ck(code_n), cv(code_n);
      for (auto& c : ck) c = static_cast<std::uint8_t>(rng() % static_cast<unsigned>(ksub));
      for (auto& c : cv) c = static_cast<std::uint8_t>(rng() % static_cast<unsigned>(ksub));
      std::vector<float> q(static_cast<std::size_t>(s.batch) * s.n_heads * D);
      for (auto& x : q) x = dist(rng);
      // Decoded K/V on the host: [batch, n_kv_heads, capacity, D] f32.
      std::vector<float> kd(code_n * dsub), vd(kd.size());
      for (std::size_t row = 0; row < code_n / M; ++row) {
        const std::size_t h = (row / static_cast<std::size_t>(s.capacity)) % static_cast<std::size_t>(s.n_kv_heads);
        const std::size_t book = shared ? 0 : h;
        for (int m = 0; m < M; ++m) {
          for (int e = 0; e < dsub; ++e) {
            const std::size_t ik = book * cb_elems + (static_cast<std::size_t>(m) * ksub + ck[row * M + m]) * dsub + e;
            const std::size_t iv = book * cb_elems + (static_cast<std::size_t>(m) * ksub + cv[row * M + m]) * dsub + e;
            kd[row * D + m * dsub + e] = f16_to_f32(cbk[ik]);
            vd[row * D + m * dsub + e] = f16_to_f32(cbv[iv]);
          }
        }
      }
      DeviceBuffer<std::uint8_t> dck(code_n), dcv(code_n);
      DeviceBuffer<std::uint16_t> dbk(cbk.size()), dbv(cbv.size());
      DeviceBuffer<float> dq(q.size());
      dck.upload(ck);
      dcv.upload(cv);
      dbk.upload(cbk);
      dbv.upload(cbv);
      dq.upload(q);
      // The mma kernel's layout of the same codes.
      std::vector<std::uint8_t> ik(code_n), iv(code_n);
      interleave_pq_codes(ck.data(), ik.data(), code_n / M, M, false);
      interleave_pq_codes(cv.data(), iv.data(), code_n / M, M, true);
      DeviceBuffer<std::uint8_t> dik(code_n), div(code_n);
      dik.upload(ik);
      div.upload(iv);
      for (int splits : split_choices(s, 512)) {
      for (bool tc : {false, true}) {
        const std::string what = std::string(tc ? "pq-mma" : "pq") + " B=" + std::to_string(s.batch) + " H=" + std::to_string(s.n_heads) + "/" +
                                 std::to_string(s.n_kv_heads) + " D=" + std::to_string(D) + " M=" + std::to_string(M) +
                                 " ksub=" + std::to_string(ksub) + (shared ? " shared" : " per-head") +
                                 " T=" + std::to_string(s.n_tokens) + " splits=" + std::to_string(splits);
        DeviceBuffer<float> ws(decode_workspace_floats(s, splits));
        GuardedOut out(q.size());
        PQDecodeArgs a;
        a.shape = s;
        a.M = M;
        a.ksub = ksub;
        a.codes_k = tc ? dik.get() : dck.get();
        a.codes_v = tc ? div.get() : dcv.get();
        a.cb_k = dbk.get();
        a.cb_v = dbv.get();
        a.cb_k_head_stride = a.cb_v_head_stride = shared ? 0 : static_cast<std::int64_t>(cb_elems);
        a.q = dq.get();
        a.out = out.out();
        a.scale = 1.0f / std::sqrt(static_cast<float>(D));
        a.kernel = tc ? PQKernel::kMma : PQKernel::kCudaCores;
        const int G = s.group();
        if (!tc && G != 1 && G != 2 && G != 4 && G != 8) {  // the CUDA-core kernel's groups
          EXPECT_THROW(pq_decode_attention(a, ws.get(), splits, nullptr), InvalidArgumentError) << what;
          continue;
        }
        pq_decode_attention(a, ws.get(), splits, nullptr);
        check(cudaDeviceSynchronize(), "sync");
        bool guards = false;
        const auto got = out.result(guards);
        EXPECT_TRUE(guards) << what;
        const std::size_t per_b = static_cast<std::size_t>(s.n_kv_heads) * s.capacity * D;
        for (int b = 0; b < s.batch; ++b) {
          const auto want = reference(s, kd.data() + b * per_b, vd.data() + b * per_b, KVDType::kF32,
                                      q.data() + static_cast<std::size_t>(b) * s.n_heads * D);
          const auto first = got.begin() + static_cast<std::ptrdiff_t>(b) * s.n_heads * D;
          const double err = expect_close(std::vector<float>(first, first + static_cast<std::ptrdiff_t>(want.size())),
                                          want, what + " b=" + std::to_string(b), tc ? kTensorCoreBound : 2e-5);
          (tc ? worst_tc : worst_f32) = std::max(tc ? worst_tc : worst_f32, err);
        }
      }
      }
    }
  }
  std::printf("PQ worst relative error: CUDA cores %.3g, mma (tensor cores) %.3g\n", worst_f32, worst_tc);
}

// Normalised codebooks (PQDecodeArgs' token norms / channel-group parameters): the kernel
// against dense attention over K/V decoded on the host as the CPU store does (centroid, then
// norm * u or min + range * u with the f16 parameters). Parameters of tokens and groups past
// n_tokens are NaN: a read of one would show in the output.
enum class Norm { kNone, kToken, kGroup };

const char* norm_name(Norm n) { return n == Norm::kNone ? "none" : n == Norm::kToken ? "token" : "channel-group"; }

struct NormCase {
  int batch, n_heads, n_kv_heads, head_dim, dsub, ksub;
  std::int64_t n_tokens;
  int group;
  Norm k, v;
};

TEST(CudaDecodeAttention, NormalisedPQEqualsDenseAttentionOverDecodedKV) {
  const NormCase cases[] = {
      {1, 32, 8, 128, 2, 256, 1000, 128, Norm::kGroup, Norm::kToken},  // the default candidate, 4-bit
      {2, 16, 4, 128, 4, 256, 4099, 128, Norm::kGroup, Norm::kToken},  // 2-bit, batch 2
      {1, 32, 8, 128, 2, 256, 127, 128, Norm::kGroup, Norm::kNone},    // less than one group
      {3, 8, 8, 64, 2, 16, 2500, 192, Norm::kToken, Norm::kGroup},     // groups straddle tiles
      {1, 16, 2, 128, 2, 256, 1537, 64, Norm::kGroup, Norm::kGroup},   // GQA 8, 8 groups a tile
      {1, 16, 2, 128, 4, 256, 3000, 128, Norm::kGroup, Norm::kToken},  // GQA 8, dsub 4
      {2, 8, 4, 64, 4, 64, 700, 1024, Norm::kToken, Norm::kToken},     // group longer than a tile
      {2, 4, 1, 128, 4, 256, 5000, 320, Norm::kGroup, Norm::kGroup},
      {2, 32, 8, 128, 2, 256, 777, 128, Norm::kNone, Norm::kGroup},
  };
  double worst = 0.0, worst_mma = 0.0;
  std::mt19937 rng(3);
  std::normal_distribution<float> dist;
  std::uniform_real_distribution<float> unif(0.0f, 1.0f);
  for (const NormCase& nc : cases) {
    const int D = nc.head_dim, dsub = nc.dsub, M = D / dsub, ksub = nc.ksub;
    DecodeShape s{nc.batch, nc.n_heads, nc.n_kv_heads, D, nc.n_tokens, nc.n_tokens + 5};
    const std::size_t cb_elems = static_cast<std::size_t>(M) * ksub * dsub;
    // Normalised centroids: in [0, 1] for channel-groups, ~unit vectors for token norms.
    auto centroid = [&](Norm n) { return n == Norm::kGroup ? unif(rng) : dist(rng) * (n == Norm::kToken ? 0.09f : 1.0f); };
    std::vector<std::uint16_t> cbk(cb_elems * s.n_kv_heads), cbv(cbk.size());
    for (auto& x : cbk) x = f32_to_f16(centroid(nc.k));
    for (auto& x : cbv) x = f32_to_f16(centroid(nc.v));
    const std::size_t rows = static_cast<std::size_t>(s.batch) * s.n_kv_heads * s.capacity;
    const std::size_t code_n = rows * M;
    std::vector<std::uint8_t> ck(code_n), cv(code_n);
    for (auto& c : ck) c = static_cast<std::uint8_t>(rng() % static_cast<unsigned>(ksub));
    for (auto& c : cv) c = static_cast<std::uint8_t>(rng() % static_cast<unsigned>(ksub));
    std::vector<float> q(static_cast<std::size_t>(s.batch) * s.n_heads * D);
    for (auto& x : q) x = dist(rng);
    // Parameters: token norms [batch * kv_heads, capacity]; groups [batch * kv_heads, n_groups, 2, D].
    const std::int64_t n_groups = (s.capacity + nc.group - 1) / nc.group;
    const std::uint16_t nan16 = 0x7e00;
    auto make_params = [&](Norm n) {
      std::vector<std::uint16_t> out;
      if (n == Norm::kToken) {
        out.resize(rows);
        for (std::size_t r = 0; r < rows; ++r) {
          out[r] = static_cast<std::int64_t>(r % s.capacity) < s.n_tokens ? f32_to_f16(0.5f + 12.0f * unif(rng)) : nan16;
        }
      } else if (n == Norm::kGroup) {
        out.resize(static_cast<std::size_t>(s.batch) * s.n_kv_heads * n_groups * 2 * D);
        for (std::size_t i = 0; i < out.size(); ++i) {
          const std::int64_t g = static_cast<std::int64_t>(i / (2 * D)) % n_groups;
          const bool range = (i / D) % 2 == 1;
          const float x = range ? 0.2f + 4.0f * unif(rng) : -2.0f + dist(rng);
          out[i] = g * nc.group < s.n_tokens ? f32_to_f16(x) : nan16;
        }
      }
      return out;
    };
    const auto pk = make_params(nc.k), pv = make_params(nc.v);
    // Decoded K/V on the host: [batch, n_kv_heads, capacity, D] f32 (tokens past n_tokens: 0).
    std::vector<float> kd(rows * D, 0.0f), vd(kd.size(), 0.0f);
    auto decode = [&](Norm n, const std::vector<std::uint16_t>& cb, const std::vector<std::uint8_t>& codes,
                      const std::vector<std::uint16_t>& prm, std::vector<float>& out) {
      for (std::size_t row = 0; row < rows; ++row) {
        const std::size_t seq = row / static_cast<std::size_t>(s.capacity);
        const std::int64_t t = static_cast<std::int64_t>(row % static_cast<std::size_t>(s.capacity));
        if (t >= s.n_tokens) continue;
        const std::size_t h = seq % static_cast<std::size_t>(s.n_kv_heads);
        for (int c = 0; c < D; ++c) {
          const int m = c / dsub, e = c % dsub;
          const float u = f16_to_f32(cb[h * cb_elems + (static_cast<std::size_t>(m) * ksub + codes[row * M + m]) * dsub + e]);
          float x = u;
          if (n == Norm::kToken) x = f16_to_f32(prm[row]) * u;
          if (n == Norm::kGroup) {
            const std::size_t g = seq * static_cast<std::size_t>(n_groups) + static_cast<std::size_t>(t / nc.group);
            x = f16_to_f32(prm[(g * 2) * D + c]) + f16_to_f32(prm[(g * 2 + 1) * D + c]) * u;
          }
          out[row * D + c] = x;
        }
      }
    };
    decode(nc.k, cbk, ck, pk, kd);
    decode(nc.v, cbv, cv, pv, vd);
    DeviceBuffer<std::uint8_t> dck(code_n), dcv(code_n);
    DeviceBuffer<std::uint16_t> dbk(cbk.size()), dbv(cbv.size()), dpk(std::max<std::size_t>(pk.size(), 1)),
        dpv(std::max<std::size_t>(pv.size(), 1));
    DeviceBuffer<float> dq(q.size());
    dck.upload(ck);
    dcv.upload(cv);
    dbk.upload(cbk);
    dbv.upload(cbv);
    if (!pk.empty()) dpk.upload(pk);
    if (!pv.empty()) dpv.upload(pv);
    dq.upload(q);
    std::vector<std::uint8_t> ik(code_n), iv(code_n);
    interleave_pq_codes(ck.data(), ik.data(), rows, M, false);
    interleave_pq_codes(cv.data(), iv.data(), rows, M, true);
    DeviceBuffer<std::uint8_t> dik(code_n), div(code_n);
    dik.upload(ik);
    div.upload(iv);
    for (int splits : split_choices(s, 512)) {
    for (bool mma : {false, true}) {
      if (mma && nc.v == Norm::kGroup) continue;  // not in the mma kernel (RejectsUnsupportedShapes)
      const std::string what = std::string(mma ? "pq-mma-norm K " : "pq-norm K ") + norm_name(nc.k) + " V " + norm_name(nc.v) +
                               " group=" + std::to_string(nc.group) + " B=" + std::to_string(s.batch) +
                               " H=" + std::to_string(s.n_heads) + "/" + std::to_string(s.n_kv_heads) +
                               " D=" + std::to_string(D) + " M=" + std::to_string(M) + " ksub=" + std::to_string(ksub) +
                               " T=" + std::to_string(s.n_tokens) + " splits=" + std::to_string(splits);
      DeviceBuffer<float> ws(decode_workspace_floats(s, splits));
      GuardedOut out(q.size());
      PQDecodeArgs a;
      a.shape = s;
      a.M = M;
      a.ksub = ksub;
      a.codes_k = mma ? dik.get() : dck.get();
      a.codes_v = mma ? div.get() : dcv.get();
      a.kernel = mma ? PQKernel::kMma : PQKernel::kCudaCores;
      a.cb_k = dbk.get();
      a.cb_v = dbv.get();
      a.cb_k_head_stride = a.cb_v_head_stride = static_cast<std::int64_t>(cb_elems);
      a.q = dq.get();
      a.out = out.out();
      a.scale = 1.0f / std::sqrt(static_cast<float>(D));
      (nc.k == Norm::kToken ? a.k_token_norm : a.k_group_params) = nc.k == Norm::kNone ? nullptr : dpk.get();
      (nc.v == Norm::kToken ? a.v_token_norm : a.v_group_params) = nc.v == Norm::kNone ? nullptr : dpv.get();
      a.norm_group = nc.group;
      pq_decode_attention(a, ws.get(), splits, nullptr);
      check(cudaDeviceSynchronize(), "sync");
      bool guards = false;
      const auto got = out.result(guards);
      EXPECT_TRUE(guards) << what;
      const std::size_t per_b = static_cast<std::size_t>(s.n_kv_heads) * s.capacity * D;
      for (int b = 0; b < s.batch; ++b) {
        const auto want = reference(s, kd.data() + b * per_b, vd.data() + b * per_b, KVDType::kF32,
                                    q.data() + static_cast<std::size_t>(b) * s.n_heads * D);
        const auto first = got.begin() + static_cast<std::ptrdiff_t>(b) * s.n_heads * D;
        const double err = expect_close(std::vector<float>(first, first + static_cast<std::ptrdiff_t>(want.size())),
                                        want, what + " b=" + std::to_string(b), mma ? kTensorCoreBound : 2e-5);
        (mma ? worst_mma : worst) = std::max(mma ? worst_mma : worst, err);
      }
    }
    }
  }
  std::printf("normalised PQ worst relative error: CUDA cores %.3g, mma (tensor cores) %.3g\n", worst, worst_mma);
}

// PQ codes for the older tokens plus an exact fp16 window (ring buffer, any order) in one
// softmax: against dense attention over the decoded codes followed by the window's tokens.
// Cases: a partly filled window, no coded token yet (host path: window only), and the counts
// read on the device (len = coded + window; the kernels derive both).
TEST(CudaDecodeAttention, PQWithWindowEqualsDenseOverBoth) {
  std::mt19937 rng(9);
  std::normal_distribution<float> dist;
  struct Case {
    std::int64_t coded, window_valid;
    int window_cap;
    bool device;
  };
  const Case cases[] = {{1000, 77, 128, false}, {0, 5, 128, false}, {3000, 64, 64, true}, {513, 1, 16, false}};
  const int B = 2, H = 8, Hkv = 2, D = 128, M = 64, ksub = 256, dsub = 2;
  double worst = 0;
  for (const Case& c : cases) {
    const std::int64_t cap = c.coded + 3;
    const std::size_t cb_elems = static_cast<std::size_t>(M) * ksub * dsub;
    std::vector<std::uint16_t> cbk(cb_elems * Hkv), cbv(cbk.size());
    for (auto& x : cbk) x = f32_to_f16(dist(rng));
    for (auto& x : cbv) x = f32_to_f16(dist(rng));
    const std::size_t code_n = static_cast<std::size_t>(B) * Hkv * std::max<std::int64_t>(cap, 1) * M;
    std::vector<std::uint8_t> ck(code_n), cv(code_n), ik(code_n), iv(code_n);
    for (auto& x : ck) x = static_cast<std::uint8_t>(rng());
    for (auto& x : cv) x = static_cast<std::uint8_t>(rng());
    interleave_pq_codes(ck.data(), ik.data(), code_n / M, M, false);
    interleave_pq_codes(cv.data(), iv.data(), code_n / M, M, true);
    const std::size_t win_n = static_cast<std::size_t>(B) * Hkv * c.window_cap * D;
    std::vector<std::uint16_t> wk(win_n), wv(win_n);
    for (auto& x : wk) x = f32_to_f16(dist(rng));
    for (auto& x : wv) x = f32_to_f16(dist(rng));
    std::vector<float> q(static_cast<std::size_t>(B) * H * D);
    for (auto& x : q) x = dist(rng);
    // Reference K/V per sequence: [Hkv, coded + window_valid, D].
    const std::int64_t n = c.coded + c.window_valid;
    DecodeShape all{1, H, Hkv, D, n, n};
    DeviceBuffer<std::uint8_t> dk(code_n), dv(code_n);
    DeviceBuffer<std::uint16_t> dbk(cbk.size()), dbv(cbv.size()), dwk(win_n), dwv(win_n);
    DeviceBuffer<float> dq(q.size());
    DeviceBuffer<std::int64_t> dlen(1);
    dk.upload(ik);
    dv.upload(iv);
    dbk.upload(cbk);
    dbv.upload(cbv);
    dwk.upload(wk);
    dwv.upload(wv);
    dq.upload(q);
    dlen.upload({n});
    PQDecodeArgs a;
    a.shape = {B, H, Hkv, D, c.device ? cap : c.coded, cap};
    a.M = M;
    a.ksub = ksub;
    a.codes_k = dk.get();
    a.codes_v = dv.get();
    a.cb_k = dbk.get();
    a.cb_v = dbv.get();
    a.cb_k_head_stride = a.cb_v_head_stride = static_cast<std::int64_t>(cb_elems);
    a.q = dq.get();
    a.scale = 1.0f / std::sqrt(static_cast<float>(D));
    a.kernel = PQKernel::kMma;
    DenseDecodeArgs w{{B, H, Hkv, D, c.device ? c.window_cap : c.window_valid, c.window_cap}, dwk.get(), dwv.get(),
                      dq.get(), nullptr, a.scale};
    if (c.device) {
      a.n_tokens_device = dlen.get();
      a.n_tokens_device_minus = c.window_cap;
      w.n_tokens_device = dlen.get();
    }
    const int splits = c.coded > 0 ? choose_splits_mma(a.shape, sm_count(), 1) : 1;
    DeviceBuffer<float> ws(decode_workspace_floats(a.shape, splits + 1));
    GuardedOut out(q.size());
    a.out = out.out();
    pq_window_decode_attention(a, w, ws.get(), splits, nullptr);
    check(cudaDeviceSynchronize(), "sync");
    bool guards = false;
    const auto got = out.result(guards);
    EXPECT_TRUE(guards);
    for (int b = 0; b < B; ++b) {
      std::vector<float> kd(static_cast<std::size_t>(Hkv) * n * D), vd(kd.size());
      for (int h = 0; h < Hkv; ++h) {
        const std::size_t seq = static_cast<std::size_t>(b) * Hkv + h;
        for (std::int64_t t = 0; t < n; ++t) {
          for (int d = 0; d < D; ++d) {
            float kx, vx;
            if (t < c.coded) {
              const std::size_t row = seq * static_cast<std::size_t>(cap) + static_cast<std::size_t>(t);
              const int m = d / dsub, e = d % dsub;
              kx = f16_to_f32(cbk[h * cb_elems + (static_cast<std::size_t>(m) * ksub + ck[row * M + m]) * dsub + e]);
              vx = f16_to_f32(cbv[h * cb_elems + (static_cast<std::size_t>(m) * ksub + cv[row * M + m]) * dsub + e]);
            } else {
              const std::size_t slot = seq * c.window_cap + static_cast<std::size_t>(t - c.coded);
              kx = f16_to_f32(wk[slot * D + d]);
              vx = f16_to_f32(wv[slot * D + d]);
            }
            kd[(static_cast<std::size_t>(h) * n + t) * D + d] = kx;
            vd[(static_cast<std::size_t>(h) * n + t) * D + d] = vx;
          }
        }
      }
      const auto want = reference(all, kd.data(), vd.data(), KVDType::kF32, q.data() + static_cast<std::size_t>(b) * H * D);
      const auto first = got.begin() + static_cast<std::ptrdiff_t>(b) * H * D;
      worst = std::max(worst, expect_close(std::vector<float>(first, first + H * D), want,
                                           "pq+window coded=" + std::to_string(c.coded) + " window=" +
                                               std::to_string(c.window_valid) + (c.device ? " device" : ""),
                                           kTensorCoreBound));
    }
  }
  std::printf("PQ + window worst relative error: %.3g\n", worst);
}

// The device encoder against pq_encode_ref: every code equal, or (f32 vs double distances) a
// centroid as near as the reference's within rounding; rows outside [pos0, pos0 + n) and
// other sequences' rows untouched; each code order lands where interleave_pq_codes puts it.
TEST(CudaPQEncode, MatchesReferenceEncoder) {
  std::mt19937 rng(5);
  std::normal_distribution<float> dist;
  struct Case {
    int batch, n_kv, D, M, nbits, n_tokens;
    bool shared;
  };
  const Case cases[] = {{1, 8, 128, 64, 8, 1, false}, {2, 4, 128, 32, 8, 37, false}, {1, 2, 64, 16, 4, 300, true},
                        {3, 1, 64, 32, 8, 5, false},  {1, 2, 128, 128, 6, 9, false}};
  int mismatches = 0, near_ties = 0;
  for (const Case& k : cases) {
    PQCodebook cb;
    cb.head_dim = k.D;
    cb.M = k.M;
    cb.nbits = k.nbits;
    const int ksub = 1 << k.nbits, dsub = k.D / k.M;
    const int n_books = k.shared ? 1 : k.n_kv;
    std::vector<std::vector<float>> books(static_cast<std::size_t>(n_books));
    std::vector<float> all;
    for (auto& bk : books) {
      bk.resize(static_cast<std::size_t>(k.M) * ksub * dsub);
      for (auto& x : bk) x = dist(rng);
      all.insert(all.end(), bk.begin(), bk.end());
    }
    const int n_sh = k.batch * k.n_kv;
    const std::int64_t capacity = k.n_tokens + 11, pos0 = 7;
    std::vector<float> x(static_cast<std::size_t>(n_sh) * k.n_tokens * k.D);
    for (auto& v : x) v = dist(rng);
    if (k.n_tokens > 3) x[3 * static_cast<std::size_t>(k.D)] = std::nanf("");  // NaN: code 0, as the reference
    DeviceBuffer<float> dx(x.size()), dcb(all.size());
    dx.upload(x);
    dcb.upload(all);
    for (PQCodeOrder order : {PQCodeOrder::kTokenMajor, PQCodeOrder::kMmaKeys, PQCodeOrder::kMmaValues}) {
      if (order != PQCodeOrder::kTokenMajor && k.M % 8 != 0) continue;
      const std::string what = "encode D=" + std::to_string(k.D) + " M=" + std::to_string(k.M) + " ksub=" +
                               std::to_string(ksub) + " order=" + std::to_string(static_cast<int>(order));
      const std::size_t code_n = static_cast<std::size_t>(n_sh) * capacity * k.M;
      std::vector<std::uint8_t> init(code_n, 0xAB);
      DeviceBuffer<std::uint8_t> dcodes(code_n);
      dcodes.upload(init);
      PQEncodeArgs a;
      a.n_seq_heads = n_sh;
      a.n_kv_heads = k.n_kv;
      a.n_tokens = k.n_tokens;
      a.head_dim = k.D;
      a.M = k.M;
      a.ksub = ksub;
      a.x = dx.get();
      a.centroids = dcb.get();
      a.cb_head_stride = k.shared ? 0 : static_cast<std::int64_t>(k.M) * ksub * dsub;
      a.codes = dcodes.get();
      a.capacity = capacity;
      a.pos0 = pos0;
      a.order = order;
      pq_encode(a, nullptr);
      check(cudaDeviceSynchronize(), "sync");
      const auto got = dcodes.download();
      for (int sh = 0; sh < n_sh; ++sh) {
        cb.centroids = books[static_cast<std::size_t>(k.shared ? 0 : sh % k.n_kv)];
        std::vector<std::uint8_t> want(static_cast<std::size_t>(k.n_tokens) * k.M), want_o(want.size());
        pq_encode_ref(cb, x.data() + static_cast<std::size_t>(sh) * k.n_tokens * k.D, k.n_tokens, want.data());
        if (order == PQCodeOrder::kTokenMajor) {
          want_o = want;
        } else {
          interleave_pq_codes(want.data(), want_o.data(), static_cast<std::size_t>(k.n_tokens), k.M,
                              order == PQCodeOrder::kMmaValues);
        }
        for (std::int64_t t = 0; t < capacity; ++t) {
          const std::uint8_t* row = got.data() + (static_cast<std::size_t>(sh) * capacity + t) * k.M;
          const bool inside = t >= pos0 && t < pos0 + k.n_tokens;
          for (int i = 0; i < k.M; ++i) {
            if (!inside) {
              if (row[i] != 0xAB) ADD_FAILURE() << what << ": row " << t << " outside the new tokens written";
              continue;
            }
            const std::uint8_t w = want_o[static_cast<std::size_t>(t - pos0) * k.M + i];
            if (row[i] == w) continue;
            // A different code must be as near (double distances) within f32 rounding.
            const int m = order == PQCodeOrder::kTokenMajor ? i
                          : order == PQCodeOrder::kMmaKeys  ? (i % (k.M / 4)) * 4 + i / (k.M / 4)
                                                            : (i % (k.M / 8)) * 8 + i / (k.M / 8);
            const float* xs = x.data() + (static_cast<std::size_t>(sh) * k.n_tokens + (t - pos0)) * k.D + m * dsub;
            auto dist2 = [&](int code) {
              double d = 0;
              for (int j = 0; j < dsub; ++j) {
                const double e = xs[j] - cb.centroids[(static_cast<std::size_t>(m) * ksub + code) * dsub + j];
                d += e * e;
              }
              return d;
            };
            if (dist2(row[i]) <= dist2(w) * (1 + 1e-5) + 1e-12) {
              ++near_ties;
            } else {
              ++mismatches;
              ADD_FAILURE() << what << ": seq-head " << sh << " token " << t << " subspace " << m << " code "
                            << int(row[i]) << " want " << int(w);
            }
          }
        }
      }
    }
  }
  EXPECT_EQ(mismatches, 0);
  std::printf("PQ encode: codes equal to the reference but %d near ties\n", near_ties);
  PQEncodeArgs bad;
  bad.n_seq_heads = bad.n_kv_heads = 1;
  bad.head_dim = 128;
  bad.M = 64;
  bad.n_tokens = 10;
  bad.capacity = 12;
  bad.pos0 = 3;  // past the capacity
  EXPECT_THROW(pq_encode(bad, nullptr), InvalidArgumentError);
  bad.pos0 = 0;
  bad.ksub = 100;
  EXPECT_THROW(pq_encode(bad, nullptr), InvalidArgumentError);
}

// One prefill case: batch 2 (sequence 1 checked), n_q queries from pos0. kind 0: fp16 cache;
// 1: PQ codes of every position (stress); 2: sinks + codes + ring + chunk (window W), key
// channel-groups and value norms on the codes.
void prefill_case(int kind, int H, int Hkv, int D, int pos0, int n_q, int W, int S, std::mt19937& rng, double (&worst)[2]) {
  const int B = 2, M = D / 2, dsub = 2, N = pos0 + n_q, group = 64;
  const std::int64_t cap = N + 3;
  std::normal_distribution<float> dist;
  const std::size_t per_b = static_cast<std::size_t>(Hkv) * N * D;
  std::vector<float> kd(B * per_b), vd(kd.size());  // what each position holds: [B, Hkv, N, D]
  std::vector<float> q(static_cast<std::size_t>(B) * n_q * H * D);
  for (auto& x : q) x = dist(rng);
  PrefillAttentionArgs a;
  a.batch = B;
  a.n_heads = H;
  a.n_kv_heads = Hkv;
  a.head_dim = D;
  a.n_q = n_q;
  a.pos0 = pos0;
  a.scale = 1.0f / std::sqrt(static_cast<float>(D));
  auto at = [&](int b, int h, std::int64_t t) { return ((static_cast<std::size_t>(b) * Hkv + h) * N + t) * D; };
  // Buffers that must outlive the launch.
  std::vector<std::unique_ptr<DeviceBuffer<std::uint16_t>>> halves;
  std::vector<std::unique_ptr<DeviceBuffer<std::uint8_t>>> bytes;
  std::vector<std::unique_ptr<DeviceBuffer<float>>> floats;
  auto up16 = [&](const std::vector<std::uint16_t>& v) {
    halves.push_back(std::make_unique<DeviceBuffer<std::uint16_t>>(v.size()));
    halves.back()->upload(v);
    return halves.back()->get();
  };
  auto up8 = [&](const std::vector<std::uint8_t>& v) {
    bytes.push_back(std::make_unique<DeviceBuffer<std::uint8_t>>(v.size()));
    bytes.back()->upload(v);
    return bytes.back()->get();
  };
  auto up32 = [&](const std::vector<float>& v) {
    floats.push_back(std::make_unique<DeviceBuffer<float>>(v.size()));
    floats.back()->upload(v);
    return floats.back()->get();
  };
  if (kind == 0) {
    std::vector<std::uint16_t> kc(static_cast<std::size_t>(B) * Hkv * cap * D), vc(kc.size());
    for (int b = 0; b < B; ++b) {
      for (int h = 0; h < Hkv; ++h) {
        for (std::int64_t t = 0; t < cap; ++t) {
          for (int d = 0; d < D; ++d) {
            const std::size_t i = ((static_cast<std::size_t>(b) * Hkv + h) * cap + t) * D + d;
            kc[i] = f32_to_f16(dist(rng));
            vc[i] = f32_to_f16(dist(rng));
            if (t < N) kd[at(b, h, t) + d] = f16_to_f32(kc[i]), vd[at(b, h, t) + d] = f16_to_f32(vc[i]);
          }
        }
      }
    }
    a.cache_k = up16(kc);
    a.cache_v = up16(vc);
    a.cache_capacity = cap;
  } else {
    const int offset = kind == 1 ? 0 : S;
    const std::int64_t n_codes = kind == 1 ? N : std::max(0, pos0 + 1 - W - S);
    const std::size_t cb_elems = static_cast<std::size_t>(M) * 256 * dsub;
    std::vector<std::uint16_t> cbk(cb_elems * Hkv), cbv(cbk.size());
    for (auto& x : cbk) x = f32_to_f16(dist(rng));
    for (auto& x : cbv) x = f32_to_f16(dist(rng));
    std::vector<std::uint8_t> ck(static_cast<std::size_t>(B) * Hkv * cap * M), cv(ck.size());
    for (auto& c : ck) c = static_cast<std::uint8_t>(rng());
    for (auto& c : cv) c = static_cast<std::uint8_t>(rng());
    const std::int64_t n_groups = (cap + group - 1) / group;
    std::vector<std::uint16_t> gp(static_cast<std::size_t>(B) * Hkv * n_groups * 2 * D), vn(static_cast<std::size_t>(B) * Hkv * cap);
    for (std::size_t i = 0; i < gp.size(); ++i) gp[i] = f32_to_f16((i / D) % 2 == 0 ? dist(rng) : 0.5f + std::fabs(dist(rng)));
    for (auto& x : vn) x = f32_to_f16(0.5f + std::fabs(dist(rng)));
    const bool norm = kind == 2;
    for (int b = 0; b < B; ++b) {
      for (int h = 0; h < Hkv; ++h) {
        const std::size_t sh = static_cast<std::size_t>(b) * Hkv + h;
        for (std::int64_t c = 0; c < n_codes; ++c) {
          for (int d = 0; d < D; ++d) {
            const int m = d / dsub, e = d % dsub;
            const std::size_t row = (sh * cap + c) * M;
            float kk = f16_to_f32(cbk[h * cb_elems + (static_cast<std::size_t>(m) * 256 + ck[row + m]) * dsub + e]);
            float vv = f16_to_f32(cbv[h * cb_elems + (static_cast<std::size_t>(m) * 256 + cv[row + m]) * dsub + e]);
            if (norm) {
              const std::size_t g = (sh * n_groups + c / group) * 2 * D;
              kk = f16_to_f32(gp[g + d]) + f16_to_f32(gp[g + D + d]) * kk;
              vv *= f16_to_f32(vn[sh * cap + c]);
            }
            kd[at(b, h, c + offset) + d] = kk;
            vd[at(b, h, c + offset) + d] = vv;
          }
        }
      }
    }
    std::vector<std::uint8_t> ik(ck.size()), iv(cv.size());
    interleave_pq_codes(ck.data(), ik.data(), ck.size() / M, M, false);
    interleave_pq_codes(cv.data(), iv.data(), cv.size() / M, M, true);
    a.M = M;
    a.codes_k = up8(ik);
    a.codes_v = up8(iv);
    a.cb_k = up16(cbk);
    a.cb_v = up16(cbv);
    a.cb_k_head_stride = a.cb_v_head_stride = static_cast<std::int64_t>(cb_elems);
    a.codes_capacity = cap;
    a.n_codes = n_codes;
    a.codes_offset = offset;
    if (norm) {
      a.k_group_params = up16(gp);
      a.v_token_norm = up16(vn);
      a.norm_group = group;
    }
    if (kind == 2) {  // sinks and ring as GpuLlama keeps them before the chunk; the chunk in f32
      const int slots = S + W;
      std::vector<std::uint16_t> rk(static_cast<std::size_t>(B) * Hkv * slots * D, 0x7e00), rv(rk.size(), 0x7e00);  // NaN
      std::vector<float> chk(static_cast<std::size_t>(B) * n_q * Hkv * D), chv(chk.size());
      for (int b = 0; b < B; ++b) {
        for (int h = 0; h < Hkv; ++h) {
          const std::size_t sh = static_cast<std::size_t>(b) * Hkv + h;
          for (int t = 0; t < pos0; ++t) {
            const bool sink = t < S, in_ring = t >= pos0 + 1 - W;
            if (!sink && !in_ring) continue;
            const int slot = sink ? t : S + (t - S) % W;
            for (int d = 0; d < D; ++d) {
              const std::size_t i = (sh * slots + slot) * D + d;
              rk[i] = f32_to_f16(dist(rng));
              rv[i] = f32_to_f16(dist(rng));
              kd[at(b, h, t) + d] = f16_to_f32(rk[i]);
              vd[at(b, h, t) + d] = f16_to_f32(rv[i]);
            }
          }
          for (int j = 0; j < n_q; ++j) {
            for (int d = 0; d < D; ++d) {
              const std::size_t i = ((static_cast<std::size_t>(b) * n_q + j) * Hkv + h) * D + d;
              chk[i] = dist(rng);
              chv[i] = dist(rng);
              kd[at(b, h, pos0 + j) + d] = f16_to_f32(f32_to_f16(chk[i]));  // read rounded to fp16
              vd[at(b, h, pos0 + j) + d] = f16_to_f32(f32_to_f16(chv[i]));
            }
          }
        }
      }
      a.ring_k = up16(rk);
      a.ring_v = up16(rv);
      a.sinks = S;
      a.window = W;
      a.ring_min_pos = pos0 + 1 - W;
      a.chunk_k = up32(chk);
      a.chunk_v = up32(chv);
    }
  }
  for (float x : kd) ASSERT_TRUE(std::isfinite(x)) << "test setup: a position without keys";
  DeviceBuffer<float> dq(q.size());
  dq.upload(q);
  // The codes also through pq_decode_history (decoded once, read by every block).
  const std::size_t hist_n = static_cast<std::size_t>(B) * Hkv * cap * D;
  DeviceBuffer<std::uint16_t> hk(hist_n), hv(hist_n);
  PrefillAttentionArgs ah = a;
  if (kind != 0) pq_decode_history(ah, hk.get(), hv.get(), cap, nullptr);
  for (int hist = 0; hist < (kind != 0 ? 2 : 1); ++hist) {
  for (PrefillKernel kernel : {PrefillKernel::kCudaCores, PrefillKernel::kMma}) {
  if (kernel == PrefillKernel::kMma && D != 64 && D != 128) continue;
  GuardedOut out(q.size());
  PrefillAttentionArgs& run = hist ? ah : a;
  run.q = dq.get();
  run.out = out.out();
  run.kernel = kernel;
  prefill_attention(run, nullptr);
  check(cudaDeviceSynchronize(), "sync");
  bool guards = false;
  const auto got = out.result(guards);
  EXPECT_TRUE(guards);
  const char* names[] = {"fp16 cache", "codes (stress)", "sinks + codes + ring + chunk, normalised"};
  const bool tc = kernel == PrefillKernel::kMma;
  for (int b = 0; b < B; ++b) {
    std::vector<float> want(static_cast<std::size_t>(n_q) * H * D);
    DenseAttentionArgs r;
    r.n_queries = n_q;
    r.pos0 = pos0;
    r.n_heads = H;
    r.n_kv_heads = Hkv;
    r.head_dim = D;
    r.scale = a.scale;
    r.q = q.data() + static_cast<std::size_t>(b) * n_q * H * D;
    r.k = kd.data() + b * per_b;
    r.v = vd.data() + b * per_b;
    r.kv_head_stride = static_cast<std::int64_t>(N) * D;
    r.out = want.data();
    dense_attention_ref(r);
    const auto first = got.begin() + static_cast<std::ptrdiff_t>(b) * n_q * H * D;
    const std::string what = std::string(tc ? "prefill-mma " : "prefill ") + (hist ? "decoded history " : "") + names[kind] + " H=" + std::to_string(H) + "/" +
                             std::to_string(Hkv) + " D=" + std::to_string(D) + " pos0=" + std::to_string(pos0) +
                             " n_q=" + std::to_string(n_q) + " b=" + std::to_string(b);
    const double err = expect_close(std::vector<float>(first, first + static_cast<std::ptrdiff_t>(want.size())), want, what,
                                    tc || (hist && kind == 2) ? kTensorCoreBound : 2e-5);  // decoded rows: fp16
    if (!hist || kind != 2 || tc) worst[tc] = std::max(worst[tc], err);
  }
  }
  }
}

TEST(CudaPrefillAttention, EqualsDenseCausalAttentionOverEachSource) {
  std::mt19937 rng(7);
  double worst[2] = {0.0, 0.0};
  prefill_case(0, 8, 2, 128, 37, 50, 0, 0, rng, worst);
  prefill_case(0, 4, 4, 64, 0, 70, 0, 0, rng, worst);
  prefill_case(0, 32, 8, 128, 300, 65, 0, 0, rng, worst);
  prefill_case(0, 2, 1, 8, 5, 9, 0, 0, rng, worst);
  prefill_case(1, 8, 2, 128, 37, 50, 0, 0, rng, worst);
  prefill_case(1, 16, 2, 64, 100, 33, 0, 0, rng, worst);
  prefill_case(2, 8, 2, 128, 200, 40, 64, 4, rng, worst);
  prefill_case(2, 4, 1, 64, 150, 90, 20, 0, rng, worst);   // chunk longer than the window
  prefill_case(2, 8, 2, 128, 10, 30, 64, 4, rng, worst);   // no codes yet, a partly filled ring
  prefill_case(0, 32, 8, 128, 1000, 300, 0, 0, rng, worst);  // several query blocks and tiles
  std::printf("prefill attention worst relative error: CUDA cores %.3g, mma (tensor cores) %.3g\n", worst[0], worst[1]);
}

TEST(CudaDecodeAttention, RejectsUnsupportedShapes) {
  DecodeShape s{1, 36, 4, 128, 100, 100};  // GQA group of 9
  EXPECT_THROW(dense_decode_attention({s, nullptr, nullptr, nullptr, nullptr, 1.0f}, nullptr, 1, nullptr),
               InvalidArgumentError);
  s = {1, 8, 8, 130, 100, 100};  // head_dim over 128
  EXPECT_THROW(dense_decode_attention({s, nullptr, nullptr, nullptr, nullptr, 1.0f}, nullptr, 1, nullptr),
               InvalidArgumentError);
  s = {1, 8, 8, 7, 100, 100};  // odd head_dim
  EXPECT_THROW(dense_decode_attention({s, nullptr, nullptr, nullptr, nullptr, 1.0f}, nullptr, 1, nullptr),
               InvalidArgumentError);
  s = {1, 8, 8, 128, 300, 300};
  EXPECT_THROW(dense_decode_attention({s, nullptr, nullptr, nullptr, nullptr, 1.0f}, nullptr, 3, nullptr),
               InvalidArgumentError);  // more splits than tiles
  PQDecodeArgs a;
  a.shape = s;
  a.M = 128;  // dsub 1
  EXPECT_THROW(pq_decode_attention(a, nullptr, 1, nullptr), InvalidArgumentError);
  // Normalisations: no value channel-groups in the mma kernel, one per kind, groups a multiple of 64. The pointers
  // are never read: the checks come first.
  static const std::uint16_t dummy[4] = {};
  a.M = 64;
  a.k_group_params = dummy;
  a.norm_group = 128;
  a.kernel = PQKernel::kMma;  // value channel-groups are not in the mma kernel
  a.v_group_params = dummy;
  EXPECT_THROW(pq_decode_attention(a, nullptr, 1, nullptr), InvalidArgumentError);
  a.v_group_params = nullptr;
  a.k_group_params = nullptr;
  a.codes_k = reinterpret_cast<const std::uint8_t*>(dummy) + 1;  // misaligned codes
  EXPECT_THROW(pq_decode_attention(a, nullptr, 1, nullptr), InvalidArgumentError);
  a.codes_k = nullptr;
  a.kernel = PQKernel::kCudaCores;
  a.k_group_params = dummy;
  a.norm_group = 100;
  EXPECT_THROW(pq_decode_attention(a, nullptr, 1, nullptr), InvalidArgumentError);
  a.norm_group = 0;
  EXPECT_THROW(pq_decode_attention(a, nullptr, 1, nullptr), InvalidArgumentError);
  a.norm_group = 128;
  a.k_token_norm = dummy;
  EXPECT_THROW(pq_decode_attention(a, nullptr, 1, nullptr), InvalidArgumentError);
}

}  // namespace
}  // namespace million::cuda
