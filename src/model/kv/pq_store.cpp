// PQ key/value stores (see pq_store.h). Scores of whole 16-token blocks go through the per-ISA
// kernels of pq_attn_kernels.h (gathers from the lookup tables); block edges and the value
// aggregation are plain loops.
#include "model/kv/pq_store.h"

#include <fmt/format.h>

#include <algorithm>

#include "backends/cpu/pq_attn_kernels.h"
#include "million/error.h"
#include "pq/rotation.h"

namespace million {

PQCodes::PQCodes(std::shared_ptr<const CodebookSet> owner, std::vector<const PQCodebook*> codebooks,
                 std::int64_t capacity)
    : owner_(std::move(owner)), codebooks_(std::move(codebooks)), capacity_(capacity) {
  MILLION_ASSERT(!codebooks_.empty());
  M_ = codebooks_[0]->M;
  head_dim_ = codebooks_[0]->head_dim;
  for (const PQCodebook* cb : codebooks_) {
    MILLION_ASSERT(cb->M == M_ && cb->head_dim == head_dim_ && cb->nbits == codebooks_[0]->nbits);
    encoders_.emplace_back(*cb);
    codes_.emplace_back(static_cast<std::size_t>((capacity + 15) / 16 * 16 * M_));
  }
}

void PQCodes::append(const float* x, int n) {
  MILLION_ASSERT(size_ + n <= capacity_);
  const int n_kv_heads = this->n_kv_heads();
  const int d = head_dim_;
  std::vector<float> head(static_cast<std::size_t>(n) * d), rotated(head.size());
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
    std::vector<std::uint8_t> tmp(static_cast<std::size_t>(n) * M_);  // [n, M] token-major from the encoder
    encoders_[static_cast<std::size_t>(h)].encode(src, n, tmp.data(), active_simd_level());
    auto& dst = codes_[static_cast<std::size_t>(h)];
    for (int t = 0; t < n; ++t) {
      const std::int64_t tok = size_ + t;
      for (int m = 0; m < M_; ++m) {
        dst[static_cast<std::size_t>(((tok / 16) * M_ + m) * 16 + tok % 16)] = tmp[static_cast<std::size_t>(t) * M_ + m];
      }
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
  std::vector<float> lut;  // [G, M, ksub]: lut[(j * M + m) * ksub + c] = q_j[m-th subspace] . C[m][c]
};

}  // namespace

void PQKeyStore::append(const float* x, int n) { codes_.append(x, n); }

std::unique_ptr<PreparedQueries> PQKeyStore::prepare(int kv_head, const float* q, int G, SimdLevel) const {
  const PQCodebook& cb = codes_.codebook(kv_head);
  const int d = cb.head_dim, M = cb.M, dsub = cb.dsub(), ksub = cb.ksub();
  std::vector<float> qr(static_cast<std::size_t>(G) * d);
  if (cb.rotation != RotationKind::kNone) {
    rotate_vectors(cb.rotation_matrix, d, q, G, qr.data());
  } else {
    std::copy_n(q, G * d, qr.begin());
  }
  auto prep = std::make_unique<PQQueries>();
  prep->lut.resize(static_cast<std::size_t>(G) * M * ksub);
  for (int j = 0; j < G; ++j) {
    for (int m = 0; m < M; ++m) {
      const float* qs = qr.data() + static_cast<std::size_t>(j) * d + static_cast<std::size_t>(m) * dsub;
      const float* cm = cb.centroids.data() + static_cast<std::size_t>(m) * ksub * dsub;
      float* row = prep->lut.data() + (static_cast<std::size_t>(j) * M + m) * ksub;
      for (int c = 0; c < ksub; ++c) {
        float acc = 0.0f;
        for (int e = 0; e < dsub; ++e) acc += qs[e] * cm[c * dsub + e];
        row[c] = acc;
      }
    }
  }
  return prep;
}

namespace {

void scores_blocks_scalar(const std::uint8_t* codes, std::int64_t b0, std::int64_t b1, int M, int ksub,
                          const float* lut, int G, float* s, std::int64_t ld) {
  for (int j = 0; j < G; ++j) {
    for (std::int64_t b = b0; b < b1; ++b) {
      float acc[kPQBlockTokens] = {};
      for (int m = 0; m < M; ++m) {
        const std::uint8_t* cm = codes + (b * M + m) * kPQBlockTokens;
        const float* row = lut + (static_cast<std::int64_t>(j) * M + m) * ksub;
        for (int l = 0; l < kPQBlockTokens; ++l) acc[l] += row[cm[l]];
      }
      for (int l = 0; l < kPQBlockTokens; ++l) s[j * ld + (b - b0) * kPQBlockTokens + l] = acc[l];
    }
  }
}

const PQAttnKernels kPQAttnScalar = {scores_blocks_scalar};

}  // namespace

const PQAttnKernels& pq_attn_kernels(SimdLevel level) {
  if (!simd_level_supported(level)) {
    throw InvalidArgumentError(fmt::format("SIMD level '{}' is not supported by this CPU", simd_level_name(level)));
  }
  switch (level) {
    case SimdLevel::kAvx2: return detail::kPQAttnAvx2;
    case SimdLevel::kAvx512: return detail::kPQAttnAvx512;
    default: return kPQAttnScalar;
  }
}

void PQKeyStore::scores(int kv_head, const PreparedQueries& prep, std::int64_t t0, std::int64_t t1, float* s,
                        std::int64_t ld, SimdLevel level) const {
  const auto& lut = static_cast<const PQQueries&>(prep).lut;
  const PQCodebook& cb = codes_.codebook(kv_head);
  const int M = cb.M, ksub = cb.ksub();
  const int G = static_cast<int>(lut.size() / (static_cast<std::size_t>(M) * ksub));
  // Tokens outside whole 16-token blocks one at a time; whole blocks through the ISA kernel.
  auto one = [&](std::int64_t t) {
    for (int j = 0; j < G; ++j) {
      const float* lj = lut.data() + static_cast<std::size_t>(j) * M * ksub;
      float acc = 0.0f;
      for (int m = 0; m < M; ++m) acc += lj[m * ksub + codes_.code(kv_head, t, m)];
      s[j * ld + (t - t0)] = acc;
    }
  };
  const std::int64_t b0 = (t0 + kPQBlockTokens - 1) / kPQBlockTokens, b1 = t1 / kPQBlockTokens;
  if (b0 >= b1) {
    for (std::int64_t t = t0; t < t1; ++t) one(t);
    return;
  }
  for (std::int64_t t = t0; t < b0 * kPQBlockTokens; ++t) one(t);
  pq_attn_kernels(level).scores_blocks(codes_.codes(kv_head), b0, b1, M, ksub, lut.data(), G,
                                       s + (b0 * kPQBlockTokens - t0), ld);
  for (std::int64_t t = b1 * kPQBlockTokens; t < t1; ++t) one(t);
}

void PQValueStore::append(const float* x, int n) { codes_.append(x, n); }

namespace {

// W[m][code][j] += p_j,t over the 16-token code blocks, subspace by subspace; the G heads of a
// token are contiguous in W, so each (token, subspace) is one short vector add (G known at
// compile time for the common group sizes).
template <int kG>
void sparse_accumulate_g(const std::uint8_t* codes, int M, int ksub, const float* p, std::int64_t ldp, int G,
                         std::int64_t t0, std::int64_t t1, float* acc) {
  const int g = kG > 0 ? kG : G;
  std::vector<float> pt(static_cast<std::size_t>(kPQBlockTokens) * g);  // [16, G] this block's weights
  for (std::int64_t b = t0 / kPQBlockTokens; b * kPQBlockTokens < t1; ++b) {
    const std::int64_t lo = std::max(t0, b * kPQBlockTokens), hi = std::min(t1, (b + 1) * kPQBlockTokens);
    for (std::int64_t t = lo; t < hi; ++t) {
      for (int j = 0; j < g; ++j) pt[static_cast<std::size_t>((t - b * kPQBlockTokens) * g + j)] = p[j * ldp + (t - t0)];
    }
    for (int m = 0; m < M; ++m) {
      const std::uint8_t* cm = codes + (b * M + m) * kPQBlockTokens;
      float* wm = acc + static_cast<std::size_t>(m) * ksub * g;
      for (std::int64_t t = lo; t < hi; ++t) {
        const std::int64_t l = t - b * kPQBlockTokens;
        float* w = wm + static_cast<std::size_t>(cm[l]) * g;
        const float* pl = pt.data() + l * g;
        for (int j = 0; j < g; ++j) w[j] += pl[j];
      }
    }
  }
}

void sparse_accumulate(const std::uint8_t* codes, int M, int ksub, const float* p, std::int64_t ldp, int G,
                       std::int64_t t0, std::int64_t t1, float* acc) {
  switch (G) {
    case 1: return sparse_accumulate_g<1>(codes, M, ksub, p, ldp, G, t0, t1, acc);
    case 2: return sparse_accumulate_g<2>(codes, M, ksub, p, ldp, G, t0, t1, acc);
    case 4: return sparse_accumulate_g<4>(codes, M, ksub, p, ldp, G, t0, t1, acc);
    case 8: return sparse_accumulate_g<8>(codes, M, ksub, p, ldp, G, t0, t1, acc);
    default: return sparse_accumulate_g<0>(codes, M, ksub, p, ldp, G, t0, t1, acc);
  }
}

}  // namespace

std::int64_t PQValueStore::accumulator_floats(int G) const {
  const PQCodebook& cb = codes_.codebook(0);
  return aggregation_ == PQValueAggregation::kGather ? static_cast<std::int64_t>(G) * cb.head_dim
                                                     : static_cast<std::int64_t>(G) * cb.M * cb.ksub();
}

void PQValueStore::accumulate(int kv_head, const float* p, std::int64_t ldp, int G, std::int64_t t0, std::int64_t t1,
                              float* acc, SimdLevel) const {
  const PQCodebook& cb = codes_.codebook(kv_head);
  const int d = cb.head_dim, M = cb.M, dsub = cb.dsub(), ksub = cb.ksub();
  if (aggregation_ == PQValueAggregation::kSparse) {
    sparse_accumulate(codes_.codes(kv_head), M, ksub, p, ldp, G, t0, t1, acc);
    return;
  }
  for (std::int64_t t = t0; t < t1; ++t) {
    for (int j = 0; j < G; ++j) {
      const float w = p[j * ldp + (t - t0)];
      float* aj = acc + static_cast<std::size_t>(j) * d;
      for (int m = 0; m < M; ++m) {
        const float* c = cb.centroids.data() + (static_cast<std::size_t>(m) * ksub + codes_.code(kv_head, t, m)) * dsub;
        for (int e = 0; e < dsub; ++e) aj[m * dsub + e] += w * c[e];
      }
    }
  }
}

void PQValueStore::finish(int kv_head, const float* acc, int G, float* out, SimdLevel) const {
  const PQCodebook& cb = codes_.codebook(kv_head);
  const int d = cb.head_dim, M = cb.M, dsub = cb.dsub(), ksub = cb.ksub();
  std::vector<float> vec;  // [G, d] in the rotated space
  const float* v = acc;
  if (aggregation_ == PQValueAggregation::kSparse) {
    vec.assign(static_cast<std::size_t>(G) * d, 0.0f);
    for (int m = 0; m < M; ++m) {
      const float* cm = cb.centroids.data() + static_cast<std::size_t>(m) * ksub * dsub;
      for (int c = 0; c < ksub; ++c) {
        const float* w = acc + (static_cast<std::size_t>(m) * ksub + c) * G;  // [M, ksub, G]
        for (int j = 0; j < G; ++j) {
          if (w[j] == 0.0f) continue;
          float* o = vec.data() + static_cast<std::size_t>(j) * d + static_cast<std::size_t>(m) * dsub;
          for (int e = 0; e < dsub; ++e) o[e] += w[j] * cm[c * dsub + e];
        }
      }
    }
    v = vec.data();
  }
  if (cb.rotation == RotationKind::kNone) {
    for (std::int64_t i = 0; i < static_cast<std::int64_t>(G) * d; ++i) out[i] += v[i];
    return;
  }
  std::vector<float> back(static_cast<std::size_t>(G) * d);
  unrotate_vectors(cb.rotation_matrix, d, v, G, back.data());
  for (std::size_t i = 0; i < back.size(); ++i) out[i] += back[i];
}

std::unique_ptr<KVCache> make_pq_cache(const KVCacheShape& shape, std::shared_ptr<const CodebookSet> set,
                                       const QuantizedCacheOptions& options, const std::string& name,
                                       PQValueAggregation aggregation) {
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
    values.push_back(std::make_unique<PQValueStore>(set, vc, shape.capacity, aggregation));
  }
  return std::make_unique<QuantizedKVCache>(shape, options, name, std::move(keys), std::move(values));
}

}  // namespace million
