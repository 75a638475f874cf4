// Product-quantization codebooks for a model's keys and values: the in-memory form of what
// `million calibrate` writes and the caches load. Names follow FAISS and the paper: head_dim d,
// M subspaces of dsub = d / M dimensions, nbits per code, ksub = 2^nbits centroids.
// Not here: training (pq/train.h), file I/O (pq/codebook_file.h), encoding (pq/encode.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "pq/normalize.h"

namespace million {

/// M and nbits of one kind of vector (keys or values). Parsed from "pq:M=64,nbits=8".
struct PQConfig {
  int M = 64;
  int nbits = 8;
  int ksub() const { return 1 << nbits; }
  /// Throws InvalidArgumentError unless 1 <= M, head_dim % M == 0 and 4 <= nbits <= 8.
  void validate(int head_dim) const;
  std::string str() const;  ///< "pq:M=64,nbits=8"
  /// Bits per element this configuration costs: M * nbits / head_dim.
  double bits_per_element(int head_dim) const { return static_cast<double>(M) * nbits / head_dim; }
  bool operator==(const PQConfig&) const = default;
};

/// Parses "pq:M=64,nbits=8" (either key optional, "pq" alone gives the defaults).
PQConfig parse_pq_config(const std::string& spec);

/// Which vectors share one codebook.
enum class Granularity {
  kShared,     ///< one K and one V codebook for the whole model (the paper's public code)
  kLayer,      ///< one per layer, shared by its kv heads
  kLayerHead,  ///< one per (layer, kv head) (default)
};
const char* granularity_name(Granularity g);
Granularity parse_granularity(const std::string& name);  ///< "shared", "layer", "layer-head"

enum class RotationKind {
  kNone,
  kHadamard,  ///< randomized Walsh-Hadamard: R = H diag(signs) / sqrt(d), seeded; d a power of two
  kOpq,       ///< learned by FAISS OPQMatrix
  /// keys: the learned invertible transform of pq/query_pca.h (not orthogonal), with a
  /// per-channel scale after channel-group normalisation; values: kHadamard. Needs k-norm
  /// channel-group. Sets carry this kind; their value entries carry kHadamard.
  kQueryPca,
};
const char* rotation_name(RotationKind r);
RotationKind parse_rotation(const std::string& name);  ///< "none", "hadamard", "opq", "qpca"
/// The rotation a set's entry of `kind` carries: the set's own, except kHadamard for the values
/// of a kQueryPca set.
RotationKind entry_rotation(RotationKind set_rotation, int kind /* 0 K, 1 V */);

enum class KVKind { kKey = 0, kValue = 1 };

/// One codebook: the centroids of one (layer, kv head, kind), or of a group under coarser
/// granularities, with the rotation applied to vectors before they are split into subspaces.
struct PQCodebook {
  int head_dim = 0;
  int M = 0;
  int nbits = 0;
  RotationKind rotation = RotationKind::kNone;
  /// [head_dim, head_dim] row-major R, rotated = R x; empty when rotation is kNone. Orthogonal
  /// except for kQueryPca (the transform T).
  std::vector<float> rotation_matrix;
  /// kQueryPca only (else empty): T^-1 [head_dim, head_dim], and the per-channel scale [head_dim]
  /// the channel-group normalisation multiplies u by (u' = scale * (x - min) / range, stored
  /// as range / scale, so decoders and kernels are unchanged).
  std::vector<float> inverse_matrix;
  std::vector<float> channel_scale;
  /// Normalisation between rotation and PQ (pq/normalize.h): the centroids live in the
  /// normalised space; channel-group normalises over groups of norm_group tokens (else 0).
  VectorNorm norm = VectorNorm::kNone;
  int norm_group = 0;
  std::uint64_t n_samples = 0;  ///< training vectors k-means saw
  /// [M, ksub, dsub] f32: centroid c of subspace m is centroids[(m * ksub + c) * dsub + 0 .. dsub)
  std::vector<float> centroids;

  int dsub() const { return head_dim / M; }
  int ksub() const { return 1 << nbits; }
  /// Into the codebook's space: y = R x (T x). n vectors [n, head_dim]; x and y must not overlap.
  void rotate(const float* x, std::int64_t n, float* y) const;
  /// Queries into the space where their dot products with rotated keys are the original ones:
  /// R q, or T^-T q.
  void rotate_queries(const float* q, std::int64_t n, float* y) const;
  /// Back from the codebook's space: R^T x, or T^-1 x.
  void unrotate(const float* x, std::int64_t n, float* y) const;
  /// Per-channel scale of the channel-group normalisation, or null (all ones).
  const float* norm_scale() const { return channel_scale.empty() ? nullptr : channel_scale.data(); }
  /// Throws FormatError if sizes disagree (centroids or rotation of the wrong length, ...).
  void validate(const std::string& source) const;
};

/// What a codebook file is tied to: the model's architecture fields and a hash of its config.
struct ModelFingerprint {
  std::string architecture;
  int n_layers = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  int hidden_size = 0;
  int vocab_size = 0;
  std::uint64_t config_hash = 0;  ///< FNV-1a 64 of config.json (or the llama2.c header bytes)
  bool operator==(const ModelFingerprint&) const = default;
  std::string str() const;
};

/// All codebooks of one model.
struct CodebookSet {
  ModelFingerprint model;
  Granularity granularity = Granularity::kLayerHead;
  PQConfig k_config, v_config;
  RotationKind rotation = RotationKind::kNone;
  /// Normalisations of keys and values (every entry of that kind carries the same); norm_group:
  /// tokens per channel-group (a multiple of 64), 0 when neither kind uses channel-group.
  VectorNorm k_norm = VectorNorm::kNone, v_norm = VectorNorm::kNone;
  int norm_group = 0;
  std::uint64_t seed = 0;
  /// Entries in order: for each group (see n_groups), K then V.
  std::vector<PQCodebook> entries;

  /// Groups per kind: 1 (shared), n_layers (layer), n_layers * n_kv_heads (layer-head).
  int n_groups() const;
  int group_of(int layer, int kv_head) const;
  const PQCodebook& get(int layer, int kv_head, KVKind kind) const;
  PQCodebook& get(int layer, int kv_head, KVKind kind);
  /// Throws FormatError if the entry count or any entry disagrees with the header fields.
  void validate(const std::string& source) const;
};

/// FNV-1a 64-bit hash (fingerprints and file checksums).
std::uint64_t fnv1a64(const void* data, std::size_t n, std::uint64_t seed = 0xcbf29ce484222325ULL);

}  // namespace million
