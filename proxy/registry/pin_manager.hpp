#pragma once
// The pin lifecycle after first sight: background checks against the upstream (on request when
// a pin is older than revalidate_after, and a periodic sweep), re-point handling by policy
// (pin, follow, reject) with a summary of what changed, and the operator's actions (approve,
// unpin, set by hand, check now). Every change is one compare-and-set on the pin store, with
// its history event and alert deliveries in the same synced write.
// Thread-safe.

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <variant>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/thread_pool.hpp>

#include "config/config.hpp"
#include "proxy/oci/errors.hpp"
#include "proxy/registry/blob_fetcher.hpp"
#include "proxy/registry/policy.hpp"
#include "proxy/upstream/registry_client.hpp"
#include "storage/blob_store.hpp"
#include "storage/manifest_store.hpp"
#include "storage/pin_store.hpp"

namespace regpin::proxy::registry {

// Observers for metrics and logs; each may be empty; none may block.
struct pin_hooks {
    // outcome: "unchanged", "repointed", "error", "skipped_ratelimit"
    std::function<void(const std::string& registry, std::string_view outcome)> checked;
    // A stored re-point event (after the synced write): log, count, wake the webhook sender.
    std::function<void(const storage::pin_event&)> repointed;
    // Any other stored change (approve, unpin, set, first pull): history only.
    std::function<void(const storage::pin_event&)> changed;
};

struct check_result {
    std::string outcome;  // "unchanged", "repointed", "already_recorded", "error", "no_pin"
    std::string upstream_digest;
    std::string error;
    std::vector<storage::pin_event> events;
};

// An operator's request about one tag (every accept class of it).
struct pin_target {
    std::string registry;
    std::string repository;
    std::string tag;
};

class pin_manager {
public:
    pin_manager(boost::asio::any_io_executor ex, const config::settings& settings,
                storage::pin_store& pins, storage::manifest_store& manifests,
                storage::blob_store& blobs, blob_fetcher& fetcher,
                std::vector<upstream::registry_client*> clients, boost::asio::thread_pool& blocking,
                pin_hooks hooks);
    ~pin_manager();

    // The policy for a tag (first matching rule, else pin).
    resolved_policy policy_for(const storage::pin_key& key) const;

    // Request path: `p` was just served. Starts a background check when the pin is older than
    // its revalidate_after; never waits. At most one check per pin key runs at a time, and at
    // most pin_checks.concurrency per upstream (extra ones are left to the next request or
    // the sweep).
    void served(const storage::pin& p, std::size_t upstream_index);

    // Checks one pin now (forced: ignores staleness and the concurrency bound).
    [[nodiscard]] boost::asio::awaitable<check_result> check(storage::pin_key key,
                                                             std::size_t upstream_index);

    // Starts the periodic sweep over pins nobody requested. Call once.
    void start_sweep();
    void stop();

    // Operator actions. Errors are OCI errors for the admin API (404 no such pin, 409 changed
    // meanwhile, 503 upstream). `actor` goes into the history ("token:ops").
    using events_or_error = std::variant<std::vector<storage::pin_event>, oci::error>;
    [[nodiscard]] boost::asio::awaitable<events_or_error> approve(pin_target t,
                                                                  std::optional<std::string> digest,
                                                                  std::string actor);
    [[nodiscard]] boost::asio::awaitable<events_or_error> unpin(pin_target t, std::string actor);
    [[nodiscard]] boost::asio::awaitable<events_or_error> set(pin_target t, std::string digest,
                                                              std::string actor);

    // The index of the upstream serving `registry`, or npos.
    std::size_t upstream_index(const std::string& registry) const;

private:
    struct state;
    std::shared_ptr<state> state_;
};

// The Accept value that reproduces an accept class (the pin key's), for upstream checks.
std::string accept_for_class(std::uint8_t accept_class);

}  // namespace regpin::proxy::registry
