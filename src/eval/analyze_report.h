// Files of `million analyze`: stats.csv (per channel), heads.csv (per layer, kv head, kind),
// errors.csv (per layer, kind, cache variant), the gnuplot data + script under plots/, and
// report.md. Not here: running gnuplot (the command does, so library code starts no processes).
#pragma once

#include <string>
#include <vector>

#include "eval/analyze.h"

namespace million {

struct AnalyzeReportInfo {
  std::string model;     ///< model path as given
  std::string text;      ///< what text ran (files, tokens)
  std::string codebook;  ///< codebook path, or empty
  std::string command;   ///< the command line, for reproducing
};

/// Writes dir/stats.csv, dir/heads.csv, dir/errors.csv and dir/plots/{*.dat, plots.gp}; creates
/// the directories. Returns the SVG names (relative to dir) the script draws. Throws IoError when
/// a file cannot be written.
std::vector<std::string> write_analysis_data(const std::string& dir, const AnalysisResult& result,
                                             const AnalyzeReportInfo& info);

/// Writes dir/report.md. `plots_note`: empty when the plots were drawn, else why they were not.
void write_analysis_report(const std::string& dir, const AnalysisResult& result, const AnalyzeReportInfo& info,
                           const std::vector<std::string>& plots, const std::string& plots_note);

}  // namespace million
