#pragma once
// Content through the cache for regpin's own needs and the pull path: a manifest by digest (the
// store, else the upstream, verified, then stored) and a small blob such as an image config
// (the store, else downloaded through the single-flight blob fetcher, which stores it).

#include <cstdint>
#include <optional>
#include <string>

#include <boost/asio/awaitable.hpp>

#include "proxy/cache/blob_fetcher.hpp"
#include "proxy/oci/errors.hpp"
#include "proxy/store/content.hpp"
#include "proxy/upstream/registry_client.hpp"
#include "storage/digest.hpp"
#include "storage/manifest_store.hpp"

namespace regpin::proxy::cache {

struct found_manifest {
    storage::manifest manifest;
    bool was_cached = false;  // from the store; else just fetched and stored
};

// The manifest `d` of `repository`: the store's, else GET by digest with `accept` (at most
// `max_bytes`), verified against `d`, stored. Errors are what a client should get (UNKNOWN for
// regpin's own storage failing, logged).
[[nodiscard]] boost::asio::awaitable<oci::result<found_manifest>> manifest_by_digest(
    store::content& content, upstream::registry_client& client, std::string repository,
    storage::digest d, std::string accept, std::size_t max_bytes);

// The bytes of blob `d` when it is at most `limit` bytes: the store's, else downloaded through
// `fetcher` (and so cached). nullopt when it cannot be had or is larger.
[[nodiscard]] boost::asio::awaitable<std::optional<std::string>> small_blob(
    blob_fetcher& fetcher, upstream::registry_client& client, std::string repository,
    storage::digest d, std::uint64_t limit);

// The error for regpin's own storage failing while `what` (logged): 500 UNKNOWN.
oci::error storage_error(const char* what);

}  // namespace regpin::proxy::cache
