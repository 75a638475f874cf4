// Normalisations applied to K/V vectors between the rotation and product quantization, so the
// codebooks see vectors of similar scale (docs/pq-research.md has the measurements):
//   token:         u = x / ||x||, the norm kept per token as f16 (16 bits per token and head);
//   channel-group: per channel c over a group of consecutive tokens (KIVI's key grouping),
//                  u = (x - min_c) / range_c, min and range kept as f16 (32 bits per channel and
//                  group); with a per-channel scale s (qpca codebooks) the stored range is
//                  range_c / s_c, so u spans [0, s_c] and decoders need not know s. Scores fold these into the query: q . k = q . min + (q * range) . u.
// Stored parameters are rounded to f16 before use, so encoder, decoder and kernels all see the
// same values. Not here: the stores that keep the parameters (model/kv/pq_store.h).
#pragma once

#include <cstdint>
#include <string>

namespace million {

enum class VectorNorm : std::uint8_t {
  kNone = 0,
  kToken = 1,         ///< per-token L2 norm
  kChannelGroup = 2,  ///< per-channel min/range over groups of norm_group tokens
};
const char* vector_norm_name(VectorNorm n);          ///< "none", "token", "channel-group"
VectorNorm parse_vector_norm(const std::string& s);  ///< InvalidArgumentError for another name
bool valid_vector_norm(std::uint32_t code);

/// Stored bits per element a normalisation adds at head_dim d (channel-group: per group).
double vector_norm_bits(VectorNorm n, int head_dim, int group);

/// Per channel over n tokens x [n, d]: min and range = (max - min) / scale, both rounded to f16
/// (range rounded so that min + range * scale >= max when representable). mn, rg: [d]; scale:
/// [d] positive, or null for ones (a qpca codebook's channel_scale: u then spans [0, scale]).
void channel_group_params(const float* x, int n, int d, float* mn, float* rg, const float* scale = nullptr);
/// u = (x - mn) / rg per channel (u = 0 where rg == 0). x, u: [n, d] (may alias).
void channel_group_normalize(const float* x, int n, int d, const float* mn, const float* rg, float* u);
/// x = mn + rg * u per channel. u, x: [n, d] (may alias).
void channel_group_denormalize(const float* u, int n, int d, const float* mn, const float* rg, float* x);

/// ||x|| of one d-vector, rounded to f16 (clamped to the f16 range).
float token_norm_f16(const float* x, int d);
/// u = x / nrm for each token (u = 0 where nrm == 0); norms [n] as from token_norm_f16. May alias.
void token_normalize(const float* x, int n, int d, const float* norms, float* u);

/// Normalises n consecutive vectors u [n, d] in place as `norm` says (the n tokens form one
/// channel-group) and returns the f16-valued parameters in params: token norms [n], or min then
/// range [2, d]; nothing for kNone. What both the cache's encoder and calibration use.
/// channel_scale: see channel_group_params (channel-group only; null for ones).
void normalize_block(VectorNorm norm, float* u, int n, int d, float* params, const float* channel_scale = nullptr);

}  // namespace million
