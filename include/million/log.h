// Logging through a sink the application installs. Library code never prints: it calls
// log_info/log_warn/..., and the CLI's sink writes to stderr. The default sink drops debug
// messages and writes the rest to stderr.
#pragma once

#include <fmt/format.h>

#include <functional>
#include <string_view>

namespace million {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

using LogSink = std::function<void(LogLevel, std::string_view)>;

/// Installs a sink (thread-safe to call log_* concurrently; the sink is called under a lock).
void set_log_sink(LogSink sink);
/// Messages below this level are dropped before formatting.
void set_log_level(LogLevel level);
LogLevel log_level();
void log_message(LogLevel level, std::string_view message);

template <class... Args>
void log_debug(fmt::format_string<Args...> f, Args&&... args) {
  if (log_level() <= LogLevel::kDebug) log_message(LogLevel::kDebug, fmt::format(f, std::forward<Args>(args)...));
}
template <class... Args>
void log_info(fmt::format_string<Args...> f, Args&&... args) {
  if (log_level() <= LogLevel::kInfo) log_message(LogLevel::kInfo, fmt::format(f, std::forward<Args>(args)...));
}
template <class... Args>
void log_warn(fmt::format_string<Args...> f, Args&&... args) {
  if (log_level() <= LogLevel::kWarn) log_message(LogLevel::kWarn, fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace million
