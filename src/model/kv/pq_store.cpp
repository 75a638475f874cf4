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
#include "pq/normalize.h"
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
  norm_ = codebooks[0]->norm;
  group_ = codebooks[0]->norm_group;
  std::map<const PQCodebook*, int> seen;
  for (const PQCodebook* cb : codebooks) {
    MILLION_ASSERT(cb->M == M_ && cb->head_dim == head_dim_ && cb->nbits == codebooks[0]->nbits && cb->norm == norm_ &&
                   cb->norm_group == group_);
    auto [it, fresh] = seen.emplace(cb, static_cast<int>(books_.size()));
    head_book_.push_back(it->second);
    codes_.emplace_back(static_cast<std::size_t>((capacity + kPQBlockTokens - 1) / kPQBlockTokens * kPQBlockTokens * M_));
    switch (norm_) {
      case VectorNorm::kNone: params_.emplace_back(); break;
      case VectorNorm::kToken: params_.emplace_back(static_cast<std::size_t>(capacity)); break;
      case VectorNorm::kChannelGroup:
        params_.emplace_back(static_cast<std::size_t>((capacity + group_ - 1) / group_ * 2 * head_dim_));
        break;
    }
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

void PQCodes::encode_head(int h, const float* x, int n, std::uint16_t* params, std::uint8_t* codes) const {
  const int d = head_dim_;
  const PQCodebook& cb = codebook(h);
  std::vector<float> u(static_cast<std::size_t>(n) * d);
  cb.rotate(x, n, u.data());
  if (norm_ != VectorNorm::kNone) {
    std::vector<float> par(static_cast<std::size_t>(norm_ == VectorNorm::kToken ? n : 2 * d));
    normalize_block(norm_, u.data(), n, d, par.data(), cb.norm_scale());
    for (std::size_t i = 0; i < par.size(); ++i) params[i] = f32_to_f16(par[i]);
  }
  book(h).encoder->encode(u.data(), n, codes, active_simd_level());
}

void PQCodes::decode_head(int h, const std::uint8_t* codes, const std::uint16_t* params, int n, float* out,
                          bool unrotate) const {
  const int d = head_dim_;
  const PQCodebook& cb = codebook(h);
  std::vector<float> u(static_cast<std::size_t>(n) * d);
  pq_decode(cb, codes, n, u.data());
  if (norm_ == VectorNorm::kToken) {
    for (int t = 0; t < n; ++t) {
      const float nrm = f16_to_f32(params[t]);
      for (int c = 0; c < d; ++c) u[static_cast<std::size_t>(t) * d + static_cast<std::size_t>(c)] *= nrm;
    }
  } else if (norm_ == VectorNorm::kChannelGroup) {
    std::vector<float> mn(static_cast<std::size_t>(d)), rg(mn.size());
    for (int c = 0; c < d; ++c) {
      mn[static_cast<std::size_t>(c)] = f16_to_f32(params[c]);
      rg[static_cast<std::size_t>(c)] = f16_to_f32(params[d + c]);
    }
    channel_group_denormalize(u.data(), n, d, mn.data(), rg.data(), u.data());
  }
  if (unrotate) {
    cb.unrotate(u.data(), n, out);
  } else {
    std::copy(u.begin(), u.end(), out);
  }
}

void PQCodes::append(const float* x, int n) {
  MILLION_ASSERT(size_ + n <= capacity_);
  const int blk = block_tokens();
  MILLION_ASSERT(n % blk == 0 && size_ % blk == 0);
  const int n_kv_heads = this->n_kv_heads();
  const int d = head_dim_;
  std::vector<float> head(static_cast<std::size_t>(n) * d);
  std::vector<std::uint8_t> tmp(static_cast<std::size_t>(n) * M_);  // [n, M] token-major from the encoder
  for (int h = 0; h < n_kv_heads; ++h) {
    for (int t = 0; t < n; ++t) {
      std::copy_n(x + (static_cast<std::int64_t>(t) * n_kv_heads + h) * d, d, head.begin() + static_cast<std::ptrdiff_t>(t) * d);
    }
    auto& par = params_[static_cast<std::size_t>(h)];
    if (norm_ == VectorNorm::kChannelGroup) {  // one group at a time: its parameters from its own tokens
      for (int g0 = 0; g0 < n; g0 += group_) {
        std::uint16_t* gp = par.data() + (size_ + g0) / group_ * 2 * d;
        encode_head(h, head.data() + static_cast<std::ptrdiff_t>(g0) * d, group_, gp,
                    tmp.data() + static_cast<std::ptrdiff_t>(g0) * M_);
      }
    } else {
      encode_head(h, head.data(), n, norm_ == VectorNorm::kToken ? par.data() + size_ : nullptr, tmp.data());
    }
    auto& dst = codes_[static_cast<std::size_t>(h)];
    for (int t = 0; t < n; ++t) {
      const std::int64_t tok = size_ + t;
      std::uint8_t* blk_codes = dst.data() + (tok / kPQBlockTokens) * M_ * kPQBlockTokens + tok % kPQBlockTokens;
      for (int m = 0; m < M_; ++m) blk_codes[m * kPQBlockTokens] = tmp[static_cast<std::size_t>(t) * M_ + m];
    }
  }
  size_ += n;
}

void PQCodes::roundtrip(const float* x, int n, float* out) const {
  const int n_kv_heads = this->n_kv_heads();
  const int d = head_dim_;
  std::vector<float> head(static_cast<std::size_t>(n) * d), dec(head.size());
  std::vector<std::uint8_t> tmp(static_cast<std::size_t>(n) * M_);
  std::vector<std::uint16_t> par(static_cast<std::size_t>(std::max(n, 2 * d)));
  for (int h = 0; h < n_kv_heads; ++h) {
    for (int t = 0; t < n; ++t) {
      std::copy_n(x + (static_cast<std::int64_t>(t) * n_kv_heads + h) * d, d, head.begin() + static_cast<std::ptrdiff_t>(t) * d);
    }
    encode_head(h, head.data(), n, par.data(), tmp.data());
    decode_head(h, tmp.data(), par.data(), n, dec.data());
    for (int t = 0; t < n; ++t) {
      std::copy_n(dec.begin() + static_cast<std::ptrdiff_t>(t) * d, d, out + (static_cast<std::int64_t>(t) * n_kv_heads + h) * d);
    }
  }
}

float PQCodes::token_norm(int h, std::int64_t t) const {
  return f16_to_f32(params_[static_cast<std::size_t>(h)][static_cast<std::size_t>(t)]);
}

void PQCodes::group_params(int h, std::int64_t g, float* mn, float* rg) const {
  const std::uint16_t* p = params_[static_cast<std::size_t>(h)].data() + g * 2 * head_dim_;
  for (int c = 0; c < head_dim_; ++c) {
    mn[c] = f16_to_f32(p[c]);
    rg[c] = f16_to_f32(p[head_dim_ + c]);
  }
}

void PQCodes::decode(int h, std::int64_t t0, std::int64_t t1, float* out, bool unrotate) const {
  const std::int64_t n = t1 - t0;
  std::vector<std::uint8_t> tok(static_cast<std::size_t>(n) * M_);  // back to token-major
  for (std::int64_t t = 0; t < n; ++t) {
    for (int m = 0; m < M_; ++m) tok[static_cast<std::size_t>(t * M_ + m)] = code(h, t0 + t, m);
  }
  const auto& par = params_[static_cast<std::size_t>(h)];
  if (norm_ != VectorNorm::kChannelGroup) {
    decode_head(h, tok.data(), norm_ == VectorNorm::kToken ? par.data() + t0 : nullptr, static_cast<int>(n), out,
                unrotate);
    return;
  }
  for (std::int64_t a = t0; a < t1;) {  // piece by piece along group boundaries
    const std::int64_t g = a / group_, b = std::min(t1, (g + 1) * group_);
    decode_head(h, tok.data() + (a - t0) * M_, par.data() + g * 2 * head_dim_, static_cast<int>(b - a),
                out + (a - t0) * head_dim_, unrotate);
    a = b;
  }
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

const float* PQKeyStore::prepared_vectors(const PreparedQueries& prep) const {
  return static_cast<const PQQueries&>(prep).q.data();
}

std::unique_ptr<PreparedQueries> PQKeyStore::prepare(int kv_head, const float* q, int G, SimdLevel) const {
  const PQCodebook& cb = codes_.codebook(kv_head);
  const int d = cb.head_dim;
  auto prep = std::make_unique<PQQueries>();
  prep->G = G;
  prep->q.resize(static_cast<std::size_t>(G) * d);
  cb.rotate_queries(q, G, prep->q.data());
  return prep;
}

void PQKeyStore::raw_scores(int kv_head, const float* q, int G, std::int64_t t0, std::int64_t t1, float* s,
                            std::int64_t ld, SimdLevel level) const {
  const PQAttnKernels& k = pq_attn_kernels(level);
  const std::uint8_t* codes = codes_.codes(kv_head);
  const PQKernelCodebook& kc = codes_.kernel_codebook(kv_head);
  auto run = [&](std::int64_t b0, std::int64_t b1, float* dst, std::int64_t lds) {
    k.scores(kc, codes, b0, b1, q, G, dst, lds);
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

void PQKeyStore::scores(int kv_head, const PreparedQueries& prep, std::int64_t t0, std::int64_t t1, float* s,
                        std::int64_t ld, SimdLevel level) const {
  MILLION_ASSERT(0 <= t0 && t0 <= t1 && t1 <= codes_.size());
  const auto& pq = static_cast<const PQQueries&>(prep);
  const int G = pq.G, d = codes_.head_dim();
  switch (codes_.norm()) {
    case VectorNorm::kNone:
      raw_scores(kv_head, pq.q.data(), G, t0, t1, s, ld, level);
      return;
    case VectorNorm::kToken:
      raw_scores(kv_head, pq.q.data(), G, t0, t1, s, ld, level);
      for (std::int64_t t = t0; t < t1; ++t) {
        const float nrm = codes_.token_norm(kv_head, t);
        for (int j = 0; j < G; ++j) s[j * ld + (t - t0)] *= nrm;
      }
      return;
    case VectorNorm::kChannelGroup: {
      // q . k = q . min + (q * range) . u: per group a scaled copy of the queries and a bias.
      const int group = codes_.norm_group();
      std::vector<float> mn(static_cast<std::size_t>(d)), rg(mn.size()), qs(static_cast<std::size_t>(G) * d);
      for (std::int64_t a = t0; a < t1;) {
        const std::int64_t g = a / group, b = std::min(t1, (g + 1) * group);
        codes_.group_params(kv_head, g, mn.data(), rg.data());
        for (int j = 0; j < G; ++j) {
          const float* qj = pq.q.data() + static_cast<std::ptrdiff_t>(j) * d;
          for (int c = 0; c < d; ++c) qs[static_cast<std::size_t>(j * d + c)] = qj[c] * rg[static_cast<std::size_t>(c)];
        }
        raw_scores(kv_head, qs.data(), G, a, b, s + (a - t0), ld, level);
        for (int j = 0; j < G; ++j) {
          const float* qj = pq.q.data() + static_cast<std::ptrdiff_t>(j) * d;
          float bias = 0.0f;
          for (int c = 0; c < d; ++c) bias += qj[c] * mn[static_cast<std::size_t>(c)];
          for (std::int64_t t = a; t < b; ++t) s[j * ld + (t - t0)] += bias;
        }
        a = b;
      }
      return;
    }
  }
}

void PQValueStore::append(const float* x, int n) { codes_.append(x, n); }

std::int64_t PQValueStore::accumulator_floats(int G) const {
  return static_cast<std::int64_t>(G) * codes_.head_dim();
}

void PQValueStore::raw_accumulate(int kv_head, const float* p, std::int64_t ldp, int G, std::int64_t t0,
                                  std::int64_t t1, float* acc, SimdLevel level) const {
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

void PQValueStore::accumulate(int kv_head, const float* p, std::int64_t ldp, int G, std::int64_t t0, std::int64_t t1,
                              float* acc, SimdLevel level) const {
  MILLION_ASSERT(0 <= t0 && t0 <= t1 && t1 <= codes_.size());
  const int d = codes_.head_dim();
  switch (codes_.norm()) {
    case VectorNorm::kNone:
      raw_accumulate(kv_head, p, ldp, G, t0, t1, acc, level);
      return;
    case VectorNorm::kToken: {  // weights p_t * norm_t
      const std::int64_t nt = t1 - t0;
      std::vector<float> w(static_cast<std::size_t>(G * nt));
      for (std::int64_t t = t0; t < t1; ++t) {
        const float nrm = codes_.token_norm(kv_head, t);
        for (int j = 0; j < G; ++j) w[static_cast<std::size_t>(j * nt + (t - t0))] = p[j * ldp + (t - t0)] * nrm;
      }
      raw_accumulate(kv_head, w.data(), nt, G, t0, t1, acc, level);
      return;
    }
    case VectorNorm::kChannelGroup: {
      // sum_t p_t (min + range * u_t) = (sum_t p_t) min + range * sum_t p_t u_t, per group.
      const int group = codes_.norm_group();
      std::vector<float> mn(static_cast<std::size_t>(d)), rg(mn.size()), part(static_cast<std::size_t>(G) * d);
      for (std::int64_t a = t0; a < t1;) {
        const std::int64_t g = a / group, b = std::min(t1, (g + 1) * group);
        codes_.group_params(kv_head, g, mn.data(), rg.data());
        std::fill(part.begin(), part.end(), 0.0f);
        raw_accumulate(kv_head, p + (a - t0), ldp, G, a, b, part.data(), level);
        for (int j = 0; j < G; ++j) {
          float psum = 0.0f;
          for (std::int64_t t = a; t < b; ++t) psum += p[j * ldp + (t - t0)];
          for (int c = 0; c < d; ++c) {
            acc[j * d + c] += psum * mn[static_cast<std::size_t>(c)] +
                              rg[static_cast<std::size_t>(c)] * part[static_cast<std::size_t>(j * d + c)];
          }
        }
        a = b;
      }
      return;
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
  cb.unrotate(acc, G, back.data());
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
