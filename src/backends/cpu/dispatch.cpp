// Picks the CpuKernels table for a level, after checking the CPU can run it.
#include <fmt/format.h>

#include "backends/cpu/cpu_kernels.h"
#include "million/error.h"

namespace million {

const CpuKernels& cpu_kernels(SimdLevel level) {
  if (!simd_level_supported(level)) {
    throw InvalidArgumentError(fmt::format("SIMD level '{}' is not supported by this CPU", simd_level_name(level)));
  }
  switch (level) {
    case SimdLevel::kScalar: return detail::kScalarKernels;
    case SimdLevel::kAvx2: return detail::kAvx2Kernels;
    case SimdLevel::kAvx512: return detail::kAvx512Kernels;
  }
  return detail::kScalarKernels;
}

}  // namespace million
