// PQConfig / granularity / rotation names and parsing, codebook-set indexing and validation.
#include "pq/codebook.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cmath>

#include "million/error.h"
#include "pq/rotation.h"

namespace million {

void PQConfig::validate(int head_dim) const {
  if (M < 1 || M > head_dim || head_dim % M != 0) {
    throw InvalidArgumentError(fmt::format("PQ M={} must divide head_dim {}", M, head_dim));
  }
  if (nbits < 4 || nbits > 8) throw InvalidArgumentError(fmt::format("PQ nbits={} must be between 4 and 8", nbits));
}

std::string PQConfig::str() const { return fmt::format("pq:M={},nbits={}", M, nbits); }

PQConfig parse_pq_config(const std::string& spec) {
  PQConfig c;
  auto bad = [&](const std::string& why) {
    return InvalidArgumentError(fmt::format("bad PQ configuration '{}': {} (expected e.g. pq:M=64,nbits=8)", spec, why));
  };
  if (spec.rfind("pq", 0) != 0) throw bad("it must start with 'pq'");
  std::string rest = spec.substr(2);
  if (rest.empty()) return c;
  if (rest[0] != ':') throw bad("options follow 'pq:'");
  rest = rest.substr(1);
  std::size_t pos = 0;
  while (pos <= rest.size()) {
    const std::size_t end = std::min(rest.find(',', pos), rest.size());
    const std::string item = rest.substr(pos, end - pos);
    const std::size_t eq = item.find('=');
    if (eq == std::string::npos) throw bad("'" + item + "' is not key=value");
    const std::string key = item.substr(0, eq), value = item.substr(eq + 1);
    int v = 0;
    auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
    if (ec != std::errc() || p != value.data() + value.size()) throw bad("'" + value + "' is not an integer");
    if (key == "M") {
      c.M = v;
    } else if (key == "nbits") {
      c.nbits = v;
    } else {
      throw bad("unknown key '" + key + "' (known: M, nbits)");
    }
    pos = end + 1;
  }
  if (c.M < 1) throw bad("M must be positive");
  if (c.nbits < 4 || c.nbits > 8) throw bad("nbits must be between 4 and 8");
  return c;
}

const char* granularity_name(Granularity g) {
  switch (g) {
    case Granularity::kShared: return "shared";
    case Granularity::kLayer: return "layer";
    case Granularity::kLayerHead: return "layer-head";
  }
  return "?";
}

Granularity parse_granularity(const std::string& name) {
  if (name == "shared") return Granularity::kShared;
  if (name == "layer") return Granularity::kLayer;
  if (name == "layer-head") return Granularity::kLayerHead;
  throw InvalidArgumentError(fmt::format("unknown granularity '{}' (expected shared, layer or layer-head)", name));
}

const char* rotation_name(RotationKind r) {
  switch (r) {
    case RotationKind::kNone: return "none";
    case RotationKind::kHadamard: return "hadamard";
    case RotationKind::kOpq: return "opq";
    case RotationKind::kQueryPca: return "qpca";
  }
  return "?";
}

RotationKind entry_rotation(RotationKind set_rotation, int kind) {
  return set_rotation == RotationKind::kQueryPca && kind == 1 ? RotationKind::kHadamard : set_rotation;
}

RotationKind parse_rotation(const std::string& name) {
  if (name == "none") return RotationKind::kNone;
  if (name == "hadamard") return RotationKind::kHadamard;
  if (name == "opq") return RotationKind::kOpq;
  if (name == "qpca") return RotationKind::kQueryPca;
  throw InvalidArgumentError(fmt::format("unknown rotation '{}' (expected none, hadamard, opq or qpca)", name));
}

void PQCodebook::validate(const std::string& source) const {
  auto fail = [&](const std::string& m) { throw FormatError(fmt::format("{}: codebook {}", source, m)); };
  if (head_dim <= 0 || M <= 0 || head_dim % M != 0) fail(fmt::format("M={} does not divide head_dim {}", M, head_dim));
  if (nbits < 4 || nbits > 8) fail(fmt::format("nbits={} is outside 4..8", nbits));
  const std::size_t want = static_cast<std::size_t>(M) * static_cast<std::size_t>(ksub()) * static_cast<std::size_t>(dsub());
  if (centroids.size() != want) fail(fmt::format("has {} centroid values, expected {}", centroids.size(), want));
  const std::size_t rot = rotation == RotationKind::kNone ? 0 : static_cast<std::size_t>(head_dim) * head_dim;
  if (rotation_matrix.size() != rot) fail(fmt::format("rotation matrix has {} values, expected {}", rotation_matrix.size(), rot));
  const bool qpca = rotation == RotationKind::kQueryPca;
  if (inverse_matrix.size() != (qpca ? rot : 0)) {
    fail(fmt::format("inverse matrix has {} values, expected {}", inverse_matrix.size(), qpca ? rot : 0));
  }
  if (channel_scale.size() != (qpca ? static_cast<std::size_t>(head_dim) : 0)) {
    fail(fmt::format("channel scale has {} values, expected {}", channel_scale.size(), qpca ? head_dim : 0));
  }
  if (qpca) {
    if (norm != VectorNorm::kChannelGroup) fail("rotation qpca needs channel-group normalisation");
    for (float s : channel_scale) {
      if (!(s > 0.0f) || !std::isfinite(s)) fail(fmt::format("channel scale {} is not a positive number", s));
    }
    // T T^-1 = I (to float accuracy): a corrupt or mismatched pair would decode wrong keys.
    // Checked on 4 dense +-1 probe vectors x, |T (T^-1 x) - x|_inf: O(d^2) per entry, where the
    // whole product (O(d^3)) cost ~0.8 s when loading a Llama-3-8B-sized set. Any changed entry
    // (r, c) of T^-1 moves component r of T^-1 x, since every probe has x_c = +-1.
    const auto d = static_cast<std::size_t>(head_dim);
    double worst = 0.0;
    std::vector<double> x(d), y(d);
    for (std::uint32_t probe = 0; probe < 4; ++probe) {
      for (std::size_t j = 0; j < d; ++j) x[j] = (fnv1a64(&j, sizeof j, probe + 1) & 1) ? 1.0 : -1.0;
      for (std::size_t i = 0; i < d; ++i) {
        double acc = 0.0;
        for (std::size_t k = 0; k < d; ++k) acc += static_cast<double>(inverse_matrix[i * d + k]) * x[k];
        y[i] = acc;
      }
      for (std::size_t i = 0; i < d; ++i) {
        double acc = 0.0;
        for (std::size_t k = 0; k < d; ++k) acc += static_cast<double>(rotation_matrix[i * d + k]) * y[k];
        worst = std::max(worst, std::abs(acc - x[i]));
      }
    }
    if (!(worst < 1e-2)) fail(fmt::format("transform times its inverse is off the identity by {:.3g}", worst));
  }
  if (norm == VectorNorm::kChannelGroup ? (norm_group < 64 || norm_group % 64 != 0) : norm_group != 0) {
    fail(fmt::format("normalisation {} with group {} (channel-group needs a positive multiple of 64 tokens, the "
                     "others 0)", vector_norm_name(norm), norm_group));
  }
}

void PQCodebook::rotate(const float* x, std::int64_t n, float* y) const {
  if (rotation == RotationKind::kNone) {
    std::copy(x, x + n * head_dim, y);
  } else {
    rotate_vectors(rotation_matrix, head_dim, x, n, y);
  }
}

void PQCodebook::rotate_queries(const float* q, std::int64_t n, float* y) const {
  if (rotation == RotationKind::kQueryPca) {
    unrotate_vectors(inverse_matrix, head_dim, q, n, y);  // (T^-1)^T q
  } else {
    rotate(q, n, y);
  }
}

void PQCodebook::unrotate(const float* x, std::int64_t n, float* y) const {
  if (rotation == RotationKind::kNone) {
    std::copy(x, x + n * head_dim, y);
  } else if (rotation == RotationKind::kQueryPca) {
    rotate_vectors(inverse_matrix, head_dim, x, n, y);
  } else {
    unrotate_vectors(rotation_matrix, head_dim, x, n, y);
  }
}

std::string ModelFingerprint::str() const {
  return fmt::format("{} ({} layers, {} kv heads, head_dim {}, hidden {}, vocab {}, config hash {:016x})", architecture,
                     n_layers, n_kv_heads, head_dim, hidden_size, vocab_size, config_hash);
}

int CodebookSet::n_groups() const {
  switch (granularity) {
    case Granularity::kShared: return 1;
    case Granularity::kLayer: return model.n_layers;
    case Granularity::kLayerHead: return model.n_layers * model.n_kv_heads;
  }
  return 0;
}

int CodebookSet::group_of(int layer, int kv_head) const {
  switch (granularity) {
    case Granularity::kShared: return 0;
    case Granularity::kLayer: return layer;
    case Granularity::kLayerHead: return layer * model.n_kv_heads + kv_head;
  }
  return 0;
}

const PQCodebook& CodebookSet::get(int layer, int kv_head, KVKind kind) const {
  if (layer < 0 || layer >= model.n_layers || kv_head < 0 || kv_head >= model.n_kv_heads) {
    throw InvalidArgumentError(fmt::format("no codebook for layer {} kv head {}", layer, kv_head));
  }
  return entries.at(static_cast<std::size_t>(2 * group_of(layer, kv_head) + static_cast<int>(kind)));
}

PQCodebook& CodebookSet::get(int layer, int kv_head, KVKind kind) {
  return const_cast<PQCodebook&>(static_cast<const CodebookSet&>(*this).get(layer, kv_head, kind));
}

void CodebookSet::validate(const std::string& source) const {
  if (model.n_layers <= 0 || model.n_kv_heads <= 0 || model.head_dim <= 0) {
    throw FormatError(fmt::format("{}: model fingerprint has no layers/heads ({})", source, model.str()));
  }
  if (entries.size() != static_cast<std::size_t>(2 * n_groups())) {
    throw FormatError(fmt::format("{}: {} codebooks, expected {} for granularity {}", source, entries.size(),
                                  2 * n_groups(), granularity_name(granularity)));
  }
  for (std::size_t i = 0; i < entries.size(); ++i) {
    const PQCodebook& e = entries[i];
    const PQConfig& want = i % 2 == 0 ? k_config : v_config;
    if (e.head_dim != model.head_dim || e.M != want.M || e.nbits != want.nbits ||
        e.rotation != entry_rotation(rotation, static_cast<int>(i % 2))) {
      throw FormatError(fmt::format("{}: codebook {} (head_dim {}, M {}, nbits {}, rotation {}) disagrees with the "
                                    "file header (head_dim {}, {}, rotation {})",
                                    source, i, e.head_dim, e.M, e.nbits, rotation_name(e.rotation), model.head_dim,
                                    want.str(), rotation_name(entry_rotation(rotation, static_cast<int>(i % 2)))));
    }
    const VectorNorm want_norm = i % 2 == 0 ? k_norm : v_norm;
    const int want_group = want_norm == VectorNorm::kChannelGroup ? norm_group : 0;
    if (e.norm != want_norm || e.norm_group != want_group) {
      throw FormatError(fmt::format("{}: codebook {} (normalisation {}, group {}) disagrees with the file header "
                                    "(normalisation {}, group {})",
                                    source, i, vector_norm_name(e.norm), e.norm_group, vector_norm_name(want_norm),
                                    want_group));
    }
    e.validate(fmt::format("{}: entry {}", source, i));
  }
}

std::uint64_t fnv1a64(const void* data, std::size_t n, std::uint64_t seed) {
  std::uint64_t h = seed;
  const auto* p = static_cast<const unsigned char*>(data);
  for (std::size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 0x100000001b3ULL;
  }
  return h;
}

}  // namespace million
