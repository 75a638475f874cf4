// Internal interface between PQEncoder (src/pq/encode.cpp, baseline flags) and its per-ISA
// nearest-centroid kernels (pq_encode_avx2.cpp, pq_encode_avx512.cpp, each with its own flags).
// encode.cpp splits the work into "chunks" (see PQEncodeArgs) and hands each thread a range of
// them; a kernel never looks at the SIMD level. The chunk helpers defined here have internal
// linkage (unnamed namespace) so no copy compiled with AVX-512 flags can be linked into another TU.
#pragma once

#include <algorithm>
#include <cstdint>

namespace million {

/// Lanes of one row of the transposed centroid table; the AVX-512 kernel uses a whole row, the
/// AVX2 kernel half a row (8 lanes) at a time.
inline constexpr int kPQTableLanes = 16;
/// Rows per block of the chunk order: 64 vectors of head_dim 128 are 32 KiB of x, and one table
/// group (ksub 256, dsub 2: 32 KiB) is then re-read from L2 once per 64 chunks.
inline constexpr std::int64_t kPQRowBlock = 64;

/// One encode call. Points: the n * M (vector, subspace) pairs in row-major order; point p is
/// x[p * dsub .. p * dsub + dsub) because x is [n, head_dim] = [n, M, dsub] contiguous, and its
/// code goes to codes[p]. A chunk is `lanes` points encoded side by side, one per SIMD lane:
///  - packed (M < 16 and M divides 16): chunk r holds points r*lanes .. r*lanes + lanes - 1, which
///    span lanes / M whole vectors; lane k is subspace k % M and the table has one group whose
///    lane k holds subspace k % M (centroids repeated 16 / M times);
///  - otherwise: chunk (r, s) holds subspaces s*lanes .. of vector r (the last one of a vector
///    may be partial when lanes does not divide M); group g's lane k holds subspace 16 g + k
///    (zeros past M).
/// Chunks are numbered in blocks of kPQRowBlock rows, slice-major inside a block: consecutive
/// chunks reuse one table group (L1-resident across the block's vectors when it fits) while the
/// block's x stays in L1/L2, and n = 1 still yields M / lanes independent chunks.
struct PQEncodeArgs {
  const float* x = nullptr;         ///< [n, head_dim] f32, row-major
  std::int64_t n = 0;
  std::uint8_t* codes = nullptr;    ///< [n, M] u8, row-major
  int head_dim = 0, M = 0, dsub = 0, ksub = 0;
  bool packed = false;
  /// [groups, ksub, dsub, kPQTableLanes] f32: entry (g, c, j, k) = coordinate j of centroid c of
  /// the subspace lane k of group g holds (groups = 1 if packed, else ceil(M / 16)).
  const float* table = nullptr;
  /// [M, ksub, dsub] f32: the codebook's own centroids (the scalar kernel reads these).
  const float* centroids = nullptr;
};

/// Encodes chunks [q_begin, q_end) of `lanes`-wide chunks (lanes 1 for scalar: one point each).
void pq_encode_chunks_scalar(const PQEncodeArgs& a, std::int64_t q_begin, std::int64_t q_end);
void pq_encode_chunks_avx2(const PQEncodeArgs& a, std::int64_t q_begin, std::int64_t q_end);
void pq_encode_chunks_avx512(const PQEncodeArgs& a, std::int64_t q_begin, std::int64_t q_end);

namespace {  // internal linkage on purpose: see the file comment

/// One chunk: where its points' x and codes are, how many lanes are real, and its table lanes.
struct PQChunk {
  const float* x;         ///< [nvalid, dsub] f32 contiguous
  std::uint8_t* codes;    ///< [nvalid] u8
  int nvalid;             ///< 1..lanes
  const float* table;     ///< first lane of [ksub, dsub, row of kPQTableLanes]
};

/// Chunk grid for `lanes`-wide chunks: rows x slices chunks, numbered in row blocks (see
/// PQEncodeArgs): q = block * (kPQRowBlock * slices) + s * rows_in_block + r_in_block.
struct PQChunkGrid {
  std::int64_t rows;
  std::int64_t slices;
  std::int64_t count() const { return rows * slices; }
};

template <int kLanes>
inline PQChunkGrid pq_chunk_grid(const PQEncodeArgs& a) {
  if (a.packed) return {(a.n * a.M + kLanes - 1) / kLanes, 1};
  return {a.n, (a.M + kLanes - 1) / kLanes};
}

/// Walks chunks q, q + 1, ... of a grid in the order above; divisions only at construction.
template <int kLanes>
class PQChunkCursor {
 public:
  static_assert(kPQTableLanes % kLanes == 0, "a chunk must cover whole table lanes");
  PQChunkCursor(const PQEncodeArgs& a, const PQChunkGrid& grid, std::int64_t q) : a_(a), grid_(grid) {
    const std::int64_t per_block = kPQRowBlock * grid.slices;
    r0_ = q / per_block * kPQRowBlock;
    const std::int64_t w = q % per_block;
    block_rows_ = std::min<std::int64_t>(kPQRowBlock, grid.rows - r0_);
    s_ = w / block_rows_;
    r_ = w % block_rows_;
  }
  PQChunk get() const {
    const std::int64_t row = r0_ + r_;
    if (a_.packed) {
      const std::int64_t p0 = row * kLanes;
      return {a_.x + p0 * a_.dsub, a_.codes + p0, static_cast<int>(std::min<std::int64_t>(kLanes, a_.n * a_.M - p0)),
              a_.table};
    }
    const std::int64_t m0 = s_ * kLanes;
    const std::int64_t group = m0 / kPQTableLanes, lane0 = m0 % kPQTableLanes;
    return {a_.x + row * a_.head_dim + m0 * a_.dsub, a_.codes + row * a_.M + m0,
            static_cast<int>(std::min<std::int64_t>(kLanes, a_.M - m0)),
            a_.table + group * a_.ksub * a_.dsub * kPQTableLanes + lane0};
  }
  void next() {
    if (++r_ < block_rows_) return;
    r_ = 0;
    if (++s_ < grid_.slices) return;
    s_ = 0;
    r0_ += kPQRowBlock;
    block_rows_ = std::min<std::int64_t>(kPQRowBlock, grid_.rows - r0_);
  }

 private:
  const PQEncodeArgs& a_;
  PQChunkGrid grid_;
  std::int64_t r0_ = 0, block_rows_ = 0, s_ = 0, r_ = 0;  // block's first row, its rows, slice, row in block
};

}  // namespace

}  // namespace million
