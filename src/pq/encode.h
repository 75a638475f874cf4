// PQ encoding and decoding of vectors with one codebook: nearest centroid per subspace (ties to
// the lower index), and codes back to centroid vectors. Rotation is the caller's business:
// vectors given here are already rotated (codebook.rotation_matrix applied).
// The scalar reference is the specification; PQEncoder holds a SIMD-friendly copy of the
// centroids and runs the level it is given (chosen once per call).
#pragma once

#include <cstdint>
#include <vector>

#include "million/simd.h"
#include "pq/codebook.h"

namespace million {

/// Scalar reference encoder. x: [n, head_dim] f32; codes: [n, M] one byte per code (nbits <= 8).
/// Distances sum (x_j - c_j)^2 over the subspace's dsub dims in double; ties to the lower index.
void pq_encode_ref(const PQCodebook& cb, const float* x, std::int64_t n, std::uint8_t* codes);

/// codes [n, M] -> vectors [n, head_dim] (concatenated centroids; no inverse rotation).
void pq_decode(const PQCodebook& cb, const std::uint8_t* codes, std::int64_t n, float* out);

/// Fast encoder for one codebook.
class PQEncoder {
 public:
  explicit PQEncoder(const PQCodebook& cb);
  /// Same contract as pq_encode_ref; float arithmetic, so a code may differ from the reference
  /// only where two centroids are equally near within rounding.
  void encode(const float* x, std::int64_t n, std::uint8_t* codes, SimdLevel level) const;
  const PQCodebook& codebook() const { return cb_; }

 private:
  const PQCodebook& cb_;
  std::vector<float> centroids_t_;  // layout chosen by the implementation (see encode.cpp)
};

/// 4-bit codes two per byte: byte i holds code 2i in its low nibble and code 2i+1 in its high
/// nibble; an odd count leaves the last high nibble 0. n_codes values in, (n_codes + 1) / 2 out.
void pq_pack4(const std::uint8_t* codes, std::int64_t n_codes, std::uint8_t* packed);
void pq_unpack4(const std::uint8_t* packed, std::int64_t n_codes, std::uint8_t* codes);

}  // namespace million
