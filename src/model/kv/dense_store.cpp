// Exact f32 / f16 stores (see dense_store.h): rows converted to f32 on the way in and out through
// the CPU primitive table of the requested SIMD level.
#include "model/kv/dense_store.h"

#include <vector>

#include "backends/cpu/cpu_kernels.h"
#include "core/half.h"
#include "million/error.h"

namespace million {

namespace {

class DenseRows {
 public:
  DenseRows(bool f16, int n_kv_heads, int head_dim, std::int64_t capacity)
      : f16_(f16), heads_(n_kv_heads), d_(head_dim), capacity_(capacity) {
    const std::size_t n = static_cast<std::size_t>(capacity * head_dim);
    for (int h = 0; h < n_kv_heads; ++h) {
      if (f16) {
        half_.emplace_back(n);
      } else {
        full_.emplace_back(n);
      }
    }
  }
  void append(const float* x, int n) {
    MILLION_ASSERT(size_ + n <= capacity_);
    for (int t = 0; t < n; ++t) {
      for (int h = 0; h < heads_; ++h) {
        const float* src = x + (static_cast<std::int64_t>(t) * heads_ + h) * d_;
        const std::int64_t dst = (size_ + t) * d_;
        for (int c = 0; c < d_; ++c) {
          if (f16_) {
            half_[static_cast<std::size_t>(h)][static_cast<std::size_t>(dst + c)] = f32_to_f16(src[c]);
          } else {
            full_[static_cast<std::size_t>(h)][static_cast<std::size_t>(dst + c)] = src[c];
          }
        }
      }
    }
    size_ += n;
  }
  // Row t of head h as f32 (into buf for f16).
  const float* row(int h, std::int64_t t, float* buf, const CpuKernels& k) const {
    if (!f16_) return full_[static_cast<std::size_t>(h)].data() + t * d_;
    k.f16_to_f32(half_[static_cast<std::size_t>(h)].data() + t * d_, buf, d_);
    return buf;
  }
  std::int64_t size() const { return size_; }
  void clear() { size_ = 0; }
  void roundtrip(const float* x, int n, float* out) const {
    const std::int64_t count = static_cast<std::int64_t>(n) * heads_ * d_;
    for (std::int64_t i = 0; i < count; ++i) out[i] = f16_ ? f16_to_f32(f32_to_f16(x[i])) : x[i];
  }
  void decode(int h, std::int64_t t0, std::int64_t t1, float* out) const {
    const CpuKernels& k = cpu_kernels(SimdLevel::kScalar);
    for (std::int64_t t = t0; t < t1; ++t) {
      float* o = out + (t - t0) * d_;
      const float* r = row(h, t, o, k);
      if (r != o) std::copy(r, r + d_, o);
    }
  }
  int d() const { return d_; }
  double bits() const { return f16_ ? 16.0 : 32.0; }

 private:
  bool f16_;
  int heads_, d_;
  std::int64_t capacity_, size_ = 0;
  std::vector<std::vector<float>> full_;
  std::vector<std::vector<std::uint16_t>> half_;
};

struct DenseQueries final : PreparedQueries {
  const float* q;
  int G;
};

class DenseKeyStore final : public KeyStore {
 public:
  DenseKeyStore(bool f16, int h, int d, std::int64_t cap) : rows_(f16, h, d, cap) {}
  void append(const float* x, int n) override { rows_.append(x, n); }
  void roundtrip(const float* x, int n, float* out) const override { rows_.roundtrip(x, n, out); }
  std::int64_t size() const override { return rows_.size(); }
  void clear() override { rows_.clear(); }
  std::unique_ptr<PreparedQueries> prepare(int, const float* q, int G, SimdLevel) const override {
    auto p = std::make_unique<DenseQueries>();
    p->q = q;
    p->G = G;
    return p;
  }
  void scores(int h, const PreparedQueries& prep, std::int64_t t0, std::int64_t t1, float* s, std::int64_t ld,
              SimdLevel level) const override {
    const auto& p = static_cast<const DenseQueries&>(prep);
    const CpuKernels& k = cpu_kernels(level);
    std::vector<float> buf(static_cast<std::size_t>(rows_.d()));
    for (std::int64_t t = t0; t < t1; ++t) {
      const float* kt = rows_.row(h, t, buf.data(), k);
      for (int j = 0; j < p.G; ++j) s[j * ld + (t - t0)] = k.dot_f32(p.q + static_cast<std::int64_t>(j) * rows_.d(), kt, rows_.d());
    }
  }
  void decode(int h, std::int64_t t0, std::int64_t t1, float* out) const override { rows_.decode(h, t0, t1, out); }
  double bits_per_element() const override { return rows_.bits(); }

 private:
  DenseRows rows_;
};

class DenseValueStore final : public ValueStore {
 public:
  DenseValueStore(bool f16, int h, int d, std::int64_t cap) : rows_(f16, h, d, cap) {}
  void append(const float* x, int n) override { rows_.append(x, n); }
  void roundtrip(const float* x, int n, float* out) const override { rows_.roundtrip(x, n, out); }
  std::int64_t size() const override { return rows_.size(); }
  void clear() override { rows_.clear(); }
  std::int64_t accumulator_floats(int G) const override { return static_cast<std::int64_t>(G) * rows_.d(); }
  void accumulate(int h, const float* p, std::int64_t ldp, int G, std::int64_t t0, std::int64_t t1, float* acc,
                  SimdLevel level) const override {
    const CpuKernels& k = cpu_kernels(level);
    std::vector<float> buf(static_cast<std::size_t>(rows_.d()));
    for (std::int64_t t = t0; t < t1; ++t) {
      const float* vt = rows_.row(h, t, buf.data(), k);
      for (int j = 0; j < G; ++j) k.axpy_f32(p[j * ldp + (t - t0)], vt, acc + static_cast<std::int64_t>(j) * rows_.d(), rows_.d());
    }
  }
  void finish(int, const float* acc, int G, float* out, SimdLevel) const override {
    for (std::int64_t i = 0; i < static_cast<std::int64_t>(G) * rows_.d(); ++i) out[i] += acc[i];
  }
  void decode(int h, std::int64_t t0, std::int64_t t1, float* out) const override { rows_.decode(h, t0, t1, out); }
  double bits_per_element() const override { return rows_.bits(); }

 private:
  DenseRows rows_;
};

}  // namespace

std::unique_ptr<KeyStore> make_dense_key_store(bool f16, int n_kv_heads, int head_dim, std::int64_t capacity) {
  return std::make_unique<DenseKeyStore>(f16, n_kv_heads, head_dim, capacity);
}
std::unique_ptr<ValueStore> make_dense_value_store(bool f16, int n_kv_heads, int head_dim, std::int64_t capacity) {
  return std::make_unique<DenseValueStore>(f16, n_kv_heads, head_dim, capacity);
}

}  // namespace million
