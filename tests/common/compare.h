// Array comparison for kernel tests: normalized MSE, max abs difference and NaN/Inf
// agreement, reported together (never "x% of elements close"), plus guard-region helpers that
// catch out-of-bounds writes.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace million::test {

struct CompareResult {
  double nmse = 0.0;     // sum (a-b)^2 / sum b^2
  double max_abs = 0.0;  // max |a - b|
  std::int64_t nonfinite_mismatch = 0;  // positions where exactly one side is NaN/Inf (or they differ)
};

inline CompareResult compare(const float* got, const float* want, std::int64_t n) {
  CompareResult r;
  double num = 0.0, den = 0.0;
  for (std::int64_t i = 0; i < n; ++i) {
    const bool fg = std::isfinite(got[i]), fw = std::isfinite(want[i]);
    if (fg != fw || (!fg && !(std::isnan(got[i]) && std::isnan(want[i])) && got[i] != want[i])) {
      ++r.nonfinite_mismatch;
      continue;
    }
    if (!fg) continue;
    const double d = static_cast<double>(got[i]) - want[i];
    num += d * d;
    den += static_cast<double>(want[i]) * want[i];
    r.max_abs = std::max(r.max_abs, std::abs(d));
  }
  r.nmse = den > 0 ? num / den : num;
  return r;
}

/// A float buffer with kGuard poisoned floats on each side; check_guards() verifies them.
class GuardedBuffer {
 public:
  static constexpr std::int64_t kGuard = 64;
  explicit GuardedBuffer(std::int64_t n, float fill = std::nanf("")) : n_(n), buf_(static_cast<std::size_t>(n + 2 * kGuard)) {
    for (auto& x : buf_) x = kPoison;
    for (std::int64_t i = 0; i < n; ++i) buf_[static_cast<std::size_t>(kGuard + i)] = fill;
  }
  float* data() { return buf_.data() + kGuard; }
  const float* data() const { return buf_.data() + kGuard; }
  std::int64_t size() const { return n_; }
  bool guards_intact() const {
    for (std::int64_t i = 0; i < kGuard; ++i) {
      if (std::memcmp(&buf_[static_cast<std::size_t>(i)], &kPoison, 4) != 0) return false;
      if (std::memcmp(&buf_[static_cast<std::size_t>(kGuard + n_ + i)], &kPoison, 4) != 0) return false;
    }
    return true;
  }

 private:
  static constexpr float kPoison = -1.2345678e30f;
  std::int64_t n_;
  std::vector<float> buf_;
};

}  // namespace million::test
