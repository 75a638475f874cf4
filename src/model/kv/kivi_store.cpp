// KIVI key / value stores: asymmetric min-max quantization (keys per channel over token groups,
// values per token over channel groups), bit-packed codes, f16 scales and zeros. Code unpacking
// is scalar; the dot products and axpys over an unpacked row go through cpu_kernels(level)
// (picked once per call). Scores use q . k = sum_c (q_c scale_c) code_c + sum_c q_c zero_c with
// both factors computed once per token group.
#include "model/kv/kivi_store.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "backends/cpu/cpu_kernels.h"
#include "core/half.h"
#include "million/error.h"

namespace million {
namespace {

void check_kivi_args(const char* what, int bits, int group, int n_kv_heads, int head_dim, std::int64_t capacity) {
  if (bits != 2 && bits != 4) {
    throw InvalidArgumentError(fmt::format("KIVI {} store: bits must be 2 or 4, not {}", what, bits));
  }
  if (group <= 0 || n_kv_heads <= 0 || head_dim <= 0 || capacity < 0) {
    throw InvalidArgumentError(fmt::format(
        "KIVI {} store: group ({}), n_kv_heads ({}) and head_dim ({}) must be positive and capacity ({}) non-negative",
        what, group, n_kv_heads, head_dim, capacity));
  }
}

// Bit-packed rows of codes: code c at bit (c * bits) % 8 of byte (c * bits) / 8; bits divides 8.
int row_bytes(int head_dim, int bits) { return (head_dim * bits + 7) / 8; }

inline int get_code(const std::uint8_t* row, int c, int bits) {
  const int bit = c * bits;
  return (row[bit >> 3] >> (bit & 7)) & ((1 << bits) - 1);
}
inline void put_code(std::uint8_t* row, int c, int bits, int code) {
  const int bit = c * bits;
  row[bit >> 3] = static_cast<std::uint8_t>(row[bit >> 3] | (code << (bit & 7)));
}

// Codes of one row as floats: out [head_dim] f32. Whole bytes go through a 256-entry table
// (4 KiB for 4 codes of 2 bits a byte, 2 KiB for 2 of 4 bits) instead of a shift per code.
struct UnpackTables {
  float two[256][4];   // byte -> its 4 two-bit codes, low bits first
  float four[256][2];  // byte -> its 2 four-bit codes, low nibble first
  UnpackTables() {
    for (int b = 0; b < 256; ++b) {
      for (int i = 0; i < 4; ++i) two[b][i] = static_cast<float>((b >> (2 * i)) & 3);
      for (int i = 0; i < 2; ++i) four[b][i] = static_cast<float>((b >> (4 * i)) & 15);
    }
  }
};
void unpack_codes(const std::uint8_t* row, int head_dim, int bits, float* out) {
  static const UnpackTables tables;
  const int per_byte = 8 / bits, full = head_dim / per_byte;
  for (int i = 0; i < full; ++i) {
    const float* src = bits == 2 ? tables.two[row[i]] : tables.four[row[i]];
    for (int k = 0; k < per_byte; ++k) out[i * per_byte + k] = src[k];
  }
  for (int c = full * per_byte; c < head_dim; ++c) out[c] = static_cast<float>(get_code(row, c, bits));
}

// Min-max parameters of n values read at stride, rounded to f16; the codes are then computed
// against the rounded values, so decode = f16(scale) * code + f16(zero) is what was optimized.
struct AsymParams {
  std::uint16_t scale_h, zero_h;
  float scale, zero, inv_scale;
};
AsymParams asym_params(const float* x, std::int64_t stride, int n, int levels) {
  float lo = x[0], hi = x[0];
  for (int i = 1; i < n; ++i) {
    lo = std::min(lo, x[i * stride]);
    hi = std::max(hi, x[i * stride]);
  }
  AsymParams p;
  p.scale_h = f32_to_f16((hi - lo) / static_cast<float>(levels));
  p.zero_h = f32_to_f16(lo);
  p.scale = f16_to_f32(p.scale_h);
  p.zero = f16_to_f32(p.zero_h);
  p.inv_scale = p.scale != 0.0f ? 1.0f / p.scale : 0.0f;
  return p;
}
inline int asym_code(float x, const AsymParams& p, int levels) {
  const float q = std::nearbyint((x - p.zero) * p.inv_scale);
  return static_cast<int>(std::clamp(q, 0.0f, static_cast<float>(levels)));
}

struct KiviPreparedQueries : PreparedQueries {
  std::vector<float> q;  // [G, head_dim] f32
  int G = 0;
};

class KiviKeyStore final : public KeyStore {
 public:
  KiviKeyStore(int bits, int group, int n_kv_heads, int head_dim, std::int64_t capacity)
      : bits_(bits),
        group_(group),
        n_kv_heads_(n_kv_heads),
        head_dim_(head_dim),
        row_bytes_(row_bytes(head_dim, bits)),
        capacity_(capacity),
        n_groups_((capacity + group - 1) / group),
        codes_(static_cast<std::size_t>(n_kv_heads * capacity * row_bytes_)),
        scale_(static_cast<std::size_t>(n_kv_heads * n_groups_ * head_dim)),
        zero_(scale_.size()) {}

  int block_tokens() const override { return group_; }
  std::int64_t size() const override { return size_; }
  void clear() override { size_ = 0; }

  void append(const float* x, int n) override {
    MILLION_ASSERT(n >= 0 && n % group_ == 0 && size_ + n <= capacity_);
    const int levels = (1 << bits_) - 1;
    const std::int64_t token_stride = static_cast<std::int64_t>(n_kv_heads_) * head_dim_;
    std::vector<AsymParams> params(static_cast<std::size_t>(head_dim_));  // [head_dim]: one (group, head)
    for (int t0 = 0; t0 < n; t0 += group_) {
      const std::int64_t g = (size_ + t0) / group_;
      for (int h = 0; h < n_kv_heads_; ++h) {
        const float* xg = x + t0 * token_stride + static_cast<std::int64_t>(h) * head_dim_;  // [group, .., head_dim]
        for (int c = 0; c < head_dim_; ++c) {
          params[static_cast<std::size_t>(c)] = asym_params(xg + c, token_stride, group_, levels);
          scale_[param_index(h, g, c)] = params[static_cast<std::size_t>(c)].scale_h;
          zero_[param_index(h, g, c)] = params[static_cast<std::size_t>(c)].zero_h;
        }
        for (int t = 0; t < group_; ++t) {
          std::uint8_t* row = row_ptr(h, size_ + t0 + t);
          std::fill(row, row + row_bytes_, std::uint8_t{0});
          for (int c = 0; c < head_dim_; ++c) {
            put_code(row, c, bits_, asym_code(xg[t * token_stride + c], params[static_cast<std::size_t>(c)], levels));
          }
        }
      }
    }
    size_ += n;
  }

  // One group of n tokens (n <= group) quantized per channel and decoded.
  void roundtrip(const float* x, int n, float* out) const override {
    const int levels = (1 << bits_) - 1;
    const std::int64_t token_stride = static_cast<std::int64_t>(n_kv_heads_) * head_dim_;
    if (n == 0) return;
    for (int h = 0; h < n_kv_heads_; ++h) {
      for (int c = 0; c < head_dim_; ++c) {
        const std::int64_t off = static_cast<std::int64_t>(h) * head_dim_ + c;
        const AsymParams p = asym_params(x + off, token_stride, n, levels);
        for (int t = 0; t < n; ++t) {
          out[t * token_stride + off] = p.scale * static_cast<float>(asym_code(x[t * token_stride + off], p, levels)) + p.zero;
        }
      }
    }
  }

  std::unique_ptr<PreparedQueries> prepare(int kv_head, const float* q, int G, SimdLevel level) const override {
    (void)kv_head;
    (void)level;
    auto prep = std::make_unique<KiviPreparedQueries>();
    prep->G = G;
    prep->q.assign(q, q + static_cast<std::int64_t>(G) * head_dim_);
    return prep;
  }

  void scores(int kv_head, const PreparedQueries& prep, std::int64_t t0, std::int64_t t1, float* s, std::int64_t ld,
              SimdLevel level) const override {
    check(kv_head, t0, t1);
    const auto* p = dynamic_cast<const KiviPreparedQueries*>(&prep);
    MILLION_ASSERT(p != nullptr);
    const CpuKernels& k = cpu_kernels(level);
    const int G = p->G, d = head_dim_;
    std::vector<float> qs(static_cast<std::size_t>(G) * d);  // [G, head_dim] f32: q_c * scale_c of the current group
    std::vector<float> qz(static_cast<std::size_t>(G));      // [G] f32: sum_c q_c * zero_c of the current group
    std::vector<float> codes(static_cast<std::size_t>(d));   // [head_dim] f32: one token's codes
    std::int64_t cur_g = -1;
    for (std::int64_t t = t0; t < t1; ++t) {
      const std::int64_t g = t / group_;
      if (g != cur_g) {
        cur_g = g;
        for (int j = 0; j < G; ++j) {
          const float* qj = p->q.data() + static_cast<std::int64_t>(j) * d;
          float z = 0.0f;
          for (int c = 0; c < d; ++c) {
            qs[static_cast<std::size_t>(j) * d + c] = qj[c] * f16_to_f32(scale_[param_index(kv_head, g, c)]);
            z += qj[c] * f16_to_f32(zero_[param_index(kv_head, g, c)]);
          }
          qz[static_cast<std::size_t>(j)] = z;
        }
      }
      const std::uint8_t* row = row_ptr(kv_head, t);
      unpack_codes(row, d, bits_, codes.data());
      for (int j = 0; j < G; ++j) {
        s[j * ld + (t - t0)] =
            k.dot_f32(qs.data() + static_cast<std::size_t>(j) * d, codes.data(), d) + qz[static_cast<std::size_t>(j)];
      }
    }
  }

  void decode(int kv_head, std::int64_t t0, std::int64_t t1, float* out) const override {
    check(kv_head, t0, t1);
    for (std::int64_t t = t0; t < t1; ++t) {
      const std::uint8_t* row = row_ptr(kv_head, t);
      const std::int64_t g = t / group_;
      for (int c = 0; c < head_dim_; ++c) {
        out[(t - t0) * head_dim_ + c] =
            f16_to_f32(scale_[param_index(kv_head, g, c)]) * static_cast<float>(get_code(row, c, bits_)) +
            f16_to_f32(zero_[param_index(kv_head, g, c)]);
      }
    }
  }

  // Batched queries (kv_store.h): KIVI scores and sums work in the original space.
  bool decodes_in_score_space() const override { return true; }
  void decode_score_space(int kv_head, std::int64_t t0, std::int64_t t1, float* out) const override {
    decode(kv_head, t0, t1, out);
  }
  const float* prepared_vectors(const PreparedQueries& prep) const override {
    return static_cast<const KiviPreparedQueries&>(prep).q.data();
  }
  double bits_per_element() const override { return bits_ + 32.0 / group_; }

 private:
  void check(int kv_head, std::int64_t t0, std::int64_t t1) const {
    MILLION_ASSERT(kv_head >= 0 && kv_head < n_kv_heads_);
    MILLION_ASSERT(t0 >= 0 && t0 <= t1 && t1 <= size_);
  }
  std::size_t param_index(int h, std::int64_t g, int c) const {
    return static_cast<std::size_t>((static_cast<std::int64_t>(h) * n_groups_ + g) * head_dim_ + c);
  }
  const std::uint8_t* row_ptr(int h, std::int64_t t) const {
    return codes_.data() + (static_cast<std::int64_t>(h) * capacity_ + t) * row_bytes_;
  }
  std::uint8_t* row_ptr(int h, std::int64_t t) {
    return codes_.data() + (static_cast<std::int64_t>(h) * capacity_ + t) * row_bytes_;
  }

  int bits_, group_, n_kv_heads_, head_dim_, row_bytes_;
  std::int64_t capacity_, n_groups_;
  std::int64_t size_ = 0;
  std::vector<std::uint8_t> codes_;   // [n_kv_heads, capacity, row_bytes] u8, bit-packed, token-major per head
  std::vector<std::uint16_t> scale_;  // [n_kv_heads, n_groups, head_dim] f16, per (token group, channel)
  std::vector<std::uint16_t> zero_;   // [n_kv_heads, n_groups, head_dim] f16
};

class KiviValueStore final : public ValueStore {
 public:
  KiviValueStore(int bits, int group, int n_kv_heads, int head_dim, std::int64_t capacity)
      : bits_(bits),
        group_(group),
        n_kv_heads_(n_kv_heads),
        head_dim_(head_dim),
        row_bytes_(row_bytes(head_dim, bits)),
        groups_per_token_(head_dim / group),
        capacity_(capacity),
        codes_(static_cast<std::size_t>(n_kv_heads * capacity * row_bytes_)),
        scale_(static_cast<std::size_t>(n_kv_heads * capacity * groups_per_token_)),
        zero_(scale_.size()) {}

  std::int64_t size() const override { return size_; }
  void clear() override { size_ = 0; }

  void append(const float* x, int n) override {
    MILLION_ASSERT(n >= 0 && size_ + n <= capacity_);
    const int levels = (1 << bits_) - 1;
    for (int t = 0; t < n; ++t) {
      for (int h = 0; h < n_kv_heads_; ++h) {
        const float* xv = x + (static_cast<std::int64_t>(t) * n_kv_heads_ + h) * head_dim_;
        const std::int64_t tok = size_ + t;
        std::uint8_t* row = row_ptr(h, tok);
        std::fill(row, row + row_bytes_, std::uint8_t{0});
        for (int gi = 0; gi < groups_per_token_; ++gi) {
          const AsymParams p = asym_params(xv + gi * group_, 1, group_, levels);
          scale_[param_index(h, tok, gi)] = p.scale_h;
          zero_[param_index(h, tok, gi)] = p.zero_h;
          for (int c = gi * group_; c < (gi + 1) * group_; ++c) put_code(row, c, bits_, asym_code(xv[c], p, levels));
        }
      }
    }
    size_ += n;
  }

  void roundtrip(const float* x, int n, float* out) const override {
    const int levels = (1 << bits_) - 1;
    for (std::int64_t i = 0; i < static_cast<std::int64_t>(n) * n_kv_heads_; ++i) {
      for (int gi = 0; gi < groups_per_token_; ++gi) {
        const float* xv = x + i * head_dim_ + gi * group_;
        float* o = out + i * head_dim_ + gi * group_;
        const AsymParams p = asym_params(xv, 1, group_, levels);
        for (int c = 0; c < group_; ++c) o[c] = p.scale * static_cast<float>(asym_code(xv[c], p, levels)) + p.zero;
      }
    }
  }

  std::int64_t accumulator_floats(int G) const override { return static_cast<std::int64_t>(G) * head_dim_; }

  void accumulate(int kv_head, const float* p, std::int64_t ldp, int G, std::int64_t t0, std::int64_t t1, float* acc,
                  SimdLevel level) const override {
    check(kv_head, t0, t1);
    const CpuKernels& k = cpu_kernels(level);
    std::vector<float> v(static_cast<std::size_t>(head_dim_));  // [head_dim] f32: one decoded token
    for (std::int64_t t = t0; t < t1; ++t) {
      decode_row(kv_head, t, v.data());
      for (int j = 0; j < G; ++j)
        k.axpy_f32(p[j * ldp + (t - t0)], v.data(), acc + static_cast<std::int64_t>(j) * head_dim_, head_dim_);
    }
  }

  void finish(int kv_head, const float* acc, int G, float* out, SimdLevel level) const override {
    (void)kv_head;
    const CpuKernels& k = cpu_kernels(level);
    for (int j = 0; j < G; ++j) {
      k.axpy_f32(1.0f, acc + static_cast<std::int64_t>(j) * head_dim_, out + static_cast<std::int64_t>(j) * head_dim_,
                 head_dim_);
    }
  }

  void decode(int kv_head, std::int64_t t0, std::int64_t t1, float* out) const override {
    check(kv_head, t0, t1);
    for (std::int64_t t = t0; t < t1; ++t) decode_row(kv_head, t, out + (t - t0) * head_dim_);
  }

  bool decodes_in_accumulator_space() const override { return true; }
  void decode_accumulator_space(int kv_head, std::int64_t t0, std::int64_t t1, float* out) const override {
    decode(kv_head, t0, t1, out);
  }
  double bits_per_element() const override { return bits_ + 32.0 / group_; }

 private:
  void decode_row(int h, std::int64_t t, float* out) const {
    unpack_codes(row_ptr(h, t), head_dim_, bits_, out);
    for (int gi = 0; gi < groups_per_token_; ++gi) {
      const float s = f16_to_f32(scale_[param_index(h, t, gi)]), z = f16_to_f32(zero_[param_index(h, t, gi)]);
      for (int c = gi * group_; c < (gi + 1) * group_; ++c) out[c] = s * out[c] + z;
    }
  }
  void check(int kv_head, std::int64_t t0, std::int64_t t1) const {
    MILLION_ASSERT(kv_head >= 0 && kv_head < n_kv_heads_);
    MILLION_ASSERT(t0 >= 0 && t0 <= t1 && t1 <= size_);
  }
  std::size_t param_index(int h, std::int64_t t, int gi) const {
    return static_cast<std::size_t>((static_cast<std::int64_t>(h) * capacity_ + t) * groups_per_token_ + gi);
  }
  const std::uint8_t* row_ptr(int h, std::int64_t t) const {
    return codes_.data() + (static_cast<std::int64_t>(h) * capacity_ + t) * row_bytes_;
  }
  std::uint8_t* row_ptr(int h, std::int64_t t) {
    return codes_.data() + (static_cast<std::int64_t>(h) * capacity_ + t) * row_bytes_;
  }

  int bits_, group_, n_kv_heads_, head_dim_, row_bytes_, groups_per_token_;
  std::int64_t capacity_;
  std::int64_t size_ = 0;
  std::vector<std::uint8_t> codes_;   // [n_kv_heads, capacity, row_bytes] u8, bit-packed, token-major per head
  std::vector<std::uint16_t> scale_;  // [n_kv_heads, capacity, head_dim / group] f16, per (token, channel group)
  std::vector<std::uint16_t> zero_;   // [n_kv_heads, capacity, head_dim / group] f16
};

}  // namespace

std::unique_ptr<KeyStore> make_kivi_key_store(int bits, int group, int n_kv_heads, int head_dim,
                                              std::int64_t capacity) {
  check_kivi_args("key", bits, group, n_kv_heads, head_dim, capacity);
  return std::make_unique<KiviKeyStore>(bits, group, n_kv_heads, head_dim, capacity);
}

std::unique_ptr<ValueStore> make_kivi_value_store(int bits, int group, int n_kv_heads, int head_dim,
                                                  std::int64_t capacity) {
  check_kivi_args("value", bits, group, n_kv_heads, head_dim, capacity);
  if (head_dim % group != 0) {
    throw UnsupportedError(fmt::format(
        "the KIVI value store quantizes groups of {} channels and needs head_dim to be a multiple of {}, not {}; "
        "pick a group that divides head_dim",
        group, group, head_dim));
  }
  return std::make_unique<KiviValueStore>(bits, group, n_kv_heads, head_dim, capacity);
}

}  // namespace million
