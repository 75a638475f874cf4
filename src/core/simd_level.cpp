// CPU feature detection and the process-wide SIMD level override.
#include <atomic>
#include <cstdlib>

#include <fmt/format.h>

#include "million/error.h"
#include "million/simd.h"

namespace million {

namespace {
std::atomic<int> g_override{-1};
}

const char* simd_level_name(SimdLevel level) {
  switch (level) {
    case SimdLevel::kScalar: return "scalar";
    case SimdLevel::kAvx2: return "avx2";
    case SimdLevel::kAvx512: return "avx512";
  }
  return "?";
}

SimdLevel parse_simd_level(const std::string& name) {
  if (name == "scalar") return SimdLevel::kScalar;
  if (name == "avx2") return SimdLevel::kAvx2;
  if (name == "avx512") return SimdLevel::kAvx512;
  throw InvalidArgumentError(fmt::format("unknown SIMD level '{}' (expected scalar, avx2 or avx512)", name));
}

bool simd_level_supported(SimdLevel level) {
#if defined(__x86_64__)
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  switch (level) {
    case SimdLevel::kScalar: return true;
    case SimdLevel::kAvx2: return avx2;
    case SimdLevel::kAvx512:
      return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  }
  return false;
#else
  return level == SimdLevel::kScalar;
#endif
}

SimdLevel detect_simd_level() {
  if (simd_level_supported(SimdLevel::kAvx512)) return SimdLevel::kAvx512;
  if (simd_level_supported(SimdLevel::kAvx2)) return SimdLevel::kAvx2;
  return SimdLevel::kScalar;
}

std::vector<SimdLevel> supported_simd_levels() {
  std::vector<SimdLevel> levels;
  for (SimdLevel l : {SimdLevel::kScalar, SimdLevel::kAvx2, SimdLevel::kAvx512}) {
    if (simd_level_supported(l)) levels.push_back(l);
  }
  return levels;
}

void set_simd_level(SimdLevel level) {
  if (!simd_level_supported(level)) {
    throw InvalidArgumentError(fmt::format("SIMD level '{}' is not supported by this CPU (it supports up to '{}')",
                                           simd_level_name(level), simd_level_name(detect_simd_level())));
  }
  g_override.store(static_cast<int>(level));
}

SimdLevel active_simd_level() {
  int o = g_override.load();
  if (o >= 0) return static_cast<SimdLevel>(o);
  if (const char* env = std::getenv("MILLION_SIMD"); env != nullptr && *env != '\0') {
    SimdLevel level = parse_simd_level(env);
    set_simd_level(level);
    return level;
  }
  return detect_simd_level();
}

}  // namespace million
