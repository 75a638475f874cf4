// The million binary as a user runs it: help texts, the bundled model's golden story on stdout
// (stats on stderr only), prompts from stdin, and clear one-line errors with exit code 1 for
// missing models, unknown caches, corrupt files and prompts over the context limit.
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "common/cli_run.h"
#include "common/test_paths.h"
#include "common/test_util.h"

namespace million {
namespace {

using Result = test::CliResult;

// Runs `args` through /bin/sh with the binary prepended; stdout and stderr captured separately.
Result run(const std::string& args, const std::string& stdin_text = "") {
  return test::run_cli(MILLION_BIN, args, stdin_text);
}

std::string golden_story() {
  std::ifstream in(test::source_dir() + "/models/stories260K/README.md");
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string s = ss.str();
  const std::size_t h = s.find("## Golden output");
  const std::size_t b = s.find("```\n", h) + 4;
  return s.substr(b, s.find("\n```", b) - b);
}

TEST(Cli, HelpExplainsSubcommandsAndOptions) {
  Result r = run("--help");
  EXPECT_EQ(r.code, 0);
  EXPECT_NE(r.out.find("generate"), std::string::npos);
  EXPECT_NE(r.out.find("bench"), std::string::npos);
  r = run("generate --help");
  EXPECT_EQ(r.code, 0);
  for (const char* opt : {"--model", "--prompt", "-n", "--temp", "--top-k", "--top-p", "--seed", "--ctx", "--threads", "--kv"}) {
    EXPECT_NE(r.out.find(opt), std::string::npos) << opt;
  }
}

TEST(Cli, DefaultModelPrintsGoldenStoryOnStdout) {
  const Result r = run("generate -n 256 --temp 0");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, golden_story() + "\n");
  EXPECT_NE(r.err.find("tok/s"), std::string::npos) << "speeds go to stderr";
  EXPECT_NE(r.err.find("kv"), std::string::npos);
}

TEST(Cli, PromptFromStdinAndF16Cache) {
  const Result r = run("generate -f - -n 40 --kv f16 -q", "Once upon a time, there was a dragon");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out.rfind("Once upon a time, there was a dragon. The dragon was very small", 0), 0u) << r.out;
  EXPECT_EQ(r.err, "") << "-q keeps stderr quiet";
}

TEST(Cli, SamplingIsReproducibleWithASeed) {
  const Result a = run("generate -n 60 --temp 1.0 --seed 7 -q");
  const Result b = run("generate -n 60 --temp 1.0 --seed 7 -q");
  const Result c = run("generate -n 60 --temp 1.0 --seed 8 -q");
  ASSERT_EQ(a.code, 0);
  EXPECT_EQ(a.out, b.out);
  EXPECT_NE(a.out, c.out);
}

TEST(Cli, ErrorsAreClearAndExitWithOne) {
  Result r = run("generate -m /nonexistent/model.bin");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("/nonexistent/model.bin"), std::string::npos) << r.err;

  r = run("generate --kv q9");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("unknown KV cache 'q9'"), std::string::npos) << r.err;

  r = run("generate -p 'Once upon a time there was a dragon' -n 20 --ctx 16");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("context"), std::string::npos) << r.err;
  EXPECT_EQ(r.out, "") << "nothing generated when the request cannot fit";

  r = run("generate -n 600");  // stories260K was trained at 512
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("512"), std::string::npos) << r.err;

  r = run("generate --ctx 1000");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("maximum context"), std::string::npos) << r.err;

  const std::string bad = test::temp_dir() + "/truncated.bin";
  {
    std::ifstream src(test::source_dir() + "/models/stories260K/stories260K.bin", std::ios::binary);
    std::string bytes(5000, '\0');
    src.read(bytes.data(), 5000);
    test::write_file(bad, bytes);
  }
  r = run("generate --tokenizer models/stories260K/tok512.bin -m " + bad);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("truncated"), std::string::npos) << r.err;

  r = run("generate --no-such-flag");
  EXPECT_NE(r.code, 0);
}

TEST(Cli, TruncateKeepsTheNewestPromptTokens) {
  const Result r = run("generate -p 'Once upon a time there was a dragon who liked to fly' -n 8 --ctx 12 --truncate");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("truncated"), std::string::npos);
  EXPECT_EQ(r.out.find("Once upon"), std::string::npos) << "the oldest tokens were dropped: " << r.out;
}

TEST(Cli, CalibrateWritesACodebookAndReportsErrors) {
  const std::string out = test::temp_dir() + "/stories.cb";
  // The README's prose is enough text for 16 centroids per subspace at head_dim 8.
  Result r = run("calibrate -m models/stories260K/stories260K.bin --text models/stories260K/README.md --out " + out +
                 " --k pq:M=4,nbits=4 --v pq:M=4,nbits=4 --samples 256 --ctx 128");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("| layer | K | V |"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("| 4 |"), std::string::npos) << "one row per layer: " << r.out;
  std::ifstream f(out, std::ios::binary);
  EXPECT_TRUE(f.good()) << "codebook file written";
  // --rotation auto: qpca for a power-of-two head_dim with channel-grouped keys (the default),
  // Hadamard when the keys are normalised otherwise.
  EXPECT_NE(r.err.find("rotation qpca"), std::string::npos) << r.err;
  r = run("calibrate -m models/stories260K/stories260K.bin --text models/stories260K/README.md --out " + out +
          " --k pq:M=4,nbits=4 --v pq:M=4,nbits=4 --samples 256 --ctx 128 --k-norm token");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("rotation hadamard"), std::string::npos) << r.err;
  r = run("calibrate -m models/stories260K/stories260K.bin --text models/stories260K/README.md --out " + out +
          " --k pq:M=4,nbits=4 --v pq:M=4,nbits=4 --samples 256 --ctx 128 --k-norm token --rotation qpca");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("--rotation qpca needs --k-norm channel-group"), std::string::npos) << r.err;

  r = run("calibrate -m models/stories260K/stories260K.bin --text models/stories260K/README.md --out " + out +
          " --k pq:M=3,nbits=4");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("M=3"), std::string::npos) << r.err;

  const std::string small = " --k pq:M=4,nbits=4 --v pq:M=4,nbits=4";
  r = run("calibrate -m models/stories260K/stories260K.bin --text /nonexistent.txt --out " + out + small);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("/nonexistent.txt"), std::string::npos) << r.err;

  r = run("calibrate -m models/stories260K/stories260K.bin --text models/stories260K/README.md --out /nonexistent/dir/x.cb" + small);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("does not exist"), std::string::npos) << r.err;

  r = run("calibrate --help");
  EXPECT_EQ(r.code, 0);
  for (const char* opt : {"--text", "--out", "--k", "--v", "--granularity", "--rotation", "--samples", "--ctx", "--seed"}) {
    EXPECT_NE(r.out.find(opt), std::string::npos) << opt;
  }
}

}  // namespace
}  // namespace million
