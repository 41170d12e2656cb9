#pragma once
// Durable tag -> digest pins with their history and the alert outbox. The one piece of state
// that must never be lost or silently overwritten: every change is one synced write (pin,
// its events and their webhook deliveries together). Implementations: rocksdb_pin_store
// (single instance); a consensus-backed store for several replicas later.
// All methods are thread-safe. Methods that write block on fsync: call them off the network
// threads.

#include <optional>
#include <string>
#include <vector>

#include "storage/errors.hpp"
#include "storage/pin.hpp"

namespace regpin::storage {

// A compare-and-set change to one pin.
struct pin_change {
    pin_key key;
    // The pin the change was computed from (digest and state must still match), or nullopt
    // when the pin must not exist yet.
    std::optional<pin> expected;
    // The pin after the change, or nullopt to delete it (unpin).
    std::optional<pin> replacement;
    // Appended to the history; ids are assigned by the store.
    std::vector<pin_event> events;
    // For every event whose type is "repointed", one outbox entry per target.
    std::vector<std::string> alert_targets;
};

struct pin_filter {
    std::string registry;           // empty: any
    std::string repository_prefix;  // empty: any
    std::optional<pin_state> state;
    std::size_t limit = 1000;
    // Only keys strictly after this one, in key order: a cursor (pass the key of the last pin
    // of the previous page). nullopt: from the first key.
    std::optional<pin_key> after;
};

class pin_store {
public:
    virtual ~pin_store() = default;

    // The pin for `key`, or nullopt if the tag was never seen (or was unpinned).
    [[nodiscard]] virtual result<std::optional<pin>> find(const pin_key& key) const = 0;

    // Records `candidate` only if no pin exists yet (first writer wins), with a "pinned"
    // event. Returns the pin that holds after the call: `candidate`, or the older one.
    [[nodiscard]] virtual result<pin> create_if_absent(const pin& candidate,
                                                       const std::string& actor) = 0;

    // Applies `change` if the stored pin still matches `change.expected`; errc::conflict
    // otherwise (nothing written). Returns the events as stored (with ids).
    [[nodiscard]] virtual result<std::vector<pin_event>> apply(const pin_change& change) = 0;

    // Updates last_verified_ms only (not synced: losing it merely causes an early re-check).
    [[nodiscard]] virtual result<void> touch_verified(const pin_key& key, std::int64_t when_ms) = 0;

    // Pins in key order, filtered.
    [[nodiscard]] virtual result<std::vector<pin>> list(const pin_filter& filter) const = 0;
    // Every pin of one repository (all tags and accept classes), in key order.
    [[nodiscard]] virtual result<std::vector<pin>> list_repository(
        const std::string& registry, const std::string& repository) const = 0;
    // The number of pins. O(1): no scan, so it may be called on every metrics scrape.
    [[nodiscard]] virtual result<std::size_t> count() const = 0;
    // The number of pins awaiting an operator (state pending or rejected). O(1), like count().
    [[nodiscard]] virtual result<std::size_t> count_awaiting() const = 0;

    // The history of one pin key (all accept classes when accept_class is ignored), oldest
    // first.
    [[nodiscard]] virtual result<std::vector<pin_event>> history(const pin_key& key) const = 0;
    // Events with id > after_id and time >= since_ms, oldest first, at most `limit`.
    [[nodiscard]] virtual result<std::vector<pin_event>> events(std::uint64_t after_id,
                                                                std::int64_t since_ms,
                                                                std::size_t limit) const = 0;
    [[nodiscard]] virtual result<std::optional<pin_event>> event(std::uint64_t id) const = 0;

    // Outbox entries due at `now_ms`, oldest first.
    [[nodiscard]] virtual result<std::vector<outbox_entry>> due_deliveries(
        std::int64_t now_ms, std::size_t limit) const = 0;
    [[nodiscard]] virtual result<std::size_t> pending_deliveries() const = 0;
    // Delivered: removes the entry. Failed: stores the new attempt count and time. Neither
    // is synced (no fsync on the caller's thread, a network thread): a machine crash can only
    // undo them, which sends the alert again (delivery is at least once) or retries it sooner.
    [[nodiscard]] virtual result<void> delivered(std::uint64_t outbox_id) = 0;
    [[nodiscard]] virtual result<void> reschedule(const outbox_entry& entry) = 0;
};

}  // namespace regpin::storage
