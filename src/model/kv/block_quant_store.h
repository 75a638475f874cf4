// llama.cpp-style block-quantized K/V stores behind KeyStore / ValueStore: q8_0, q4_0 and
// q4_0-hadamard (q4_0 of R x, R a randomized Walsh-Hadamard rotation), blocks of 32 values of one
// token with one f16 scale each. Also the scalar row quantizers (llama.cpp's *_ref semantics),
// exposed for tests. Not here: sinks, windows and the attention driver (QuantizedKVCache).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "backends/cpu/kv_quant_kernels.h"
#include "model/kv/kv_store.h"

namespace million {

/// x [k] f32 -> y [k / 32] blocks, exactly as llama.cpp's quantize_row_q8_0_ref (k multiple of 32).
void quantize_row_q8_0(const float* x, BlockQ8_0* y, std::int64_t k);
/// x [k] f32 -> y [k / 32] blocks, exactly as llama.cpp's quantize_row_q4_0_ref (k multiple of 32).
void quantize_row_q4_0(const float* x, BlockQ4_0* y, std::int64_t k);
/// x [k / 32] blocks -> y [k] f32 (llama.cpp's dequantize_row_q8_0 / dequantize_row_q4_0).
void dequantize_row_q8_0(const BlockQ8_0* x, float* y, std::int64_t k);
void dequantize_row_q4_0(const BlockQ4_0* x, float* y, std::int64_t k);

/// "q8_0", "q4_0" or "q4_0-hadamard" (R = hadamard_rotation(head_dim, seed), see pq/rotation.h).
/// Throws InvalidArgumentError for another name or a non-positive shape, UnsupportedError when
/// head_dim is not a multiple of 32 (or, for the Hadamard variant, not a power of two).
/// Storage: per kv head, [capacity, head_dim / 32] blocks, token-major (one head's tokens
/// contiguous); capacity * n_kv_heads * head_dim * bits / 8 bytes in all.
std::unique_ptr<KeyStore> make_block_quant_key_store(const std::string& format, int n_kv_heads, int head_dim,
                                                     std::int64_t capacity, std::uint64_t seed);
std::unique_ptr<ValueStore> make_block_quant_value_store(const std::string& format, int n_kv_heads, int head_dim,
                                                         std::int64_t capacity, std::uint64_t seed);

/// The names make_block_quant_*_store accept, for --help texts.
std::string block_quant_format_names();

}  // namespace million
