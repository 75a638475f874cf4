// CPU instruction-set levels. The level is chosen once per call at the API boundary (never
// inside a loop); MILLION_SIMD=scalar|avx2|avx512 or --simd overrides detection so one machine
// can test and benchmark every level. Asking for a level the CPU lacks is an error.
#pragma once

#include <string>
#include <vector>

namespace million {

enum class SimdLevel { kScalar = 0, kAvx2 = 1, kAvx512 = 2 };

const char* simd_level_name(SimdLevel level);
/// Parses "scalar", "avx2", "avx512"; throws InvalidArgumentError otherwise.
SimdLevel parse_simd_level(const std::string& name);
/// Highest level this CPU supports (AVX2 needs AVX2+FMA+F16C; AVX-512 needs F+BW+VL+DQ).
SimdLevel detect_simd_level();
bool simd_level_supported(SimdLevel level);
/// Every level this CPU can run, lowest first (for tests and benchmarks).
std::vector<SimdLevel> supported_simd_levels();
/// The level kernels use: the override if set (set_simd_level or $MILLION_SIMD), else detected.
SimdLevel active_simd_level();
/// Overrides the level for this process; throws InvalidArgumentError if unsupported here.
void set_simd_level(SimdLevel level);

}  // namespace million
