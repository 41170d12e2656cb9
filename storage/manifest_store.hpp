#pragma once
// Manifests by digest: media type plus the exact bytes (never re-serialised: the digest covers
// the bytes). Thread-safe. Both methods may block (storage/threads.hpp) but find() with
// read_mode::memory_only.

#include <memory>
#include <optional>
#include <string>

#include "storage/digest.hpp"
#include "storage/errors.hpp"

namespace regpin::storage {

class database;

struct manifest {
    std::string media_type;
    std::string bytes;
};

class manifest_store {
public:
    explicit manifest_store(std::shared_ptr<database> db);

    // nullopt when absent; errc::would_block for memory_only when not in memory.
    [[nodiscard]] result<std::optional<manifest>> find(const digest& d,
                                                       read_mode mode = read_mode::may_block) const;
    // Stores `m` under `d` after checking that the bytes hash to `d` (errc::digest_mismatch).
    [[nodiscard]] result<void> put(const digest& d, const manifest& m);

private:
    std::shared_ptr<database> db_;
};

}  // namespace regpin::storage
