#pragma once
// Re-hashing what is stored (issue 15, point 5). Chunks are read without RocksDB's checksums
// (storage/README.md), as they are served, so a byte flipped on disk would be served until a
// client rejects the layer; the SHA-256 of every stored blob and manifest, read back the same
// way, finds it first. A mismatch is quarantined: the blob's record and chunks (or the
// manifest) are removed, so it is no longer served and is fetched again, verified, on the next
// request. Blocking calls (every method may block).

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "storage/cache_index.hpp"
#include "storage/digest.hpp"
#include "storage/errors.hpp"

namespace regpin::storage {

class database;

struct verify_report {
    std::uint64_t blobs = 0, blob_bytes = 0;  // checked
    std::uint64_t manifests = 0;
    std::vector<std::string> bad_blobs;      // digests that did not match (quarantined)
    std::vector<std::string> bad_manifests;  // likewise
    std::uint64_t skipped = 0;               // held by a reader, or gone meanwhile
};

struct verify_options {
    // Called after each chunk read with its size: the caller paces the walk (a rate limit)
    // and may stop it by returning false.
    std::function<bool(std::uint64_t bytes)> pace;
    // Remove what does not match. Off: only report.
    bool quarantine = true;
};

// Re-hashes every complete blob and every manifest of `db`. With `index` (a running regpin)
// quarantine goes through it (cache_index::evict: a blob a reader holds is skipped this time);
// without (an offline folder) it deletes directly.
[[nodiscard]] result<verify_report> verify_content(const std::shared_ptr<database>& db,
                                                   cache_index* index,
                                                   const verify_options& options);

}  // namespace regpin::storage
