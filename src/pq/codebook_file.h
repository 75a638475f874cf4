// The versioned codebook file `million calibrate` writes and the PQ caches load
// (format documented in docs/codebook-format.md). Loading validates everything before use and
// turns every problem into a FormatError that says to re-run `million calibrate`.
#pragma once

#include <string>

#include "pq/codebook.h"

namespace million {

inline constexpr char kCodebookMagic[8] = {'M', 'L', 'N', 'P', 'Q', 'C', 'B', '\0'};
/// Version 2 added the K/V normalisations (pq/normalize.h), version 3 the qpca rotation (its
/// entries carry T^-1 and a channel scale); older files still load. Saving always writes the
/// current version.
inline constexpr std::uint32_t kCodebookVersion = 3;

/// Writes `set` to `path` atomically (temporary file + rename). Throws IoError on failure and
/// InvalidArgumentError if the set is inconsistent.
void save_codebooks(const CodebookSet& set, const std::string& path);

/// Reads and validates a codebook file: magic, version, sizes against the file size, checksum,
/// every entry's shape. Throws IoError (missing) or FormatError (anything else).
CodebookSet load_codebooks(const std::string& path);

/// Throws FormatError naming both sides when `set` was made for another model (fingerprint
/// mismatch). `source` names the file in the message.
void check_codebooks_match(const CodebookSet& set, const ModelFingerprint& model, const std::string& source);

}  // namespace million
