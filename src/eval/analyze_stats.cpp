// Statistics for `million analyze` (see analyze_stats.h).
#include "eval/analyze_stats.h"

#include <algorithm>
#include <cmath>

#include "million/error.h"

namespace million {

void Moments::add(double x) {
  // Terriberry's online update of the central moment sums, one value at a time.
  const double n1 = static_cast<double>(n);
  ++n;
  const double nn = static_cast<double>(n);
  const double delta = x - mean;
  const double delta_n = delta / nn;
  const double delta_n2 = delta_n * delta_n;
  const double term1 = delta * delta_n * n1;
  mean += delta_n;
  m4 += term1 * delta_n2 * (nn * nn - 3 * nn + 3) + 6 * delta_n2 * m2 - 4 * delta_n * m3;
  m3 += term1 * delta_n * (nn - 2) - 3 * delta_n * m2;
  m2 += term1;
  absmax = std::max(absmax, std::fabs(x));
}

void Moments::merge(const Moments& o) {
  if (o.n == 0) return;
  if (n == 0) {
    *this = o;
    return;
  }
  const double na = static_cast<double>(n), nb = static_cast<double>(o.n);
  const double nx = na + nb;
  const double delta = o.mean - mean;
  const double d2 = delta * delta, d3 = d2 * delta, d4 = d2 * d2;
  const double new_m4 = m4 + o.m4 + d4 * na * nb * (na * na - na * nb + nb * nb) / (nx * nx * nx) +
                        6 * d2 * (na * na * o.m2 + nb * nb * m2) / (nx * nx) + 4 * delta * (na * o.m3 - nb * m3) / nx;
  const double new_m3 = m3 + o.m3 + d3 * na * nb * (na - nb) / (nx * nx) + 3 * delta * (na * o.m2 - nb * m2) / nx;
  const double new_m2 = m2 + o.m2 + d2 * na * nb / nx;
  mean += delta * nb / nx;
  m2 = new_m2;
  m3 = new_m3;
  m4 = new_m4;
  n += o.n;
  absmax = std::max(absmax, o.absmax);
}

double Moments::variance() const { return n > 0 ? m2 / static_cast<double>(n) : 0.0; }

double Moments::stddev() const { return std::sqrt(variance()); }

double Moments::kurtosis() const {
  if (n == 0 || m2 <= 0.0) return 0.0;
  return static_cast<double>(n) * m4 / (m2 * m2);
}

double median(std::vector<double> values) {
  if (values.empty()) return 0.0;
  const std::size_t mid = values.size() / 2;
  std::nth_element(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(mid), values.end());
  const double upper = values[mid];
  if (values.size() % 2 == 1) return upper;
  const double lower = *std::max_element(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(mid));
  return 0.5 * (lower + upper);
}

std::vector<bool> outlier_channels(const std::vector<double>& absmax, double factor) {
  const double med = median(absmax);
  std::vector<bool> out(absmax.size());
  for (std::size_t c = 0; c < absmax.size(); ++c) out[c] = absmax[c] > factor * med;
  return out;
}

void ErrorSum::add(const float* x, const float* x_hat, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(x[i]) - static_cast<double>(x_hat[i]);
    err2 += d * d;
    norm2 += static_cast<double>(x[i]) * static_cast<double>(x[i]);
  }
}

double ErrorSum::relative() const { return norm2 > 0.0 ? err2 / norm2 : 0.0; }

std::vector<std::int64_t> histogram(const std::vector<double>& values, int bins, double lo, double hi) {
  if (bins < 1 || !(lo < hi)) throw InvalidArgumentError("histogram: needs bins >= 1 and lo < hi");
  std::vector<std::int64_t> counts(static_cast<std::size_t>(bins), 0);
  const double width = (hi - lo) / bins;
  for (double v : values) {
    const double b = std::floor((v - lo) / width);
    const int i = b < 0 ? 0 : b >= bins ? bins - 1 : static_cast<int>(b);
    ++counts[static_cast<std::size_t>(i)];
  }
  return counts;
}

std::vector<double> uniform_grid(double lo, double hi, int levels) {
  if (levels < 2) throw InvalidArgumentError("uniform_grid: needs at least 2 levels");
  std::vector<double> g(static_cast<std::size_t>(levels));
  for (int i = 0; i < levels; ++i) g[static_cast<std::size_t>(i)] = lo + (hi - lo) * i / (levels - 1);
  return g;
}

}  // namespace million
