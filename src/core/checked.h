// Checked 64-bit size arithmetic for sizes read from files or computed from shapes: overflow
// or a negative operand throws FormatError naming what was being sized.
#pragma once

#include <cstdint>
#include <string_view>

#include "million/error.h"

namespace million {

/// a * b, throwing FormatError("<what>: size overflows 64 bits") on overflow or negative input.
inline std::int64_t checked_mul(std::int64_t a, std::int64_t b, std::string_view what) {
  std::int64_t r;
  if (a < 0 || b < 0 || __builtin_mul_overflow(a, b, &r)) {
    throw FormatError(std::string(what) + ": size is negative or overflows 64 bits");
  }
  return r;
}

inline std::int64_t checked_add(std::int64_t a, std::int64_t b, std::string_view what) {
  std::int64_t r;
  if (a < 0 || b < 0 || __builtin_add_overflow(a, b, &r)) {
    throw FormatError(std::string(what) + ": size is negative or overflows 64 bits");
  }
  return r;
}

}  // namespace million
