// Exact K/V stores (f32, or rounded to f16) behind KeyStore / ValueStore, for caches that mix
// formats (e.g. --kv-k q4_0 --kv-v f16). A cache that is dense for both K and V uses
// DenseKVCache instead, with its faster attention kernels.
// Storage per kv head: [capacity, head_dim] f32 or f16 bits, token-major.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "model/kv/kv_store.h"

namespace million {

std::unique_ptr<KeyStore> make_dense_key_store(bool f16, int n_kv_heads, int head_dim, std::int64_t capacity);
std::unique_ptr<ValueStore> make_dense_value_store(bool f16, int n_kv_heads, int head_dim, std::int64_t capacity);

}  // namespace million
