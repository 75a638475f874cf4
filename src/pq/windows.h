// Windows of calibration text for the passes that run a model over documents (`calibrate`,
// `analyze`): each document cut into windows of at most ctx tokens (windows under 16 tokens
// dropped), shuffled with a seed, taken in that order until a token budget is met (the last
// window cut so that exactly the budget runs). Not here: running the model or capturing K/V.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace million {

struct TextWindow {
  std::size_t doc = 0;                 ///< index into the documents
  std::size_t begin = 0, length = 0;   ///< token range [begin, begin + length) of that document
};

struct WindowPlan {
  std::vector<TextWindow> windows;  ///< in the order to run them
  std::int64_t tokens = 0;          ///< sum of their lengths (<= the budget)
  std::int64_t available = 0;       ///< tokens in all windows of the text (before the budget)
};

/// Plans windows of at most `ctx` tokens over `documents` (token ids, BOS first) until
/// `want_tokens` tokens. The shuffle uses std::mt19937_64(seed), so a seed gives the same plan.
/// Throws InvalidArgumentError when no window of 16 tokens or more exists.
WindowPlan plan_windows(const std::vector<std::vector<int>>& documents, int ctx, std::int64_t want_tokens,
                        std::uint64_t seed);

/// The token ids of one planned window.
std::vector<int> window_tokens(const std::vector<std::vector<int>>& documents, const TextWindow& window);

}  // namespace million
