// Forward pass (see model.h).
#include "model/model.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "kernels/ops.h"
#include "million/error.h"

namespace million {

namespace {

void add_bias(float* y, const std::vector<float>& b, int n) {
  if (b.empty()) return;
  const int dim = static_cast<int>(b.size());
  for (int i = 0; i < n; ++i) {
    for (int c = 0; c < dim; ++c) y[static_cast<std::int64_t>(i) * dim + c] += b[static_cast<std::size_t>(c)];
  }
}

}  // namespace

Model::Model(ModelWeights weights) : weights_(std::move(weights)) {
  const std::vector<double> f = rope_inv_freq(weights_.config);
  inv_freq_.assign(f.begin(), f.end());
}

KVCacheShape Model::cache_shape(std::int64_t capacity) const {
  const ModelConfig& c = weights_.config;
  KVCacheShape s;
  s.n_layers = c.n_layers;
  s.n_heads = c.n_heads;
  s.n_kv_heads = c.n_kv_heads;
  s.head_dim = c.head_dim;
  s.capacity = capacity;
  s.sliding_window = c.sliding_window;
  return s;
}

void Model::ensure_scratch(int n) {
  if (n <= scratch_tokens_) return;
  const ModelConfig& c = weights_.config;
  const std::size_t N = static_cast<std::size_t>(n);
  x_.resize(N * c.hidden_size);
  xn_.resize(N * c.hidden_size);
  q_.resize(N * c.q_dim());
  k_.resize(N * c.kv_dim());
  v_.resize(N * c.kv_dim());
  att_.resize(N * c.q_dim());
  gate_.resize(N * c.ffn_hidden);
  up_.resize(N * c.ffn_hidden);
  scratch_tokens_ = n;
}

void Model::forward(const int* tokens, int n, std::int64_t pos0, KVCache& cache, float* logits, bool all_logits) {
  const ModelConfig& c = weights_.config;
  if (n <= 0) throw InvalidArgumentError("forward: no tokens");
  for (int i = 0; i < n; ++i) {
    if (tokens[i] < 0 || tokens[i] >= c.vocab_size) {
      throw InvalidArgumentError(fmt::format("token id {} is outside the vocabulary (0..{})", tokens[i], c.vocab_size - 1));
    }
  }
  if (pos0 + n > cache.shape().capacity) {
    throw ContextLimitError(fmt::format("{} tokens would exceed the context of {} tokens", pos0 + n,
                                        cache.shape().capacity));
  }
  ensure_scratch(n);
  simd_ = active_simd_level();  // chosen once per call
  const int H = c.hidden_size, F = c.ffn_hidden;

  for (int i = 0; i < n; ++i) {
    weight_row_f32(weights_.tok_embd, tokens[i], x_.data() + static_cast<std::int64_t>(i) * H, simd_);
  }
  RopeTable rope;
  rope.compute(inv_freq_, pos0, n);

  for (int layer = 0; layer < c.n_layers; ++layer) {
    const LayerWeights& w = weights_.layers[static_cast<std::size_t>(layer)];
    rmsnorm(x_.data(), w.attn_norm.data(), xn_.data(), n, H, c.norm_eps);
    matmul(w.wq, xn_.data(), n, q_.data(), 0.0f, simd_);
    matmul(w.wk, xn_.data(), n, k_.data(), 0.0f, simd_);
    matmul(w.wv, xn_.data(), n, v_.data(), 0.0f, simd_);
    add_bias(q_.data(), w.bq, n);
    add_bias(k_.data(), w.bk, n);
    add_bias(v_.data(), w.bv, n);
    if (key_observer_) key_observer_(layer, pos0, n, k_.data());
    rope_apply(q_.data(), n, c.n_heads, c.head_dim, c.rope_layout, rope);
    rope_apply(k_.data(), n, c.n_kv_heads, c.head_dim, c.rope_layout, rope);
    cache.append(layer, pos0, n, k_.data(), v_.data());
    cache.attend(layer, pos0, n, q_.data(), att_.data());
    matmul(w.wo, att_.data(), n, x_.data(), 1.0f, simd_);  // residual add through beta = 1

    rmsnorm(x_.data(), w.ffn_norm.data(), xn_.data(), n, H, c.norm_eps);
    matmul(w.w_gate, xn_.data(), n, gate_.data(), 0.0f, simd_);
    matmul(w.w_up, xn_.data(), n, up_.data(), 0.0f, simd_);
    swiglu(gate_.data(), up_.data(), static_cast<std::int64_t>(n) * F);
    matmul(w.w_down, gate_.data(), n, x_.data(), 1.0f, simd_);
  }
  cache.commit(pos0 + n);
  if (logits == nullptr) return;

  const int first = all_logits ? 0 : n - 1;
  const int rows = n - first;
  rmsnorm(x_.data() + static_cast<std::int64_t>(first) * H, weights_.final_norm.data(), xn_.data(), rows, H, c.norm_eps);
  matmul(weights_.output_matrix(), xn_.data(), rows, logits, 0.0f, simd_);
}

void Model::prefill(const std::vector<int>& tokens, KVCache& cache, float* last_logits, int chunk) {
  if (tokens.empty()) throw InvalidArgumentError("prefill: no tokens");
  if (chunk <= 0) throw InvalidArgumentError("prefill: chunk must be positive");
  std::int64_t pos = cache.n_tokens();
  if (pos + static_cast<std::int64_t>(tokens.size()) > cache.shape().capacity) {
    throw ContextLimitError(fmt::format("the prompt ({} tokens) does not fit in the context of {} tokens",
                                        pos + static_cast<std::int64_t>(tokens.size()), cache.shape().capacity));
  }
  for (std::size_t i = 0; i < tokens.size(); i += static_cast<std::size_t>(chunk)) {
    const int n = static_cast<int>(std::min<std::size_t>(static_cast<std::size_t>(chunk), tokens.size() - i));
    const bool last_chunk = i + static_cast<std::size_t>(n) == tokens.size();
    forward(tokens.data() + i, n, pos, cache, last_chunk ? last_logits : nullptr, false);
    pos += n;
  }
}

}  // namespace million
