// A KV cache whose older tokens live in compact stores (PQ codes, q8_0/q4_0 blocks, KIVI, ...)
// while sink tokens and a recent window stay exact (f32). Every token is in exactly one of:
// sink (the first `sinks` positions, exact forever), coded (in the stores), window (exact).
// Tokens leave the window in batches at commit(), optionally encoded on a background thread
// while the next step's earlier layers run; attend(layer) waits for that layer's encoding, so
// results are identical to synchronous encoding. window = 0 is the stress mode: tokens are
// encoded as they are appended, before anything attends to them; stores that encode whole
// blocks of tokens (KIVI keys, channel-group PQ) hold the last partial block as f32 and
// attention reads it through the stores' roundtrip(), so no token is ever read exact.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "model/kv/kv_cache.h"
#include "model/kv/kv_store.h"

namespace million {

struct QuantizedCacheOptions {
  int window = 128;  ///< exact recent tokens kept (at least this many once there are enough)
  int batch = 32;    ///< tokens encoded together when the window overflows
  int sinks = 0;     ///< first positions kept exact
  bool async = true; ///< encode on a background thread
};

/// Runs encoding jobs one after another on its own thread (OpenMP inside it limited to 1 thread).
class EncodeWorker {
 public:
  EncodeWorker();
  ~EncodeWorker();
  void submit(std::function<void()> job);
  void wait_all();

 private:
  void run();
  std::mutex mutex_;
  std::condition_variable cv_, idle_cv_;
  std::deque<std::function<void()>> jobs_;
  bool busy_ = false, stop_ = false;
  std::thread thread_;
};

class QuantizedKVCache final : public KVCache {
 public:
  QuantizedKVCache(const KVCacheShape& shape, const QuantizedCacheOptions& options, std::string name,
                   std::vector<std::unique_ptr<KeyStore>> keys, std::vector<std::unique_ptr<ValueStore>> values);
  ~QuantizedKVCache() override;

  std::string name() const override { return name_; }
  void append(int layer, std::int64_t pos0, int n, const float* k, const float* v) override;
  void attend(int layer, std::int64_t pos0, int n, const float* q, float* out) override;
  void commit(std::int64_t n_tokens) override;
  void clear() override;
  std::int64_t n_tokens() const override { return n_tokens_; }
  std::int64_t bytes_allocated() const override;
  double bytes_per_token() const override;
  double coded_bits_per_element() const override;

  /// Dense attention reference over what the cache holds: sinks and window exact (stress mode:
  /// the window through roundtrip()), coded tokens decoded from the stores (the invariant the fast path is tested against).
  void attend_reference(int layer, std::int64_t pos0, int n, const float* q, float* out);
  /// Tokens of `layer` currently coded (after waiting for pending encoding).
  std::int64_t coded_tokens(int layer);

 private:
  struct Layer {
    std::unique_ptr<KeyStore> keys;
    std::unique_ptr<ValueStore> values;
    std::vector<float> sink_k, sink_v;      // [sinks held, n_kv_heads, head_dim] f32
    std::vector<float> exact_k, exact_v;    // window: [tokens, n_kv_heads, head_dim] f32, positions from exact_begin
    std::int64_t exact_begin = 0;           // position of exact_k's first token
    std::int64_t appended = 0;              // positions appended so far
    bool pending = false;                   // an encode job for this layer is in flight
  };
  void encode_oldest(Layer& L, std::int64_t n);  // moves the n oldest window tokens into the stores
  void wait_layer(int layer);
  // The window rows as attention reads them: L.exact_k / exact_v, or in stress mode their
  // roundtrip through the stores (a partial block), made in scratch.
  const std::vector<float>& window_rows(const Layer& L, bool keys, std::vector<float>& scratch) const;
  int token_block() const;
  std::int64_t row() const { return static_cast<std::int64_t>(shape_.n_kv_heads) * shape_.head_dim; }

  QuantizedCacheOptions opt_;
  std::string name_;
  std::vector<Layer> layers_;
  std::int64_t n_tokens_ = 0;
  std::unique_ptr<EncodeWorker> worker_;
  std::mutex pending_mutex_;
  std::condition_variable pending_cv_;
};

}  // namespace million
