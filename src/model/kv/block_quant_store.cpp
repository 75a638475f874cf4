// q8_0 / q4_0 / q4_0-hadamard key and value stores: llama.cpp's reference row quantizers, the
// scalar kernel table (the specification the AVX2 / AVX-512 tables in backends/cpu are tested
// against), the level dispatch, and the stores themselves. Quantization runs once per appended
// token and stays scalar; scores / accumulate go through the table picked once per call.
#include "model/kv/block_quant_store.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "backends/cpu/cpu_kernels.h"
#include "core/half.h"
#include "million/error.h"
#include "pq/rotation.h"

namespace million {

// --- llama.cpp reference quantizers ------------------------------------------------------------

void quantize_row_q8_0(const float* x, BlockQ8_0* y, std::int64_t k) {
  MILLION_ASSERT(k % kQuantBlock == 0);
  for (std::int64_t i = 0; i < k / kQuantBlock; ++i) {
    const float* xb = x + i * kQuantBlock;
    float amax = 0.0f;
    for (int j = 0; j < kQuantBlock; ++j) amax = std::max(amax, std::fabs(xb[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[i].d = f32_to_f16(d);
    for (int j = 0; j < kQuantBlock; ++j) y[i].qs[j] = static_cast<std::int8_t>(std::round(xb[j] * id));
  }
}

void quantize_row_q4_0(const float* x, BlockQ4_0* y, std::int64_t k) {
  MILLION_ASSERT(k % kQuantBlock == 0);
  constexpr int kHalf = kQuantBlock / 2;
  for (std::int64_t i = 0; i < k / kQuantBlock; ++i) {
    const float* xb = x + i * kQuantBlock;
    float amax = 0.0f, max = 0.0f;  // largest magnitude, and that value with its sign
    for (int j = 0; j < kQuantBlock; ++j) {
      if (amax < std::fabs(xb[j])) {
        amax = std::fabs(xb[j]);
        max = xb[j];
      }
    }
    const float d = max / -8.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[i].d = f32_to_f16(d);
    for (int j = 0; j < kHalf; ++j) {
      // x * id lies in [-8, 8]: + 8.5 and truncation round to nearest, 16 clamps to 15.
      const int q0 = std::min(15, static_cast<int>(static_cast<std::int8_t>(xb[j] * id + 8.5f)));
      const int q1 = std::min(15, static_cast<int>(static_cast<std::int8_t>(xb[j + kHalf] * id + 8.5f)));
      y[i].qs[j] = static_cast<std::uint8_t>(q0 | (q1 << 4));
    }
  }
}

void dequantize_row_q8_0(const BlockQ8_0* x, float* y, std::int64_t k) {
  for (std::int64_t i = 0; i < k / kQuantBlock; ++i) {
    const float d = f16_to_f32(x[i].d);
    for (int j = 0; j < kQuantBlock; ++j) y[i * kQuantBlock + j] = d * static_cast<float>(x[i].qs[j]);
  }
}

void dequantize_row_q4_0(const BlockQ4_0* x, float* y, std::int64_t k) {
  constexpr int kHalf = kQuantBlock / 2;
  for (std::int64_t i = 0; i < k / kQuantBlock; ++i) {
    const float d = f16_to_f32(x[i].d);
    for (int j = 0; j < kHalf; ++j) {
      y[i * kQuantBlock + j] = d * static_cast<float>((x[i].qs[j] & 0x0F) - 8);
      y[i * kQuantBlock + j + kHalf] = d * static_cast<float>((x[i].qs[j] >> 4) - 8);
    }
  }
}

// --- scalar kernels: plain loops, the specification of the SIMD tables ---------------------------

namespace {

void q8_0_scores_scalar(const BlockScoresArgs& a) {
  const auto* k = static_cast<const BlockQ8_0*>(a.k);
  const int nb = a.head_dim / kQuantBlock;
  for (std::int64_t i = 0; i < a.n; ++i) {
    const BlockQ8_0* row = k + i * nb;
    for (int j = 0; j < a.G; ++j) {
      const float* q = a.q + static_cast<std::int64_t>(j) * a.head_dim;
      float acc = 0.0f;
      for (int b = 0; b < nb; ++b) {
        float sb = 0.0f;
        for (int e = 0; e < kQuantBlock; ++e) sb += q[b * kQuantBlock + e] * static_cast<float>(row[b].qs[e]);
        acc += f16_to_f32(row[b].d) * sb;
      }
      a.s[j * a.ld + i] = acc;
    }
  }
}

void q4_0_scores_scalar(const BlockScoresArgs& a) {
  constexpr int kHalf = kQuantBlock / 2;
  const auto* k = static_cast<const BlockQ4_0*>(a.k);
  const int nb = a.head_dim / kQuantBlock;
  for (std::int64_t i = 0; i < a.n; ++i) {
    const BlockQ4_0* row = k + i * nb;
    for (int j = 0; j < a.G; ++j) {
      const float* q = a.q + static_cast<std::int64_t>(j) * a.head_dim;
      float acc = 0.0f;
      for (int b = 0; b < nb; ++b) {
        const float* qb = q + b * kQuantBlock;
        float sb = 0.0f;
        for (int e = 0; e < kHalf; ++e) {
          sb += qb[e] * static_cast<float>((row[b].qs[e] & 0x0F) - 8);
          sb += qb[e + kHalf] * static_cast<float>((row[b].qs[e] >> 4) - 8);
        }
        acc += f16_to_f32(row[b].d) * sb;
      }
      a.s[j * a.ld + i] = acc;
    }
  }
}

void q8_0_accumulate_scalar(const BlockAccumulateArgs& a) {
  const auto* v = static_cast<const BlockQ8_0*>(a.v);
  const int nb = a.head_dim / kQuantBlock;
  for (std::int64_t i = 0; i < a.n; ++i) {
    const BlockQ8_0* row = v + i * nb;
    for (int j = 0; j < a.G; ++j) {
      const float pj = a.p[j * a.ldp + i];
      float* acc = a.acc + static_cast<std::int64_t>(j) * a.head_dim;
      for (int b = 0; b < nb; ++b) {
        const float pd = pj * f16_to_f32(row[b].d);
        for (int e = 0; e < kQuantBlock; ++e) acc[b * kQuantBlock + e] += pd * static_cast<float>(row[b].qs[e]);
      }
    }
  }
}

void q4_0_accumulate_scalar(const BlockAccumulateArgs& a) {
  constexpr int kHalf = kQuantBlock / 2;
  const auto* v = static_cast<const BlockQ4_0*>(a.v);
  const int nb = a.head_dim / kQuantBlock;
  for (std::int64_t i = 0; i < a.n; ++i) {
    const BlockQ4_0* row = v + i * nb;
    for (int j = 0; j < a.G; ++j) {
      const float pj = a.p[j * a.ldp + i];
      float* acc = a.acc + static_cast<std::int64_t>(j) * a.head_dim;
      for (int b = 0; b < nb; ++b) {
        const float pd = pj * f16_to_f32(row[b].d);
        float* ab = acc + b * kQuantBlock;
        for (int e = 0; e < kHalf; ++e) {
          ab[e] += pd * static_cast<float>((row[b].qs[e] & 0x0F) - 8);
          ab[e + kHalf] += pd * static_cast<float>((row[b].qs[e] >> 4) - 8);
        }
      }
    }
  }
}

}  // namespace

namespace detail {
const KvQuantKernels kKvQuantScalar = {SimdLevel::kScalar, q8_0_scores_scalar, q4_0_scores_scalar,
                                       q8_0_accumulate_scalar, q4_0_accumulate_scalar};
}  // namespace detail

const KvQuantKernels& kv_quant_kernels(SimdLevel level) {
  if (!simd_level_supported(level)) {
    throw InvalidArgumentError(fmt::format("SIMD level '{}' is not supported by this CPU", simd_level_name(level)));
  }
  switch (level) {
    case SimdLevel::kScalar: return detail::kKvQuantScalar;
    case SimdLevel::kAvx2: return detail::kKvQuantAvx2;
    case SimdLevel::kAvx512: return detail::kKvQuantAvx512;
  }
  return detail::kKvQuantScalar;
}

// --- the stores --------------------------------------------------------------------------------

namespace {

// R = H diag(s) / sqrt(d) = hadamard_rotation(d, seed) (pq/rotation.h), applied as a fast
// Walsh-Hadamard transform (d log d adds: 896 at d = 128, against 16K multiply-adds for the dense
// matrix). The signs are read off R's first row (H's first row is all ones), so the rotation is
// hadamard_rotation's by construction.
class HadamardTransform {
 public:
  HadamardTransform(int d, std::uint64_t seed)
      : d_(d),
        scale_(static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)))),
        signs_(static_cast<std::size_t>(d)) {
    const std::vector<float> r = hadamard_rotation(d, seed);  // [d, d] row-major
    for (int j = 0; j < d; ++j)
      signs_[static_cast<std::size_t>(j)] = r[static_cast<std::size_t>(j)] > 0.0f ? 1.0f : -1.0f;
  }
  /// y = R x (x, y: [d] f32; may alias).
  void rotate(const float* x, float* y) const {
    for (int i = 0; i < d_; ++i) y[i] = x[i] * signs_[static_cast<std::size_t>(i)];
    fwht(y);
    for (int i = 0; i < d_; ++i) y[i] *= scale_;
  }
  /// y = R^T x (x, y: [d] f32; may alias). H is symmetric, so R^T = diag(s) H / sqrt(d).
  void unrotate(const float* x, float* y) const {
    if (y != x) std::copy(x, x + d_, y);
    fwht(y);
    for (int i = 0; i < d_; ++i) y[i] *= signs_[static_cast<std::size_t>(i)] * scale_;
  }

 private:
  // In-place Sylvester Hadamard transform: y_i = sum_j (-1)^popcount(i & j) x_j.
  void fwht(float* x) const {
    for (int len = 1; len < d_; len *= 2) {
      for (int i = 0; i < d_; i += 2 * len) {
        for (int j = i; j < i + len; ++j) {
          const float a = x[j], b = x[j + len];
          x[j] = a + b;
          x[j + len] = a - b;
        }
      }
    }
  }
  int d_;
  float scale_;
  std::vector<float> signs_;  // [d] +-1
};

template <class Block>
struct BlockFormat;

template <>
struct BlockFormat<BlockQ8_0> {
  static constexpr double kBits = (kQuantBlock * 8.0 + 16.0) / kQuantBlock;  // 8.5
  static void quantize(const float* x, BlockQ8_0* y, std::int64_t k) { quantize_row_q8_0(x, y, k); }
  static void dequantize(const BlockQ8_0* x, float* y, std::int64_t k) { dequantize_row_q8_0(x, y, k); }
  static auto scores(const KvQuantKernels& t) { return t.q8_0_scores; }
  static auto accumulate(const KvQuantKernels& t) { return t.q8_0_accumulate; }
};

template <>
struct BlockFormat<BlockQ4_0> {
  static constexpr double kBits = (kQuantBlock * 4.0 + 16.0) / kQuantBlock;  // 4.5
  static void quantize(const float* x, BlockQ4_0* y, std::int64_t k) { quantize_row_q4_0(x, y, k); }
  static void dequantize(const BlockQ4_0* x, float* y, std::int64_t k) { dequantize_row_q4_0(x, y, k); }
  static auto scores(const KvQuantKernels& t) { return t.q4_0_scores; }
  static auto accumulate(const KvQuantKernels& t) { return t.q4_0_accumulate; }
};

// The storage both stores share: quantized rows per kv head, optionally of rotated vectors.
template <class Block>
class BlockRows {
 public:
  BlockRows(int n_kv_heads, int head_dim, std::int64_t capacity, const HadamardTransform* rotation)
      : n_kv_heads_(n_kv_heads),
        head_dim_(head_dim),
        nb_(head_dim / kQuantBlock),
        capacity_(capacity),
        rotation_(rotation),
        blocks_(static_cast<std::size_t>(n_kv_heads * capacity * nb_)),
        scratch_(static_cast<std::size_t>(head_dim)) {}

  int head_dim() const { return head_dim_; }
  std::int64_t size() const { return size_; }
  void clear() { size_ = 0; }

  void append(const float* x, int n) {
    MILLION_ASSERT(n >= 0 && size_ + n <= capacity_);
    for (int t = 0; t < n; ++t) {
      for (int h = 0; h < n_kv_heads_; ++h) {
        const float* src = x + (static_cast<std::int64_t>(t) * n_kv_heads_ + h) * head_dim_;
        if (rotation_ != nullptr) {
          rotation_->rotate(src, scratch_.data());
          src = scratch_.data();
        }
        BlockFormat<Block>::quantize(src, row(h, size_ + t), head_dim_);
      }
    }
    size_ += n;
  }

  void check(int kv_head, std::int64_t t0, std::int64_t t1) const {
    MILLION_ASSERT(kv_head >= 0 && kv_head < n_kv_heads_);
    MILLION_ASSERT(t0 >= 0 && t0 <= t1 && t1 <= size_);
  }

  /// Quantize-dequantize of n tokens x [n, n_kv_heads, head_dim] (every token on its own).
  void roundtrip(const float* x, int n, float* out) const {
    std::vector<Block> blocks(static_cast<std::size_t>(nb_));
    std::vector<float> tmp(static_cast<std::size_t>(head_dim_));
    for (std::int64_t i = 0; i < static_cast<std::int64_t>(n) * n_kv_heads_; ++i) {
      const float* src = x + i * head_dim_;
      float* o = out + i * head_dim_;
      if (rotation_ != nullptr) {
        rotation_->rotate(src, tmp.data());
        src = tmp.data();
      }
      BlockFormat<Block>::quantize(src, blocks.data(), head_dim_);
      BlockFormat<Block>::dequantize(blocks.data(), o, head_dim_);
      if (rotation_ != nullptr) rotation_->unrotate(o, o);
    }
  }

  const Block* row(int kv_head, std::int64_t t) const {
    return blocks_.data() + (static_cast<std::int64_t>(kv_head) * capacity_ + t) * nb_;
  }

  /// out [t1 - t0, head_dim]: dequantized, rotated back to the original space.
  void decode(int kv_head, std::int64_t t0, std::int64_t t1, float* out) const {
    check(kv_head, t0, t1);
    for (std::int64_t t = t0; t < t1; ++t) {
      float* o = out + (t - t0) * head_dim_;
      BlockFormat<Block>::dequantize(row(kv_head, t), o, head_dim_);
      if (rotation_ != nullptr) rotation_->unrotate(o, o);
    }
  }

 private:
  Block* row(int kv_head, std::int64_t t) {
    return blocks_.data() + (static_cast<std::int64_t>(kv_head) * capacity_ + t) * nb_;
  }

  int n_kv_heads_, head_dim_, nb_;
  std::int64_t capacity_;
  std::int64_t size_ = 0;
  const HadamardTransform* rotation_;  // null: no rotation; else owned by the store
  std::vector<Block> blocks_;          // [n_kv_heads, capacity, head_dim / 32] Block, token-major per head
  std::vector<float> scratch_;         // [head_dim] f32: one rotated token during append
};

struct BlockPreparedQueries : PreparedQueries {
  std::vector<float> q;  // [G, head_dim] f32, R q for the Hadamard variant
  int G = 0;
};

template <class Block>
class BlockQuantKeyStore final : public KeyStore {
 public:
  BlockQuantKeyStore(int n_kv_heads, int head_dim, std::int64_t capacity, std::unique_ptr<HadamardTransform> rotation)
      : rotation_(std::move(rotation)), rows_(n_kv_heads, head_dim, capacity, rotation_.get()) {}

  void append(const float* x, int n) override { rows_.append(x, n); }
  void roundtrip(const float* x, int n, float* out) const override { rows_.roundtrip(x, n, out); }
  std::int64_t size() const override { return rows_.size(); }
  void clear() override { rows_.clear(); }

  std::unique_ptr<PreparedQueries> prepare(int kv_head, const float* q, int G, SimdLevel level) const override {
    (void)kv_head;
    (void)level;
    const int d = rows_.head_dim();
    auto prep = std::make_unique<BlockPreparedQueries>();
    prep->G = G;
    prep->q.assign(q, q + static_cast<std::int64_t>(G) * d);
    if (rotation_ != nullptr) {
      for (int j = 0; j < G; ++j)
        rotation_->rotate(prep->q.data() + static_cast<std::int64_t>(j) * d,
                          prep->q.data() + static_cast<std::int64_t>(j) * d);
    }
    return prep;
  }

  void scores(int kv_head, const PreparedQueries& prep, std::int64_t t0, std::int64_t t1, float* s, std::int64_t ld,
              SimdLevel level) const override {
    rows_.check(kv_head, t0, t1);
    const auto* p = dynamic_cast<const BlockPreparedQueries*>(&prep);
    MILLION_ASSERT(p != nullptr);
    MILLION_ASSERT(ld >= t1 - t0 || p->G <= 1);
    if (t1 == t0) return;
    BlockScoresArgs a;
    a.k = rows_.row(kv_head, t0);
    a.n = t1 - t0;
    a.head_dim = rows_.head_dim();
    a.q = p->q.data();
    a.G = p->G;
    a.s = s;
    a.ld = ld;
    BlockFormat<Block>::scores(kv_quant_kernels(level))(a);
  }

  void decode(int kv_head, std::int64_t t0, std::int64_t t1, float* out) const override {
    rows_.decode(kv_head, t0, t1, out);
  }
  double bits_per_element() const override { return BlockFormat<Block>::kBits; }

 private:
  std::unique_ptr<HadamardTransform> rotation_;  // null for q8_0 / q4_0
  BlockRows<Block> rows_;
};

template <class Block>
class BlockQuantValueStore final : public ValueStore {
 public:
  BlockQuantValueStore(int n_kv_heads, int head_dim, std::int64_t capacity, std::unique_ptr<HadamardTransform> rotation)
      : rotation_(std::move(rotation)), rows_(n_kv_heads, head_dim, capacity, rotation_.get()) {}

  void append(const float* x, int n) override { rows_.append(x, n); }
  void roundtrip(const float* x, int n, float* out) const override { rows_.roundtrip(x, n, out); }
  std::int64_t size() const override { return rows_.size(); }
  void clear() override { rows_.clear(); }

  std::int64_t accumulator_floats(int G) const override { return static_cast<std::int64_t>(G) * rows_.head_dim(); }

  void accumulate(int kv_head, const float* p, std::int64_t ldp, int G, std::int64_t t0, std::int64_t t1, float* acc,
                  SimdLevel level) const override {
    rows_.check(kv_head, t0, t1);
    if (t1 == t0) return;
    BlockAccumulateArgs a;
    a.v = rows_.row(kv_head, t0);
    a.n = t1 - t0;
    a.head_dim = rows_.head_dim();
    a.p = p;
    a.ldp = ldp;
    a.G = G;
    a.acc = acc;
    BlockFormat<Block>::accumulate(kv_quant_kernels(level))(a);
  }

  // acc is in the rotated space for the Hadamard variant: out += R^T acc.
  void finish(int kv_head, const float* acc, int G, float* out, SimdLevel level) const override {
    (void)kv_head;
    const int d = rows_.head_dim();
    const CpuKernels& k = cpu_kernels(level);
    std::vector<float> tmp(rotation_ != nullptr ? static_cast<std::size_t>(d) : 0);  // [head_dim] f32
    for (int j = 0; j < G; ++j) {
      const float* a = acc + static_cast<std::int64_t>(j) * d;
      if (rotation_ != nullptr) {
        rotation_->unrotate(a, tmp.data());
        a = tmp.data();
      }
      k.axpy_f32(1.0f, a, out + static_cast<std::int64_t>(j) * d, d);
    }
  }

  void decode(int kv_head, std::int64_t t0, std::int64_t t1, float* out) const override {
    rows_.decode(kv_head, t0, t1, out);
  }
  double bits_per_element() const override { return BlockFormat<Block>::kBits; }

 private:
  std::unique_ptr<HadamardTransform> rotation_;
  BlockRows<Block> rows_;
};

enum class BlockFormatKind { kQ8_0, kQ4_0, kQ4_0Hadamard };

BlockFormatKind check_block_format(const std::string& format, int n_kv_heads, int head_dim, std::int64_t capacity) {
  BlockFormatKind kind;
  if (format == "q8_0") {
    kind = BlockFormatKind::kQ8_0;
  } else if (format == "q4_0") {
    kind = BlockFormatKind::kQ4_0;
  } else if (format == "q4_0-hadamard") {
    kind = BlockFormatKind::kQ4_0Hadamard;
  } else {
    throw InvalidArgumentError(
        fmt::format("unknown block-quantized KV format '{}'; known: {}", format, block_quant_format_names()));
  }
  if (n_kv_heads <= 0 || head_dim <= 0 || capacity < 0) {
    throw InvalidArgumentError(
        fmt::format("{} KV store: n_kv_heads ({}) and head_dim ({}) must be positive and capacity ({}) non-negative",
                    format, n_kv_heads, head_dim, capacity));
  }
  if (head_dim % kQuantBlock != 0) {
    throw UnsupportedError(
        fmt::format("the {} KV format quantizes blocks of {} values and needs head_dim to be a multiple of {}, "
                    "not {}; use another --kv-k/--kv-v format for this model",
                    format, kQuantBlock, kQuantBlock, head_dim));
  }
  if (kind == BlockFormatKind::kQ4_0Hadamard && (head_dim & (head_dim - 1)) != 0) {
    throw UnsupportedError(
        fmt::format("the q4_0-hadamard KV format needs a power-of-two head_dim for its Walsh-Hadamard "
                    "rotation, not {}; use q4_0 instead",
                    head_dim));
  }
  return kind;
}

}  // namespace

std::string block_quant_format_names() { return "q8_0, q4_0, q4_0-hadamard"; }

std::unique_ptr<KeyStore> make_block_quant_key_store(const std::string& format, int n_kv_heads, int head_dim,
                                                     std::int64_t capacity, std::uint64_t seed) {
  switch (check_block_format(format, n_kv_heads, head_dim, capacity)) {
    case BlockFormatKind::kQ8_0:
      return std::make_unique<BlockQuantKeyStore<BlockQ8_0>>(n_kv_heads, head_dim, capacity, nullptr);
    case BlockFormatKind::kQ4_0:
      return std::make_unique<BlockQuantKeyStore<BlockQ4_0>>(n_kv_heads, head_dim, capacity, nullptr);
    case BlockFormatKind::kQ4_0Hadamard:
      return std::make_unique<BlockQuantKeyStore<BlockQ4_0>>(n_kv_heads, head_dim, capacity,
                                                             std::make_unique<HadamardTransform>(head_dim, seed));
  }
  return nullptr;
}

std::unique_ptr<ValueStore> make_block_quant_value_store(const std::string& format, int n_kv_heads, int head_dim,
                                                         std::int64_t capacity, std::uint64_t seed) {
  switch (check_block_format(format, n_kv_heads, head_dim, capacity)) {
    case BlockFormatKind::kQ8_0:
      return std::make_unique<BlockQuantValueStore<BlockQ8_0>>(n_kv_heads, head_dim, capacity, nullptr);
    case BlockFormatKind::kQ4_0:
      return std::make_unique<BlockQuantValueStore<BlockQ4_0>>(n_kv_heads, head_dim, capacity, nullptr);
    case BlockFormatKind::kQ4_0Hadamard:
      return std::make_unique<BlockQuantValueStore<BlockQ4_0>>(n_kv_heads, head_dim, capacity,
                                                               std::make_unique<HadamardTransform>(head_dim, seed));
  }
  return nullptr;
}

}  // namespace million
