// `million analyze` run as a user runs it. stories260K (always available): with a small codebook
// from `million calibrate`, the command writes report.md, stats.csv, heads.csv, errors.csv and,
// when gnuplot is installed, the SVG plots; the CSVs have the documented columns, finite values
// and plausible ones (Pearson kurtosis >= 1, abs max >= |mean|, kivi-4 below kivi-2 on every
// layer, pq rows for K and V only; head_dim 8 rules out the block formats, which the report says).
// Without gnuplot the CSVs and report still appear, with a note. gutenberg-23m (skipped when
// absent): q8_0's error is below q4_0's on every layer, for keys and values.
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <sstream>

#include "common/cli_run.h"
#include "common/test_paths.h"
#include "common/test_util.h"

namespace million {
namespace {

namespace fs = std::filesystem;

using Result = test::CliResult;
Result run(const std::string& args) { return test::run_cli(MILLION_BIN, args); }

bool have_gnuplot() { return std::system("gnuplot --version >/dev/null 2>&1") == 0; }

// A CSV as rows of column name -> text; the header must be exactly `columns`.
std::vector<std::map<std::string, std::string>> read_csv(const std::string& path, const std::vector<std::string>& columns) {
  std::istringstream in(test::slurp(path));
  std::string line;
  auto split = [](const std::string& l) {
    std::vector<std::string> f;
    std::stringstream ss(l);
    std::string x;
    while (std::getline(ss, x, ',')) f.push_back(x);
    return f;
  };
  std::getline(in, line);
  EXPECT_EQ(split(line), columns) << path;
  std::vector<std::map<std::string, std::string>> rows;
  while (std::getline(in, line)) {
    const std::vector<std::string> f = split(line);
    EXPECT_EQ(f.size(), columns.size()) << line;
    std::map<std::string, std::string> row;
    for (std::size_t i = 0; i < std::min(f.size(), columns.size()); ++i) row[columns[i]] = f[i];
    rows.push_back(row);
  }
  return rows;
}

double num(const std::map<std::string, std::string>& row, const std::string& col) {
  const double v = std::stod(row.at(col));
  EXPECT_TRUE(std::isfinite(v)) << col << " = " << row.at(col);
  return v;
}

const std::vector<std::string> kStatsColumns{"layer", "kv_head", "kind", "channel", "count", "mean", "std", "absmax",
                                             "kurtosis", "outlier"};
const std::vector<std::string> kErrorColumns{"layer", "kind", "method", "bits_per_element", "rel_sq_err", "rel_err"};
const std::vector<std::string> kSvgs{"heatmap_k_pre", "heatmap_k", "heatmap_v", "errors_k_pre",
                                     "errors_k",      "errors_v",  "hist_k_channel"};

// error[(method, kind)][layer]
std::map<std::pair<std::string, std::string>, std::map<int, double>> read_errors(const std::string& dir) {
  std::map<std::pair<std::string, std::string>, std::map<int, double>> e;
  for (const auto& row : read_csv(dir + "/errors.csv", kErrorColumns)) {
    const double rel = num(row, "rel_sq_err");
    EXPECT_NEAR(num(row, "rel_err"), std::sqrt(rel), 1e-5 * std::sqrt(rel) + 1e-9);
    e[{row.at("method"), row.at("kind")}][std::stoi(row.at("layer"))] = rel;
  }
  return e;
}

std::string story_text(const std::string& dir) {
  const std::string text =
      "Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her "
      "friends. One day, Lily saw a big red ball under a tree. She wanted to play with it, but it was too high. "
      "Lily asked her mom for help. Her mom smiled and said, \"Let's get the ball together.\" They got the ball "
      "and played all day. Lily was very happy. She said, \"Thank you, mom!\" Her mom gave her a big hug.\n"
      "Once upon a time, there was a small dog named Max. Max liked to run and jump. One day, Max found a shiny "
      "stone in the garden. He took it to his friend, the cat. The cat looked at the stone and said, \"It is "
      "very pretty!\" Max and the cat played with the stone until the sun went down.\n";
  std::string all;
  for (int i = 0; i < 4; ++i) all += text;
  test::write_file(dir + "/story.txt", all);
  return dir + "/story.txt";
}

TEST(AnalyzeCli, Stories260KWritesReportCsvsAndPlots) {
  const std::string dir = test::temp_dir();
  const std::string text = story_text(dir);
  const std::string model = "models/stories260K/stories260K.bin";
  Result r = run("calibrate -m " + model + " --text " + text + " --out " + dir +
                 "/s.cb --k pq:M=4,nbits=4 --v pq:M=4,nbits=4 --rotation none --k-norm none --v-norm none --samples 256 --ctx 128 -q");
  ASSERT_EQ(r.code, 0) << r.err;
  const std::string out = dir + "/analysis";
  r = run("analyze -m " + model + " --text " + text + " --codebook " + dir + "/s.cb --ctx 128 --samples 512 -o " + out +
          " -q");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_HAS(r.out, "wrote " + out + "/report.md");

  // Per channel: 5 layers x 3 kinds x 4 kv heads x 8 channels, every token counted.
  const auto stats = read_csv(out + "/stats.csv", kStatsColumns);
  ASSERT_EQ(stats.size(), 5u * 3 * 4 * 8);
  const double count = num(stats[0], "count");
  EXPECT_GT(count, 500);
  std::map<std::string, int> kinds;
  for (const auto& row : stats) {
    ++kinds[row.at("kind")];
    EXPECT_EQ(num(row, "count"), count);
    EXPECT_GT(num(row, "std"), 0.0);
    EXPECT_GE(num(row, "absmax"), std::fabs(num(row, "mean")));
    EXPECT_GE(num(row, "kurtosis"), 1.0 - 1e-9) << "Pearson kurtosis is at least 1";
    EXPECT_TRUE(row.at("outlier") == "0" || row.at("outlier") == "1");
  }
  EXPECT_EQ(kinds, (std::map<std::string, int>{{"k", 160}, {"k_pre", 160}, {"v", 160}}));
  EXPECT_EQ(read_csv(out + "/heads.csv", {"layer", "kv_head", "kind", "absmax", "absmax_channel", "median_absmax",
                                          "median_std", "median_kurtosis", "max_kurtosis", "outliers", "offset_channels", "channels"})
                .size(),
            5u * 3 * 4);

  const auto err = read_errors(out);
  for (const char* kind : {"k_pre", "k"}) {
    ASSERT_EQ(err.count({"kivi-4", kind}), 1u) << kind;
    ASSERT_EQ(err.at({"kivi-2", kind}).size(), 5u) << kind;
    for (int l = 0; l < 5; ++l) {
      const double e4 = err.at({"kivi-4", kind}).at(l), e2 = err.at({"kivi-2", kind}).at(l);
      EXPECT_GT(e4, 0.0);
      EXPECT_LT(e4, e2) << "kivi-4 must beat kivi-2, layer " << l << " " << kind;
      EXPECT_LT(e2, 0.5);
    }
  }
  for (const char* kind : {"k", "v"}) {
    ASSERT_EQ(err.at({"pq", kind}).size(), 5u) << kind;
    for (const auto& [l, e] : err.at({"pq", kind})) {
      EXPECT_GT(e, 0.0);
      EXPECT_LT(e, 0.5) << "a calibrated codebook is far better than none (error 1), layer " << l;
    }
  }
  EXPECT_EQ(err.count({"pq", "k_pre"}), 0u);
  EXPECT_EQ(err.count({"q8_0", "k"}), 0u) << "head_dim 8 is not a multiple of q8_0's 32-value blocks";

  const std::string report = test::slurp(out + "/report.md");
  EXPECT_HAS(report, "**Outlier channel**: a channel whose abs max exceeds 6 x the median channel abs max");
  EXPECT_HAS(report, "`q8_0`: the q8_0 KV format quantizes blocks of 32 values");
  EXPECT_HAS(report, "| layer | kivi-4 (5.00 b) | kivi-2 (3.00 b) | pq (4.00 b) |");
  if (have_gnuplot()) {
    for (const std::string& s : kSvgs) {
      const std::string path = out + "/plots/" + s + ".svg";
      ASSERT_TRUE(fs::exists(path)) << path;
      EXPECT_HAS(test::slurp(path), "<svg");
      EXPECT_HAS(report, "(plots/" + s + ".svg)");
    }
  } else {
    GTEST_LOG_(INFO) << "gnuplot is not installed: SVGs not checked";
  }
}

TEST(AnalyzeCli, WithoutGnuplotStillWritesReportAndCsvs) {
  const std::string dir = test::temp_dir();
  const std::string out = dir + "/a";
  const Result r = run("analyze -m models/stories260K/stories260K.bin --text " + story_text(dir) +
                       " --ctx 128 --samples 128 --gnuplot /nonexistent/gnuplot -o " + out + " -q");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_HAS(r.err, "plots skipped: '/nonexistent/gnuplot' was not found");
  EXPECT_HAS(test::slurp(out + "/report.md"), "Plots skipped: '/nonexistent/gnuplot' was not found");
  EXPECT_TRUE(fs::exists(out + "/stats.csv"));
  EXPECT_TRUE(fs::exists(out + "/errors.csv"));
  EXPECT_TRUE(fs::exists(out + "/plots/plots.gp"));
  EXPECT_FALSE(fs::exists(out + "/plots/heatmap_k.svg"));
}

TEST(AnalyzeCli, ClearErrors) {
  const std::string dir = test::temp_dir();
  Result r = run("analyze -m models/stories260K/stories260K.bin --text " + dir + "/missing.txt -o " + dir + "/o");
  EXPECT_EQ(r.code, 1);
  EXPECT_HAS(r.err, "does not exist");
  test::write_file(dir + "/short.txt", "Once upon a time.");
  r = run("analyze -m models/stories260K/stories260K.bin --text " + dir + "/short.txt -o " + dir + "/o");
  EXPECT_EQ(r.code, 1);
  EXPECT_HAS(r.err, "no window of 16 tokens or more");
}

TEST(AnalyzeCli, GutenbergBlockFormatsOrdered) {
  const std::string model = test::shared_dir() + "/models/gutenberg-23m";
  const std::string book = test::shared_dir() + "/text/calib/pg13505.txt";
  if (!fs::exists(model + "/config.json") || !fs::exists(book)) GTEST_SKIP() << "gutenberg-23m or its calibration text is absent";
  const std::string out = test::temp_dir() + "/g";
  const Result r =
      run("analyze -m " + model + " --text " + book + " --ctx 512 --max-tokens 1024 --samples 512 -o " + out + " -q");
  ASSERT_EQ(r.code, 0) << r.err;
  const auto err = read_errors(out);
  for (const char* kind : {"k_pre", "k", "v"}) {
    ASSERT_EQ(err.at({"q8_0", kind}).size(), 8u) << kind;
    for (int l = 0; l < 8; ++l) {
      const double q8 = err.at({"q8_0", kind}).at(l), q4 = err.at({"q4_0", kind}).at(l);
      EXPECT_GT(q8, 0.0);
      EXPECT_LT(q8, q4) << "q8_0 must beat q4_0, layer " << l << " " << kind;
      EXPECT_LT(q4, 0.2);
      EXPECT_LT(err.at({"kivi-4", kind}).at(l), err.at({"kivi-2", kind}).at(l)) << l << " " << kind;
    }
  }
}

}  // namespace
}  // namespace million
