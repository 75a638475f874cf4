// GpuLlama (decode steps on the GPU) against a scalar reference forward pass written here in
// double: same bf16-rounded weights, activations rounded to bf16 where the GPU rounds them
// (GEMM inputs), K/V rounded to fp16 as the dense cache holds them; the PQ cache's reference
// encodes K/V with pq_encode_ref (f32 centroids) and decodes with the fp16 centroids the
// attention kernel reads. Logits compared at every step of a random token sequence; plus the
// errors a user meets first: a full cache, a model that does not fit (refused before any
// allocation, with the memory it would need). And gutenberg-23m's real weights against its
// golden.json (Hugging Face transformers, f32), when the model directory is present.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "backends/cuda/cuda_attention.h"
#include "backends/cuda/device_buffer.h"
#include "backends/cuda/prefill_attention.h"
#include "backends/cuda/llama_gpu.h"
#include "core/half.h"
#include "kernels/dense_attention.h"
#include "million/error.h"
#include "pq/codebook.h"
#include "pq/encode.h"
#include "pq/normalize.h"
#include "pq/rotation.h"

namespace million::cuda {
namespace {

float bf(float x) { return bf16_to_f32(f32_to_bf16(x)); }
float hf(float x) { return f16_to_f32(f32_to_f16(x)); }

struct Reference {
  LlamaShape s;
  LlamaHostWeights w;  // already bf16-rounded
  bool pq = false;
  int M = 0;
  int window = 0;  // PQ: the newest `window` tokens read exact (fp16), older ones from codes
  // The normalised variant (GpuLlamaOptions::pq_rotate / pq_k_channel_group / pq_v_token_norm):
  // attention in the rotated space; coded keys from their channel-group's parameters
  // (channel_group_params over the group's f32 rotated keys), coded values from their f16 norm.
  bool rotate = false, kcg = false, vtn = false;
  int group = 0;
  int sinks = 0;  // the first `sinks` tokens exact for good; codes and groups count from the next one
  std::vector<std::vector<float>> rot, rot_v;                 // per layer [Hkv][hd][hd]: keys' (and queries'), values'
  std::vector<std::vector<float>> rot_q;                      // qpca: queries' own (T^-T), per layer
  std::vector<std::vector<float>> kscale;                     // qpca: per layer [Hkv][hd] channel scales
  std::vector<std::vector<std::vector<float>>> kr, vr;        // [layer][head]: [t][hd] rotated f32
  std::vector<std::vector<std::map<int, std::vector<float>>>> kdec, vdec;  // coded vectors, decoded
  bool normed() const { return rotate || kcg || vtn || sinks > 0; }
  LlamaHostCodebooks cb;
  std::vector<std::vector<float>> kc, vc;  // per layer [Hkv][t][hd] as attention reads them from the cache
  std::vector<std::vector<float>> kx, vx;  // the same, exact (fp16) — the PQ window's version

  // y[out] = W[out, in] x[in]
  static std::vector<double> matvec(const std::vector<float>& W, const std::vector<float>& x, int out, int in) {
    std::vector<double> y(static_cast<std::size_t>(out), 0.0);
    for (int o = 0; o < out; ++o) {
      double a = 0;
      for (int i = 0; i < in; ++i) a += static_cast<double>(W[static_cast<std::size_t>(o) * in + i]) * x[static_cast<std::size_t>(i)];
      y[static_cast<std::size_t>(o)] = a;
    }
    return y;
  }
  std::vector<float> norm(const std::vector<double>& x, const std::vector<float>& g) const {
    double ss = 0;
    for (double v : x) ss += v * v;
    const double r = 1.0 / std::sqrt(ss / static_cast<double>(x.size()) + s.norm_eps);
    std::vector<float> out(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) out[i] = bf(static_cast<float>(x[i] * r * g[i]));
    return out;
  }
  // One codebook row's nearest centroid (f32 centroids) decoded with fp16 centroids.
  std::vector<float> pq_roundtrip(const std::vector<float>& cen, const float* x) const {
    PQCodebook c;
    c.head_dim = s.head_dim;
    c.M = M;
    c.nbits = 8;
    c.centroids = cen;
    std::vector<std::uint8_t> codes(static_cast<std::size_t>(M));
    pq_encode_ref(c, x, 1, codes.data());
    const int dsub = s.head_dim / M;
    std::vector<float> out(static_cast<std::size_t>(s.head_dim));
    for (int m = 0; m < M; ++m) {
      for (int j = 0; j < dsub; ++j) {
        out[static_cast<std::size_t>(m * dsub + j)] = hf(cen[(static_cast<std::size_t>(m) * 256 + codes[static_cast<std::size_t>(m)]) * dsub + j]);
      }
    }
    return out;
  }

  // R x (or R^T x) for kv head h of layer l (double accumulation, rounded to f32 as the GPU keeps it);
  // which: 0 keys, 1 values, 2 queries (the keys' R unless rot_q is set).
  std::vector<float> rotated(int l, int h, const float* x, bool transpose, int which = 0) const {
    const int hd = s.head_dim;
    if (!rotate) return std::vector<float>(x, x + hd);
    const auto& mats = which == 1 ? rot_v : which == 2 && !rot_q.empty() ? rot_q : rot;
    const float* R = mats[static_cast<std::size_t>(l)].data() + static_cast<std::size_t>(h) * hd * hd;
    std::vector<float> y(static_cast<std::size_t>(hd));
    for (int i = 0; i < hd; ++i) {
      double a = 0;
      for (int j = 0; j < hd; ++j) a += static_cast<double>(transpose ? R[j * hd + i] : R[i * hd + j]) * x[j];
      y[static_cast<std::size_t>(i)] = static_cast<float>(a);
    }
    return y;
  }
  std::vector<float> book(const std::vector<std::vector<float>>& books, int l, int h) const {
    const std::size_t per = static_cast<std::size_t>(M) * 256 * (s.head_dim / M);
    const auto& all = books[static_cast<std::size_t>(l)];
    return std::vector<float>(all.begin() + static_cast<std::ptrdiff_t>(h * per), all.begin() + static_cast<std::ptrdiff_t>((h + 1) * per));
  }
  const std::vector<float>& coded_key(int l, int h, int t) {
    auto& cache = kdec[static_cast<std::size_t>(l)][static_cast<std::size_t>(h)];
    if (auto it = cache.find(t); it != cache.end()) return it->second;
    const int hd = s.head_dim;
    const auto& rows = kr[static_cast<std::size_t>(l)][static_cast<std::size_t>(h)];
    const auto cen = book(cb.k, l, h);
    if (!kcg) return cache[t] = pq_roundtrip(cen, rows.data() + static_cast<std::size_t>(t) * hd);
    const int g0 = sinks + (t - sinks) / group * group;  // the whole group at once, as the GPU encodes it
    std::vector<float> mn(static_cast<std::size_t>(hd)), rg(mn.size()), u(static_cast<std::size_t>(group) * hd);
    const float* scale = kscale.empty() ? nullptr : kscale[static_cast<std::size_t>(l)].data() + static_cast<std::size_t>(h) * hd;
    channel_group_params(rows.data() + static_cast<std::size_t>(g0) * hd, group, hd, mn.data(), rg.data(), scale);
    channel_group_normalize(rows.data() + static_cast<std::size_t>(g0) * hd, group, hd, mn.data(), rg.data(), u.data());
    for (int r = 0; r < group; ++r) {
      auto c = pq_roundtrip(cen, u.data() + static_cast<std::size_t>(r) * hd);
      for (int i = 0; i < hd; ++i) c[static_cast<std::size_t>(i)] = mn[static_cast<std::size_t>(i)] + rg[static_cast<std::size_t>(i)] * c[static_cast<std::size_t>(i)];
      cache[g0 + r] = c;
    }
    return cache[t];
  }
  const std::vector<float>& coded_value(int l, int h, int t) {
    auto& cache = vdec[static_cast<std::size_t>(l)][static_cast<std::size_t>(h)];
    if (auto it = cache.find(t); it != cache.end()) return it->second;
    const int hd = s.head_dim;
    const float* x = vr[static_cast<std::size_t>(l)][static_cast<std::size_t>(h)].data() + static_cast<std::size_t>(t) * hd;
    const auto cen = book(cb.v, l, h);
    if (!vtn) return cache[t] = pq_roundtrip(cen, x);
    const float n = token_norm_f16(x, hd);
    std::vector<float> u(static_cast<std::size_t>(hd));
    token_normalize(x, 1, hd, &n, u.data());
    auto c = pq_roundtrip(cen, u.data());
    for (auto& e : c) e *= n;
    return cache[t] = c;
  }
  // One layer's attention and the rest of its block for the normalised variant.
  void attend_normed(int l, int pos, int chunk_start, const std::vector<double>& q, const std::vector<double>& k,
                     const std::vector<double>& v, std::vector<double>& x) {
    const int H = s.n_heads, Hkv = s.n_kv_heads, hd = s.head_dim, G = H / Hkv, qd = H * hd;
    const auto& L = w.layers[static_cast<std::size_t>(l)];
    if (kr.empty()) {
      kr.assign(static_cast<std::size_t>(s.n_layers), std::vector<std::vector<float>>(static_cast<std::size_t>(Hkv)));
      vr = kr;
      kdec.assign(static_cast<std::size_t>(s.n_layers), std::vector<std::map<int, std::vector<float>>>(static_cast<std::size_t>(Hkv)));
      vdec = kdec;
    }
    for (int h = 0; h < Hkv; ++h) {
      std::vector<float> kf(static_cast<std::size_t>(hd)), vf(kf.size());
      for (int i = 0; i < hd; ++i) {
        kf[static_cast<std::size_t>(i)] = static_cast<float>(k[static_cast<std::size_t>(h * hd + i)]);
        vf[static_cast<std::size_t>(i)] = static_cast<float>(v[static_cast<std::size_t>(h * hd + i)]);
      }
      const auto kk = rotated(l, h, kf.data(), false), vv = rotated(l, h, vf.data(), false, 1);
      auto& K = kr[static_cast<std::size_t>(l)][static_cast<std::size_t>(h)];
      auto& V = vr[static_cast<std::size_t>(l)][static_cast<std::size_t>(h)];
      K.insert(K.end(), kk.begin(), kk.end());
      V.insert(V.end(), vv.begin(), vv.end());
    }
    const int first_exact = std::max(0, chunk_start + 1 - window);
    auto exact = [&](int t) { return t < sinks || t >= first_exact; };
    std::vector<float> att(static_cast<std::size_t>(qd));
    for (int h = 0; h < H; ++h) {
      const int kh = h / G;
      std::vector<float> qf(static_cast<std::size_t>(hd));
      for (int i = 0; i < hd; ++i) qf[static_cast<std::size_t>(i)] = static_cast<float>(q[static_cast<std::size_t>(h * hd + i)]);
      const auto qq = rotated(l, kh, qf.data(), false, 2);
      std::vector<double> sc(static_cast<std::size_t>(pos + 1));
      double mx = -1e300;
      for (int t = 0; t <= pos; ++t) {
        const float* kt = kr[static_cast<std::size_t>(l)][static_cast<std::size_t>(kh)].data() + static_cast<std::size_t>(t) * hd;
        const std::vector<float>* coded = exact(t) ? nullptr : &coded_key(l, kh, t);
        double d = 0;
        for (int i = 0; i < hd; ++i) d += static_cast<double>(qq[static_cast<std::size_t>(i)]) * (coded ? (*coded)[static_cast<std::size_t>(i)] : hf(kt[i]));
        sc[static_cast<std::size_t>(t)] = d / std::sqrt(static_cast<double>(hd));
        mx = std::max(mx, sc[static_cast<std::size_t>(t)]);
      }
      double den = 0;
      for (auto& e : sc) den += (e = std::exp(e - mx));
      std::vector<double> o(static_cast<std::size_t>(hd), 0.0);
      for (int t = 0; t <= pos; ++t) {
        const float* vt = vr[static_cast<std::size_t>(l)][static_cast<std::size_t>(kh)].data() + static_cast<std::size_t>(t) * hd;
        const std::vector<float>* coded = exact(t) ? nullptr : &coded_value(l, kh, t);
        for (int i = 0; i < hd; ++i) o[static_cast<std::size_t>(i)] += sc[static_cast<std::size_t>(t)] * (coded ? (*coded)[static_cast<std::size_t>(i)] : hf(vt[i]));
      }
      std::vector<float> of(static_cast<std::size_t>(hd));
      for (int i = 0; i < hd; ++i) of[static_cast<std::size_t>(i)] = static_cast<float>(o[static_cast<std::size_t>(i)] / den);
      const auto back = rotated(l, kh, of.data(), true, 1);
      for (int i = 0; i < hd; ++i) att[static_cast<std::size_t>(h * hd + i)] = bf(back[static_cast<std::size_t>(i)]);
    }
    block_tail(L, att, x);
  }

  // After attention (att, bf16-rounded): x += Wo att, then the SwiGLU FFN block, as the GPU
  // rounds (bf16 GEMM inputs, f32 outputs).
  void block_tail(const LlamaHostWeights::Layer& L, const std::vector<float>& att, std::vector<double>& x) const {
    const int qd = s.n_heads * s.head_dim;
    const auto ao = matvec(L.wo, att, s.hidden, qd);
    for (int i = 0; i < s.hidden; ++i) x[static_cast<std::size_t>(i)] += static_cast<float>(ao[static_cast<std::size_t>(i)]);
    const auto xb2 = norm(x, L.ffn_norm);
    const auto g = matvec(L.w_gate, xb2, s.ffn, s.hidden), u = matvec(L.w_up, xb2, s.ffn, s.hidden);
    std::vector<float> hb(static_cast<std::size_t>(s.ffn));
    for (int i = 0; i < s.ffn; ++i) {
      const double gi = static_cast<float>(g[static_cast<std::size_t>(i)]);
      hb[static_cast<std::size_t>(i)] = bf(static_cast<float>(gi / (1 + std::exp(-gi)) * static_cast<float>(u[static_cast<std::size_t>(i)])));
    }
    const auto d = matvec(L.w_down, hb, s.hidden, s.ffn);
    for (int i = 0; i < s.hidden; ++i) x[static_cast<std::size_t>(i)] += static_cast<float>(d[static_cast<std::size_t>(i)]);
  }

  // The logits of `token` at `pos`, fed in a prefill chunk that starts at chunk_start (a decode
  // step: chunk_start = pos). With an exact window, the chunk's tokens and the window - 1 before
  // it are read exact; without one (stress), every token from its codes.
  std::vector<double> step(int token, int pos, int chunk_start = -1) {
    if (chunk_start < 0) chunk_start = pos;
    const int H = s.n_heads, Hkv = s.n_kv_heads, hd = s.head_dim, G = H / Hkv;
    const int qd = H * hd, kd = Hkv * hd;
    if (kc.empty()) {
      kc.assign(static_cast<std::size_t>(s.n_layers), {});
      vc.assign(static_cast<std::size_t>(s.n_layers), {});
      kx.assign(static_cast<std::size_t>(s.n_layers), {});
      vx.assign(static_cast<std::size_t>(s.n_layers), {});
    }
    std::vector<double> x(static_cast<std::size_t>(s.hidden));
    for (int i = 0; i < s.hidden; ++i) x[static_cast<std::size_t>(i)] = w.tok_embd[static_cast<std::size_t>(token) * s.hidden + i];
    for (int l = 0; l < s.n_layers; ++l) {
      const auto& L = w.layers[static_cast<std::size_t>(l)];
      const auto xb = norm(x, L.attn_norm);
      auto q = matvec(L.wq, xb, qd, s.hidden), k = matvec(L.wk, xb, kd, s.hidden), v = matvec(L.wv, xb, kd, s.hidden);
      auto rope = [&](std::vector<double>& t, int heads) {
        for (int h = 0; h < heads; ++h) {
          for (int j = 0; j < hd / 2; ++j) {
            const double a = pos * std::pow(s.rope_theta, -2.0 * j / hd);
            const int i0 = s.rope_interleaved ? 2 * j : j, i1 = s.rope_interleaved ? 2 * j + 1 : j + hd / 2;
            // the GPU rotates the f32 values it computed; round like it does
            const double x0 = static_cast<float>(t[static_cast<std::size_t>(h * hd + i0)]);
            const double x1 = static_cast<float>(t[static_cast<std::size_t>(h * hd + i1)]);
            t[static_cast<std::size_t>(h * hd + i0)] = x0 * std::cos(a) - x1 * std::sin(a);
            t[static_cast<std::size_t>(h * hd + i1)] = x0 * std::sin(a) + x1 * std::cos(a);
          }
        }
      };
      rope(q, H);
      rope(k, Hkv);
      if (normed()) {
        attend_normed(l, pos, chunk_start, q, k, v, x);
        continue;
      }
      // Appends this token's K / V (as `coded` says: PQ round trip or fp16) to K, V [Hkv][t][hd].
      auto append = [&](std::vector<float>& K, std::vector<float>& V, bool coded) {
        std::vector<float> K2(static_cast<std::size_t>(Hkv) * (pos + 1) * hd), V2(K2.size());
        for (int h = 0; h < Hkv; ++h) {
          for (int t = 0; t < pos; ++t) {
            for (int i = 0; i < hd; ++i) {
              K2[(static_cast<std::size_t>(h) * (pos + 1) + t) * hd + i] = K[(static_cast<std::size_t>(h) * pos + t) * hd + i];
              V2[(static_cast<std::size_t>(h) * (pos + 1) + t) * hd + i] = V[(static_cast<std::size_t>(h) * pos + t) * hd + i];
            }
          }
          std::vector<float> kn(static_cast<std::size_t>(hd)), vn(kn.size());
          for (int i = 0; i < hd; ++i) {
            kn[static_cast<std::size_t>(i)] = static_cast<float>(k[static_cast<std::size_t>(h * hd + i)]);
            vn[static_cast<std::size_t>(i)] = static_cast<float>(v[static_cast<std::size_t>(h * hd + i)]);
          }
          if (coded) {
            const std::size_t per = static_cast<std::size_t>(M) * 256 * (hd / M);
            const auto& ck = cb.k[static_cast<std::size_t>(l)];
            const auto& cv = cb.v[static_cast<std::size_t>(l)];
            kn = pq_roundtrip(std::vector<float>(ck.begin() + static_cast<std::ptrdiff_t>(h * per), ck.begin() + static_cast<std::ptrdiff_t>((h + 1) * per)), kn.data());
            vn = pq_roundtrip(std::vector<float>(cv.begin() + static_cast<std::ptrdiff_t>(h * per), cv.begin() + static_cast<std::ptrdiff_t>((h + 1) * per)), vn.data());
          } else {
            for (auto& e : kn) e = hf(e);
            for (auto& e : vn) e = hf(e);
          }
          for (int i = 0; i < hd; ++i) {
            K2[(static_cast<std::size_t>(h) * (pos + 1) + pos) * hd + i] = kn[static_cast<std::size_t>(i)];
            V2[(static_cast<std::size_t>(h) * (pos + 1) + pos) * hd + i] = vn[static_cast<std::size_t>(i)];
          }
        }
        K = std::move(K2);
        V = std::move(V2);
      };
      append(kc[static_cast<std::size_t>(l)], vc[static_cast<std::size_t>(l)], pq);
      append(kx[static_cast<std::size_t>(l)], vx[static_cast<std::size_t>(l)], false);
      const std::int64_t first_exact = pq && window > 0 ? std::max(0, chunk_start + 1 - window) : (pq ? pos + 1 : 0);
      auto Kat = [&](int h, int t, int i) {
        const auto& K = t >= first_exact ? kx[static_cast<std::size_t>(l)] : kc[static_cast<std::size_t>(l)];
        return static_cast<double>(K[(static_cast<std::size_t>(h) * (pos + 1) + t) * hd + i]);
      };
      auto Vat = [&](int h, int t, int i) {
        const auto& V = t >= first_exact ? vx[static_cast<std::size_t>(l)] : vc[static_cast<std::size_t>(l)];
        return static_cast<double>(V[(static_cast<std::size_t>(h) * (pos + 1) + t) * hd + i]);
      };
      std::vector<float> att(static_cast<std::size_t>(qd));
      for (int h = 0; h < H; ++h) {
        const int kh = h / G;
        std::vector<double> sc(static_cast<std::size_t>(pos + 1));
        double mx = -1e300;
        for (int t = 0; t <= pos; ++t) {
          double d = 0;
          for (int i = 0; i < hd; ++i) {
            d += static_cast<float>(q[static_cast<std::size_t>(h * hd + i)]) * Kat(kh, t, i);
          }
          sc[static_cast<std::size_t>(t)] = d / std::sqrt(static_cast<double>(hd));
          mx = std::max(mx, sc[static_cast<std::size_t>(t)]);
        }
        double den = 0;
        for (auto& e : sc) den += (e = std::exp(e - mx));
        for (int i = 0; i < hd; ++i) {
          double o = 0;
          for (int t = 0; t <= pos; ++t) o += sc[static_cast<std::size_t>(t)] * Vat(kh, t, i);
          att[static_cast<std::size_t>(h * hd + i)] = bf(static_cast<float>(o / den));
        }
      }
      block_tail(L, att, x);
    }
    return matvec(w.lm_head, norm(x, w.final_norm), s.vocab, s.hidden);
  }
};

LlamaShape tiny(int head_dim, int heads, int kv_heads) {
  LlamaShape s;
  s.hidden = 96;
  s.n_layers = 2;
  s.n_heads = heads;
  s.n_kv_heads = kv_heads;
  s.head_dim = head_dim;
  s.ffn = 160;
  s.vocab = 77;
  s.rope_theta = 10000.0;
  return s;
}

// qk: scale of the query / key projections (attention scores of ~10-20 at 3).
LlamaHostWeights random_weights(const LlamaShape& s, std::mt19937& rng, float qk) {
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  auto mat = [&](int out, int in, float scale) {
    std::vector<float> m(static_cast<std::size_t>(out) * in);
    for (auto& x : m) x = bf(u(rng) * scale);
    return m;
  };
  auto vec = [&](int n) {
    std::vector<float> m(static_cast<std::size_t>(n));
    for (auto& x : m) x = 1.0f + 0.2f * u(rng);  // f32, as uploaded
    return m;
  };
  const int qd = s.n_heads * s.head_dim, kd = s.n_kv_heads * s.head_dim;
  const float hs = 1.0f / std::sqrt(static_cast<float>(s.hidden));
  LlamaHostWeights w;
  w.tok_embd = mat(s.vocab, s.hidden, 1.0f);
  w.lm_head = mat(s.vocab, s.hidden, hs);
  w.final_norm = vec(s.hidden);
  for (int l = 0; l < s.n_layers; ++l) {
    LlamaHostWeights::Layer L;
    L.attn_norm = vec(s.hidden);
    L.ffn_norm = vec(s.hidden);
    L.wq = mat(qd, s.hidden, qk * hs);  // larger q/k: attention that is not flat
    L.wk = mat(kd, s.hidden, qk * hs);
    L.wv = mat(kd, s.hidden, hs);
    L.wo = mat(s.hidden, qd, 1.0f / std::sqrt(static_cast<float>(qd)));
    L.w_gate = mat(s.ffn, s.hidden, hs);
    L.w_up = mat(s.ffn, s.hidden, hs);
    L.w_down = mat(s.hidden, s.ffn, 1.0f / std::sqrt(static_cast<float>(s.ffn)));
    w.layers.push_back(std::move(L));
  }
  return w;
}

// Bounds (of the largest |logit|): 2e-2 for the fp16 cache (bf16 GEMM inputs rounded on
// either side of a boundary now and then); 3e-2 for PQ, whose tensor-core attention rounds the
// queries and probabilities to fp16: a score s carries ~|s| x 2^-11, so probabilities move by
// that much relative — with the fp16 cache's query / key scale (scores of 10-20) two layers
// amplified it to 7% of the logit scale once (seen on an H100), so the PQ cases use half that
// scale. docs/cuda.md has the precision note.
struct NormOpts {
  bool rotate = false, kcg = false, vtn = false;
  int group = 64;
  int sinks = 0;
  /// A qpca codebook's keys (pq/query_pca.h): a non-orthogonal T = D H (rows of a Hadamard matrix
  /// scaled by 0.5..2) for the keys, T^-T for the queries, channel scales 0.5..2 (needs rotate, kcg).
  bool qpca = false;
};

// chunks: the first tokens go through prefill() in chunks of these lengths (every position's
// logits checked), the rest through step().
void run_case(const LlamaShape& s, GpuCache cache, int M, bool interleaved, int batch, std::uint32_t seed,
              bool graph = true, int window = 0, NormOpts nopt = {}, int steps = 23, std::vector<int> chunks = {}) {
  std::mt19937 rng(seed);
  LlamaShape sh = s;
  sh.rope_interleaved = interleaved;
  Reference ref{sh, random_weights(sh, rng, cache == GpuCache::kPQ ? 1.5f : 3.0f)};
  GpuLlamaOptions o;
  o.batch = batch;
  o.capacity = steps;
  o.cache = cache;
  o.pq_M = M;
  o.cuda_graph = graph;
  o.pq_window = window;
  o.pq_rotate = nopt.rotate;
  o.pq_k_channel_group = nopt.kcg;
  o.pq_v_token_norm = nopt.vtn;
  o.pq_norm_group = nopt.group;
  o.pq_sinks = nopt.sinks;
  o.prefill_chunk = chunks.empty() ? 0 : *std::max_element(chunks.begin(), chunks.end());
  o.prefill_all_logits = true;
  GpuLlama gpu(sh, o);
  gpu.upload_weights(ref.w);
  if (cache == GpuCache::kPQ) {
    ref.pq = true;
    ref.M = M;
    ref.window = window;
    ref.rotate = nopt.rotate;
    ref.kcg = nopt.kcg;
    ref.vtn = nopt.vtn;
    ref.group = nopt.group;
    ref.sinks = nopt.sinks;
    std::uniform_real_distribution<float> u(-2.0f, 2.0f);
    for (int l = 0; l < sh.n_layers; ++l) {
      std::vector<float> k(static_cast<std::size_t>(sh.n_kv_heads) * sh.head_dim * 256), v(k.size());
      for (auto& x : k) x = u(rng);
      for (auto& x : v) x = 0.5f * u(rng);
      ref.cb.k.push_back(k);
      ref.cb.v.push_back(v);
      if (nopt.rotate) {  // the engine's seeded Hadamard rotations, one per kv head and kind
        std::vector<float> r, rv;
        for (int h = 0; h < sh.n_kv_heads; ++h) {
          const auto R = hadamard_rotation(sh.head_dim, seed * 131u + static_cast<unsigned>(l * 17 + h));
          const auto Rv = hadamard_rotation(sh.head_dim, seed * 137u + static_cast<unsigned>(l * 19 + h) + 7);
          r.insert(r.end(), R.begin(), R.end());
          rv.insert(rv.end(), Rv.begin(), Rv.end());
        }
        if (nopt.qpca) {  // T = D R, Q = T^-T = D^-1 R (R orthogonal)
          std::uniform_real_distribution<float> sc(0.5f, 2.0f);
          std::vector<float> q(r.size()), ks(static_cast<std::size_t>(sh.n_kv_heads) * sh.head_dim);
          for (std::size_t row = 0; row < r.size() / static_cast<std::size_t>(sh.head_dim); ++row) {
            const float d = sc(rng);
            for (int j = 0; j < sh.head_dim; ++j) {
              const std::size_t i = row * static_cast<std::size_t>(sh.head_dim) + static_cast<std::size_t>(j);
              q[i] = r[i] / d;
              r[i] *= d;
            }
          }
          for (auto& x : ks) x = sc(rng);
          // Centroids where a trained qpca codebook has them: coordinate c within [-scale_c, scale_c]
          // (u' spans [0, scale_c]); the unscaled random ones would sit far from u' on channels
          // with small scales, where float-level differences flip codes between distant centroids.
          auto& cen = ref.cb.k.back();
          const int dsub = sh.head_dim / M;
          for (std::size_t i = 0; i < cen.size(); ++i) {
            const std::size_t head = i / (static_cast<std::size_t>(M) * 256 * static_cast<std::size_t>(dsub));
            const std::size_t m = i / (256 * static_cast<std::size_t>(dsub)) % static_cast<std::size_t>(M);
            const std::size_t c = m * static_cast<std::size_t>(dsub) + i % static_cast<std::size_t>(dsub);
            cen[i] *= 0.5f * ks[head * static_cast<std::size_t>(sh.head_dim) + c];
          }
          ref.cb.rotation_q.push_back(q);
          ref.cb.k_scale.push_back(ks);
        }
        ref.cb.rotation.push_back(r);
        ref.cb.rotation_v.push_back(rv);
      }
    }
    ref.rot = ref.cb.rotation;
    ref.rot_v = ref.cb.rotation_v;
    ref.rot_q = ref.cb.rotation_q;
    ref.kscale = ref.cb.k_scale;
    gpu.upload_codebooks(ref.cb);
  }
  // Every sequence of the batch gets its own tokens; the reference runs sequence 0 and the
  // last one (a mix-up between sequences would show).
  std::vector<std::vector<int>> toks(static_cast<std::size_t>(steps), std::vector<int>(static_cast<std::size_t>(batch)));
  for (auto& row : toks) {
    for (auto& t : row) t = static_cast<int>(rng() % static_cast<unsigned>(sh.vocab));
  }
  Reference ref_last = ref;
  double worst = 0;
  std::vector<float> first;
  const std::vector<int> checked = batch == 1 ? std::vector<int>{0} : std::vector<int>{0, batch - 1};
  // got: [batch, n, vocab] logits of positions p0 .. p0 + n - 1, fed in one chunk from p0.
  auto compare = [&](const std::vector<float>& got, int p0, int n) {
    for (int which : checked) {
      Reference& r = which == 0 ? ref : ref_last;
      for (int j = 0; j < n; ++j) {
        const int p = p0 + j;
        const auto want = r.step(toks[static_cast<std::size_t>(p)][static_cast<std::size_t>(which)], p, p0);
        double scale = 1e-3, err = 0;
        for (double x : want) scale = std::max(scale, std::fabs(x));
        const float* g = got.data() + (static_cast<std::size_t>(which) * n + j) * sh.vocab;
        for (int i = 0; i < sh.vocab; ++i) err = std::max(err, std::fabs(g[i] - want[static_cast<std::size_t>(i)]));
        worst = std::max(worst, err / scale);
        ASSERT_LE(err, (cache == GpuCache::kPQ ? 3e-2 : 2e-2) * scale)
            << (cache == GpuCache::kPQ ? "pq" : "f16") << " head_dim " << sh.head_dim << " position " << p << " (chunk from "
            << p0 << ", " << n << " tokens) sequence " << which;
      }
    }
  };
  int p = 0;
  for (int n : chunks) {
    std::vector<int> flat;  // sequence-major
    for (int b = 0; b < batch; ++b) {
      for (int j = 0; j < n; ++j) flat.push_back(toks[static_cast<std::size_t>(p + j)][static_cast<std::size_t>(b)]);
    }
    const float* d_logits = gpu.prefill(flat, n);
    std::vector<float> got(static_cast<std::size_t>(batch) * n * sh.vocab);
    check(cudaMemcpy(got.data(), d_logits, got.size() * 4, cudaMemcpyDeviceToHost), "logits");
    compare(got, p, n);
    if (::testing::Test::HasFatalFailure()) return;
    p += n;
  }
  ASSERT_EQ(gpu.position(), p);
  for (; p < steps; ++p) {
    const float* d_logits = gpu.step(toks[static_cast<std::size_t>(p)]);
    std::vector<float> got(static_cast<std::size_t>(batch) * sh.vocab);
    check(cudaStreamSynchronize(gpu.stream()), "sync");
    check(cudaMemcpy(got.data(), d_logits, got.size() * 4, cudaMemcpyDeviceToHost), "logits");
    if (p == 0) first = got;
    compare(got, p, 1);
    if (::testing::Test::HasFatalFailure()) return;
  }
  std::string chunk_list;
  for (int n : chunks) chunk_list += (chunk_list.empty() ? " prefill chunks " : ",") + std::to_string(n);
  std::printf("GpuLlama %s%s sinks %d window %d head_dim %d GQA %d batch %d rope %s %s%s: worst logit error %.3g of the logit scale\n",
              cache == GpuCache::kPQ ? "pq" : "f16", nopt.qpca ? "-qpca" : nopt.rotate || nopt.kcg || nopt.vtn ? "-norm" : "", nopt.sinks, window,
              sh.head_dim, sh.n_heads / sh.n_kv_heads, batch,
              interleaved ? "interleaved" : "half", graph ? "graph" : "eager", chunk_list.c_str(), worst);
  EXPECT_THROW(gpu.step(toks[0]), InvalidArgumentError);  // the cache is full
  if (!chunks.empty()) {
    EXPECT_THROW(gpu.prefill(std::vector<int>(static_cast<std::size_t>(batch), 0), 1), InvalidArgumentError);
  }
  gpu.reset();  // an empty cache again: the first step's logits come back exactly
  EXPECT_EQ(gpu.position(), 0);
  if (first.empty()) return;  // the run began with a prefill
  const float* d_logits = gpu.step(toks[0]);
  std::vector<float> again(first.size());
  check(cudaStreamSynchronize(gpu.stream()), "sync");
  check(cudaMemcpy(again.data(), d_logits, again.size() * 4, cudaMemcpyDeviceToHost), "logits");
  EXPECT_EQ(again, first);
}

TEST(GpuLlama, F16CacheMatchesReference) {
  run_case(tiny(64, 4, 2), GpuCache::kF16, 0, false, 1, 11, /*graph=*/false);
  run_case(tiny(64, 4, 2), GpuCache::kF16, 0, false, 1, 11, /*graph=*/true);
  run_case(tiny(128, 4, 1), GpuCache::kF16, 0, true, 3, 12);
  run_case(tiny(128, 4, 2), GpuCache::kF16, 0, false, 2, 17);
}

TEST(GpuLlama, PQCacheMatchesReference) {
  run_case(tiny(128, 8, 2), GpuCache::kPQ, 64, false, 2, 13);
  run_case(tiny(64, 2, 2), GpuCache::kPQ, 16, true, 1, 14);
  run_case(tiny(128, 8, 2), GpuCache::kPQ, 64, false, 1, 18, /*graph=*/false);
}

// The exact window + codes (pq_window) with the encoder on a side stream, graph and eager:
// windows of 1 (every older token from codes the step after it arrives), 5 and the whole run.
TEST(GpuLlama, PQWindowMatchesReference) {
  run_case(tiny(128, 8, 2), GpuCache::kPQ, 64, false, 2, 21, /*graph=*/true, /*window=*/5);
  run_case(tiny(128, 4, 2), GpuCache::kPQ, 64, true, 1, 22, /*graph=*/false, /*window=*/1);
  run_case(tiny(64, 2, 1), GpuCache::kPQ, 16, false, 1, 23, /*graph=*/true, /*window=*/1);
  run_case(tiny(128, 4, 2), GpuCache::kPQ, 64, false, 1, 24, /*graph=*/true, /*window=*/23);
}

// The normalised variant (rotation, key channel-groups, value token norms; windows as large as
// a group): 160 steps, so that two groups of 64 keys are encoded when they complete and read
// from their codes once they leave the window. Each normalisation alone and all together.
TEST(GpuLlama, PQNormalisedMatchesReference) {
  NormOpts all{true, true, true, 64};
  run_case(tiny(128, 4, 2), GpuCache::kPQ, 64, false, 1, 31, /*graph=*/true, /*window=*/64, all, 160);
  run_case(tiny(64, 2, 1), GpuCache::kPQ, 32, true, 2, 32, /*graph=*/false, /*window=*/64, all, 150);
  run_case(tiny(128, 4, 2), GpuCache::kPQ, 64, false, 1, 33, /*graph=*/true, /*window=*/64, {false, true, false, 64}, 140);
  run_case(tiny(128, 4, 2), GpuCache::kPQ, 64, false, 1, 34, /*graph=*/true, /*window=*/8, {true, false, true, 64}, 40);
  // qpca codebooks: keys by a non-orthogonal T, queries by T^-T, channel scales; decode steps
  // and prefill chunks that complete groups.
  NormOpts qpca{true, true, true, 64, 4, true};
  run_case(tiny(128, 4, 2), GpuCache::kPQ, 32, false, 1, 35, /*graph=*/true, /*window=*/64, qpca, 160);
  run_case(tiny(64, 4, 2), GpuCache::kPQ, 16, false, 2, 36, /*graph=*/true, /*window=*/64, qpca, 160, {40, 70});
}

// Chunked prefill (prefill_attention + the chunk's writes / encodes) against the reference with
// chunk semantics, every position's logits, then decode steps after it: fp16 (head_dim 64 and 8),
// stress-mode PQ (the chunk reads its own codes), PQ windows shorter and longer than the chunks,
// dsub 4, the normalised variant with sinks over chunks that complete key channel-groups.
TEST(GpuLlama, PrefillMatchesReference) {
  run_case(tiny(64, 4, 2), GpuCache::kF16, 0, false, 2, 51, /*graph=*/true, 0, {}, 23, {7, 1, 9});
  run_case(tiny(8, 4, 4), GpuCache::kF16, 0, true, 1, 52, /*graph=*/false, 0, {}, 23, {23});
  run_case(tiny(128, 4, 2), GpuCache::kPQ, 64, false, 2, 53, /*graph=*/true, 0, {}, 23, {5, 11});
  run_case(tiny(128, 4, 2), GpuCache::kPQ, 64, false, 1, 54, /*graph=*/true, /*window=*/5, {}, 23, {3, 9, 1, 4});
  run_case(tiny(128, 8, 2), GpuCache::kPQ, 32, true, 1, 55, /*graph=*/false, /*window=*/5, {}, 23, {12});
  run_case(tiny(64, 6, 2), GpuCache::kF16, 0, false, 1, 58, /*graph=*/true, 0, {}, 23, {9, 5});  // GQA 3
  run_case(tiny(64, 6, 2), GpuCache::kPQ, 32, false, 2, 59, /*graph=*/true, /*window=*/4, {}, 23, {9});
  run_case(tiny(128, 4, 2), GpuCache::kPQ, 64, false, 1, 56, /*graph=*/true, /*window=*/64, {true, true, true, 64, 4}, 160,
           {40, 70, 30});
  run_case(tiny(64, 2, 1), GpuCache::kPQ, 32, false, 2, 57, /*graph=*/true, /*window=*/8, {true, false, true, 64, 0}, 40,
           {20, 3});
}

// Exact sinks (the CPU's pq-norm default keeps 4): with the normalised variant, whose codes,
// norms and channel-groups then count from the first token after the sinks, and with plain PQ.
TEST(GpuLlama, PQSinksMatchReference) {
  run_case(tiny(128, 4, 2), GpuCache::kPQ, 64, false, 2, 41, /*graph=*/true, /*window=*/64, {true, true, true, 64, 4}, 160);
  run_case(tiny(128, 4, 2), GpuCache::kPQ, 64, true, 1, 42, /*graph=*/false, /*window=*/5, {false, false, false, 64, 3}, 40);
}

// The gutenberg-23m directory: $MILLION_GUTENBERG_DIR, ../shared/models/gutenberg-23m (a
// development checkout) or device-carry/gutenberg-23m (copied beside a checkout sent to a GPU
// machine); empty when none has config.json.
std::string gutenberg_dir() {
  namespace fs = std::filesystem;
  if (const char* e = std::getenv("MILLION_GUTENBERG_DIR")) return e;
  for (const char* c : {"../shared/models/gutenberg-23m", "device-carry/gutenberg-23m"}) {
    if (fs::exists(fs::path(c) / "config.json")) return c;
  }
  return "";
}

// The calibrated pq-norm 4-bit codebook of gutenberg-23m: $MILLION_GUTENBERG_CODEBOOK or
// device-carry/gutenberg-23m-pq-norm-4bit.cb (scripts/gpu-deps.sh copies it when one is at hand).
std::string gutenberg_codebook() {
  const char* e = std::getenv("MILLION_GUTENBERG_CODEBOOK");
  return e ? e : "device-carry/gutenberg-23m-pq-norm-4bit.cb";
}

// Token ids of golden.json's prompt `k`.
std::vector<int> golden_prompt_ids(const std::string& dir, int k) {
  nlohmann::json golden;
  std::ifstream(dir + "/golden.json") >> golden;
  return golden["prompts"][k]["input_ids"].get<std::vector<int>>();
}

// Each golden prompt fed token by token through the fp16 cache; the last position's 8192
// logits against Hugging Face's (f32 weights and activations; ours: bf16 weights — the file's
// dtype — and bf16 GEMM inputs), then the 48 greedy tokens teacher-forced: our argmax must equal
// Hugging Face's wherever its top-1 margin exceeds twice the bound on logit error.
// Decode steps token by token, and prefill (the prompt in chunks of 64, then Hugging Face's
// continuation teacher-forced in one chunk): the same bounds.
TEST(GpuLlama, GutenbergMatchesGolden) {
  const std::string dir = gutenberg_dir();
  if (dir.empty()) GTEST_SKIP() << "gutenberg-23m not found (set MILLION_GUTENBERG_DIR or place it in ../shared/models)";
  constexpr double kLogitBound = 0.1;
  nlohmann::json golden;
  std::ifstream(dir + "/golden.json") >> golden;
  LlamaShape shape;
  const LlamaHostWeights w = load_llama_hf(dir, shape);
  for (const auto& pr : golden["prompts"]) {
    const std::vector<int> ids = pr["input_ids"].get<std::vector<int>>();
    const std::vector<double> want = pr["last_logits"].get<std::vector<double>>();
    const std::vector<int> greedy = pr["greedy_ids"].get<std::vector<int>>();
    const std::vector<double> margins = pr["greedy_top1_margins"].get<std::vector<double>>();
    for (bool use_prefill : {false, true}) {
      const char* mode = use_prefill ? "prefill" : "decode steps";
      GpuLlamaOptions o;
      o.capacity = static_cast<std::int64_t>(ids.size() + greedy.size());
      o.prefill_chunk = 64;
      o.prefill_all_logits = true;
      GpuLlama gpu(shape, o);
      gpu.upload_weights(w);
      const std::size_t V = static_cast<std::size_t>(shape.vocab);
      std::vector<float> logits;  // [positions fed by the last call, vocab]
      auto feed = [&](const std::vector<int>& toks) {
        const float* d = use_prefill ? gpu.prefill(toks, static_cast<int>(toks.size())) : gpu.step(toks);
        check(cudaStreamSynchronize(gpu.stream()), "sync");
        logits.resize(toks.size() * V);
        check(cudaMemcpy(logits.data(), d, logits.size() * 4, cudaMemcpyDeviceToHost), "logits");
      };
      const std::size_t per_call = use_prefill ? 64 : 1;
      for (std::size_t i = 0; i < ids.size(); i += per_call) {
        feed(std::vector<int>(ids.begin() + static_cast<std::ptrdiff_t>(i),
                              ids.begin() + static_cast<std::ptrdiff_t>(std::min(ids.size(), i + per_call))));
      }
      std::vector<float> last(logits.end() - static_cast<std::ptrdiff_t>(V), logits.end());
      double err = 0;
      for (std::size_t i = 0; i < want.size(); ++i) err = std::max(err, std::fabs(last[i] - want[i]));
      EXPECT_LE(err, kLogitBound) << pr["name"] << " " << mode;
      // Row r of the continuation's logits: greedy step r (row 0: the prompt's last position).
      std::vector<std::vector<float>> rows{last};
      if (use_prefill) {
        feed(std::vector<int>(greedy.begin(), greedy.end() - 1));  // teacher-forced: Hugging Face's continuation
        for (std::size_t r = 0; r + 1 < greedy.size(); ++r) {
          rows.emplace_back(logits.begin() + static_cast<std::ptrdiff_t>(r * V), logits.begin() + static_cast<std::ptrdiff_t>((r + 1) * V));
        }
      } else {
        for (std::size_t r = 0; r + 1 < greedy.size(); ++r) {
          feed({greedy[r]});
          rows.push_back(logits);
        }
      }
      int checked = 0, agree = 0;
      for (std::size_t i = 0; i < greedy.size(); ++i) {
        const auto& l = rows[i];
        const bool clear = margins[i] > 2 * kLogitBound;
        const bool same = static_cast<int>(std::max_element(l.begin(), l.end()) - l.begin()) == greedy[i];
        agree += same;
        if (clear) {
          ++checked;
          EXPECT_TRUE(same) << pr["name"] << " " << mode << " greedy step " << i << " (margin " << margins[i] << ")";
        }
      }
      std::printf("gutenberg-23m %s (%zu tokens, %s): last-position logits max |diff| %.4f vs Hugging Face; greedy top-1 "
                  "%d/%zu equal (%d with margin > %.2f checked)\n",
                  pr["name"].get<std::string>().c_str(), ids.size(), mode, err, agree, greedy.size(), checked,
                  2 * kLogitBound);
    }
  }
}

// gutenberg-23m through the GPU's PQ cache with a real codebook file (`million calibrate`'s
// default pq-norm 4-bit: rotation, key channel-groups of 128, value norms) and the CPU's default
// mode (exact window 128, 4 sinks): golden prompt 0 (1000 tokens) teacher-forced through the fp16
// cache and through the PQ cache, KL divergence of the PQ logits from the fp16 ones at every
// position. The codebook: $MILLION_GUTENBERG_CODEBOOK or device-carry/gutenberg-23m-pq-norm-4bit.cb
// (scripts/gpu-deps.sh copies it when a calibrated one is at hand); skipped without it.
TEST(GpuLlama, GutenbergPQNormCloseToFp16) {
  const std::string dir = gutenberg_dir(), cbp = gutenberg_codebook();
  if (dir.empty() || !std::filesystem::exists(cbp)) {
    GTEST_SKIP() << "gutenberg-23m or its pq-norm codebook not found (" << cbp << ")";
  }
  const std::vector<int> ids = golden_prompt_ids(dir, 0);
  LlamaShape shape;
  const LlamaHostWeights w = load_llama_hf(dir, shape);
  GpuLlamaOptions of;
  of.capacity = static_cast<std::int64_t>(ids.size());
  GpuLlamaOptions op = of;
  op.cache = GpuCache::kPQ;
  op.pq_window = 128;
  op.pq_sinks = 4;
  const LlamaHostCodebooks cb = load_codebooks_for_gpu(cbp, shape, op);
  ASSERT_TRUE(op.pq_rotate && op.pq_k_channel_group && op.pq_v_token_norm) << "not a pq-norm codebook";
  GpuLlama f16(shape, of), pq(shape, op);
  f16.upload_weights(w);
  pq.upload_weights(w);
  pq.upload_codebooks(cb);
  const std::size_t V = static_cast<std::size_t>(shape.vocab);
  std::vector<float> a(V), b(V);
  double kld_sum = 0, kld_coded = 0;
  int agree = 0, n_coded = 0;
  for (std::size_t t = 0; t < ids.size(); ++t) {
    const float* da = f16.step({ids[t]});
    const float* db = pq.step({ids[t]});
    check(cudaDeviceSynchronize(), "sync");
    check(cudaMemcpy(a.data(), da, V * 4, cudaMemcpyDeviceToHost), "logits");
    check(cudaMemcpy(b.data(), db, V * 4, cudaMemcpyDeviceToHost), "logits");
    const double ma = *std::max_element(a.begin(), a.end()), mb = *std::max_element(b.begin(), b.end());
    double za = 0, zb = 0;
    for (std::size_t i = 0; i < V; ++i) za += std::exp(a[i] - ma), zb += std::exp(b[i] - mb);
    double kld = 0;
    for (std::size_t i = 0; i < V; ++i) {
      const double la = a[i] - ma - std::log(za), lb = b[i] - mb - std::log(zb);
      kld += std::exp(la) * (la - lb);
    }
    kld_sum += kld;
    if (t >= 4 + 128) kld_coded += kld, ++n_coded;  // positions that read coded history
    agree += std::max_element(a.begin(), a.end()) - a.begin() == std::max_element(b.begin(), b.end()) - b.begin();
  }
  const double mean = kld_sum / static_cast<double>(ids.size()), mean_coded = kld_coded / std::max(1, n_coded);
  std::printf("gutenberg-23m, pq-norm 4-bit (window 128, 4 sinks) vs the fp16 cache on %zu tokens: mean KLD %.5f "
              "(%.5f over the %d positions past the window), top-1 agreement %.2f%%\n",
              ids.size(), mean, mean_coded, n_coded, 100.0 * agree / static_cast<double>(ids.size()));
  EXPECT_LT(mean_coded, 5e-3);  // a broken rotation or normalisation gives > 0.1
  EXPECT_GT(agree, static_cast<int>(0.95 * static_cast<double>(ids.size())));
}

// stories260K, the bundled model (head_dim 8: the generic dense kernel), f32 weights: greedy
// generation from BOS for 256 steps must decode to the golden text of
// models/stories260K/README.md exactly (read from the README at run time; the tokenizer's
// pieces from tok512.bin).
// The kernels on real K/V: gutenberg-23m's fp16 cache after a 1000-token prompt (prefill in
// chunks of 250), layers 0 and last, queries random with scores of std ~3: dense decode and
// both prefill kernels over the captured fp16 K/V against dense_attention_ref; the calibrated
// pq-norm codebook's encoding on the device against pq_encode_ref (equal codes but exact ties)
// over the K/V rotated and normalised on the host; the mma PQ kernel over those codes, group
// parameters and norms against dense attention over the K/V they decode to.
TEST(GpuLlama, KernelsMatchReferencesOnGutenbergKV) {
  const std::string dir = gutenberg_dir(), cbp = gutenberg_codebook();
  if (dir.empty() || !std::filesystem::exists(cbp)) {
    GTEST_SKIP() << "gutenberg-23m or its pq-norm codebook not found (" << cbp << ")";
  }
  const std::vector<int> ids = golden_prompt_ids(dir, 0);
  ASSERT_EQ(ids.size(), 1000u);
  LlamaShape sh;
  const LlamaHostWeights w = load_llama_hf(dir, sh);
  GpuLlamaOptions o;
  o.capacity = 1000;
  o.prefill_chunk = 250;
  GpuLlama gpu(sh, o);
  gpu.upload_weights(w);
  for (int i = 0; i < 1000; i += 250) gpu.prefill(std::vector<int>(ids.begin() + i, ids.begin() + i + 250), 250);
  GpuLlamaOptions op;
  op.cache = GpuCache::kPQ;
  const LlamaHostCodebooks cb = load_codebooks_for_gpu(cbp, sh, op);
  ASSERT_TRUE(op.pq_rotate && op.pq_k_channel_group && op.pq_v_token_norm) << "not a pq-norm codebook";
  const int Hkv = sh.n_kv_heads, H = sh.n_heads, hd = sh.head_dim, N = 1000, M = op.pq_M, dsub = hd / M;
  const int group = op.pq_norm_group, Nc = N / group * group;  // coded: the complete key groups
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  std::mt19937 rng(11);
  std::normal_distribution<float> dist;
  double worst_dense = 0, worst_prefill[2] = {0, 0}, worst_pq = 0;
  int mismatches = 0, ties = 0, codes_total = 0;
  for (int layer : {0, sh.n_layers - 1}) {
    std::vector<std::uint16_t> k16, v16;
    gpu.download_f16_cache(layer, k16, v16);  // [Hkv, N, hd]
    double ss = 0;
    for (auto x : k16) ss += static_cast<double>(f16_to_f32(x)) * f16_to_f32(x);
    const float sq = static_cast<float>(3.0 / std::sqrt(ss / static_cast<double>(k16.size())));  // query std
    auto queries = [&](std::size_t n) {
      std::vector<float> q(n);
      for (auto& x : q) x = sq * dist(rng);
      return q;
    };
    auto reference = [&](const void* k, const void* v, KVDType dt, const std::vector<float>& q, int pos0, int n_q, int n_keys) {
      std::vector<float> out(static_cast<std::size_t>(n_q) * H * hd);
      DenseAttentionArgs r;
      r.n_queries = n_q;
      r.pos0 = pos0;
      r.n_heads = H;
      r.n_kv_heads = Hkv;
      r.head_dim = hd;
      r.scale = scale;
      r.q = q.data();
      r.k = k;
      r.v = v;
      r.kv_head_stride = static_cast<std::int64_t>(n_keys) * hd;
      r.kv_dtype = dt;
      r.out = out.data();
      dense_attention_ref(r);
      return out;
    };
    auto rel_err = [](const std::vector<float>& got, const std::vector<float>& want) {
      double sc = 1e-3, e = 0;
      for (float x : want) sc = std::max(sc, static_cast<double>(std::fabs(x)));
      for (std::size_t i = 0; i < got.size(); ++i) e = std::max(e, std::fabs(static_cast<double>(got[i]) - want[i]));
      return e / sc;
    };
    DeviceBuffer<std::uint16_t> dk(k16.size()), dv(v16.size());
    dk.upload(k16);
    dv.upload(v16);
    {  // dense decode: the last position's query over all N keys
      const auto q = queries(static_cast<std::size_t>(H) * hd);
      DeviceBuffer<float> dq(q.size()), dout(q.size()), ws(decode_workspace_floats({1, H, Hkv, hd, N, N}, 4));
      dq.upload(q);
      dense_decode_attention({{1, H, Hkv, hd, N, N}, dk.get(), dv.get(), dq.get(), dout.get(), scale}, ws.get(), 4, nullptr);
      check(cudaDeviceSynchronize(), "sync");
      const double e = rel_err(dout.download(), reference(k16.data(), v16.data(), KVDType::kF16, q, N - 1, 1, N));
      EXPECT_LE(e, 2e-5) << "dense decode, layer " << layer;
      worst_dense = std::max(worst_dense, e);
    }
    {  // prefill: the last 128 positions as a chunk over the fp16 cache
      const int n_q = 128, pos0 = N - n_q;
      const auto q = queries(static_cast<std::size_t>(n_q) * H * hd);
      DeviceBuffer<float> dq(q.size()), dout(q.size());
      dq.upload(q);
      const auto want = reference(k16.data(), v16.data(), KVDType::kF16, q, pos0, n_q, N);
      for (PrefillKernel kern : {PrefillKernel::kCudaCores, PrefillKernel::kMma}) {
        PrefillAttentionArgs a;
        a.n_heads = H;
        a.n_kv_heads = Hkv;
        a.head_dim = hd;
        a.n_q = n_q;
        a.pos0 = pos0;
        a.q = dq.get();
        a.out = dout.get();
        a.scale = scale;
        a.kernel = kern;
        a.cache_k = dk.get();
        a.cache_v = dv.get();
        a.cache_capacity = N;
        prefill_attention(a, nullptr);
        check(cudaDeviceSynchronize(), "sync");
        const bool tc = kern == PrefillKernel::kMma;
        const double e = rel_err(dout.download(), want);
        EXPECT_LE(e, tc ? 4e-3 : 2e-5) << "prefill " << (tc ? "mma" : "CUDA cores") << ", layer " << layer;
        worst_prefill[tc] = std::max(worst_prefill[tc], e);
      }
    }
    // The pq-norm encoding of the first Nc tokens: rotated, keys by channel-group, values by norm.
    std::vector<float> uk(static_cast<std::size_t>(Hkv) * Nc * hd), uv(uk.size());
    std::vector<std::uint16_t> gp(static_cast<std::size_t>(Hkv) * (Nc / group) * 2 * hd), vn(static_cast<std::size_t>(Hkv) * Nc);
    std::vector<float> kdec(uk.size()), vdec(uk.size());  // what the codes decode to (filled below)
    for (int h = 0; h < Hkv; ++h) {
      const float* R = cb.rotation[static_cast<std::size_t>(layer)].data() + static_cast<std::size_t>(h) * hd * hd;
      const float* Rv = (cb.rotation_v.empty() ? cb.rotation : cb.rotation_v)[static_cast<std::size_t>(layer)].data() +
                        static_cast<std::size_t>(h) * hd * hd;
      std::vector<float> kr(static_cast<std::size_t>(Nc) * hd), vr(kr.size());
      for (int t = 0; t < Nc; ++t) {
        for (int i = 0; i < hd; ++i) {
          double ak = 0, av = 0;
          for (int j = 0; j < hd; ++j) {
            const std::size_t src = (static_cast<std::size_t>(h) * N + t) * hd + j;
            ak += static_cast<double>(R[i * hd + j]) * f16_to_f32(k16[src]);
            av += static_cast<double>(Rv[i * hd + j]) * f16_to_f32(v16[src]);
          }
          kr[static_cast<std::size_t>(t) * hd + i] = static_cast<float>(ak);
          vr[static_cast<std::size_t>(t) * hd + i] = static_cast<float>(av);
        }
      }
      float* ukh = uk.data() + static_cast<std::size_t>(h) * Nc * hd;
      float* uvh = uv.data() + static_cast<std::size_t>(h) * Nc * hd;
      for (int g0 = 0; g0 < Nc; g0 += group) {
        std::vector<float> mn(static_cast<std::size_t>(hd)), rg(mn.size());
        channel_group_params(kr.data() + static_cast<std::size_t>(g0) * hd, group, hd, mn.data(), rg.data());
        channel_group_normalize(kr.data() + static_cast<std::size_t>(g0) * hd, group, hd, mn.data(), rg.data(),
                                ukh + static_cast<std::size_t>(g0) * hd);
        for (int i = 0; i < hd; ++i) {
          const std::size_t base = ((static_cast<std::size_t>(h) * (Nc / group) + g0 / group) * 2) * hd;
          gp[base + i] = f32_to_f16(mn[static_cast<std::size_t>(i)]);
          gp[base + hd + i] = f32_to_f16(rg[static_cast<std::size_t>(i)]);
        }
      }
      std::vector<float> norms(static_cast<std::size_t>(Nc));
      for (int t = 0; t < Nc; ++t) {
        norms[static_cast<std::size_t>(t)] = token_norm_f16(vr.data() + static_cast<std::size_t>(t) * hd, hd);
        vn[static_cast<std::size_t>(h) * Nc + t] = f32_to_f16(norms[static_cast<std::size_t>(t)]);
      }
      token_normalize(vr.data(), Nc, hd, norms.data(), uvh);
    }
    const std::size_t per = static_cast<std::size_t>(M) * 256 * dsub;
    DeviceBuffer<float> duk(uk.size()), duv(uv.size()), dcbk(cb.k[static_cast<std::size_t>(layer)].size()),
        dcbv(cb.v[static_cast<std::size_t>(layer)].size());
    duk.upload(uk);
    duv.upload(uv);
    dcbk.upload(cb.k[static_cast<std::size_t>(layer)]);
    dcbv.upload(cb.v[static_cast<std::size_t>(layer)]);
    DeviceBuffer<std::uint8_t> ck(static_cast<std::size_t>(Hkv) * Nc * M), cv(ck.size());
    for (bool values : {false, true}) {
      PQEncodeArgs e;
      e.n_seq_heads = e.n_kv_heads = Hkv;
      e.n_tokens = Nc;
      e.head_dim = hd;
      e.M = M;
      e.x = values ? duv.get() : duk.get();
      e.centroids = values ? dcbv.get() : dcbk.get();
      e.cb_head_stride = static_cast<std::int64_t>(per);
      e.codes = values ? cv.get() : ck.get();
      e.capacity = Nc;
      e.order = values ? PQCodeOrder::kMmaValues : PQCodeOrder::kMmaKeys;
      pq_encode(e, nullptr);
    }
    check(cudaDeviceSynchronize(), "sync");
    const auto gk = ck.download(), gv = cv.download();
    for (bool values : {false, true}) {
      const auto& got = values ? gv : gk;
      const auto& u = values ? uv : uk;
      const auto& books = values ? cb.v : cb.k;
      for (int h = 0; h < Hkv; ++h) {
        PQCodebook book;
        book.head_dim = hd;
        book.M = M;
        book.nbits = 8;
        book.centroids.assign(books[static_cast<std::size_t>(layer)].begin() + static_cast<std::ptrdiff_t>(h * per),
                              books[static_cast<std::size_t>(layer)].begin() + static_cast<std::ptrdiff_t>((h + 1) * per));
        std::vector<std::uint8_t> want(static_cast<std::size_t>(Nc) * M), inter(want.size()), got_tm(want.size());
        pq_encode_ref(book, u.data() + static_cast<std::size_t>(h) * Nc * hd, Nc, want.data());
        // The device's codes back in subspace order: interleave is a permutation of each row.
        std::vector<std::uint8_t> idx(static_cast<std::size_t>(M)), pos(idx.size());
        for (int m = 0; m < M; ++m) idx[static_cast<std::size_t>(m)] = static_cast<std::uint8_t>(m);
        interleave_pq_codes(idx.data(), pos.data(), 1, M, values);  // pos[byte] = subspace stored there
        for (int t = 0; t < Nc; ++t) {
          for (int b = 0; b < M; ++b) {
            got_tm[static_cast<std::size_t>(t) * M + pos[static_cast<std::size_t>(b)]] =
                got[(static_cast<std::size_t>(h) * Nc + t) * M + b];
          }
        }
        for (int t = 0; t < Nc; ++t) {
          const float* x = u.data() + (static_cast<std::size_t>(h) * Nc + t) * hd;
          for (int m = 0; m < M; ++m) {
            const std::size_t i = static_cast<std::size_t>(t) * M + m;
            ++codes_total;
            if (got_tm[i] == want[i]) continue;
            auto dist2 = [&](int c) {
              double d = 0;
              for (int j = 0; j < dsub; ++j) {
                const double diff = x[m * dsub + j] - book.centroids[(static_cast<std::size_t>(m) * 256 + c) * dsub + j];
                d += diff * diff;
              }
              return d;
            };
            const double dg = dist2(got_tm[i]), dw = dist2(want[i]);
            if (std::fabs(dg - dw) <= 1e-6 * std::max(dw, 1e-12)) {
              ++ties;
            } else {
              ++mismatches;
            }
          }
        }
        // What the device's codes decode to (fp16 centroids), denormalised with the f16 parameters.
        for (int t = 0; t < Nc; ++t) {
          const std::size_t g = (static_cast<std::size_t>(h) * (Nc / group) + t / group) * 2 * hd;
          for (int m = 0; m < M; ++m) {
            for (int j = 0; j < dsub; ++j) {
              const int d = m * dsub + j;
              const float c = hf(book.centroids[(static_cast<std::size_t>(m) * 256 + got_tm[static_cast<std::size_t>(t) * M + m]) * dsub + j]);
              const std::size_t o2 = (static_cast<std::size_t>(h) * Nc + t) * hd + d;
              if (values) {
                vdec[o2] = f16_to_f32(vn[static_cast<std::size_t>(h) * Nc + t]) * c;
              } else {
                kdec[o2] = f16_to_f32(gp[g + d]) + f16_to_f32(gp[g + hd + d]) * c;
              }
            }
          }
        }
      }
    }
    {  // the mma PQ kernel over the device's codes (queries in the rotated space, as GpuLlama gives them)
      std::vector<std::uint16_t> cbk16(cb.k[static_cast<std::size_t>(layer)].size()), cbv16(cbk16.size());
      for (std::size_t i = 0; i < cbk16.size(); ++i) {
        cbk16[i] = f32_to_f16(cb.k[static_cast<std::size_t>(layer)][i]);
        cbv16[i] = f32_to_f16(cb.v[static_cast<std::size_t>(layer)][i]);
      }
      DeviceBuffer<std::uint16_t> dbk(cbk16.size()), dbv(cbv16.size()), dgp(gp.size()), dvn(vn.size());
      dbk.upload(cbk16);
      dbv.upload(cbv16);
      dgp.upload(gp);
      dvn.upload(vn);
      const auto q = queries(static_cast<std::size_t>(H) * hd);
      const DecodeShape ds{1, H, Hkv, hd, Nc, Nc};
      DeviceBuffer<float> dq(q.size()), dout(q.size()), ws(decode_workspace_floats(ds, 2));
      dq.upload(q);
      PQDecodeArgs a;
      a.shape = ds;
      a.M = M;
      a.codes_k = ck.get();
      a.codes_v = cv.get();
      a.cb_k = dbk.get();
      a.cb_v = dbv.get();
      a.cb_k_head_stride = a.cb_v_head_stride = static_cast<std::int64_t>(per);
      a.q = dq.get();
      a.out = dout.get();
      a.scale = scale;
      a.kernel = PQKernel::kMma;
      a.k_group_params = dgp.get();
      a.v_token_norm = dvn.get();
      a.norm_group = group;
      pq_decode_attention(a, ws.get(), 2, nullptr);
      check(cudaDeviceSynchronize(), "sync");
      const double e = rel_err(dout.download(), reference(kdec.data(), vdec.data(), KVDType::kF32, q, Nc - 1, 1, Nc));
      EXPECT_LE(e, 4e-3) << "pq-norm mma decode attention, layer " << layer;
      worst_pq = std::max(worst_pq, e);
    }
  }
  EXPECT_EQ(mismatches, 0) << "codes that differ from pq_encode_ref by more than a tie";
  std::printf("gutenberg-23m K/V (layers 0 and %d, 1000 tokens): dense decode %.3g, prefill CUDA cores %.3g / mma %.3g, "
              "pq-norm mma decode %.3g (relative errors); device codes equal to pq_encode_ref: %d of %d (%d exact ties)\n",
              sh.n_layers - 1, worst_dense, worst_prefill[0], worst_prefill[1], worst_pq, codes_total - ties - mismatches,
              codes_total, ties);
}

std::string readme_block(const std::string& readme, const std::string& heading, int n) {
  std::ifstream in(readme);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string s = ss.str();
  std::size_t p = s.find(heading);
  if (p == std::string::npos) return "";
  for (int i = 0; i <= n; ++i) {
    p = s.find("```\n", p);
    if (i < n) p = s.find("```", p + 4) + 3;
  }
  const std::size_t begin = p + 4, end = s.find("\n```", begin);
  return s.substr(begin, end - begin);
}

TEST(GpuLlama, Stories260KGreedyTextMatchesGolden) {
  const std::string dir = std::string(MILLION_SOURCE_DIR) + "/models/stories260K/";
  const std::string golden = readme_block(dir + "README.md", "## Golden output", 0);
  ASSERT_GT(golden.size(), 500u);
  // tok512.bin: int32 max_token_length, then per token: f32 score, int32 length, bytes.
  std::vector<std::string> pieces;
  {
    std::ifstream in(dir + "tok512.bin", std::ios::binary);
    std::int32_t max_len = 0;
    in.read(reinterpret_cast<char*>(&max_len), 4);
    while (in) {
      float score;
      std::int32_t len = 0;
      if (!in.read(reinterpret_cast<char*>(&score), 4) || !in.read(reinterpret_cast<char*>(&len), 4)) break;
      ASSERT_TRUE(len >= 0 && len <= max_len);
      std::string piece(static_cast<std::size_t>(len), '\0');
      in.read(piece.data(), len);
      pieces.push_back(piece);
    }
  }
  LlamaShape shape;
  const LlamaHostWeights w = load_llama2c(dir + "stories260K.bin", shape);
  ASSERT_EQ(static_cast<int>(pieces.size()), shape.vocab);
  GpuLlamaOptions o;
  o.capacity = 257;
  o.f32_weights = true;
  GpuLlama gpu(shape, o);
  gpu.upload_weights(w);
  std::vector<float> logits(static_cast<std::size_t>(shape.vocab));
  std::string text;
  int token = 1, prev = 1;  // BOS
  for (int step = 0; step < 256; ++step) {
    const float* d = gpu.step({token});
    check(cudaStreamSynchronize(gpu.stream()), "sync");
    check(cudaMemcpy(logits.data(), d, logits.size() * 4, cudaMemcpyDeviceToHost), "logits");
    token = static_cast<int>(std::max_element(logits.begin(), logits.end()) - logits.begin());
    if (token == 1) break;  // BOS ends the text
    std::string piece = pieces[static_cast<std::size_t>(token)];
    if (prev == 1 && !piece.empty() && piece[0] == ' ') piece.erase(0, 1);
    if (piece.size() == 6 && piece.rfind("<0x", 0) == 0 && piece[5] == '>') {
      piece = std::string(1, static_cast<char>(std::stoi(piece.substr(3, 2), nullptr, 16)));
    }
    text += piece;
    prev = token;
  }
  EXPECT_EQ(text, golden);
}

// The loaders refuse, with the library's error types, what the GPU path cannot run or read:
// Llama 3's RoPE scaling (tests/data/hf-tiny/llama3-rope: a tiny random model, head_dim 32,
// with transformers' float32 logits of a 40-token prompt and its 16-token greedy continuation):
// f32 weights, fp16 cache; the prompt through prefill (chunks of 7) and token by token.
TEST(GpuLlama, Llama3RopeScalingMatchesTransformers) {
  const std::string dir = std::string(MILLION_SOURCE_DIR) + "/tests/data/hf-tiny/llama3-rope";
  nlohmann::json ref;
  std::ifstream(dir + "/reference.json") >> ref;
  const auto ids = ref.at("input_ids").get<std::vector<int>>();
  const auto greedy = ref.at("greedy_ids").get<std::vector<int>>();
  const auto lshape = ref.at("logits_shape").get<std::vector<std::int64_t>>();
  std::vector<float> want(static_cast<std::size_t>(lshape[0] * lshape[1]));
  std::ifstream(dir + "/logits.f32", std::ios::binary).read(reinterpret_cast<char*>(want.data()),
                                                             static_cast<std::streamsize>(want.size() * 4));
  LlamaShape sh;
  const LlamaHostWeights w = load_llama_hf(dir, sh);
  ASSERT_EQ(sh.rope_inv_freq.size(), static_cast<std::size_t>(sh.head_dim / 2));  // scaled, from the config
  const std::size_t V = static_cast<std::size_t>(sh.vocab);
  ASSERT_EQ(static_cast<std::size_t>(lshape[0]), ids.size());
  for (int chunk : {7, 1}) {
    GpuLlamaOptions o;
    o.capacity = static_cast<std::int64_t>(ids.size() + greedy.size());
    o.f32_weights = true;
    o.prefill_chunk = 7;
    o.prefill_all_logits = true;
    GpuLlama gpu(sh, o);
    gpu.upload_weights(w);
    std::vector<float> got;
    for (std::size_t i = 0; i < ids.size(); i += static_cast<std::size_t>(chunk)) {
      const int n = static_cast<int>(std::min<std::size_t>(static_cast<std::size_t>(chunk), ids.size() - i));
      const float* d = gpu.prefill(std::vector<int>(ids.begin() + static_cast<std::ptrdiff_t>(i),
                                                    ids.begin() + static_cast<std::ptrdiff_t>(i) + n), n);
      std::vector<float> part(static_cast<std::size_t>(n) * V);
      check(cudaMemcpy(part.data(), d, part.size() * 4, cudaMemcpyDeviceToHost), "logits");
      got.insert(got.end(), part.begin(), part.end());
    }
    double err = 0, scale = 1e-3;
    for (std::size_t i = 0; i < want.size(); ++i) {
      err = std::max(err, std::fabs(static_cast<double>(got[i]) - want[i]));
      scale = std::max(scale, std::fabs(static_cast<double>(want[i])));
    }
    EXPECT_LE(err, 1e-2 * scale) << "chunk " << chunk;  // K/V in fp16: ~1e-3 of the logit scale
    // Greedy continuation by decode steps; required equal where our top-2 margin is clear.
    std::vector<float> last(got.end() - static_cast<std::ptrdiff_t>(V), got.end());
    int checked = 0;
    for (std::size_t i = 0; i < greedy.size(); ++i) {
      std::vector<float> sorted = last;
      std::partial_sort(sorted.begin(), sorted.begin() + 2, sorted.end(), std::greater<float>());
      const int top = static_cast<int>(std::max_element(last.begin(), last.end()) - last.begin());
      if (sorted[0] - sorted[1] > 20 * err) {
        ++checked;
        EXPECT_EQ(top, greedy[i]) << "greedy step " << i << ", chunk " << chunk;
      }
      const float* d = gpu.step({greedy[i]});  // teacher-forced
      check(cudaStreamSynchronize(gpu.stream()), "sync");
      check(cudaMemcpy(last.data(), d, V * 4, cudaMemcpyDeviceToHost), "logits");
    }
    EXPECT_GE(checked, 8) << "too few clear greedy steps to check";
    std::printf("llama3-rope (Llama 3 RoPE scaling), chunks of %d: max |logit diff| %.3g vs transformers (scale %.3g); "
                "%d of %zu greedy steps checked equal\n", chunk, err, scale, checked, greedy.size());
  }
}

// q/k/v biases (Qwen2), sliding windows (Mistral), a missing
// directory, a truncated llama2.c checkpoint (tiny fixtures of tests/data, stories260K cut short).
TEST(GpuLlama, LoadersRefuseWhatTheyCannotRun) {
  const std::string data = std::string(MILLION_SOURCE_DIR) + "/tests/data/hf-tiny/";
  LlamaShape sh;
  EXPECT_THROW(load_llama_hf(data + "qwen2-bias", sh), UnsupportedError);
  EXPECT_THROW(load_llama_hf(data + "mistral-sw", sh), UnsupportedError);  // sliding window
  EXPECT_THROW(load_llama_hf(data + "no-such-model", sh), Error);
  const std::string full = std::string(MILLION_SOURCE_DIR) + "/models/stories260K/stories260K.bin";
  const std::string cut = (std::filesystem::temp_directory_path() / "million-truncated-stories.bin").string();
  {
    std::ifstream in(full, std::ios::binary);
    std::vector<char> bytes(100000);
    in.read(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    std::ofstream(cut, std::ios::binary).write(bytes.data(), in.gcount());
  }
  try {
    load_llama2c(cut, sh);
    ADD_FAILURE() << "a truncated checkpoint loaded";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("truncated"), std::string::npos) << e.what();
  }
  std::filesystem::remove(cut);
}

TEST(GpuLlama, RefusesWhatDoesNotFit) {
  GpuLlamaOptions o;
  o.capacity = 1 << 20;
  o.cache = GpuCache::kF16;  // Llama-3-8B, fp16 cache of 1M tokens: 128 GiB + 15 GiB of weights
  try {
    GpuLlama g(LlamaShape::llama3_8b(), o);
    FAIL() << "a 1M-token fp16 cache was accepted";
  } catch (const ResourceError& e) {
    const std::string msg = e.what();
    std::printf("refused: %s\n", msg.c_str());
    EXPECT_NE(msg.find("does not fit"), std::string::npos);
    EXPECT_NE(msg.find("GiB"), std::string::npos);
  }
  GpuLlamaOptions bad;
  bad.capacity = 16;
  bad.cache = GpuCache::kPQ;
  bad.pq_M = 48;  // dsub not 2 or 4
  EXPECT_THROW(GpuLlama(tiny(128, 2, 1), bad), InvalidArgumentError);
}

}  // namespace
}  // namespace million::cuda
