// The statistics `million analyze` reports, as small testable functions: streaming moments of
// one channel (mean, std, kurtosis, absolute max) that merge exactly, medians, the outlier-channel
// rule, relative reconstruction error sums, histograms and uniform quantization grids.
// Not here: capturing K/V from a model (analyze_capture.h) or writing files (analyze_report.h).
#pragma once

#include <cstdint>
#include <vector>

namespace million {

/// Streaming central moments of one variable (Welford / Terriberry updates, in double, so a large
/// mean does not cancel the higher moments as raw power sums would).
struct Moments {
  std::int64_t n = 0;
  double mean = 0.0;
  double m2 = 0.0, m3 = 0.0, m4 = 0.0;  ///< sums of (x - mean)^2, ^3, ^4
  double absmax = 0.0;                  ///< max |x|

  void add(double x);
  /// As if every value `other` saw had been added here (Pebay's pairwise formulas).
  void merge(const Moments& other);
  /// Population variance m2 / n (0 when n == 0).
  double variance() const;
  double stddev() const;
  /// Pearson kurtosis m4 n / m2^2 (3 for a Gaussian, 1.8 for a uniform; not the excess); 0 when
  /// the variance is 0.
  double kurtosis() const;
};

/// Median of the values (mean of the two middle ones for an even count); 0 for none.
double median(std::vector<double> values);

/// The outlier-channel rule: channel c is an outlier when absmax[c] > factor * the median of
/// absmax over the channels (of one layer, kv head and kind).
std::vector<bool> outlier_channels(const std::vector<double>& absmax, double factor);

/// Sums for the relative reconstruction error sum ||x - x_hat||^2 / sum ||x||^2.
struct ErrorSum {
  double err2 = 0.0;   ///< sum of squared differences
  double norm2 = 0.0;  ///< sum of squared originals
  void add(const float* x, const float* x_hat, std::int64_t n);
  void merge(const ErrorSum& other) {
    err2 += other.err2;
    norm2 += other.norm2;
  }
  /// err2 / norm2 (0 when norm2 is 0).
  double relative() const;
};

/// Counts of values in `bins` equal bins over [lo, hi] (values outside are clamped into the end
/// bins). Needs bins >= 1 and lo < hi.
std::vector<std::int64_t> histogram(const std::vector<double>& values, int bins, double lo, double hi);

/// The `levels` points of an asymmetric uniform quantizer over [lo, hi]: lo + i (hi - lo) / (levels - 1).
std::vector<double> uniform_grid(double lo, double hi, int levels);

}  // namespace million
