// PQ key/value stores (see pq_store.h). Scalar code for now: the SIMD work is in the encoder;
// score accumulation and centroid gathers are plain loops the compiler vectorises partly.
#include "model/kv/pq_store.h"

#include <fmt/format.h>

#include <algorithm>

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
    codes_.emplace_back(static_cast<std::size_t>(capacity * M_));
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
    encoders_[static_cast<std::size_t>(h)].encode(src, n, codes_[static_cast<std::size_t>(h)].data() + size_ * M_,
                                                  active_simd_level());
  }
  size_ += n;
}

void PQCodes::decode(int h, std::int64_t t0, std::int64_t t1, float* out) const {
  const PQCodebook& cb = codebook(h);
  const std::int64_t n = t1 - t0;
  if (cb.rotation == RotationKind::kNone) {
    pq_decode(cb, codes(h) + t0 * M_, n, out);
    return;
  }
  std::vector<float> rotated(static_cast<std::size_t>(n) * head_dim_);
  pq_decode(cb, codes(h) + t0 * M_, n, rotated.data());
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

void PQKeyStore::scores(int kv_head, const PreparedQueries& prep, std::int64_t t0, std::int64_t t1, float* s,
                        std::int64_t ld, SimdLevel) const {
  const auto& lut = static_cast<const PQQueries&>(prep).lut;
  const PQCodebook& cb = codes_.codebook(kv_head);
  const int M = cb.M, ksub = cb.ksub();
  const std::uint8_t* codes = codes_.codes(kv_head);
  const int G = static_cast<int>(lut.size() / (static_cast<std::size_t>(M) * ksub));
  for (int j = 0; j < G; ++j) {
    const float* lj = lut.data() + static_cast<std::size_t>(j) * M * ksub;
    for (std::int64_t t = t0; t < t1; ++t) {
      const std::uint8_t* ct = codes + t * M;
      float acc = 0.0f;
      for (int m = 0; m < M; ++m) acc += lj[m * ksub + ct[m]];
      s[j * ld + (t - t0)] = acc;
    }
  }
}

void PQValueStore::append(const float* x, int n) { codes_.append(x, n); }

void PQValueStore::accumulate(int kv_head, const float* p, std::int64_t ldp, int G, std::int64_t t0, std::int64_t t1,
                              float* acc, SimdLevel) const {
  const PQCodebook& cb = codes_.codebook(kv_head);
  const int d = cb.head_dim, M = cb.M, dsub = cb.dsub(), ksub = cb.ksub();
  const std::uint8_t* codes = codes_.codes(kv_head);
  for (std::int64_t t = t0; t < t1; ++t) {
    const std::uint8_t* ct = codes + t * M;
    for (int j = 0; j < G; ++j) {
      const float w = p[j * ldp + (t - t0)];
      float* aj = acc + static_cast<std::size_t>(j) * d;
      for (int m = 0; m < M; ++m) {
        const float* c = cb.centroids.data() + (static_cast<std::size_t>(m) * ksub + ct[m]) * dsub;
        for (int e = 0; e < dsub; ++e) aj[m * dsub + e] += w * c[e];
      }
    }
  }
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
