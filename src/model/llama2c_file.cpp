// llama2.c checkpoint loader (legacy format). The header is validated and the exact file size
// the header implies is checked before any tensor is read; matrices point into the mapped file.
#include <fmt/format.h>

#include <cstring>
#include <limits>

#include "core/checked.h"
#include "core/mapped_file.h"
#include "million/error.h"
#include "model/weights.h"

namespace million {

namespace {
std::vector<float> take_floats(ByteReader& r, std::int64_t count, const char* what) {
  std::vector<float> out(static_cast<std::size_t>(count));
  const std::uint8_t* p = r.take(static_cast<std::size_t>(checked_mul(count, 4, what)), what);
  std::memcpy(out.data(), p, static_cast<std::size_t>(count) * 4);
  return out;
}
WeightMatrix take_matrix(ByteReader& r, std::int64_t rows, std::int64_t cols, const char* what) {
  WeightMatrix m;
  m.rows = rows;
  m.cols = cols;
  m.dtype = WeightDType::kF32;
  m.data = r.take(static_cast<std::size_t>(checked_mul(checked_mul(rows, cols, what), 4, what)), what);
  return m;
}
}  // namespace

ModelWeights load_llama2c_weights(const std::string& path) {
  auto file = std::make_shared<MappedFile>(path, "llama2.c checkpoint");
  ByteReader r(file->data(), file->size(), path);
  std::int32_t h[7];
  for (auto& x : h) x = r.read<std::int32_t>("header");
  const std::int32_t dim = h[0], hidden = h[1], n_layers = h[2], n_heads = h[3], n_kv = h[4], seq_len = h[6];
  std::int32_t vocab = h[5];
  const bool shared = vocab > 0;
  if (vocab < 0) vocab = vocab == std::numeric_limits<std::int32_t>::min() ? 0 : -vocab;  // 0 fails validate()

  ModelConfig c;
  c.architecture = "llama2.c";
  c.hidden_size = dim;
  c.ffn_hidden = hidden;
  c.n_layers = n_layers;
  c.n_heads = n_heads;
  c.n_kv_heads = n_kv;
  c.vocab_size = vocab;
  c.max_ctx = seq_len;
  c.head_dim = n_heads > 0 ? dim / n_heads : 0;
  c.norm_eps = 1e-5f;
  c.rope_theta = 10000.0;
  c.rope_layout = RopeLayout::kInterleaved;
  c.tied_embeddings = shared;
  c.bos_id = 1;
  // TinyStories checkpoints mark story boundaries with BOS (llama2.c's run.c stops on it); EOS
  // never occurs in their training data but ends a sequence too if it comes.
  c.eos_ids = {1, 2};
  if (n_heads <= 0 || dim % n_heads != 0) {
    throw FormatError(fmt::format("{}: header dim {} is not a multiple of n_heads {}; not a llama2.c checkpoint?",
                                  path, dim, n_heads));
  }
  c.validate(path);

  const std::int64_t L = n_layers, D = dim, KV = c.kv_dim(), F = hidden, V = vocab, half = c.head_dim / 2;
  const std::int64_t per_layer = D + D * D + 2 * KV * D + D * D + D + 3 * F * D;
  std::int64_t expected = checked_add(checked_mul(V, D, path), checked_mul(L, per_layer, path), path);
  expected = checked_add(expected, D + 2 * checked_mul(seq_len, half, path), path);
  if (!shared) expected = checked_add(expected, checked_mul(V, D, path), path);
  const std::int64_t expected_bytes = checked_add(28, checked_mul(expected, 4, path), path);
  if (static_cast<std::int64_t>(file->size()) != expected_bytes) {
    throw FormatError(fmt::format("{}: file is {} bytes but its header ({}) implies {} bytes; the file is truncated "
                                  "or not a llama2.c checkpoint",
                                  path, file->size(), c.summary(), expected_bytes));
  }

  ModelWeights w;
  w.config = c;
  w.source = path;
  w.storage.push_back(file);
  // Tensors are stored grouped by kind across layers: all rms_att, then all wq, ... The 28-byte
  // header keeps every f32 tensor 4-byte aligned in the page-aligned mapping.
  w.tok_embd = take_matrix(r, V, D, "token_embedding");
  w.layers.resize(static_cast<std::size_t>(L));
  for (auto& l : w.layers) l.attn_norm = take_floats(r, D, "rms_att");
  for (auto& l : w.layers) l.wq = take_matrix(r, D, D, "wq");
  for (auto& l : w.layers) l.wk = take_matrix(r, KV, D, "wk");
  for (auto& l : w.layers) l.wv = take_matrix(r, KV, D, "wv");
  for (auto& l : w.layers) l.wo = take_matrix(r, D, D, "wo");
  for (auto& l : w.layers) l.ffn_norm = take_floats(r, D, "rms_ffn");
  for (auto& l : w.layers) l.w_gate = take_matrix(r, F, D, "w1");
  for (auto& l : w.layers) l.w_down = take_matrix(r, D, F, "w2");
  for (auto& l : w.layers) l.w_up = take_matrix(r, F, D, "w3");
  w.final_norm = take_floats(r, D, "rms_final");
  r.take(static_cast<std::size_t>(2 * seq_len * half * 4), "legacy RoPE tables");
  if (!shared) w.lm_head = take_matrix(r, V, D, "wcls");
  return w;
}

}  // namespace million
