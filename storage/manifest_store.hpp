#pragma once
// Manifests by digest: media type plus the exact bytes (never re-serialised: the digest covers
// the bytes). Thread-safe. Both methods may block (storage/threads.hpp) but find() with
// read_mode::memory_only.

#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "storage/digest.hpp"
#include "storage/errors.hpp"

namespace regpin::storage {

class database;

struct manifest {
    std::string media_type;
    std::string bytes;
};

// A signed Docker schema 1 manifest: a JWS ("prettyjws") whose digest is not the body's.
inline constexpr std::string_view docker_schema1_signed =
    "application/vnd.docker.distribution.manifest.v1+prettyjws";

// The bytes a manifest's digest covers. The body itself, except for a signed Docker schema 1
// manifest: its JWS payload, which is the body without its "signatures" section, as every
// signature's protected header describes it (the first formatLength bytes of the body, then
// formatTail, base64url). nullopt for a signed manifest whose signatures describe no payload,
// or different ones.
std::optional<std::string> digested_bytes(const manifest& m);

// Whether `m` is what digest `d` names (digested_bytes hashed with d's algorithm).
bool manifest_matches(const digest& d, const manifest& m);

// The sha256 digest that names `m`; nullopt as for digested_bytes.
std::optional<digest> manifest_digest(const manifest& m);

class manifest_store {
public:
    explicit manifest_store(std::shared_ptr<database> db);

    // nullopt when absent; errc::would_block for memory_only when not in memory.
    [[nodiscard]] result<std::optional<manifest>> find(const digest& d,
                                                       read_mode mode = read_mode::may_block) const;
    // Stores `m` under `d` after checking that `d` names it (manifest_matches;
    // errc::digest_mismatch).
    [[nodiscard]] result<void> put(const digest& d, const manifest& m);

private:
    std::shared_ptr<database> db_;
};

}  // namespace regpin::storage
