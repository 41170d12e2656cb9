#pragma once
// Registry operations on an upstream, shared by the request path, background checks and
// operator actions: fetching a manifest with its digest verified, and the one mapping of
// upstream failures to what a client gets.

#include <cstdint>
#include <optional>
#include <string>

#include <boost/asio/awaitable.hpp>
#include <boost/system/error_code.hpp>

#include "proxy/oci/errors.hpp"
#include "proxy/upstream/registry_client.hpp"
#include "storage/digest.hpp"
#include "storage/manifest_store.hpp"

namespace regpin::proxy::upstream {

struct fetched_manifest {
    storage::digest digest;
    storage::manifest manifest;
    std::string source;  // the upstream URL whose answer named the digest (registry_client)
};

// GETs /v2/<repository>/manifests/<reference> with `accept`. The body (at most `max_bytes`)
// must hash to the requested digest, or to Docker-Content-Digest for a tag (when the upstream
// sends none, the digest is the body's). Errors are what the client should get.
[[nodiscard]] boost::asio::awaitable<oci::result<fetched_manifest>> fetch_manifest(
    registry_client& client, const std::string& repository, const std::string& reference,
    const std::string& accept, std::size_t max_bytes);

// HEADs /v2/<repository>/manifests/<reference> with `accept`: the Docker-Content-Digest the
// upstream names, or nullopt when it sends none that parses (then only a GET can tell), and
// which of its URLs answered. A non-200 answer is the error a client should get.
struct named_digest {
    std::optional<storage::digest> digest;
    std::string source;
};
[[nodiscard]] boost::asio::awaitable<oci::result<named_digest>> head_manifest(
    registry_client& client, const std::string& repository, const std::string& reference,
    const std::string& accept);

// HEADs /v2/<repository>/blobs/<d>: the size the upstream states (Content-Length; 0 when it
// sends none). A non-200 answer is the error a client should get (BLOB_UNKNOWN for 404).
[[nodiscard]] boost::asio::awaitable<oci::result<std::uint64_t>> head_blob(registry_client& client,
                                                                           std::string repository,
                                                                           storage::digest d);

// Maps a non-success upstream status: 404 -> `not_found`, 401/403 -> NAME_UNKNOWN, anything
// else (429 included) -> UNAVAILABLE. Never 429: containerd retries that in a tight loop; 503
// makes it fall back at once.
oci::error upstream_error(const std::string& registry, unsigned status, oci::error_code not_found);
// A transport failure (or offline mode): UNAVAILABLE with the reason.
oci::error transport_error(const std::string& registry, const boost::system::error_code& ec);

// The token scope for pulling `repository`: "repository:<repository>:pull".
std::string pull_scope(const std::string& repository);

}  // namespace regpin::proxy::upstream
