// Writing the analysis: CSVs, gnuplot data and script, report.md (see analyze_report.h).
#include "eval/analyze_report.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>

#include "million/error.h"

namespace million {

namespace {

namespace fs = std::filesystem;

// A text file that reports write failures as IoError when closed.
class OutFile {
 public:
  explicit OutFile(const fs::path& path) : path_(path), out_(path) {
    if (!out_) throw IoError(fmt::format("cannot write '{}'", path.string()));
  }
  template <class... Args>
  void print(fmt::format_string<Args...> f, Args&&... args) {
    out_ << fmt::format(f, std::forward<Args>(args)...);
  }
  void close() {
    out_.close();
    if (!out_) throw IoError(fmt::format("writing '{}' failed (disk full?)", path_.string()));
  }

 private:
  fs::path path_;
  std::ofstream out_;
};

const AnalyzeKind kKinds[] = {AnalyzeKind::kKeyPreRope, AnalyzeKind::kKey, AnalyzeKind::kValue};

const char* kind_title(AnalyzeKind k) {
  switch (k) {
    case AnalyzeKind::kKeyPreRope: return "pre-RoPE keys";
    case AnalyzeKind::kKey: return "post-RoPE keys";
    case AnalyzeKind::kValue: return "values";
  }
  return "?";
}

// gnuplot single-quoted string: a quote is doubled.
std::string gp_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    out += c;
    if (c == '\'') out += '\'';
  }
  return out + "'";
}

// gnuplot double-quoted string (backslash escapes, so "\n" breaks a title into lines).
std::string gp_dquote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out + "\"";
}

std::vector<const MethodError*> applicable(const AnalysisResult& r, AnalyzeKind kind) {
  std::vector<const MethodError*> out;
  for (const MethodError& e : r.errors) {
    if (e.kind == kind && e.applicable) out.push_back(&e);
  }
  return out;
}

// Per (layer, kind) over its kv heads: outlier count, largest abs max / median abs max of a head,
// median and max channel kurtosis.
struct LayerSummary {
  int outliers = 0, channels = 0;
  double ratio = 0.0, median_kurtosis = 0.0, max_kurtosis = 0.0;
};

LayerSummary layer_summary(const AnalysisResult& r, int layer, AnalyzeKind kind) {
  LayerSummary s;
  for (const HeadSummary& h : r.heads) {
    if (h.layer != layer || h.kind != kind) continue;
    s.outliers += h.outliers;
    s.channels += h.channels;
    if (h.median_absmax > 0) s.ratio = std::max(s.ratio, h.absmax / h.median_absmax);
  }
  std::vector<double> kurt;
  for (const ChannelStats& c : r.channels) {
    if (c.layer == layer && c.kind == kind) kurt.push_back(c.moments.kurtosis());
  }
  s.median_kurtosis = median(kurt);
  s.max_kurtosis = kurt.empty() ? 0.0 : *std::max_element(kurt.begin(), kurt.end());
  return s;
}

void write_heatmap(const fs::path& plots, const AnalysisResult& r, AnalyzeKind kind, const AnalyzeReportInfo& info,
                   OutFile& gp, std::vector<std::string>& svgs) {
  const int H = r.shape.n_kv_heads, d = r.shape.head_dim, L = r.shape.n_layers;
  const std::string name = fmt::format("absmax_{}", analyze_kind_name(kind));
  // gnuplot `matrix`: row = layer * H + kv head, column = channel, each cell repeated kx times
  // along a row and ky times down: gnuplot's SVG embeds the image as a bitmap that viewers scale
  // with smoothing, which would blur neighbouring channels into each other at 1 pixel per cell
  // (`with image pixels` instead writes a polygon per cell: ~350 KB for 16 x 128 cells).
  const int rows = L * H;
  const int kx = std::max(1, (640 + d - 1) / d), ky = std::max(1, (320 + rows - 1) / rows);
  OutFile dat(plots / (name + ".dat"));
  double lo = INFINITY;
  std::vector<double> row(static_cast<std::size_t>(d));
  for (const ChannelStats& c : r.channels) {
    if (c.kind != kind) continue;
    row[static_cast<std::size_t>(c.channel)] = c.moments.absmax;
    lo = std::min(lo, c.moments.absmax);
    if (c.channel != d - 1) continue;
    std::string line;
    for (int ch = 0; ch < d; ++ch) {
      const std::string v = fmt::format("{:.4g}", row[static_cast<std::size_t>(ch)]);
      for (int i = 0; i < kx; ++i) line += (line.empty() ? "" : " ") + v;
    }
    for (int i = 0; i < ky; ++i) dat.print("{}\n", line);
  }
  dat.close();
  std::string ytics;
  const int step = std::max(1, L / 16);  // at most ~16 labels
  for (int l = 0; l < L; l += step) ytics += fmt::format("{}\"{}\" {:.1f}", ytics.empty() ? "" : ", ", l, l * H + (H - 1) / 2.0);
  const std::string svg = fmt::format("plots/heatmap_{}.svg", analyze_kind_name(kind));
  gp.print("\n# {}: channel abs max per (layer, kv head)\n", kind_title(kind));
  gp.print("reset\nset terminal svg size 1000,{} dynamic noenhanced font 'sans,12' background rgb 'white'\n",
           std::clamp(140 + 12 * L * H, 360, 900));
  gp.print("set output {}\n", gp_quote(fmt::format("heatmap_{}.svg", analyze_kind_name(kind))));
  gp.print("set title {}\n", gp_quote(fmt::format("{}: per-channel abs max over {} tokens ({}; rows: layer x {} kv "
                                                  "head{}, layer 0 at the bottom)",
                                                  kind_title(kind), r.tokens, fs::path(info.model).filename().string(), H,
                                                  H > 1 ? "s" : "")));
  gp.print("set xlabel 'channel'\nset ylabel 'layer'\nset cblabel 'abs max{}'\nset format cb '%g'\n", lo > 0 ? " (log scale)" : "");
  gp.print("set xrange [-0.5:{}]\nset yrange [-0.5:{}]\nset ytics ({})\n", d - 0.5, L * H - 0.5, ytics);
  if (lo > 0) gp.print("set logscale cb 2\nset cbtics 2\n");  // a label at every factor 2
  gp.print("set palette defined (0 '#0d0887', 1 '#7e03a8', 2 '#cc4778', 3 '#f89540', 4 '#f0f921')\n");
  if (H > 1) {
    for (int l = 1; l < L; ++l) gp.print("set arrow from -0.5,{} to {},{} nohead lc rgb 'white' lw 0.5 front\n", l * H - 0.5, d - 0.5, l * H - 0.5);
  }
  gp.print("plot {} matrix using (($1 + 0.5) / {} - 0.5):(($2 + 0.5) / {} - 0.5):3 with image notitle\n",
           gp_quote(name + ".dat"), kx, ky);
  svgs.push_back(svg);
}

void write_error_plot(const fs::path& plots, const AnalysisResult& r, AnalyzeKind kind, const AnalyzeReportInfo& info,
                      OutFile& gp, std::vector<std::string>& svgs) {
  const std::vector<const MethodError*> ms = applicable(r, kind);
  if (ms.empty()) return;
  const std::string name = fmt::format("errors_{}", analyze_kind_name(kind));
  OutFile dat(plots / (name + ".dat"));
  dat.print("layer");
  for (const MethodError* m : ms) dat.print(" \"{} ({:.2f} b)\"", m->method, m->bits_per_element);  // quoted: a key title
  dat.print("\n");
  bool positive = true;
  for (int l = 0; l < r.shape.n_layers; ++l) {
    dat.print("{}", l);
    for (const MethodError* m : ms) {
      dat.print(" {:.6g}", m->rel_sq[static_cast<std::size_t>(l)]);
      positive = positive && m->rel_sq[static_cast<std::size_t>(l)] > 0;
    }
    dat.print("\n");
  }
  dat.close();
  gp.print("\n# {}: relative reconstruction error per layer and cache variant\n", kind_title(kind));
  gp.print("reset\nset terminal svg size 900,500 dynamic noenhanced font 'sans,12' background rgb 'white'\n");
  gp.print("set output {}\n", gp_quote(name + ".svg"));
  gp.print("set title {}\n", gp_quote(fmt::format("{}: relative error sum|x - x^|^2 / sum|x|^2 per layer ({}, {} sampled "
                                                  "tokens)",
                                                  kind_title(kind), fs::path(info.model).filename().string(), r.run_tokens)));
  gp.print("set xlabel 'layer'\nset ylabel 'relative squared error{}'\n", positive ? " (log scale)" : "");
  if (positive) gp.print("set logscale y\nset format y '%g'\n");
  gp.print("set xtics 1\nset xrange [-0.5:{}]\nset grid ytics\nset key outside right top\n", r.shape.n_layers - 0.5);
  gp.print("plot for [i=2:{}] {} using 1:i with linespoints lw 2 pt 7 title columnheader(i)\n", ms.size() + 1,
           gp_quote(name + ".dat"));
  svgs.push_back("plots/" + name + ".svg");
}

void write_histogram(const fs::path& plots, const AnalysisResult& r, const AnalyzeReportInfo& info, OutFile& gp,
                     std::vector<std::string>& svgs) {
  const ChannelSample& s = r.sample;
  if (s.values.size() < 2) return;
  const auto [lo_it, hi_it] = std::minmax_element(s.values.begin(), s.values.end());
  double lo = *lo_it, hi = *hi_it;
  for (double c : s.pq_centroids) {
    lo = std::min(lo, c);
    hi = std::max(hi, c);
  }
  if (!(lo < hi)) return;
  const int bins = 80;
  const std::vector<std::int64_t> counts = histogram(s.values, bins, lo, hi);
  const double width = (hi - lo) / bins;
  OutFile hist(plots / "hist.dat");
  std::int64_t top = 1;
  for (int b = 0; b < bins; ++b) {
    hist.print("{:.6g} {}\n", lo + (b + 0.5) * width, counts[static_cast<std::size_t>(b)]);
    top = std::max(top, counts[static_cast<std::size_t>(b)]);
  }
  hist.close();
  OutFile grid(plots / "grid.dat");
  for (double g : s.uniform_grid) grid.print("{:.6g}\n", g);
  grid.close();
  OutFile cents(plots / "centroids.dat");
  for (double c : s.pq_centroids) cents.print("{:.6g}\n", c);
  cents.close();
  const Moments& m = r.channels[static_cast<std::size_t>(
      ((s.layer * kAnalyzeKinds + static_cast<int>(s.kind)) * r.shape.n_kv_heads + s.kv_head) * r.shape.head_dim + s.channel)].moments;
  gp.print("\n# one key channel: histogram, 4-bit uniform grid, PQ centroids\n");
  gp.print("reset\nset terminal svg size 900,500 dynamic noenhanced font 'sans,12' background rgb 'white'\n");
  gp.print("set output 'hist_k_channel.svg'\n");
  gp.print("set title {}\n",
           gp_dquote(fmt::format("post-RoPE key, layer {} kv head {} channel {} ({}): {} sampled tokens, kurtosis {:.1f}\n"
                                "red: 16-level uniform grid over [min, max]; blue: PQ centroid coordinates{}",
                                s.layer, s.kv_head, s.channel, fs::path(info.model).filename().string(), s.values.size(),
                                m.kurtosis(), s.pq_centroids.empty() ? " (" + s.pq_note + ")" : "")));
  gp.print("set xlabel 'value'\nset ylabel 'tokens per bin'\nset yrange [0:{}]\nset style fill solid 0.5 noborder\n",
           static_cast<double>(top) * 1.4);  // room for the key above the grid lines
  gp.print("set key top right opaque box\n");
  std::string plot = fmt::format("plot 'hist.dat' using 1:2:({:.6g}) with boxes lc rgb '#555555' title 'histogram ({} bins)'",
                                 width, bins);
  plot += fmt::format(", 'grid.dat' using 1:(0):(0):({}) with vectors nohead lc rgb '#d62728' lw 1.5 title 'uniform 4-bit grid'",
                      static_cast<double>(top) * 1.05);
  if (!s.pq_centroids.empty()) {
    plot += fmt::format(", 'centroids.dat' using 1:(0):(0):({}) with vectors nohead lc rgb '#1f77b4' lw 0.7 "
                        "title 'PQ centroids ({})'",
                        static_cast<double>(top) * 0.5, s.pq_centroids.size());
  }
  gp.print("{}\n", plot);
  svgs.push_back("plots/hist_k_channel.svg");
}

std::string fmt_err(double v) { return fmt::format("{:.3g}", v); }

}  // namespace

std::vector<std::string> write_analysis_data(const std::string& dir, const AnalysisResult& r, const AnalyzeReportInfo& info) {
  const fs::path root(dir), plots = root / "plots";
  std::error_code ec;
  fs::create_directories(plots, ec);
  if (ec) throw IoError(fmt::format("cannot create '{}': {}", plots.string(), ec.message()));

  OutFile stats(root / "stats.csv");
  stats.print("layer,kv_head,kind,channel,count,mean,std,absmax,kurtosis,outlier\n");
  for (const ChannelStats& c : r.channels) {
    stats.print("{},{},{},{},{},{:.6g},{:.6g},{:.6g},{:.6g},{}\n", c.layer, c.kv_head, analyze_kind_name(c.kind), c.channel,
                c.moments.n, c.moments.mean, c.moments.stddev(), c.moments.absmax, c.moments.kurtosis(), c.outlier ? 1 : 0);
  }
  stats.close();

  OutFile heads(root / "heads.csv");
  heads.print("layer,kv_head,kind,absmax,absmax_channel,median_absmax,median_std,median_kurtosis,max_kurtosis,"
              "outliers,offset_channels,channels\n");
  for (const HeadSummary& h : r.heads) {
    heads.print("{},{},{},{:.6g},{},{:.6g},{:.6g},{:.6g},{:.6g},{},{},{}\n", h.layer, h.kv_head, analyze_kind_name(h.kind),
                h.absmax, h.absmax_channel, h.median_absmax, h.median_std, h.median_kurtosis, h.max_kurtosis, h.outliers,
                h.offset_channels, h.channels);
  }
  heads.close();

  OutFile errors(root / "errors.csv");
  errors.print("layer,kind,method,bits_per_element,rel_sq_err,rel_err\n");
  for (const MethodError& e : r.errors) {
    if (!e.applicable) continue;
    for (std::size_t l = 0; l < e.rel_sq.size(); ++l) {
      errors.print("{},{},{},{:.4g},{:.6g},{:.6g}\n", l, analyze_kind_name(e.kind), e.method, e.bits_per_element, e.rel_sq[l],
                   std::sqrt(e.rel_sq[l]));
    }
  }
  errors.close();

  std::vector<std::string> svgs;
  OutFile gp(plots / "plots.gp");
  gp.print("# gnuplot script written by `million analyze` ({}); run it in this directory: gnuplot plots.gp\n", info.model);
  for (AnalyzeKind k : kKinds) write_heatmap(plots, r, k, info, gp, svgs);
  for (AnalyzeKind k : kKinds) write_error_plot(plots, r, k, info, gp, svgs);
  write_histogram(plots, r, info, gp, svgs);
  gp.close();
  return svgs;
}

void write_analysis_report(const std::string& dir, const AnalysisResult& r, const AnalyzeReportInfo& info,
                           const std::vector<std::string>& plots, const std::string& plots_note) {
  OutFile md(fs::path(dir) / "report.md");
  const int H = r.shape.n_kv_heads, d = r.shape.head_dim, L = r.shape.n_layers;
  md.print("# K/V analysis: {}\n\n", fs::path(info.model).filename().string());
  md.print("Written by `million analyze` (`{}`).\n\n", info.command);
  md.print("- model: `{}` ({} layers, {} kv heads, head_dim {})\n", info.model, L, H, d);
  md.print("- text: {}; {} tokens in {} windows of at most {} tokens\n", info.text, r.tokens, r.windows, r.ctx);
  md.print("- statistics: every token of every window (position 0 included); errors: {} tokens per layer in "
           "sampled runs of {} consecutive tokens (the same text positions in every layer)\n",
           r.run_tokens, kRunTokens);
  md.print("- codebook: {}\n", info.codebook.empty() ? "none (no `pq` rows; pass `--codebook FILE`)" : "`" + info.codebook + "`");
  md.print("- time: capture {:.1f} s, errors {:.1f} s\n\n", r.capture_seconds, r.error_seconds);

  md.print("## Definitions\n\n");
  md.print("- Per channel (one coordinate of one (layer, kv head) vector) over all tokens: abs max, standard deviation, "
           "Pearson kurtosis E[(x - mean)^4] / std^4 (3 for a Gaussian, 1.8 for a uniform distribution; heavy tails "
           "give more).\n");
  md.print("- **Outlier channel**: a channel whose abs max exceeds {:g} x the median channel abs max of the same "
           "(layer, kv head, kind) (`--outlier-factor`).\n",
           r.outlier_factor);
  md.print("- **Relative error** of a cache variant: sum ||x - x^||^2 / sum ||x||^2 over the sampled tokens of all kv "
           "heads of a layer, x^ = the variant's store decode(append(x)); `errors.csv` also has its square root "
           "(what `million calibrate` prints). Every sampled vector is coded: the exact window and sinks the caches "
           "keep by default are not modelled (stress mode, `window=0`).\n");
  md.print("- KIVI keys are quantized per channel over groups of 32 consecutive tokens (four per sampled run); a "
           "normalised `pq` codebook's channel-groups of 128 tokens are one run each. "
           "Pre-RoPE keys (`k_pre`) are not what the caches store (they store post-RoPE keys); their errors show what "
           "the same quantizer would do before the rotation.\n");
  if (!info.codebook.empty()) {
    md.print("- `pq` uses the codebook file's per-(layer, kv head) codebooks with f16-rounded centroids, as the `pq` "
             "cache does. If the codebook was calibrated on the same text, its errors are partly in-sample.\n");
  }
  md.print("\nFiles: `stats.csv` (per channel), `heads.csv` (per layer, kv head, kind), `errors.csv` (per layer, kind, "
           "variant), `plots/` (SVGs, their data and `plots.gp`).\n\n");

  md.print("## Channel statistics per layer (all kv heads)\n\n");
  md.print("outliers: outlier channels / channels; ratio: largest channel abs max / median channel abs max (the largest "
           "over the layer's heads); kurtosis: median and max over channels.\n\n");
  md.print("| layer | pre-RoPE K outliers | ratio | kurtosis med / max | post-RoPE K outliers | ratio | kurtosis med / max "
           "| V outliers | ratio | kurtosis med / max |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  int tot_out[kAnalyzeKinds] = {0, 0, 0}, tot_ch[kAnalyzeKinds] = {0, 0, 0}, tot_off[kAnalyzeKinds] = {0, 0, 0};
  for (const HeadSummary& h : r.heads) tot_off[static_cast<int>(h.kind)] += h.offset_channels;
  for (int l = 0; l < L; ++l) {
    md.print("| {} ", l);
    for (AnalyzeKind k : kKinds) {
      const LayerSummary s = layer_summary(r, l, k);
      tot_out[static_cast<int>(k)] += s.outliers;
      tot_ch[static_cast<int>(k)] += s.channels;
      md.print("| {} / {} | {:.1f} | {:.1f} / {:.1f} ", s.outliers, s.channels, s.ratio, s.median_kurtosis, s.max_kurtosis);
    }
    md.print("|\n");
  }
  md.print("\nOutlier channels in all layers: ");
  for (AnalyzeKind k : kKinds) {
    const int i = static_cast<int>(k);
    md.print("{} {} / {} ({:.1f}%){}", kind_title(k), tot_out[i], tot_ch[i],
             tot_ch[i] > 0 ? 100.0 * tot_out[i] / tot_ch[i] : 0.0, k == AnalyzeKind::kValue ? ".\n" : "; ");
  }
  md.print("Offset channels (|mean| > std: the channel sits away from 0 for most tokens) in all layers: ");
  for (AnalyzeKind k : kKinds) {
    const int i = static_cast<int>(k);
    md.print("{} {} / {} ({:.1f}%){}", kind_title(k), tot_off[i], tot_ch[i],
             tot_ch[i] > 0 ? 100.0 * tot_off[i] / tot_ch[i] : 0.0, k == AnalyzeKind::kValue ? ".\n\n" : "; ");
  }
  md.print("Per (layer, kv head): `heads.csv`; per channel: `stats.csv`.\n\n");

  md.print("## Relative reconstruction error per layer\n\n");
  for (AnalyzeKind k : kKinds) {
    const std::vector<const MethodError*> ms = applicable(r, k);
    md.print("### {}\n\n", kind_title(k));
    if (ms.empty()) {
      md.print("No variant applies.\n\n");
    } else {
      md.print("| layer |");
      for (const MethodError* m : ms) md.print(" {} ({:.2f} b) |", m->method, m->bits_per_element);
      md.print("\n|---:|");
      for (std::size_t i = 0; i < ms.size(); ++i) md.print("---:|");
      md.print("\n");
      std::vector<double> mean(ms.size(), 0.0);
      for (int l = 0; l < L; ++l) {
        md.print("| {} |", l);
        for (std::size_t i = 0; i < ms.size(); ++i) {
          md.print(" {} |", fmt_err(ms[i]->rel_sq[static_cast<std::size_t>(l)]));
          mean[i] += ms[i]->rel_sq[static_cast<std::size_t>(l)] / L;
        }
        md.print("\n");
      }
      md.print("| mean |");
      for (double m : mean) md.print(" {} |", fmt_err(m));
      md.print("\n\n");
    }
  }
  // Each variant that could not run, once, with the kinds it misses and the store's reason.
  std::vector<std::pair<std::string, std::string>> missing;  // (method + reason, kinds)
  for (const MethodError& e : r.errors) {
    if (e.applicable) continue;
    const std::string key = fmt::format("`{}`: {}", e.method, e.why_not);
    auto it = std::find_if(missing.begin(), missing.end(), [&](const auto& m) { return m.first == key; });
    if (it == missing.end()) {
      missing.emplace_back(key, kind_title(e.kind));
    } else {
      it->second += std::string(", ") + kind_title(e.kind);
    }
  }
  if (!missing.empty()) {
    md.print("Not measured:\n\n");
    for (const auto& [what, kinds] : missing) md.print("- {} ({})\n", what, kinds);
    md.print("\n");
  }

  md.print("## Plots\n\n");
  if (!plots_note.empty()) {
    md.print("Plots skipped: {}. The data and script are in `plots/` (`cd plots && gnuplot plots.gp`).\n", plots_note);
  } else {
    for (const std::string& p : plots) md.print("![{}]({})\n\n", fs::path(p).stem().string(), p);
    const ChannelSample& s = r.sample;
    md.print("`hist_k_channel.svg`: post-RoPE key channel {} of layer {}, kv head {} (the head whose largest channel "
             "stands out most from its median channel), over the sampled tokens; red lines: the 16 levels of a 4-bit "
             "uniform quantizer over the channel's [min, max]; blue lines: {}.\n",
             s.channel, s.layer, s.kv_head,
             s.pq_centroids.empty() ? "PQ centroids not drawn (" + s.pq_note + ")"
                                    : "this channel's coordinate of the PQ centroids of its subspace");
  }
  md.close();
}

}  // namespace million
