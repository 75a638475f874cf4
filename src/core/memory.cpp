// Reads /proc/meminfo and the cgroup v2 limit to decide whether an allocation can fit.
#include "core/memory.h"

#include <fmt/format.h>

#include <fstream>
#include <sstream>
#include <string>

#include "million/error.h"

namespace million {

namespace {
std::int64_t cgroup_headroom() {
  std::ifstream max_in("/sys/fs/cgroup/memory.max");
  std::ifstream cur_in("/sys/fs/cgroup/memory.current");
  std::string max_s;
  std::int64_t cur = 0;
  if (!(max_in >> max_s) || !(cur_in >> cur) || max_s == "max") return -1;
  try {
    return std::stoll(max_s) - cur;
  } catch (...) {
    return -1;
  }
}
}  // namespace

std::int64_t available_memory_bytes() {
  std::ifstream in("/proc/meminfo");
  std::string line;
  std::int64_t avail = 0;
  while (std::getline(in, line)) {
    if (line.rfind("MemAvailable:", 0) == 0) {
      std::istringstream ss(line.substr(13));
      std::int64_t kib = 0;
      ss >> kib;
      avail = kib * 1024;
      break;
    }
  }
  const std::int64_t cg = cgroup_headroom();
  if (cg >= 0 && (avail == 0 || cg < avail)) avail = cg;
  return avail;
}

std::string format_bytes(std::int64_t bytes) {
  const double b = static_cast<double>(bytes);
  if (b >= 1024.0 * 1024 * 1024) return fmt::format("{:.2f} GiB", b / (1024.0 * 1024 * 1024));
  if (b >= 1024.0 * 1024) return fmt::format("{:.1f} MiB", b / (1024.0 * 1024));
  if (b >= 1024.0) return fmt::format("{:.1f} KiB", b / 1024.0);
  return fmt::format("{} B", bytes);
}

void require_memory(std::int64_t bytes, std::string_view what) {
  const std::int64_t avail = available_memory_bytes();
  if (avail > 0 && bytes > avail) {
    throw ResourceError(fmt::format("{} needs {} but only {} of memory is available; use a smaller "
                                    "model, a smaller --ctx or a more compact --kv cache",
                                    what, format_bytes(bytes), format_bytes(avail)));
  }
}

}  // namespace million
