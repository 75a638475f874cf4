// Small helpers shared by the test files: exception capture, substring assertions, file reads.
#pragma once

#include <gtest/gtest.h>

#include <exception>
#include <fstream>
#include <sstream>
#include <string>

/// EXPECT that `needle` occurs in `haystack` (both printed on failure).
#define EXPECT_HAS(haystack, needle) EXPECT_PRED_FORMAT2(::testing::IsSubstring, needle, haystack)

namespace million::test {

/// Runs f, expects it to throw exactly E (or a subclass); returns what() ("" on failure).
template <class E, class F>
std::string throws(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "threw the wrong exception type: " << e.what();
    return "";
  }
  ADD_FAILURE() << "did not throw";
  return "";
}

/// The whole file as bytes (an EXPECT failure if it cannot be opened).
inline std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in) << path;
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace million::test
