// Fast CPU dense attention (see kernels/dense_attention.h for the contract).
// Two shapes:
//  - few queries (decode): keys are split over the sequence into chunks of >= kMinSplitKeys so
//    both cores work on one long sequence; each (query, kv head, split) work item reads its
//    keys once for all query heads of the group (GQA), keeps an online-softmax state
//    (max, sum, acc[head_dim]) per head, and the states are merged with log-sum-exp.
//  - many queries (prefill): blocks of kQueryBlock queries per kv head become two BLAS GEMMs
//    (S = Q K^T, O = P V) with the causal / sliding-window mask and softmax in between.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "backends/cpu/attn_tile_kernels.h"
#include "backends/cpu/cpu_kernels.h"
#include "kernels/dense_attention.h"

namespace million {

namespace {

constexpr int kGemmMinQueries = 8;    // below this, GEMM tiles are too thin to beat dot products
constexpr int kQueryBlock = 64;       // prefill queries per GEMM tile: S is 64 x n_keys floats
constexpr std::int64_t kMinSplitKeys = 512;
constexpr std::int64_t kTileKeys = 256;  // key rows per tile-kernel call

struct SoftmaxState {  // partial attention result of one head over one key range
  float max = -std::numeric_limits<float>::infinity();
  float sum = 0.0f;
};

void decode_attention(const DenseAttentionArgs& a, const CpuKernels& kern, const AttnTileKernels& tk) {
  const int group = a.n_heads / a.n_kv_heads;
  const int d = a.head_dim;
  // Number of key splits: enough work items for every thread, no split under kMinSplitKeys
  // (judged on query 0, which sees the fewest keys).
  const std::int64_t min_keys = a.pos0 - a.first_key(0) + 1;
  const int threads = omp_get_max_threads();
  const int items_per_split = a.n_queries * a.n_kv_heads;
  int n_splits = std::max(1, (2 * threads + items_per_split - 1) / items_per_split);
  n_splits = static_cast<int>(std::min<std::int64_t>(n_splits, std::max<std::int64_t>(1, min_keys / kMinSplitKeys)));

  // partial states: [n_queries, n_heads, n_splits], partial accumulators [.., head_dim]
  const std::int64_t n_partials = static_cast<std::int64_t>(a.n_queries) * a.n_heads * n_splits;
  std::vector<SoftmaxState> states(static_cast<std::size_t>(n_partials));
  std::vector<float> accs(static_cast<std::size_t>(n_partials * d), 0.0f);

  const std::int64_t n_items = static_cast<std::int64_t>(items_per_split) * n_splits;
#pragma omp parallel
  {
    std::vector<float> scores;  // [group, keys in split]
#pragma omp for schedule(dynamic, 1)
    for (std::int64_t item = 0; item < n_items; ++item) {
      const int split = static_cast<int>(item % n_splits);
      const int g = static_cast<int>((item / n_splits) % a.n_kv_heads);
      const int i = static_cast<int>(item / (static_cast<std::int64_t>(n_splits) * a.n_kv_heads));
      const std::int64_t first = a.first_key(i), last = a.pos0 + i;  // inclusive
      const std::int64_t span = last - first + 1;
      const std::int64_t lo = first + span * split / n_splits;
      const std::int64_t hi = first + span * (split + 1) / n_splits;  // exclusive
      const std::int64_t n = hi - lo;
      scores.resize(static_cast<std::size_t>(std::max<std::int64_t>(n, 1) * group));
      const std::int64_t off = g * a.kv_head_stride + lo * d;
      const float* q = a.q + (static_cast<std::int64_t>(i) * a.n_heads + g * group) * d;
      // Scores of the group's heads, tile by tile: each key row is read once for all of them.
      for (std::int64_t t0 = 0; t0 < n; t0 += kTileKeys) {
        const int nt = static_cast<int>(std::min<std::int64_t>(kTileKeys, n - t0));
        float* s = scores.data() + t0;
        if (a.kv_dtype == KVDType::kF32) {
          tk.dot_rows_f32(q, group, d, static_cast<const float*>(a.k) + off + t0 * d, d, nt, s, n);
        } else {
          tk.dot_rows_f16(q, group, d, static_cast<const std::uint16_t*>(a.k) + off + t0 * d, d, nt, s, n);
        }
      }
      for (int j = 0; j < group; ++j) {
        float* s = scores.data() + static_cast<std::int64_t>(j) * n;
        for (std::int64_t t = 0; t < n; ++t) s[t] *= a.scale;
        const float m = tk.max(s, n);
        const float sum = tk.exp_sum(s, n, m);
        const std::int64_t slot = (static_cast<std::int64_t>(i) * a.n_heads + g * group + j) * n_splits + split;
        states[static_cast<std::size_t>(slot)] = {m, n > 0 ? sum : 0.0f};
      }
      // The group's heads are consecutive slots: accumulators [group, d] at stride n_splits * d.
      const std::int64_t slot0 = (static_cast<std::int64_t>(i) * a.n_heads + g * group) * n_splits + split;
      std::vector<float> acc(static_cast<std::size_t>(group) * d, 0.0f);
      for (std::int64_t t0 = 0; t0 < n; t0 += kTileKeys) {
        const int nt = static_cast<int>(std::min<std::int64_t>(kTileKeys, n - t0));
        const float* p = scores.data() + t0;
        if (a.kv_dtype == KVDType::kF32) {
          tk.axpy_rows_f32(p, n, group, d, static_cast<const float*>(a.v) + off + t0 * d, d, nt, acc.data());
        } else {
          tk.axpy_rows_f16(p, n, group, d, static_cast<const std::uint16_t*>(a.v) + off + t0 * d, d, nt, acc.data());
        }
      }
      for (int j = 0; j < group; ++j) {
        std::copy_n(acc.data() + static_cast<std::int64_t>(j) * d, d, accs.data() + (slot0 + static_cast<std::int64_t>(j) * n_splits) * d);
      }
    }

    // Merge the splits of each (query, head): out = sum_s e^{m_s - M} acc_s / sum_s e^{m_s - M} l_s.
#pragma omp for schedule(static)
    for (std::int64_t qh = 0; qh < static_cast<std::int64_t>(a.n_queries) * a.n_heads; ++qh) {
      float m = -std::numeric_limits<float>::infinity();
      for (int s = 0; s < n_splits; ++s) m = std::max(m, states[static_cast<std::size_t>(qh * n_splits + s)].max);
      float* out = a.out + qh * d;
      std::fill(out, out + d, 0.0f);
      float total = 0.0f;
      for (int s = 0; s < n_splits; ++s) {
        const SoftmaxState& st = states[static_cast<std::size_t>(qh * n_splits + s)];
        if (st.sum == 0.0f) continue;
        const float w = std::exp(st.max - m);
        total += w * st.sum;
        kern.axpy_f32(w, accs.data() + (qh * n_splits + s) * d, out, d);
      }
      const float inv = 1.0f / total;
      for (int c = 0; c < d; ++c) out[c] *= inv;
    }
  }
}

void prefill_attention(const DenseAttentionArgs& a, const CpuKernels& kern) {
  const int group = a.n_heads / a.n_kv_heads;
  const int d = a.head_dim;
  const int n_blocks = (a.n_queries + kQueryBlock - 1) / kQueryBlock;
  const int n_items = n_blocks * a.n_kv_heads;
  const std::int64_t q_stride = static_cast<std::int64_t>(a.n_heads) * d;
#pragma omp parallel
  {
    std::vector<float> s_buf, k_buf, v_buf;
#pragma omp for schedule(dynamic, 1)
    for (int item = 0; item < n_items; ++item) {
      // Largest blocks (latest queries see the most keys) first: item order is by block descending.
      const int blk = n_blocks - 1 - item / a.n_kv_heads;
      const int g = item % a.n_kv_heads;
      const int i0 = blk * kQueryBlock;
      const int qb = std::min(kQueryBlock, a.n_queries - i0);
      const std::int64_t lo = a.first_key(i0);
      const std::int64_t hi = a.pos0 + i0 + qb;  // exclusive
      const std::int64_t nk = hi - lo;
      const std::int64_t base = g * a.kv_head_stride + lo * d;
      const float* kp;
      const float* vp;
      if (a.kv_dtype == KVDType::kF32) {
        kp = static_cast<const float*>(a.k) + base;
        vp = static_cast<const float*>(a.v) + base;
      } else {
        k_buf.resize(static_cast<std::size_t>(nk * d));
        v_buf.resize(static_cast<std::size_t>(nk * d));
        kern.f16_to_f32(static_cast<const std::uint16_t*>(a.k) + base, k_buf.data(), nk * d);
        kern.f16_to_f32(static_cast<const std::uint16_t*>(a.v) + base, v_buf.data(), nk * d);
        kp = k_buf.data();
        vp = v_buf.data();
      }
      s_buf.resize(static_cast<std::size_t>(qb * nk));
      for (int j = 0; j < group; ++j) {
        const int h = g * group + j;
        const float* q = a.q + static_cast<std::int64_t>(i0) * q_stride + static_cast<std::int64_t>(h) * d;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, qb, static_cast<int>(nk), d, a.scale, q,
                    static_cast<int>(q_stride), kp, d, 0.0f, s_buf.data(), static_cast<int>(nk));
        for (int r = 0; r < qb; ++r) {
          float* s = s_buf.data() + static_cast<std::int64_t>(r) * nk;
          const std::int64_t c0 = a.first_key(i0 + r) - lo, c1 = a.pos0 + i0 + r - lo;  // inclusive
          float m = -std::numeric_limits<float>::infinity();
          for (std::int64_t c = c0; c <= c1; ++c) m = std::max(m, s[c]);
          float sum = 0.0f;
          for (std::int64_t c = c0; c <= c1; ++c) {
            s[c] = std::exp(s[c] - m);
            sum += s[c];
          }
          const float inv = 1.0f / sum;
          std::fill(s, s + c0, 0.0f);
          for (std::int64_t c = c0; c <= c1; ++c) s[c] *= inv;
          std::fill(s + c1 + 1, s + nk, 0.0f);
        }
        float* out = a.out + static_cast<std::int64_t>(i0) * q_stride + static_cast<std::int64_t>(h) * d;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, qb, d, static_cast<int>(nk), 1.0f, s_buf.data(),
                    static_cast<int>(nk), vp, d, 0.0f, out, static_cast<int>(q_stride));
      }
    }
  }
}

}  // namespace

void dense_attention(const DenseAttentionArgs& args, SimdLevel level) {
  args.validate();
  const CpuKernels& kern = cpu_kernels(level);
  if (args.n_queries < kGemmMinQueries) {
    decode_attention(args, kern, attn_tile_kernels(level));
  } else {
    prefill_attention(args, kern);
  }
}

}  // namespace million
