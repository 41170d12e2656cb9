#pragma once
// An operator's decisions about one tag (every accept class of it): approve a digest, unpin,
// pin by hand. Each is one change of the tag's pins, written by the writer with its events
// (actor "token:<name>"): all accept classes move together or none does.
// Thread-safe.

#include <optional>
#include <string>
#include <vector>

#include <boost/asio/awaitable.hpp>

#include "config/config.hpp"
#include "proxy/oci/errors.hpp"
#include "proxy/pins/writer.hpp"
#include "proxy/store/content.hpp"
#include "proxy/store/pin_records.hpp"
#include "proxy/upstream/upstreams.hpp"

namespace regpin::proxy::pins {

// A tag as an operator names it.
struct pin_target {
    std::string registry;
    std::string repository;
    std::string tag;
};

class actions {
public:
    actions(const config::settings& settings, upstream::upstreams& upstreams,
            store::pin_records& records, store::content& content, pins::writer& writer);

    // Errors are for the admin API: MANIFEST_UNKNOWN (no pin), NAME_UNKNOWN (no upstream for
    // the registry), DIGEST_INVALID, DENIED (nothing pending to approve; the pin changed
    // meanwhile: try again), or the upstream's failure fetching the chosen manifest.
    using events = oci::result<std::vector<storage::pin_event>>;

    // Moves every pin of the tag to `digest`, or each to its own pending digest.
    [[nodiscard]] boost::asio::awaitable<events> approve(pin_target t,
                                                         std::optional<std::string> digest,
                                                         std::string actor);
    // Forgets the tag's pins (history stays); the next pull pins afresh.
    [[nodiscard]] boost::asio::awaitable<events> unpin(pin_target t, std::string actor);
    // Pins the tag to `digest` (fetched and verified), creating a pin for the accept class of
    // every common client when it has none.
    [[nodiscard]] boost::asio::awaitable<events> set(pin_target t, std::string digest,
                                                     std::string actor);

private:
    boost::asio::awaitable<oci::result<storage::manifest>> manifest(std::size_t upstream_index,
                                                                    const std::string& repository,
                                                                    const storage::digest& d);
    boost::asio::awaitable<events> commit(std::vector<storage::pin_change> changes);

    const config::settings& settings_;
    upstream::upstreams& upstreams_;
    store::pin_records& records_;
    store::content& content_;
    pins::writer& writer_;
};

}  // namespace regpin::proxy::pins
