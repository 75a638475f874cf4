// KIVI (Liu et al. 2024) asymmetric 2- or 4-bit K/V stores behind KeyStore / ValueStore: keys
// per channel over groups of `group` tokens, values per token over groups of `group` channels,
// each group with an f16 scale = (max - min) / (2^bits - 1) and an f16 zero = min. Not here: the
// fp16 residual window of recent tokens (QuantizedKVCache keeps the window in full precision).
#pragma once

#include <cstdint>
#include <memory>

#include "model/kv/kv_store.h"

namespace million {

/// Keys: block_tokens() = group (appends come in whole token groups). Storage per kv head:
/// codes [capacity, ceil(head_dim * bits / 8)] u8, token-major, code of channel c at bit
/// (c * bits) % 8 of byte c * bits / 8 (low bits first); scale and zero
/// [ceil(capacity / group), head_dim] f16. Bits per element: bits + 32 / group.
/// Throws InvalidArgumentError unless bits is 2 or 4 and group, n_kv_heads, head_dim > 0.
std::unique_ptr<KeyStore> make_kivi_key_store(int bits, int group, int n_kv_heads, int head_dim, std::int64_t capacity);

/// Values: block_tokens() = 1. Storage per kv head: codes as for keys; scale and zero
/// [capacity, head_dim / group] f16. Bits per element: bits + 32 / group. Throws as above, and
/// UnsupportedError when head_dim is not a multiple of group.
std::unique_ptr<ValueStore> make_kivi_value_store(int bits, int group, int n_kv_heads, int head_dim,
                                                  std::int64_t capacity);

}  // namespace million
