#pragma once
// Small blobs for regpin's own needs (an image config for a re-point's summary) and the errors
// for regpin's own storage failing. Manifests go through manifest_fetcher.

#include <cstdint>
#include <optional>
#include <string>

#include <boost/asio/awaitable.hpp>

#include "proxy/oci/errors.hpp"
#include "proxy/store/content.hpp"
#include "proxy/upstream/registry_client.hpp"
#include "storage/digest.hpp"

namespace regpin::proxy::cache {

// The bytes of blob `d` when it is at most `limit` bytes: the store's, else one GET that reads
// at most `limit` bytes (refused at once when Content-Length says more), verified, not stored.
// nullopt when it cannot be had, is larger, or does not match `d`.
[[nodiscard]] boost::asio::awaitable<std::optional<std::string>> small_blob(
    store::content& content, upstream::registry_client& client, std::string repository,
    storage::digest d, std::uint64_t limit);

// The error for regpin's own storage failing while `what` (logged): 500 UNKNOWN.
oci::error storage_error(const char* what);
// storage::errc::unavailable (the pin store, etcd, unreachable) is 503 UNAVAILABLE with
// Retry-After; any other error is storage_error(what).
oci::error storage_error(const char* what, const boost::system::error_code& ec);

}  // namespace regpin::proxy::cache
