#pragma once
// Registry operations on an upstream, shared by the request path and background checks:
// fetching a manifest with its digest verified, and the mapping of upstream failures to what a
// client gets.

#include <optional>
#include <string>
#include <variant>

#include <boost/asio/awaitable.hpp>
#include <boost/system/error_code.hpp>

#include "proxy/oci/errors.hpp"
#include "proxy/upstream/registry_client.hpp"
#include "storage/digest.hpp"
#include "storage/manifest_store.hpp"

namespace regpin::proxy::registry {

struct fetched_manifest {
    storage::digest digest;
    storage::manifest manifest;
};

// GETs /v2/<repository>/manifests/<reference> with `accept`. The body (at most `max_bytes`)
// must hash to the requested digest, or to Docker-Content-Digest for a tag (when the upstream
// sends none, the digest is the body's). Errors are what the client should get.
[[nodiscard]] boost::asio::awaitable<std::variant<fetched_manifest, oci::error>> fetch_manifest(
    upstream::registry_client& client, const std::string& repository, const std::string& reference,
    const std::string& accept, std::size_t max_bytes);

// Maps a non-success upstream status. Never 429: containerd retries that in a tight loop;
// 503 makes it fall back at once.
oci::error upstream_error(const std::string& registry, unsigned status, oci::error_code not_found);
oci::error transport_error(const std::string& registry, const boost::system::error_code& ec);

}  // namespace regpin::proxy::registry
