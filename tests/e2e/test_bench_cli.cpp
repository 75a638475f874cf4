// `million bench` run as a user runs it, on the bundled stories260K model (trained context 512):
// tiny depths (0, 256 and 1024, the last beyond the trained context) for f32, f16 and
// kivi-4:group=8 (q8_0 and the default kivi-4 need head_dim >= 32; stories260K has 8) in
// markdown, CSV and JSON; pq with a codebook calibrated on the spot; with gutenberg-23m present,
// q8_0 and kivi-4 there as well. Each output must parse (JSON fields and types, CSV header and row count,
// markdown table rows), speeds and sizes must be positive and finite, rows past the trained
// context must be marked synthetic, and --out must write what stdout shows. Also: --fill model,
// and one-line errors for a cache that cannot fit in memory and for bad options. Speeds
// themselves are not checked (machine-dependent). A few seconds in all.
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/cli_run.h"
#include "common/test_paths.h"
#include "common/test_util.h"

namespace million {
namespace {

using Result = test::CliResult;
Result run(const std::string& args) { return test::run_cli(MILLION_BIN, args); }

// 3 depths x 3 caches, one thread, one repetition, small prefill and decode.
const std::string kSweep =
    "bench -m models/stories260K/stories260K.bin -d 0,256,1024 -t 1 -p 32 -n 8 -r 1 --kv f32 f16 kivi-4:group=8 -q";
constexpr int kRows = 9;
constexpr int kTrained = 512;

std::vector<std::string> lines(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

// RFC 4180 fields of one line (quoted fields may hold commas and doubled quotes).
std::vector<std::string> csv_fields(const std::string& line) {
  std::vector<std::string> out(1);
  bool quoted = false;
  for (std::size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (quoted) {
      if (c == '"' && i + 1 < line.size() && line[i + 1] == '"') {
        out.back() += '"';
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        out.back() += c;
      }
    } else if (c == '"') {
      quoted = true;
    } else if (c == ',') {
      out.emplace_back();
    } else {
      out.back() += c;
    }
  }
  return out;
}

bool positive_finite(double x) { return std::isfinite(x) && x > 0; }

TEST(BenchCli, JsonRowsHaveEveryFieldWithItsType) {
  const Result r = run(kSweep + " -o json");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.err, "") << "-q keeps stderr quiet";
  nlohmann::json j;
  ASSERT_NO_THROW(j = nlohmann::json::parse(r.out)) << r.out;
  ASSERT_TRUE(j.is_array());
  ASSERT_EQ(j.size(), static_cast<std::size_t>(kRows)) << r.out;
  for (const auto& row : j) {
    for (const char* f : {"commit", "compiler", "simd", "machine", "time", "model", "weights", "kv", "fill"}) {
      ASSERT_TRUE(row.contains(f) && row[f].is_string() && !row[f].get<std::string>().empty()) << f << ": " << row;
    }
    for (const char* f : {"threads", "depth", "trained_ctx", "n_prompt", "n_gen", "reps"}) {
      ASSERT_TRUE(row.contains(f) && row[f].is_number_integer()) << f << ": " << row;
    }
    for (const char* f : {"kv_bits_per_element", "kv_bytes_per_token", "weight_bytes", "prefill_tok_s_mean",
                          "decode_tok_s_mean", "decode_ms_per_tok", "decode_gb_s"}) {
      ASSERT_TRUE(row.contains(f) && row[f].is_number()) << f << ": " << row;
      EXPECT_TRUE(positive_finite(row[f].get<double>())) << f << ": " << row;
    }
    for (const char* f : {"prefill_tok_s_sd", "decode_tok_s_sd"}) {
      ASSERT_TRUE(row.contains(f) && row[f].is_number()) << f;
      EXPECT_EQ(row[f].get<double>(), 0.0) << "one repetition has no spread";
    }
    ASSERT_TRUE(row["beyond_trained_ctx"].is_boolean());
    EXPECT_EQ(row["threads"], 1);
    EXPECT_EQ(row["n_prompt"], 32);
    EXPECT_EQ(row["n_gen"], 8);
    EXPECT_EQ(row["trained_ctx"], kTrained);
    const int depth = row["depth"];
    EXPECT_EQ(row["beyond_trained_ctx"].get<bool>(), depth + 32 > kTrained) << row;
    EXPECT_EQ(row["fill"], depth == 0 ? "none" : "synthetic") << "synthetic is the default fill: " << row;
    EXPECT_NE(row["compiler"].get<std::string>().find_first_of("0123456789"), std::string::npos) << "a version";
  }
  EXPECT_EQ(j[0]["kv"], "f32");
  EXPECT_EQ(j[3]["kv"], "f16");
  EXPECT_EQ(j[6]["kv"], "kivi-4:group=8");
  // Smaller formats store fewer bytes per token than f32.
  EXPECT_EQ(j[3]["kv_bytes_per_token"].get<double>() * 2, j[0]["kv_bytes_per_token"].get<double>());
  // KIVI's exact window is amortised over the cache's capacity: smaller than f16 only when deep.
  EXPECT_LT(j[8]["kv_bytes_per_token"].get<double>(), j[5]["kv_bytes_per_token"].get<double>());
  EXPECT_EQ(j[2]["depth"], 1024);
  EXPECT_TRUE(j[2]["beyond_trained_ctx"].get<bool>());
}

TEST(BenchCli, CsvHasAHeaderAndOneRowPerMeasurementAlsoInTheOutFile) {
  const std::string file = test::temp_dir() + "/bench.csv";
  const Result r = run(kSweep + " -o csv --out " + file);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(test::slurp(file), r.out) << "--out writes what stdout shows";
  const std::vector<std::string> ls = lines(r.out);
  ASSERT_EQ(ls.size(), static_cast<std::size_t>(kRows + 1)) << r.out;
  const std::vector<std::string> head = csv_fields(ls[0]);
  const auto col = [&](const std::string& name) {
    const auto it = std::find(head.begin(), head.end(), name);
    EXPECT_NE(it, head.end()) << name;
    return static_cast<std::size_t>(it - head.begin());
  };
  const std::size_t depth = col("depth"), fill = col("fill"), beyond = col("beyond_trained_ctx");
  for (std::size_t i = 1; i < ls.size(); ++i) {
    const std::vector<std::string> f = csv_fields(ls[i]);
    ASSERT_EQ(f.size(), head.size()) << ls[i];
    for (const char* name : {"prefill_tok_s_mean", "decode_tok_s_mean", "kv_bytes_per_token", "decode_gb_s"}) {
      EXPECT_TRUE(positive_finite(std::stod(f[col(name)]))) << name << ": " << ls[i];
    }
    for (const char* name : {"commit", "compiler", "simd", "machine", "threads"}) {
      EXPECT_FALSE(f[col(name)].empty()) << name << ": " << ls[i];
    }
    const bool past = std::stoi(f[depth]) + 32 > kTrained;
    EXPECT_EQ(f[beyond], past ? "true" : "false") << ls[i];
    if (past) {
      EXPECT_EQ(f[fill], "synthetic") << ls[i];
    }
  }
}

TEST(BenchCli, MarkdownTableMarksRowsBeyondTheTrainedContext) {
  const Result r = run(kSweep);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_HAS(r.out, "trained context 512");
  EXPECT_HAS(r.out, "beyond the trained context");
  std::vector<std::vector<std::string>> rows;
  for (const std::string& l : lines(r.out)) {
    if (l.rfind("| ", 0) != 0 || l.rfind("| weights", 0) == 0) continue;
    std::vector<std::string> cells;
    std::istringstream in(l.substr(1));
    for (std::string c; std::getline(in, c, '|');) cells.push_back(c.substr(1, c.size() - 2));  // " x " -> "x"
    rows.push_back(cells);
  }
  ASSERT_EQ(rows.size(), static_cast<std::size_t>(kRows)) << r.out;
  for (const auto& c : rows) {
    ASSERT_EQ(c.size(), 10u);
    const bool past = c[3].back() == '*';
    EXPECT_EQ(past, std::stoi(c[3]) + 32 > kTrained) << c[3];
    if (past) {
      EXPECT_EQ(c[4], "synthetic");
    }
    EXPECT_TRUE(positive_finite(std::stod(c[5]))) << "prefill " << c[5];  // "mean ± sd"
    EXPECT_HAS(c[5], "±");
    EXPECT_TRUE(positive_finite(std::stod(c[6]))) << "decode " << c[6];
    EXPECT_TRUE(positive_finite(std::stod(c[8]))) << "KV bytes/token " << c[8];
    EXPECT_TRUE(positive_finite(std::stod(c[9]))) << "GB/s " << c[9];
  }
}

TEST(BenchCli, ModelFillWithinTheTrainedContextAndDecodeOnly) {
  const Result r = run("bench -d 256,1024 -t 1 -p 0 -n 4 -r 2 --kv f16 --fill model -o json -q");
  ASSERT_EQ(r.code, 0) << r.err;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j.size(), 2u);
  EXPECT_EQ(j[0]["fill"], "model");
  EXPECT_EQ(j[1]["fill"], "synthetic") << "beyond the trained context the model cannot fill";
  EXPECT_TRUE(j[0]["prefill_tok_s_mean"].is_null()) << "-p 0 times no prefill";
  EXPECT_TRUE(positive_finite(j[1]["decode_tok_s_mean"].get<double>()));
}

TEST(BenchCli, PqCacheWithACalibratedCodebook) {
  const std::string cb = test::temp_dir() + "/stories.cb";
  Result r = run("calibrate -m models/stories260K/stories260K.bin --text models/stories260K/README.md --out " + cb +
                 " --k pq:M=4,nbits=4 --v pq:M=4,nbits=4 --rotation none --k-norm none --v-norm none --samples 256 --ctx 128 -q");
  ASSERT_EQ(r.code, 0) << r.err;
  r = run("bench -d 0,1024 -t 1 -p 16 -n 4 -r 1 --kv pq pq:window=0 --codebook " + cb + " -o csv -q");
  ASSERT_EQ(r.code, 0) << r.err;
  const std::vector<std::string> ls = lines(r.out);
  ASSERT_EQ(ls.size(), 5u) << r.out;
  const std::vector<std::string> head = csv_fields(ls[0]);
  const auto col = [&](const std::string& name) {
    return static_cast<std::size_t>(std::find(head.begin(), head.end(), name) - head.begin());
  };
  for (std::size_t i = 1; i < ls.size(); ++i) {
    const std::vector<std::string> f = csv_fields(ls[i]);
    ASSERT_EQ(f.size(), head.size()) << ls[i];
    EXPECT_TRUE(positive_finite(std::stod(f[col("decode_tok_s_mean")]))) << ls[i];
    EXPECT_TRUE(positive_finite(std::stod(f[col("prefill_tok_s_mean")]))) << ls[i];
  }
  // Stress mode: 4 codes of 4 bits per 8-dim head for K and V, one byte each -> 4 bits per element.
  EXPECT_EQ(std::stod(csv_fields(ls[4])[col("kv_bits_per_element")]), 4.0) << ls[4];
  EXPECT_EQ(csv_fields(ls[4])[col("kv")], "pq:window=0");
}

TEST(BenchCli, GutenbergQuantizedCachesBeyondTheTrainedContext) {
  const std::string model = test::shared_dir() + "/models/gutenberg-23m";
  if (!std::filesystem::exists(model + "/config.json")) GTEST_SKIP() << "gutenberg-23m not found at " << model;
  const Result r = run("bench -m '" + model + "' -d 0,4100 -t 1 -p 16 -n 4 -r 1 --kv q8_0 kivi-4 -o json -q");
  ASSERT_EQ(r.code, 0) << r.err;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j.size(), 4u) << r.out;
  for (const auto& row : j) {
    EXPECT_EQ(row["trained_ctx"], 4096);
    EXPECT_EQ(row["weights"], "bf16");
    EXPECT_TRUE(positive_finite(row["prefill_tok_s_mean"].get<double>())) << row;
    EXPECT_TRUE(positive_finite(row["decode_tok_s_mean"].get<double>())) << row;
    EXPECT_TRUE(positive_finite(row["decode_gb_s"].get<double>())) << row;
  }
  // Bits per element amortise the exact window over the capacity: below f16 once deep.
  EXPECT_LT(j[1]["kv_bits_per_element"].get<double>(), 16.0) << j[1];
  EXPECT_LT(j[3]["kv_bits_per_element"].get<double>(), 16.0) << j[3];
  EXPECT_EQ(j[1]["depth"], 4100);
  EXPECT_EQ(j[1]["fill"], "synthetic");
  EXPECT_TRUE(j[1]["beyond_trained_ctx"].get<bool>());
  EXPECT_FALSE(j[0]["beyond_trained_ctx"].get<bool>());
  EXPECT_EQ(j[2]["kv"], "kivi-4");
}

TEST(BenchCli, ErrorsAreClearAndExitWithOne) {
  Result r = run("bench -d 4000000000 -t 1 -p 8 -n 2 -r 1 --kv f32");
  EXPECT_EQ(r.code, 1);
  EXPECT_HAS(r.err, "KV cache at depth 4000000000");
  EXPECT_HAS(r.err, "available");
  EXPECT_EQ(r.out, "") << "refused before anything is measured";

  r = run("bench -d 16 -p 0 -n 0");
  EXPECT_EQ(r.code, 1);
  EXPECT_HAS(r.err, "nothing to time");

  r = run("bench -d 16 --kv q9");
  EXPECT_EQ(r.code, 1);
  EXPECT_HAS(r.err, "unknown KV cache 'q9'");

  r = run("bench -d 16 --fill magic");
  EXPECT_NE(r.code, 0);
  r = run("bench -d 16 -o xml");
  EXPECT_NE(r.code, 0);

  // generate still refuses contexts beyond the trained one: bench's allowance is its own.
  r = run("generate --ctx 1000");
  EXPECT_EQ(r.code, 1);
  EXPECT_HAS(r.err, "maximum context");
}

}  // namespace
}  // namespace million
