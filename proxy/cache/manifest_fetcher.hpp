#pragma once
// Manifests through the cache, one upstream fetch per (upstream, repository, reference, accept
// class) however many ask at once (single_flight): by digest (the store, else the upstream,
// verified, then stored) and by tag (what the upstream's tag names now, never stored here:
// the caller decides, as first sight or a pin check).
// Thread-safe.

#include <string>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include "proxy/cache/single_flight.hpp"
#include "proxy/oci/errors.hpp"
#include "proxy/store/content.hpp"
#include "proxy/upstream/fetch.hpp"
#include "proxy/upstream/registry_client.hpp"
#include "storage/digest.hpp"
#include "storage/manifest_store.hpp"

namespace regpin::proxy::cache {

struct found_manifest {
    storage::manifest manifest;
    bool was_cached = false;  // from the store; else just fetched and stored
};

class manifest_fetcher {
public:
    manifest_fetcher(boost::asio::any_io_executor ex, store::content& content);

    // The manifest `d` of `repository`: the store's, else GET by digest with `accept` (at most
    // `max_bytes`), verified against `d`, stored. Errors are what a client should get (UNKNOWN
    // for regpin's own storage failing, logged).
    [[nodiscard]] boost::asio::awaitable<oci::result<found_manifest>> by_digest(
        upstream::registry_client& client, std::string repository, storage::digest d,
        std::string accept, std::size_t max_bytes);

    // What tag `tag` of `repository` names on the upstream now, for a client of `accept`,
    // verified against Docker-Content-Digest. With `head_first` (a client's HEAD: Docker Hub
    // does not count HEADs against the pull quota) a HEAD by tag finds the digest and the
    // bytes come from the store or a GET by digest (stored); an upstream that sends no digest
    // on HEAD is asked with a GET by tag.
    [[nodiscard]] boost::asio::awaitable<oci::result<upstream::fetched_manifest>> by_tag(
        upstream::registry_client& client, std::string repository, std::string tag,
        std::string accept, std::size_t max_bytes, bool head_first);

    // The key under which requests for one manifest share a fetch.
    static std::string flight_key(const upstream::registry_client& client,
                                  const std::string& repository, const std::string& reference,
                                  const std::string& accept);

    // Fetches by digest in flight, for tests and metrics.
    std::size_t in_flight() const { return flights_.in_flight(); }

    store::content& content() { return content_; }

private:
    boost::asio::awaitable<oci::result<found_manifest>> fetch_and_store(
        upstream::registry_client& client, std::string repository, storage::digest d,
        std::string accept, std::size_t max_bytes);

    store::content& content_;
    single_flight<found_manifest> flights_;
};

}  // namespace regpin::proxy::cache
