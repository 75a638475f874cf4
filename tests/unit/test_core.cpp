// Core library tests: f16/bf16 scalar conversions (half.h) against the F16C hardware converter
// and an independent double-precision nearest-even search, checked arithmetic, MappedFile and
// ByteReader, read_text_file, format_bytes, require_memory, SIMD level parsing/override, logging.
// Conversions must be bit-exact (tolerance 0): IEEE round-to-nearest-even has one right answer;
// NaNs are compared by NaN-ness and sign only, since payloads are not part of the contract.
#include <gtest/gtest.h>
#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "common/test_util.h"
#include "common/test_paths.h"
#include "core/checked.h"
#include "core/half.h"
#include "core/mapped_file.h"
#include "core/memory.h"
#include "million/error.h"
#include "million/log.h"
#include "million/simd.h"

namespace million {
namespace {

using test::throws;



std::uint32_t bits_of(float f) {
  std::uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}
float float_of(std::uint32_t b) {
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}

// --- hardware references (F16C, round to nearest even) --------------------------------------

__attribute__((target("f16c"))) std::uint16_t hw_f32_to_f16(float f) {
  return static_cast<std::uint16_t>(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT));
}
__attribute__((target("f16c"))) float hw_f16_to_f32(std::uint16_t h) { return _cvtsh_ss(h); }

bool have_f16c() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("f16c");
}

bool f16_is_nan(std::uint16_t h) { return (h & 0x7c00u) == 0x7c00u && (h & 0x3ffu) != 0; }
bool bf16_is_nan(std::uint16_t h) { return (h & 0x7f80u) == 0x7f80u && (h & 0x7fu) != 0; }

/// Checks million's f32 -> f16 against the hardware for one input; returns false on mismatch.
bool check_f32_to_f16(float f) {
  const std::uint16_t got = f32_to_f16(f);
  const std::uint16_t want = hw_f32_to_f16(f);
  if (std::isnan(f)) {
    EXPECT_TRUE(f16_is_nan(got)) << "NaN input 0x" << std::hex << bits_of(f) << " gave 0x" << got;
    EXPECT_EQ(got & 0x8000u, want & 0x8000u) << "NaN sign, input 0x" << std::hex << bits_of(f);
    return f16_is_nan(got) && (got & 0x8000u) == (want & 0x8000u);
  }
  EXPECT_EQ(got, want) << "f32_to_f16(" << f << " = 0x" << std::hex << bits_of(f) << ")";
  return got == want;
}

TEST(Half, F16ToF32MatchesHardwareForAllPatterns) {
  if (!have_f16c()) GTEST_SKIP() << "CPU lacks F16C";
  int mismatches = 0;
  for (std::uint32_t h = 0; h <= 0xffffu; ++h) {
    const auto h16 = static_cast<std::uint16_t>(h);
    const float got = f16_to_f32(h16);
    const float want = hw_f16_to_f32(h16);
    if (f16_is_nan(h16)) {
      // The hardware quiets signalling NaNs; only NaN-ness, sign and the payload modulo the
      // quiet bit are required.
      const bool ok = std::isnan(got) && (bits_of(got) | 0x400000u) == (bits_of(want) | 0x400000u);
      if (!ok && ++mismatches < 10) ADD_FAILURE() << "NaN pattern 0x" << std::hex << h << " gave 0x" << bits_of(got);
    } else if (bits_of(got) != bits_of(want)) {
      if (++mismatches < 10) {
        ADD_FAILURE() << "f16_to_f32(0x" << std::hex << h << ") = 0x" << bits_of(got) << ", hardware 0x"
                      << bits_of(want);
      }
    }
  }
  EXPECT_EQ(mismatches, 0);
}

TEST(Half, F16RoundTripsEveryPattern) {
  int mismatches = 0;
  for (std::uint32_t h = 0; h <= 0xffffu; ++h) {
    const auto h16 = static_cast<std::uint16_t>(h);
    const std::uint16_t back = f32_to_f16(f16_to_f32(h16));
    const bool ok = f16_is_nan(h16) ? (f16_is_nan(back) && (back & 0x8000u) == (h16 & 0x8000u)) : back == h16;
    if (!ok && ++mismatches < 10) ADD_FAILURE() << "0x" << std::hex << h << " -> 0x" << back;
  }
  EXPECT_EQ(mismatches, 0);
}

TEST(Half, F32ToF16MatchesHardwareAtEveryRoundingBoundary) {
  if (!have_f16c()) GTEST_SKIP() << "CPU lacks F16C";
  // For every non-negative finite half h: its exact value, the exact midpoint to the next half
  // (a tie, including the tie between 65504 and 65536 that must overflow to inf and the tie
  // between 0 and the smallest subnormal), and the floats one ulp either side of each.
  int failures = 0;
  for (std::uint32_t h = 0; h < 0x7c00u && failures < 10; ++h) {
    const double lo = static_cast<double>(f16_to_f32(static_cast<std::uint16_t>(h)));
    const double hi = h + 1 == 0x7c00u ? 65536.0 : static_cast<double>(f16_to_f32(static_cast<std::uint16_t>(h + 1)));
    const auto mid = static_cast<float>((lo + hi) / 2);  // exact: at most 12 significant bits
    ASSERT_EQ(static_cast<double>(mid), (lo + hi) / 2);
    for (float x : {static_cast<float>(lo), mid}) {
      for (float y : {x, std::nextafter(x, 0.0f), std::nextafter(x, 1e30f)}) {
        if (!check_f32_to_f16(y)) ++failures;
        if (!check_f32_to_f16(-y)) ++failures;
      }
    }
  }
  EXPECT_EQ(failures, 0);
}

TEST(Half, F32ToF16MatchesHardwareOnRandomFloats) {
  if (!have_f16c()) GTEST_SKIP() << "CPU lacks F16C";
  std::mt19937 rng(12345);
  int failures = 0;
  // Any bit pattern (all exponents, NaNs, infinities) ...
  for (int i = 0; i < 3'000'000 && failures < 10; ++i) {
    if (!check_f32_to_f16(float_of(static_cast<std::uint32_t>(rng())))) ++failures;
  }
  // ... and exponents 2^-27 .. 2^16 (f16 subnormals, normals and the overflow edge), where
  // the rounding logic actually runs.
  std::uniform_int_distribution<std::uint32_t> exp(100, 143);
  for (int i = 0; i < 3'000'000 && failures < 10; ++i) {
    const std::uint32_t b = (static_cast<std::uint32_t>(rng()) & 0x807fffffu) | (exp(rng) << 23);
    if (!check_f32_to_f16(float_of(b))) ++failures;
  }
  EXPECT_EQ(failures, 0);
}

TEST(Half, F32ToF16SpecialValues) {
  // IEEE 754 binary16 facts: max finite 65504 = 0x7bff, inf = 0x7c00, smallest subnormal 2^-24.
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(f32_to_f16(65504.0f), 0x7bffu);
  EXPECT_EQ(f32_to_f16(std::nextafter(65520.0f, 0.0f)), 0x7bffu);
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00u);  // tie with 65536 rounds to even = overflow
  EXPECT_EQ(f32_to_f16(1e10f), 0x7c00u);
  EXPECT_EQ(f32_to_f16(-1e10f), 0xfc00u);
  EXPECT_EQ(f32_to_f16(inf), 0x7c00u);
  EXPECT_EQ(f32_to_f16(-inf), 0xfc00u);
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -24)), 0x0001u);
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -25)), 0x0000u);  // tie with 0 rounds to even
  EXPECT_EQ(f32_to_f16(std::nextafter(std::ldexp(1.0f, -25), 1.0f)), 0x0001u);
  EXPECT_EQ(f32_to_f16(-0.0f), 0x8000u);
  EXPECT_EQ(f32_to_f16(std::numeric_limits<float>::denorm_min()), 0x0000u);
  EXPECT_TRUE(f16_is_nan(f32_to_f16(std::numeric_limits<float>::quiet_NaN())));
  EXPECT_TRUE(f16_is_nan(f32_to_f16(float_of(0x7f800001u))));  // signalling, payload only in low bits
  EXPECT_TRUE(f16_is_nan(f32_to_f16(float_of(0xff800001u))));
  EXPECT_EQ(f32_to_f16(float_of(0xff800001u)) & 0x8000u, 0x8000u);
}

// --- bf16 ------------------------------------------------------------------------------------

/// Nearest bf16 to finite f by direct search: the two bf16 values bracketing f in magnitude,
/// compared in double (exact for these differences); ties go to the even mantissa. The value
/// past the largest finite bf16 is 2^128 (IEEE overflow rule), encoded as infinity.
std::uint16_t reference_bf16(float f) {
  const std::uint32_t b = bits_of(f);
  const auto lo = static_cast<std::uint16_t>(b >> 16);  // truncation: toward zero
  if (std::isinf(f)) return lo;
  const auto hi = static_cast<std::uint16_t>(lo + 1);
  const double x = std::fabs(static_cast<double>(f));
  const double vlo = std::fabs(static_cast<double>(float_of(static_cast<std::uint32_t>(lo) << 16)));
  const double vhi = (hi & 0x7fffu) == 0x7f80u ? std::ldexp(1.0, 128)
                                               : std::fabs(static_cast<double>(float_of(static_cast<std::uint32_t>(hi) << 16)));
  const double dlo = x - vlo, dhi = vhi - x;
  if (dlo < dhi) return lo;
  if (dhi < dlo) return hi;
  return (lo & 1u) == 0 ? lo : hi;
}

bool check_f32_to_bf16(float f) {
  const std::uint16_t got = f32_to_bf16(f);
  if (std::isnan(f)) {
    const bool ok = bf16_is_nan(got) && (got & 0x8000u) == ((bits_of(f) >> 16) & 0x8000u);
    EXPECT_TRUE(ok) << "NaN 0x" << std::hex << bits_of(f) << " gave 0x" << got;
    return ok;
  }
  const std::uint16_t want = reference_bf16(f);
  EXPECT_EQ(got, want) << "f32_to_bf16(" << f << " = 0x" << std::hex << bits_of(f) << ")";
  return got == want;
}

TEST(BFloat16, ToF32IsExactShift) {
  for (std::uint32_t h = 0; h <= 0xffffu; ++h) {
    const float got = bf16_to_f32(static_cast<std::uint16_t>(h));
    ASSERT_EQ(bits_of(got), h << 16) << std::hex << h;
  }
}

TEST(BFloat16, RoundTripsEveryPattern) {
  for (std::uint32_t h = 0; h <= 0xffffu; ++h) {
    const auto h16 = static_cast<std::uint16_t>(h);
    const std::uint16_t back = f32_to_bf16(bf16_to_f32(h16));
    if (bf16_is_nan(h16)) {
      ASSERT_TRUE(bf16_is_nan(back)) << std::hex << h;
      ASSERT_EQ(back & 0x8000u, h16 & 0x8000u) << std::hex << h;
    } else {
      ASSERT_EQ(back, h16) << std::hex << h;
    }
  }
}

TEST(BFloat16, FromF32NearestEvenAtEveryBoundary) {
  int failures = 0;
  for (std::uint32_t h = 0; h < 0x7f80u && failures < 10; ++h) {
    // Exact value, the midpoint to the next bf16 (bit 15 set, rest 0) and a float ulp either side.
    for (std::uint32_t b : {h << 16, (h << 16) | 0x8000u}) {
      for (std::uint32_t y : {b, b - 1, b + 1}) {
        if (h == 0 && y == b - 1) continue;  // would wrap to a NaN pattern
        if (!check_f32_to_bf16(float_of(y))) ++failures;
        if (!check_f32_to_bf16(float_of(y | 0x80000000u))) ++failures;
      }
    }
  }
  EXPECT_EQ(failures, 0);
}

TEST(BFloat16, FromF32NearestEvenOnRandomFloats) {
  std::mt19937 rng(777);
  int failures = 0;
  for (int i = 0; i < 4'000'000 && failures < 10; ++i) {
    if (!check_f32_to_bf16(float_of(static_cast<std::uint32_t>(rng())))) ++failures;
  }
  EXPECT_EQ(failures, 0);
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(f32_to_bf16(inf), 0x7f80u);
  EXPECT_EQ(f32_to_bf16(-inf), 0xff80u);
  EXPECT_EQ(f32_to_bf16(std::numeric_limits<float>::max()), 0x7f80u);  // rounds past 0x7f7f
  EXPECT_TRUE(bf16_is_nan(f32_to_bf16(float_of(0x7f800001u))));     // would truncate to inf
  EXPECT_TRUE(bf16_is_nan(f32_to_bf16(float_of(0x7fffffffu))));     // would carry into the sign
}

// --- checked arithmetic -------------------------------------------------------------------------

TEST(Checked, MulAndAdd) {
  constexpr std::int64_t kMax = std::numeric_limits<std::int64_t>::max();
  EXPECT_EQ(checked_mul(0, kMax, "x"), 0);
  EXPECT_EQ(checked_mul(std::int64_t{1} << 31, std::int64_t{1} << 31, "x"), std::int64_t{1} << 62);
  EXPECT_EQ(checked_mul(kMax, 1, "x"), kMax);
  EXPECT_EQ(checked_add(kMax - 1, 1, "x"), kMax);
  EXPECT_EQ(checked_add(0, 0, "x"), 0);

  EXPECT_HAS(throws<FormatError>([] { checked_mul(std::int64_t{1} << 32, std::int64_t{1} << 31, "the thing"); }),
             "the thing");
  EXPECT_HAS(throws<FormatError>([&] { checked_mul(kMax, 2, "tensor size"); }), "tensor size");
  throws<FormatError>([] { checked_mul(-1, 2, "x"); });
  throws<FormatError>([] { checked_mul(2, -1, "x"); });
  throws<FormatError>([] { checked_mul(-1, 0, "x"); });
  EXPECT_HAS(throws<FormatError>([&] { checked_add(kMax, 1, "total"); }), "total");
  throws<FormatError>([] { checked_add(-1, 5, "x"); });
  throws<FormatError>([] { checked_add(5, -1, "x"); });
}

// --- files ---------------------------------------------------------------------------------------

TEST(MappedFile, MissingFileIsIoErrorNamingPath) {
  const std::string path = test::temp_dir() + "/does-not-exist.bin";
  const std::string msg = throws<IoError>([&] { MappedFile f(path, "model weights"); });
  EXPECT_HAS(msg, path);
  EXPECT_HAS(msg, "model weights");
}

TEST(MappedFile, DirectoryIsIoError) {
  const std::string dir = test::temp_dir();
  EXPECT_HAS(throws<IoError>([&] { MappedFile f(dir); }), dir);
}

TEST(MappedFile, EmptyFile) {
  const std::string path = test::temp_dir() + "/empty";
  test::write_file(path, "");
  MappedFile f(path);
  EXPECT_EQ(f.size(), 0u);
  EXPECT_EQ(f.path(), path);
}

TEST(MappedFile, ContentMatchesAndMoves) {
  std::string bytes(100'003, '\0');
  std::mt19937 rng(5);
  for (char& c : bytes) c = static_cast<char>(rng() & 0xff);
  const std::string path = test::temp_dir() + "/data.bin";
  test::write_file(path, bytes);

  MappedFile f(path);
  ASSERT_EQ(f.size(), bytes.size());
  EXPECT_EQ(std::memcmp(f.data(), bytes.data(), bytes.size()), 0);

  MappedFile g(std::move(f));
  EXPECT_EQ(g.size(), bytes.size());
  EXPECT_EQ(g.path(), path);
  EXPECT_EQ(std::memcmp(g.data(), bytes.data(), bytes.size()), 0);

  MappedFile h;
  h = std::move(g);
  ASSERT_EQ(h.size(), bytes.size());
  EXPECT_EQ(std::memcmp(h.data(), bytes.data(), bytes.size()), 0);
}

TEST(ByteReader, ReadsAndReportsTruncation) {
  const std::uint8_t data[] = {1, 0, 0, 0, 0xff, 0xff, 0xff, 0x7f, 9, 8, 7};
  ByteReader r(data, sizeof(data), "test.bin");
  EXPECT_EQ(r.read<std::uint32_t>("a"), 1u);
  EXPECT_EQ(r.read<std::int32_t>("b"), std::numeric_limits<std::int32_t>::max());
  EXPECT_EQ(r.offset(), 8u);
  EXPECT_EQ(r.remaining(), 3u);
  const std::uint8_t* p = r.take(2, "c");
  EXPECT_EQ(p, data + 8);
  EXPECT_EQ(p[0], 9);

  const std::string msg = throws<FormatError>([&] { r.read<std::uint32_t>("the count"); });
  EXPECT_HAS(msg, "test.bin");
  EXPECT_HAS(msg, "truncated");
  EXPECT_HAS(msg, "the count");
  EXPECT_HAS(msg, "offset 10");
  EXPECT_HAS(msg, "needs 4 bytes");
  EXPECT_EQ(r.offset(), 10u);  // a failed read does not advance
  EXPECT_EQ(r.take(1, "d")[0], 7);
  EXPECT_EQ(r.remaining(), 0u);
  throws<FormatError>([&] { r.take(1, "e"); });
  EXPECT_EQ(r.take(0, "nothing"), data + sizeof(data));
  // A huge request must not wrap around.
  ByteReader r2(data, sizeof(data), "x");
  r2.take(3, "a");
  throws<FormatError>([&] { r2.take(std::numeric_limits<std::size_t>::max(), "huge"); });
}

TEST(ReadTextFile, ContentAndMissing) {
  const std::string dir = test::temp_dir();
  const std::string content = std::string("line 1\nline 2\r\n\0binary\xff", 23);
  test::write_file(dir + "/a.txt", content);
  EXPECT_EQ(read_text_file(dir + "/a.txt"), content);
  test::write_file(dir + "/empty.txt", "");
  EXPECT_EQ(read_text_file(dir + "/empty.txt"), "");
  const std::string msg = throws<IoError>([&] { read_text_file(dir + "/nope.json", "model config"); });
  EXPECT_HAS(msg, dir + "/nope.json");
  EXPECT_HAS(msg, "model config");
}

// --- memory ----------------------------------------------------------------------------------------

TEST(Memory, FormatBytes) {
  // Examples from the doc comment in memory.h, plus unit boundaries.
  EXPECT_EQ(format_bytes(0), "0 B");
  EXPECT_EQ(format_bytes(17), "17 B");
  EXPECT_EQ(format_bytes(1023), "1023 B");
  EXPECT_EQ(format_bytes(1024), "1.0 KiB");
  EXPECT_EQ(format_bytes(4096), "4.0 KiB");
  EXPECT_EQ(format_bytes(812LL * 1024 * 1024), "812.0 MiB");
  EXPECT_EQ(format_bytes(1024LL * 1024 * 1024), "1.00 GiB");
  EXPECT_EQ(format_bytes(5LL * 1024 * 1024 * 1024 / 4), "1.25 GiB");
}

TEST(Memory, RequireMemory) {
  const std::int64_t avail = available_memory_bytes();
  if (avail <= 0) GTEST_SKIP() << "available memory is unknown on this machine";
  const std::int64_t one_eib = std::int64_t{1} << 60;
  ASSERT_LT(avail, one_eib);
  const std::string msg = throws<ResourceError>([&] { require_memory(one_eib, "the test allocation"); });
  EXPECT_HAS(msg, "available");
  EXPECT_HAS(msg, "the test allocation");
  EXPECT_HAS(msg, format_bytes(one_eib));
  EXPECT_NO_THROW(require_memory(1024, "a small buffer"));
}

// --- SIMD levels ------------------------------------------------------------------------------------

TEST(Simd, NamesRoundTripAndBadNamesThrow) {
  for (SimdLevel l : {SimdLevel::kScalar, SimdLevel::kAvx2, SimdLevel::kAvx512}) {
    EXPECT_EQ(parse_simd_level(simd_level_name(l)), l);
  }
  EXPECT_EQ(std::string(simd_level_name(SimdLevel::kAvx2)), "avx2");
  for (const char* bad : {"", "sse", "avx", "avx512f", "scalar "}) {
    EXPECT_HAS(throws<InvalidArgumentError>([&] { parse_simd_level(bad); }), "scalar");
  }
}

TEST(Simd, SupportedLevelsAndOverride) {
  const std::vector<SimdLevel> levels = supported_simd_levels();
  ASSERT_FALSE(levels.empty());
  EXPECT_EQ(levels.front(), SimdLevel::kScalar);
  EXPECT_EQ(levels.back(), detect_simd_level());
  for (std::size_t i = 1; i < levels.size(); ++i) EXPECT_LT(levels[i - 1], levels[i]);
  for (SimdLevel l : levels) {
    EXPECT_TRUE(simd_level_supported(l));
    set_simd_level(l);
    EXPECT_EQ(active_simd_level(), l);
  }
  for (SimdLevel l : {SimdLevel::kAvx2, SimdLevel::kAvx512}) {
    if (simd_level_supported(l)) continue;
    EXPECT_HAS(throws<InvalidArgumentError>([&] { set_simd_level(l); }), simd_level_name(l));
  }
  set_simd_level(detect_simd_level());
}

// --- logging ------------------------------------------------------------------------------------------

class Log : public ::testing::Test {
 protected:
  void SetUp() override {
    saved_ = log_level();
    set_log_sink([this](LogLevel level, std::string_view msg) { got_.emplace_back(level, std::string(msg)); });
  }
  void TearDown() override {
    set_log_sink(nullptr);
    set_log_level(saved_);
  }
  LogLevel saved_ = LogLevel::kInfo;
  std::vector<std::pair<LogLevel, std::string>> got_;
};

TEST_F(Log, SinkCapturesFormattedMessages) {
  set_log_level(LogLevel::kDebug);
  log_debug("d {}", 1);
  log_info("i {} {}", "two", 3);
  log_warn("w");
  log_message(LogLevel::kError, "e");
  ASSERT_EQ(got_.size(), 4u);
  EXPECT_EQ(got_[0], std::make_pair(LogLevel::kDebug, std::string("d 1")));
  EXPECT_EQ(got_[1], std::make_pair(LogLevel::kInfo, std::string("i two 3")));
  EXPECT_EQ(got_[2], std::make_pair(LogLevel::kWarn, std::string("w")));
  EXPECT_EQ(got_[3], std::make_pair(LogLevel::kError, std::string("e")));
}

TEST_F(Log, LevelFilters) {
  set_log_level(LogLevel::kWarn);
  EXPECT_EQ(log_level(), LogLevel::kWarn);
  log_debug("no");
  log_info("no {}", 1);
  log_message(LogLevel::kInfo, "no");
  log_warn("yes {}", 1);
  log_message(LogLevel::kError, "yes 2");
  ASSERT_EQ(got_.size(), 2u);
  EXPECT_EQ(got_[0].second, "yes 1");
  EXPECT_EQ(got_[1].second, "yes 2");

  set_log_level(LogLevel::kError);
  log_warn("no");
  EXPECT_EQ(got_.size(), 2u);
  // A new sink replaces the old one.
  std::vector<std::string> other;
  set_log_sink([&](LogLevel, std::string_view msg) { other.emplace_back(msg); });
  log_message(LogLevel::kError, "to the new sink");
  EXPECT_EQ(got_.size(), 2u);
  EXPECT_EQ(other, std::vector<std::string>{"to the new sink"});
  set_log_sink(nullptr);  // before `other` goes out of scope
}

}  // namespace
}  // namespace million
