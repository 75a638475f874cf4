// PQ key/value stores (see pq_store.h). Whole 16-token blocks go through the per-ISA kernels of
// pq_attn_kernels.h; blocks cut by the range's ends through a small scratch buffer.
#include "model/kv/pq_store.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "backends/cpu/pq_attn_kernels.h"
#include "core/half.h"
#include "million/error.h"
#include "pq/rotation.h"

namespace million {

void round_centroids_to_f16(PQCodebook& cb) {
  for (float& x : cb.centroids) {
    if (!(std::fabs(x) <= 65504.0f)) {
      throw FormatError(fmt::format("codebook centroid value {} is outside the f16 range the PQ cache holds "
                                    "centroids in (|x| <= 65504)", x));
    }
    x = f16_to_f32(f32_to_f16(x));
  }
}

std::vector<std::uint8_t> pq_byte_planes(const PQCodebook& cb) {
  const int ksub = cb.ksub(), dsub = cb.dsub();
  std::vector<std::uint8_t> planes(static_cast<std::size_t>(cb.head_dim) * 512, 0);
  for (int m = 0; m < cb.M; ++m) {
    for (int c = 0; c < ksub; ++c) {
      for (int e = 0; e < dsub; ++e) {
        const std::uint16_t h = f32_to_f16(cb.centroids[static_cast<std::size_t>((m * ksub + c) * dsub + e)]);
        const std::size_t row = static_cast<std::size_t>(m * dsub + e) * 512;
        planes[row + static_cast<std::size_t>(c)] = static_cast<std::uint8_t>(h & 0xff);
        planes[row + 256 + static_cast<std::size_t>(c)] = static_cast<std::uint8_t>(h >> 8);
      }
    }
  }
  return planes;
}

PQCodes::PQCodes(std::shared_ptr<const CodebookSet> owner, std::vector<const PQCodebook*> codebooks,
                 std::int64_t capacity)
    : owner_(std::move(owner)), capacity_(capacity) {
  MILLION_ASSERT(!codebooks.empty());
  M_ = codebooks[0]->M;
  head_dim_ = codebooks[0]->head_dim;
  std::map<const PQCodebook*, int> seen;
  for (const PQCodebook* cb : codebooks) {
    MILLION_ASSERT(cb->M == M_ && cb->head_dim == head_dim_ && cb->nbits == codebooks[0]->nbits);
    auto [it, fresh] = seen.emplace(cb, static_cast<int>(books_.size()));
    head_book_.push_back(it->second);
    codes_.emplace_back(static_cast<std::size_t>((capacity + kPQBlockTokens - 1) / kPQBlockTokens * kPQBlockTokens * M_));
    if (!fresh) continue;
    Book bk;
    bk.cb = std::make_unique<PQCodebook>(*cb);
    round_centroids_to_f16(*bk.cb);
    bk.planes = pq_byte_planes(*bk.cb);
    const int ksub = cb->ksub(), dsub = cb->dsub();
    bk.encoder = std::make_unique<PQEncoder>(*bk.cb);
    bk.kernel = PQKernelCodebook{M_, ksub, dsub, bk.cb->centroids.data(), bk.planes.data()};
    books_.push_back(std::move(bk));
  }
}

void PQCodes::append(const float* x, int n) {
  MILLION_ASSERT(size_ + n <= capacity_);
  const int n_kv_heads = this->n_kv_heads();
  const int d = head_dim_;
  std::vector<float> head(static_cast<std::size_t>(n) * d), rotated(head.size());
  std::vector<std::uint8_t> tmp(static_cast<std::size_t>(n) * M_);  // [n, M] token-major from the encoder
  for (int h = 0; h < n_kv_heads; ++h) {
    for (int t = 0; t < n; ++t) {
      std::copy_n(x + (static_cast<std::int64_t>(t) * n_kv_heads + h) * d, d, head.begin() + static_cast<std::ptrdiff_t>(t) * d);
    }
    const PQCodebook& cb = codebook(h);
    const float* src = head.data();
    if (cb.rotation != RotationKind::kNone) {
      rotate_vectors(cb.rotation_matrix, d, head.data(), n, rotated.data());
      src = rotated.data();
    }
    book(h).encoder->encode(src, n, tmp.data(), active_simd_level());
    auto& dst = codes_[static_cast<std::size_t>(h)];
    for (int t = 0; t < n; ++t) {
      const std::int64_t tok = size_ + t;
      std::uint8_t* blk = dst.data() + (tok / kPQBlockTokens) * M_ * kPQBlockTokens + tok % kPQBlockTokens;
      for (int m = 0; m < M_; ++m) blk[m * kPQBlockTokens] = tmp[static_cast<std::size_t>(t) * M_ + m];
    }
  }
  size_ += n;
}

void PQCodes::decode(int h, std::int64_t t0, std::int64_t t1, float* out) const {
  const PQCodebook& cb = codebook(h);
  const std::int64_t n = t1 - t0;
  std::vector<std::uint8_t> tok(static_cast<std::size_t>(n) * M_);  // back to token-major
  for (std::int64_t t = 0; t < n; ++t) {
    for (int m = 0; m < M_; ++m) tok[static_cast<std::size_t>(t * M_ + m)] = code(h, t0 + t, m);
  }
  if (cb.rotation == RotationKind::kNone) {
    pq_decode(cb, tok.data(), n, out);
    return;
  }
  std::vector<float> rotated(static_cast<std::size_t>(n) * head_dim_);
  pq_decode(cb, tok.data(), n, rotated.data());
  unrotate_vectors(cb.rotation_matrix, head_dim_, rotated.data(), n, out);
}

namespace {

struct PQQueries final : PreparedQueries {
  std::vector<float> q;  // [G, head_dim]: the query heads in the codebook's (rotated) space
  int G = 0;
};

// Runs `kernel(b0, b1, buf, ld)` over the 16-token blocks covering [t0, t1): interior blocks
// straight on the caller's rows (buf + offset), edge blocks through a [G, 16] scratch that
// `edge(block, scratch)` fills before (values: zero-padded probabilities) or drains after
// (keys: the lanes inside the range).
template <typename Whole, typename Edge>
void over_blocks(std::int64_t t0, std::int64_t t1, Whole&& whole, Edge&& edge) {
  const std::int64_t first = t0 / kPQBlockTokens, last = (t1 + kPQBlockTokens - 1) / kPQBlockTokens;
  const std::int64_t in0 = (t0 + kPQBlockTokens - 1) / kPQBlockTokens, in1 = t1 / kPQBlockTokens;
  if (in0 >= in1) {
    for (std::int64_t b = first; b < last; ++b) edge(b);
    return;
  }
  if (first < in0) edge(first);
  whole(in0, in1);
  if (in1 < last) edge(in1);
}

}  // namespace

void PQKeyStore::append(const float* x, int n) { codes_.append(x, n); }

std::unique_ptr<PreparedQueries> PQKeyStore::prepare(int kv_head, const float* q, int G, SimdLevel) const {
  const PQCodebook& cb = codes_.codebook(kv_head);
  const int d = cb.head_dim;
  auto prep = std::make_unique<PQQueries>();
  prep->G = G;
  prep->q.resize(static_cast<std::size_t>(G) * d);
  if (cb.rotation != RotationKind::kNone) {
    rotate_vectors(cb.rotation_matrix, d, q, G, prep->q.data());
  } else {
    std::copy_n(q, G * d, prep->q.begin());
  }
  return prep;
}

void PQKeyStore::scores(int kv_head, const PreparedQueries& prep, std::int64_t t0, std::int64_t t1, float* s,
                        std::int64_t ld, SimdLevel level) const {
  MILLION_ASSERT(0 <= t0 && t0 <= t1 && t1 <= codes_.size());
  const auto& pq = static_cast<const PQQueries&>(prep);
  const PQAttnKernels& k = pq_attn_kernels(level);
  const int G = pq.G;
  const std::uint8_t* codes = codes_.codes(kv_head);
  const PQKernelCodebook& kc = codes_.kernel_codebook(kv_head);
  auto run = [&](std::int64_t b0, std::int64_t b1, float* dst, std::int64_t lds) {
    k.scores(kc, codes, b0, b1, pq.q.data(), G, dst, lds);
  };
  over_blocks(
      t0, t1, [&](std::int64_t b0, std::int64_t b1) { run(b0, b1, s + (b0 * kPQBlockTokens - t0), ld); },
      [&](std::int64_t b) {
        std::vector<float> scratch(static_cast<std::size_t>(G) * kPQBlockTokens);
        float* buf = scratch.data();
        run(b, b + 1, buf, kPQBlockTokens);
        const std::int64_t lo = std::max(t0, b * kPQBlockTokens), hi = std::min(t1, (b + 1) * kPQBlockTokens);
        for (int j = 0; j < G; ++j) {
          for (std::int64_t t = lo; t < hi; ++t) s[j * ld + (t - t0)] = buf[j * kPQBlockTokens + (t - b * kPQBlockTokens)];
        }
      });
}

void PQValueStore::append(const float* x, int n) { codes_.append(x, n); }

std::int64_t PQValueStore::accumulator_floats(int G) const {
  return static_cast<std::int64_t>(G) * codes_.head_dim();
}

void PQValueStore::accumulate(int kv_head, const float* p, std::int64_t ldp, int G, std::int64_t t0, std::int64_t t1,
                              float* acc, SimdLevel level) const {
  MILLION_ASSERT(0 <= t0 && t0 <= t1 && t1 <= codes_.size());
  const PQAttnKernels& k = pq_attn_kernels(level);
  const std::uint8_t* codes = codes_.codes(kv_head);
  const PQKernelCodebook& kc = codes_.kernel_codebook(kv_head);
  auto run = [&](std::int64_t b0, std::int64_t b1, const float* w, std::int64_t ldw) {
    k.accumulate(kc, codes, b0, b1, w, ldw, G, acc);
  };
  over_blocks(
      t0, t1, [&](std::int64_t b0, std::int64_t b1) { run(b0, b1, p + (b0 * kPQBlockTokens - t0), ldp); },
      [&](std::int64_t b) {
        std::vector<float> buf(static_cast<std::size_t>(G) * kPQBlockTokens, 0.0f);  // zero outside [t0, t1)
        const std::int64_t lo = std::max(t0, b * kPQBlockTokens), hi = std::min(t1, (b + 1) * kPQBlockTokens);
        for (int j = 0; j < G; ++j) {
          for (std::int64_t t = lo; t < hi; ++t) buf[static_cast<std::size_t>(j * kPQBlockTokens + (t - b * kPQBlockTokens))] = p[j * ldp + (t - t0)];
        }
        run(b, b + 1, buf.data(), kPQBlockTokens);
      });
}

void PQValueStore::finish(int kv_head, const float* acc, int G, float* out, SimdLevel) const {
  const PQCodebook& cb = codes_.codebook(kv_head);
  const int d = cb.head_dim;
  if (cb.rotation == RotationKind::kNone) {
    for (std::int64_t i = 0; i < static_cast<std::int64_t>(G) * d; ++i) out[i] += acc[i];
    return;
  }
  std::vector<float> back(static_cast<std::size_t>(G) * d);
  unrotate_vectors(cb.rotation_matrix, d, acc, G, back.data());
  for (std::size_t i = 0; i < back.size(); ++i) out[i] += back[i];
}

std::unique_ptr<KVCache> make_pq_cache(const KVCacheShape& shape, std::shared_ptr<const CodebookSet> set,
                                       const QuantizedCacheOptions& options, const std::string& name) {
  const ModelFingerprint& m = set->model;
  if (m.n_layers != shape.n_layers || m.n_kv_heads != shape.n_kv_heads || m.head_dim != shape.head_dim) {
    throw FormatError(fmt::format("the codebooks were made for {} layers x {} kv heads x head_dim {}, but the model "
                                  "has {} x {} x {}; re-run `million calibrate` for this model",
                                  m.n_layers, m.n_kv_heads, m.head_dim, shape.n_layers, shape.n_kv_heads,
                                  shape.head_dim));
  }
  std::vector<std::unique_ptr<KeyStore>> keys;
  std::vector<std::unique_ptr<ValueStore>> values;
  for (int l = 0; l < shape.n_layers; ++l) {
    std::vector<const PQCodebook*> kc, vc;
    for (int h = 0; h < shape.n_kv_heads; ++h) {
      kc.push_back(&set->get(l, h, KVKind::kKey));
      vc.push_back(&set->get(l, h, KVKind::kValue));
    }
    keys.push_back(std::make_unique<PQKeyStore>(set, kc, shape.capacity));
    values.push_back(std::make_unique<PQValueStore>(set, vc, shape.capacity));
  }
  return std::make_unique<QuantizedKVCache>(shape, options, name, std::move(keys), std::move(values));
}

}  // namespace million
