// Log sink storage and the default stderr sink.
#include "million/log.h"

#include <atomic>
#include <cstdio>
#include <mutex>

#include "million/error.h"

namespace million {
namespace {

std::mutex g_mutex;
std::atomic<int> g_level{static_cast<int>(LogLevel::kInfo)};

void default_sink(LogLevel level, std::string_view message) {
  const char* prefix = level == LogLevel::kWarn ? "warning: " : level == LogLevel::kError ? "error: " : "";
  std::fprintf(stderr, "%s%.*s\n", prefix, static_cast<int>(message.size()), message.data());
}

LogSink& sink_storage() {
  static LogSink sink = default_sink;
  return sink;
}

}  // namespace

void set_log_sink(LogSink sink) {
  std::lock_guard<std::mutex> lock(g_mutex);
  sink_storage() = sink ? std::move(sink) : LogSink(default_sink);
}

void set_log_level(LogLevel level) { g_level.store(static_cast<int>(level)); }
LogLevel log_level() { return static_cast<LogLevel>(g_level.load()); }

void log_message(LogLevel level, std::string_view message) {
  if (static_cast<int>(level) < g_level.load()) return;
  std::lock_guard<std::mutex> lock(g_mutex);
  sink_storage()(level, message);
}

[[noreturn]] void assert_fail(const char* expr, const char* file, int line) {
  throw InternalError(fmt::format("internal error: assertion '{}' failed at {}:{}", expr, file, line));
}

}  // namespace million
