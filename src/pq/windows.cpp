// Window planning over calibration documents (see windows.h).
#include "pq/windows.h"

#include <algorithm>
#include <random>

#include "million/error.h"

namespace million {

WindowPlan plan_windows(const std::vector<std::vector<int>>& documents, int ctx, std::int64_t want_tokens,
                        std::uint64_t seed) {
  if (ctx < 1) throw InvalidArgumentError("window length must be positive");
  // Windows of at most ctx tokens inside each document, shuffled, taken until want_tokens.
  WindowPlan plan;
  std::vector<TextWindow>& windows = plan.windows;
  for (std::size_t d = 0; d < documents.size(); ++d) {
    for (std::size_t b = 0; b < documents[d].size(); b += static_cast<std::size_t>(ctx)) {
      const std::size_t len = std::min<std::size_t>(static_cast<std::size_t>(ctx), documents[d].size() - b);
      if (len < 16) continue;  // too short to say anything about attention
      windows.push_back({d, b, len});
      plan.available += static_cast<std::int64_t>(len);
    }
  }
  if (windows.empty()) throw InvalidArgumentError("the calibration text is empty (no window of 16 tokens or more)");
  std::mt19937_64 rng(seed);
  std::shuffle(windows.begin(), windows.end(), rng);
  std::size_t n_windows = 0;
  while (n_windows < windows.size() && plan.tokens < want_tokens) {
    // The last window is cut so that exactly the wanted tokens run (--max-tokens is a budget).
    TextWindow& w = windows[n_windows];
    w.length = static_cast<std::size_t>(std::min<std::int64_t>(static_cast<std::int64_t>(w.length), want_tokens - plan.tokens));
    if (w.length < 16 && n_windows > 0) break;
    plan.tokens += static_cast<std::int64_t>(w.length);
    ++n_windows;
  }
  windows.resize(n_windows);
  return plan;
}

std::vector<int> window_tokens(const std::vector<std::vector<int>>& documents, const TextWindow& window) {
  const std::vector<int>& doc = documents.at(window.doc);
  return std::vector<int>(doc.begin() + static_cast<std::ptrdiff_t>(window.begin),
                          doc.begin() + static_cast<std::ptrdiff_t>(window.begin + window.length));
}

}  // namespace million
