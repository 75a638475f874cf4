// Runs the `million` binary as a user would (from the source directory, through /bin/sh) for the
// end-to-end CLI tests: stdout and stderr captured separately, stdin from a file.
#pragma once

#include <sys/wait.h>

#include <cstdlib>
#include <string>

#include "common/test_paths.h"
#include "common/test_util.h"

namespace million::test {

struct CliResult {
  int code = -1;  ///< exit status, -1 if the process did not exit normally
  std::string out, err;
};

/// `bin args` with `stdin_text` on standard input.
inline CliResult run_cli(const std::string& bin, const std::string& args, const std::string& stdin_text = "") {
  const std::string dir = temp_dir();
  const std::string in = dir + "/in", out = dir + "/out", err = dir + "/err";
  write_file(in, stdin_text);
  const std::string cmd =
      "cd '" + source_dir() + "' && '" + bin + "' " + args + " <'" + in + "' >'" + out + "' 2>'" + err + "'";
  CliResult r;
  const int status = std::system(cmd.c_str());
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = slurp(out);
  r.err = slurp(err);
  return r;
}

}  // namespace million::test
