// Memory facts and guards: how much memory the machine can give us, and a check that refuses
// an allocation that would not fit with a message that names both numbers.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace million {

/// MemAvailable from /proc/meminfo in bytes (or a cgroup limit if lower); 0 if unknown.
std::int64_t available_memory_bytes();

/// Throws ResourceError("<what> needs X GiB but only Y GiB is available ...") when `bytes`
/// exceeds the available memory. Does nothing when the available memory is unknown.
void require_memory(std::int64_t bytes, std::string_view what);

/// "1.25 GiB", "812.0 MiB", "4.0 KiB", "17 B".
std::string format_bytes(std::int64_t bytes);

}  // namespace million
