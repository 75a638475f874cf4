// Internal interface between the llama.cpp-style block KV stores (model/kv/block_quant_store.cpp,
// baseline flags) and their per-ISA scores/accumulate kernels (kv_quant_avx2.cpp,
// kv_quant_avx512.cpp, each compiled with its own flags; the scalar table lives beside the stores).
// The block layouts are llama.cpp's Q8_0 / Q4_0 byte for byte. Quantization (append) is not
// here: it runs once per token and stays scalar. Kernels never look at the SIMD level.
#pragma once

#include <cstdint>

#include "million/simd.h"

namespace million {

/// Values per block (llama.cpp QK8_0 = QK4_0 = 32).
inline constexpr int kQuantBlock = 32;

/// llama.cpp block_q8_0: x[i] = f16(d) * qs[i]. 34 bytes.
struct BlockQ8_0 {
  std::uint16_t d;              ///< f16 scale = max|x| / 127
  std::int8_t qs[kQuantBlock];  ///< codes, element order
};
static_assert(sizeof(BlockQ8_0) == 2 + kQuantBlock, "block_q8_0 is 34 bytes, as in llama.cpp");

/// llama.cpp block_q4_0: byte j holds element j in its low nibble and element j + 16 in its high
/// nibble; x[i] = f16(d) * (nibble_i - 8). 18 bytes.
struct BlockQ4_0 {
  std::uint16_t d;                   ///< f16 scale = (signed value of largest magnitude) / -8
  std::uint8_t qs[kQuantBlock / 2];  ///< packed nibbles, see above
};
static_assert(sizeof(BlockQ4_0) == 2 + kQuantBlock / 2, "block_q4_0 is 18 bytes, as in llama.cpp");

/// s[j * ld + i] = q_j . k_i for n consecutive tokens of one kv head.
struct BlockScoresArgs {
  const void* k = nullptr;  ///< [n, head_dim / 32] BlockQ8_0 or BlockQ4_0, token-major
  std::int64_t n = 0;
  int head_dim = 0;          ///< multiple of 32
  const float* q = nullptr;  ///< [G, head_dim] f32
  int G = 0;
  float* s = nullptr;  ///< [G, ld] f32; columns [0, n) written
  std::int64_t ld = 0;
};

/// acc[j * head_dim + c] += p[j * ldp + i] * v_i[c] for n consecutive tokens of one kv head.
struct BlockAccumulateArgs {
  const void* v = nullptr;  ///< [n, head_dim / 32] BlockQ8_0 or BlockQ4_0, token-major
  std::int64_t n = 0;
  int head_dim = 0;          ///< multiple of 32
  const float* p = nullptr;  ///< [G, ldp] f32; columns [0, n) read
  std::int64_t ldp = 0;
  int G = 0;
  float* acc = nullptr;  ///< [G, head_dim] f32
};

struct KvQuantKernels {
  SimdLevel level;
  void (*q8_0_scores)(const BlockScoresArgs& a);
  void (*q4_0_scores)(const BlockScoresArgs& a);
  void (*q8_0_accumulate)(const BlockAccumulateArgs& a);
  void (*q4_0_accumulate)(const BlockAccumulateArgs& a);
};

/// The table for `level`; throws InvalidArgumentError if this CPU cannot run it.
const KvQuantKernels& kv_quant_kernels(SimdLevel level);

namespace detail {
extern const KvQuantKernels kKvQuantScalar;
extern const KvQuantKernels kKvQuantAvx2;
extern const KvQuantKernels kKvQuantAvx512;
}  // namespace detail

}  // namespace million
