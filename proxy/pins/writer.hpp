#pragma once
// The one place pin changes are written. Every change of what a pin serves or of its state
// (first sight, a check's re-point or revert, an operator's approve, unpin or set, a bundle
// import) is a storage::pin_change that carries its history events, and reaches the store here
// (store::pin_records takes writes only from this class), in one synced write together with
// those events and their alert deliveries. The hooks hear of every stored event.
// Thread-safe.

#include <string>
#include <vector>

#include <boost/asio/awaitable.hpp>

#include "proxy/pins/hooks.hpp"
#include "proxy/store/pin_records.hpp"
#include "storage/pin_store.hpp"

namespace regpin::proxy::pins {

class writer {
public:
    writer(store::pin_records& records, pins::hooks hooks);

    // First sight: records `candidate` unless the tag already has a pin (first writer wins),
    // with a "pinned" event by `actor`, naming the upstream URL it came from (`source`). The
    // pin that holds afterwards.
    [[nodiscard]] boost::asio::awaitable<storage::result<storage::pin>> first_sight(
        storage::pin candidate, std::string actor, std::string source);

    // Applies changes to the pins of one tag (its accept classes) together or not at all
    // (storage::errc::conflict when one changed meanwhile). The stored events, with ids.
    [[nodiscard]] boost::asio::awaitable<storage::result<std::vector<storage::pin_event>>> commit(
        std::vector<storage::pin_change> changes);

    const pins::hooks& hooks() const { return hooks_; }

private:
    void announce(const std::vector<storage::pin_event>& events) const;

    store::pin_records& records_;
    pins::hooks hooks_;
};

// The same write for offline tools (regpin import), which own the store and run no event loop.
[[nodiscard]] storage::result<std::vector<storage::pin_event>> commit_offline(
    storage::pin_store& store, const std::vector<storage::pin_change>& changes);

}  // namespace regpin::proxy::pins
