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
#include "proxy/cache/manifest_fetcher.hpp"
#include "proxy/oci/errors.hpp"
#include "proxy/pins/writer.hpp"
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
            store::pin_records& records, cache::manifest_fetcher& manifests, pins::writer& writer);

    // A class of the tag an action left alone, and why.
    struct skipped_class {
        std::uint8_t accept_class = 0;
        std::string reason;
    };
    struct done {
        std::vector<storage::pin_event> events;  // as stored, one per class changed
        std::vector<skipped_class> skipped;
    };
    // Errors are for the admin API: MANIFEST_UNKNOWN (no pin), NAME_UNKNOWN (no upstream for
    // the registry), DIGEST_INVALID, DENIED (no class the action applies to; the pin changed
    // meanwhile: try again), or the upstream's failure fetching the chosen manifest. Nothing
    // is written on an error.
    using events = oci::result<done>;

    // Moves to `digest` every class of the tag whose Accept admits its media type; without a
    // digest, every class with something pending to its pending digest.
    [[nodiscard]] boost::asio::awaitable<events> approve(pin_target t,
                                                         std::optional<std::string> digest,
                                                         std::string actor);
    // Forgets the tag's pins (history stays); the next pull pins afresh.
    [[nodiscard]] boost::asio::awaitable<events> unpin(pin_target t, std::string actor);
    // Pins to `digest` (fetched and verified) every class of the tag whose Accept admits its
    // media type; a tag without pins gets one for the class every common client sends.
    [[nodiscard]] boost::asio::awaitable<events> set(pin_target t, std::string digest,
                                                     std::string actor);

private:
    boost::asio::awaitable<oci::result<storage::manifest>> manifest(std::size_t upstream_index,
                                                                    const std::string& repository,
                                                                    const storage::digest& d);
    boost::asio::awaitable<events> commit(std::vector<storage::pin_change> changes,
                                          std::vector<skipped_class> skipped);

    const config::settings& settings_;
    upstream::upstreams& upstreams_;
    store::pin_records& records_;
    cache::manifest_fetcher& manifests_;
    pins::writer& writer_;
};

}  // namespace regpin::proxy::pins
