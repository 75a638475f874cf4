// Reservoir sampling of K/V during calibration forward passes (see capture.h).
#include "pq/capture.h"

#include <fmt/format.h>

#include <algorithm>

#include "million/error.h"

namespace million {

Reservoir::Reservoir(int dim, std::int64_t capacity, std::uint64_t seed) : dim_(dim), capacity_(capacity), rng_(seed) {}

void Reservoir::add(const float* v) {
  ++seen_;
  if (size() < capacity_) {
    data_.insert(data_.end(), v, v + dim_);
    return;
  }
  const auto j = static_cast<std::int64_t>(rng_() % static_cast<std::uint64_t>(seen_));
  if (j < capacity_) std::copy(v, v + dim_, data_.begin() + j * dim_);
}

namespace {
constexpr int kKinds = 3;
}

KVCapture::KVCapture(const KVCacheShape& shape, const CaptureOptions& options)
    : KVCache(shape), opt_(options), inner_(make_kv_cache("f32", shape)) {
  if (opt_.train_samples < 1 || opt_.heldout_samples < 0 || opt_.heldout_one_in < 2) {
    throw InvalidArgumentError("capture: sample sizes must be positive");
  }
  const std::size_t n = static_cast<std::size_t>(shape.n_layers) * shape.n_kv_heads * kKinds;
  train_.reserve(n);
  heldout_.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    train_.emplace_back(shape.head_dim, opt_.train_samples, opt_.seed * 7919 + i);
    heldout_.emplace_back(shape.head_dim, opt_.heldout_samples, opt_.seed * 7919 + i + n);
  }
  if (opt_.moments) {
    moments_.assign(static_cast<std::size_t>(shape.n_layers) * static_cast<std::size_t>(shape.n_kv_heads),
                    KeyQueryMoments(shape.head_dim));
  }
}

const KeyQueryMoments& KVCapture::moments(int layer, int kv_head) const {
  if (!opt_.moments) throw InvalidArgumentError("capture: moments were not requested");
  return moments_.at(static_cast<std::size_t>(layer) * static_cast<std::size_t>(shape_.n_kv_heads) +
                     static_cast<std::size_t>(kv_head));
}

void KVCapture::attach(Model& model) {
  if (!opt_.pre_rope_keys) return;
  model.set_pre_rope_key_observer([this](int layer, std::int64_t pos0, int n, const float* k) {
    sample(layer, pos0, n, k, CaptureKind::kKeyPreRope);
  });
}

std::size_t KVCapture::slot(int layer, int kv_head, CaptureKind kind) const {
  return (static_cast<std::size_t>(layer) * shape_.n_kv_heads + static_cast<std::size_t>(kv_head)) * kKinds +
         static_cast<std::size_t>(kind);
}

const Reservoir& KVCapture::train(int layer, int kv_head, CaptureKind kind) const { return train_.at(slot(layer, kv_head, kind)); }
const Reservoir& KVCapture::heldout(int layer, int kv_head, CaptureKind kind) const {
  return heldout_.at(slot(layer, kv_head, kind));
}

bool KVCapture::is_heldout(std::int64_t global_token) const {
  // splitmix64 of the token index: the same token is held out in every layer and head.
  std::uint64_t z = static_cast<std::uint64_t>(global_token) + opt_.seed * 0x9e3779b97f4a7c15ULL + 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  z ^= z >> 31;
  return z % static_cast<std::uint64_t>(opt_.heldout_one_in) == 0;
}

void KVCapture::sample(int layer, std::int64_t pos0, int n, const float* x, CaptureKind kind) {
  const int d = shape_.head_dim;
  for (int t = 0; t < n; ++t) {
    const bool held = is_heldout(token_base_ + pos0 + t);
    for (int h = 0; h < shape_.n_kv_heads; ++h) {
      const float* v = x + (static_cast<std::int64_t>(t) * shape_.n_kv_heads + h) * d;
      (held ? heldout_ : train_)[slot(layer, h, kind)].add(v);
    }
  }
}

void KVCapture::sample_transformed(int layer, std::int64_t pos0, int n, const float* x, CaptureKind kind) {
  const int d = shape_.head_dim, H = shape_.n_kv_heads, k = static_cast<int>(kind);
  const int block = std::max(1, opt_.transform_block[k]);
  if (pending_.empty()) pending_.resize(static_cast<std::size_t>(shape_.n_layers) * H * 2);
  for (int h = 0; h < H; ++h) {
    Pending& p = pending_[(static_cast<std::size_t>(layer) * H + static_cast<std::size_t>(h)) * 2 + static_cast<std::size_t>(k)];
    for (int t = 0; t < n; ++t) {
      const float* row = x + (static_cast<std::int64_t>(t) * H + h) * d;
      p.rows.insert(p.rows.end(), row, row + d);
      p.globals.push_back(token_base_ + pos0 + t);
      if (static_cast<int>(p.globals.size()) < block) continue;
      opt_.transform(layer, h, kind, p.rows.data(), block);
      for (int i = 0; i < block; ++i) {
        (is_heldout(p.globals[static_cast<std::size_t>(i)]) ? heldout_ : train_)[slot(layer, h, kind)].add(
            p.rows.data() + static_cast<std::ptrdiff_t>(i) * d);
      }
      p.rows.clear();
      p.globals.clear();
    }
  }
}

void KVCapture::append(int layer, std::int64_t pos0, int n, const float* k, const float* v) {
  inner_->append(layer, pos0, n, k, v);
  if (opt_.moments) {
    const int H = shape_.n_kv_heads, d = shape_.head_dim;
    for (int t = 0; t < n; ++t) {
      for (int h = 0; h < H; ++h) {
        moments_[static_cast<std::size_t>(layer * H + h)].add_key(k + (static_cast<std::int64_t>(t) * H + h) * d);
      }
    }
  }
  if (opt_.transform) {
    sample_transformed(layer, pos0, n, k, CaptureKind::kKey);
    sample_transformed(layer, pos0, n, v, CaptureKind::kValue);
    return;
  }
  sample(layer, pos0, n, k, CaptureKind::kKey);
  sample(layer, pos0, n, v, CaptureKind::kValue);
}

void KVCapture::clear() {
  inner_->clear();
  for (Pending& p : pending_) {  // a window's partial block is dropped (see CaptureOptions)
    p.rows.clear();
    p.globals.clear();
  }
}

void KVCapture::attend(int layer, std::int64_t pos0, int n, const float* q, float* out) {
  inner_->set_simd_level(simd_level());
  inner_->attend(layer, pos0, n, q, out);
  if (opt_.moments) {
    const int Hq = shape_.n_heads, H = shape_.n_kv_heads, d = shape_.head_dim, G = Hq / H;
    for (int t = 0; t < n; ++t) {
      for (int j = 0; j < Hq; ++j) {  // query head j reads kv head j / G
        moments_[static_cast<std::size_t>(layer * H + j / G)].add_query(q + (static_cast<std::int64_t>(t) * Hq + j) * d);
      }
    }
  }
}

}  // namespace million
