// Dense f32 / f16 KV cache (layout in dense_cache.h).
#include "model/kv/dense_cache.h"

#include <cmath>
#include <cstring>

#include <fmt/format.h>

#include "backends/cpu/cpu_kernels.h"
#include "core/checked.h"
#include "million/error.h"

namespace million {

std::int64_t DenseKVCache::storage_bytes(const KVCacheShape& s, KVDType dtype) {
  const std::int64_t per_layer = checked_mul(checked_mul(s.n_kv_heads, s.capacity, "KV cache"), s.head_dim, "KV cache");
  return checked_mul(checked_mul(per_layer, 2 * s.n_layers, "KV cache"), dtype == KVDType::kF32 ? 4 : 2, "KV cache");
}

DenseKVCache::DenseKVCache(const KVCacheShape& shape, KVDType dtype)
    : KVCache(shape), dtype_(dtype), elem_bytes_(dtype == KVDType::kF32 ? 4 : 2) {
  const std::size_t bytes = static_cast<std::size_t>(storage_bytes(shape, dtype) / (2 * shape.n_layers));
  k_.resize(static_cast<std::size_t>(shape.n_layers));
  v_.resize(static_cast<std::size_t>(shape.n_layers));
  for (int l = 0; l < shape.n_layers; ++l) {
    k_[static_cast<std::size_t>(l)].resize(bytes);
    v_[static_cast<std::size_t>(l)].resize(bytes);
  }
  layer_tokens_.assign(static_cast<std::size_t>(shape.n_layers), 0);
}

void DenseKVCache::append(int layer, std::int64_t pos0, int n, const float* k, const float* v) {
  check_range(layer, pos0, n);
  if (pos0 != layer_tokens_[static_cast<std::size_t>(layer)]) {
    throw InvalidArgumentError(fmt::format("KV cache: layer {} holds {} tokens, cannot append at position {}", layer,
                                           layer_tokens_[static_cast<std::size_t>(layer)], pos0));
  }
  const int d = shape_.head_dim;
  const CpuKernels& kern = cpu_kernels(simd_);
  for (int t = 0; t < n; ++t) {
    for (int h = 0; h < shape_.n_kv_heads; ++h) {
      const std::int64_t src = (static_cast<std::int64_t>(t) * shape_.n_kv_heads + h) * d;
      const std::int64_t dst = (h * shape_.capacity + pos0 + t) * d;
      auto* kd = k_[static_cast<std::size_t>(layer)].data() + dst * elem_bytes_;
      auto* vd = v_[static_cast<std::size_t>(layer)].data() + dst * elem_bytes_;
      if (dtype_ == KVDType::kF32) {
        std::memcpy(kd, k + src, static_cast<std::size_t>(d) * 4);
        std::memcpy(vd, v + src, static_cast<std::size_t>(d) * 4);
      } else {
        kern.f32_to_f16(k + src, reinterpret_cast<std::uint16_t*>(kd), d);
        kern.f32_to_f16(v + src, reinterpret_cast<std::uint16_t*>(vd), d);
      }
    }
  }
  layer_tokens_[static_cast<std::size_t>(layer)] = pos0 + n;
}

DenseAttentionArgs DenseKVCache::args_for(int layer, std::int64_t pos0, int n, const float* q, float* out) const {
  DenseAttentionArgs a;
  a.n_queries = n;
  a.pos0 = pos0;
  a.n_heads = shape_.n_heads;
  a.n_kv_heads = shape_.n_kv_heads;
  a.head_dim = shape_.head_dim;
  a.sliding_window = shape_.sliding_window;
  a.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(shape_.head_dim)));
  a.q = q;
  a.k = k_[static_cast<std::size_t>(layer)].data();
  a.v = v_[static_cast<std::size_t>(layer)].data();
  a.kv_head_stride = shape_.capacity * shape_.head_dim;
  a.kv_dtype = dtype_;
  a.out = out;
  return a;
}

void DenseKVCache::attend(int layer, std::int64_t pos0, int n, const float* q, float* out) {
  check_range(layer, pos0, n);
  if (pos0 + n > layer_tokens_[static_cast<std::size_t>(layer)]) {
    throw InvalidArgumentError(fmt::format("KV cache: attend at {}..{} before those positions were appended",
                                           pos0, pos0 + n - 1));
  }
  dense_attention(args_for(layer, pos0, n, q, out), simd_);
}

void DenseKVCache::commit(std::int64_t n_tokens) { n_tokens_ = n_tokens; }

void DenseKVCache::clear() {
  n_tokens_ = 0;
  std::fill(layer_tokens_.begin(), layer_tokens_.end(), 0);
}

std::int64_t DenseKVCache::bytes_allocated() const { return storage_bytes(shape_, dtype_); }

double DenseKVCache::bytes_per_token() const {
  return 2.0 * shape_.n_layers * shape_.n_kv_heads * shape_.head_dim * elem_bytes_;
}

}  // namespace million
