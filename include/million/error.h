// Typed errors for everything a user can cause (bad flag, missing or corrupt file, unsupported
// model, context over the limit, not enough memory). Library code throws these; only the CLI
// prints them. Internal invariants use MILLION_ASSERT, which is not for user errors.
#pragma once

#include <stdexcept>
#include <string>

namespace million {

enum class ErrorKind {
  kInvalidArgument,  ///< a flag or API argument is out of range or malformed
  kIo,               ///< a file is missing or cannot be read
  kFormat,           ///< a file exists but its contents are corrupt, truncated or inconsistent
  kUnsupported,      ///< valid input that this build does not handle (architecture, dtype, ...)
  kContextLimit,     ///< prompt + generation would exceed the context limit
  kResource,         ///< not enough memory for the model or the cache
};

/// Base class of every error million throws on purpose. what() is a complete sentence that says
/// what went wrong and, where there is one, what to do about it.
class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  ErrorKind kind() const noexcept { return kind_; }

 private:
  ErrorKind kind_;
};

struct InvalidArgumentError : Error {
  explicit InvalidArgumentError(const std::string& m) : Error(ErrorKind::kInvalidArgument, m) {}
};
struct IoError : Error {
  explicit IoError(const std::string& m) : Error(ErrorKind::kIo, m) {}
};
struct FormatError : Error {
  explicit FormatError(const std::string& m) : Error(ErrorKind::kFormat, m) {}
};
struct UnsupportedError : Error {
  explicit UnsupportedError(const std::string& m) : Error(ErrorKind::kUnsupported, m) {}
};
struct ContextLimitError : Error {
  explicit ContextLimitError(const std::string& m) : Error(ErrorKind::kContextLimit, m) {}
};
struct ResourceError : Error {
  explicit ResourceError(const std::string& m) : Error(ErrorKind::kResource, m) {}
};

/// Thrown by MILLION_ASSERT: a bug in million, never the user's fault.
struct InternalError : std::logic_error {
  explicit InternalError(const std::string& m) : std::logic_error(m) {}
};

[[noreturn]] void assert_fail(const char* expr, const char* file, int line);

}  // namespace million

#define MILLION_ASSERT(cond) \
  ((cond) ? (void)0 : ::million::assert_fail(#cond, __FILE__, __LINE__))
