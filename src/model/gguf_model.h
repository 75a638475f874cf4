// GGUF models: the `llama` architecture (Llama, Mistral, SmolLM2, TinyLlama GGUFs) mapped onto
// the same ModelConfig / ModelWeights the Hugging Face loader produces, and the byte-level BPE
// tokenizer (tokenizer.ggml.model "gpt2") stored in the file's metadata.
//
// Weights: F32, F16 and BF16 matrices are read from the mapping as they are. Q8_0, Q4_0 and Q4_1
// matrices are dequantized once at load to f16 (2 bytes per weight; f32 for a tensor whose block
// scales could exceed the f16 range), or to f32 with WeightsOptions::to_f32 (exact). llama.cpp's
// converter permutes the rows of attn_q / attn_k for its interleaved RoPE; the loader undoes that
// permutation so the weights, the RoPE layout (rotate-half) and the KV cache contents are exactly
// those of the Hugging Face model. Not supported (UnsupportedError): other architectures, K-quants
// and IQ formats, Llama 3.1 rope_freqs scaling, partial rotary dims, MoE, q/k/v biases,
// SentencePiece ("llama") tokenizers in GGUF.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "million/simd.h"
#include "model/config.h"
#include "model/gguf.h"
#include "model/tokenizer.h"
#include "model/weights.h"

namespace million {

/// The ModelConfig of a GGUF file (architecture `llama` only), validated.
ModelConfig gguf_model_config(const GgufFile& file);

/// Loads a .gguf model file (see the file comment for the dtypes it produces).
ModelWeights load_gguf_weights(const std::string& path, const WeightsOptions& options = {});

/// The tokenizer stored in a GGUF file's metadata (byte-level BPE only). BOS is prepended by
/// encode(text, true) only when tokenizer.ggml.add_bos_token is true or absent (an empty text
/// still gives {bos}, so generation can start from nothing).
std::unique_ptr<Tokenizer> load_gguf_tokenizer(const std::string& path);
std::unique_ptr<Tokenizer> make_gguf_tokenizer(const GgufFile& file);

/// True for the tensor types load_gguf_weights can read: F32, F16, BF16, Q8_0, Q4_0, Q4_1.
bool ggml_type_loadable(GgmlType type);
/// dst[0, n) = the first n elements at src, dequantized (n a multiple of the type's block size;
/// the type loadable). Every SIMD level gives the same bits.
void ggml_dequantize(GgmlType type, const std::uint8_t* src, float* dst, std::int64_t n, SimdLevel level);

}  // namespace million
