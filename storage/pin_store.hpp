#pragma once
// Durable tag -> digest pins with their history and the alert outbox. The one piece of state
// that must never be lost or silently overwritten: every change is one synced write (pin,
// its events and their webhook deliveries together). Implementations: rocksdb_pin_store
// (single instance) and proxy/etcd's etcd_pin_store (replicas sharing pins through etcd).
// All methods are thread-safe. Every method but count(), count_awaiting() and
// pending_deliveries() may block (reads from disk, synced writes): call them off the network
// threads (proxy/store does), or with read_mode::memory_only where a method offers it.

#include <optional>
#include <string>
#include <vector>

#include "storage/errors.hpp"
#include "storage/pin.hpp"

namespace regpin::storage {

// One webhook delivery of one of a change's events: an outbox entry written with the change.
// Which events are alerted, and to whom, is the caller's decision.
struct alert {
    std::size_t event = 0;  // index into pin_change::events
    std::string target;     // webhook URL
};

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
    // Outbox entries for some of those events.
    std::vector<alert> alerts;
};

// Whether two versions of a pin serve alike: same digest, state and pending digest. Stores
// compare `expected` by this (a change of anything else, like last_verified_ms, is no conflict).
inline bool serves_alike(const pin& a, const pin& b) {
    return a.manifest_digest == b.manifest_digest && a.state == b.state &&
           a.pending_digest == b.pending_digest;
}

// Whether a change from `before` to `after` changes what the pin serves or its state (created,
// removed, another digest, state or pending digest): such a change needs an event.
inline bool serves_differently(const std::optional<pin>& before, const std::optional<pin>& after) {
    if (before.has_value() != after.has_value()) return true;
    return before && !serves_alike(*before, *after);
}

inline bool awaits_operator(const pin& p) { return p.state != pin_state::pinned; }

// The checks every store makes of apply()'s argument before reading anything: one change per
// key, alerts that name an event of their change, no change of what a pin serves without an
// event. errc::ok or errc::invalid_argument.
inline errc check_changes(const std::vector<pin_change>& changes) {
    for (std::size_t i = 0; i < changes.size(); ++i) {
        const auto& change = changes[i];
        for (std::size_t j = 0; j < i; ++j)
            if (changes[j].key == change.key) return errc::invalid_argument;
        for (const auto& a : change.alerts)
            if (a.event >= change.events.size()) return errc::invalid_argument;
        if (change.events.empty() && serves_differently(change.expected, change.replacement))
            return errc::invalid_argument;
    }
    return errc::ok;
}

struct pin_filter {
    std::string registry;           // empty: any
    std::string repository_prefix;  // empty: any
    std::optional<pin_state> state;
    std::size_t limit = 1000;
    // Only keys strictly after this one, in key order: a cursor (pass the key of the last pin
    // of the previous page). nullopt: from the first key.
    std::optional<pin_key> after;
    // Only pins whose "registry/repository:tag" contains this, ignoring case (ASCII); checked
    // on the key, before the pin is read. Empty: any.
    std::string contains;
};

// Whether `key` passes filter.contains (pin_filter).
bool key_contains(const pin_key& key, const std::string& needle);

class pin_store {
public:
    virtual ~pin_store() = default;

    // The pin for `key`, or nullopt if the tag was never seen (or was unpinned).
    [[nodiscard]] virtual result<std::optional<pin>> find(
        const pin_key& key, read_mode mode = read_mode::may_block) const = 0;

    // Records `candidate` with `event` (its history's first entry) only if no pin exists yet:
    // first writer wins. Returns the pin that holds after the call: `candidate`, or the older
    // one. errc::conflict when the key had a pin that vanished meanwhile (retry).
    // Every backend's: an apply() that expects no pin, then a read of the one that holds.
    [[nodiscard]] result<pin> create_if_absent(const pin& candidate, const pin_event& event) {
        pin_change change;
        change.key = candidate.key;
        change.replacement = candidate;
        change.events.push_back(event);
        auto applied = apply(change);
        if (applied) return candidate;
        if (applied.error() != errc::conflict) return applied.error();
        // Another writer pinned it first (a backend's apply reads it afresh): its pin holds.
        auto existing = find(candidate.key);
        if (!existing) return existing.error();
        if (!*existing) return errc::conflict;  // unpinned in between: let the caller retry
        return std::move(**existing);
    }

    // Applies every change if every stored pin still matches its change's `expected`;
    // errc::conflict otherwise, and nothing is written. A change of what a pin serves or of
    // its state (created, removed, digest, state, pending digest) without an event is refused
    // (errc::invalid_argument): no pin changes without its history saying so. All of them, their
    // events and alerts are one atomic, synced write: a tag's accept classes change together or not
    // at all. Returns the events as stored (with ids), in order. At most one change per key.
    [[nodiscard]] virtual result<std::vector<pin_event>> apply(
        const std::vector<pin_change>& changes) = 0;
    [[nodiscard]] result<std::vector<pin_event>> apply(const pin_change& change) {
        return apply(std::vector<pin_change>{change});
    }

    // Updates last_verified_ms only (not synced: losing it merely causes an early re-check).
    [[nodiscard]] virtual result<void> touch_verified(const pin_key& key, std::int64_t when_ms) = 0;

    // Pins in key order, filtered.
    [[nodiscard]] virtual result<std::vector<pin>> list(const pin_filter& filter) const = 0;
    // Every pin of one repository (all tags and accept classes), in key order.
    [[nodiscard]] virtual result<std::vector<pin>> list_repository(
        const std::string& registry, const std::string& repository) const = 0;
    // Every pin of one tag (its accept classes), in key order: a seek, whatever the size of
    // its repository.
    [[nodiscard]] virtual result<std::vector<pin>> list_tag(const std::string& registry,
                                                            const std::string& repository,
                                                            const std::string& tag) const = 0;
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
    // The id of the newest event (0: none yet). Every change of what a pin serves, or of its
    // state, has an event: a reader that saw this id and sees it again saw no such change.
    [[nodiscard]] virtual result<std::uint64_t> newest_event_id() const = 0;

    // Outbox entries due at `now_ms` (next_attempt_ms <= now_ms), soonest due first (equal
    // times: lower id first), at most `limit`. Answered from memory (storage/outbox_index.hpp):
    // it costs the entries returned, never a pass over the outbox.
    [[nodiscard]] virtual result<std::vector<outbox_entry>> due_deliveries(
        std::int64_t now_ms, std::size_t limit) const = 0;
    // The number of outbox entries. O(1), like count().
    [[nodiscard]] virtual result<std::size_t> pending_deliveries() const = 0;
    // Delivered: removes the entry. Failed: stores the new attempt count and time. Neither
    // is synced (no fsync on the caller's thread, a network thread): a machine crash can only
    // undo them, which sends the alert again (delivery is at least once) or retries it sooner.
    [[nodiscard]] virtual result<void> delivered(std::uint64_t outbox_id) = 0;
    [[nodiscard]] virtual result<void> reschedule(const outbox_entry& entry) = 0;

    // Retention: removes events with time_ms < cutoff_ms, oldest first and at most `limit`, with
    // their history index entries, and every outbox entry alerting an event up to the newest one
    // removed (an alert of a forgotten event). Walks from the first event and stops at the first
    // one at or after the cutoff: ids grow with time, so what follows it is newer. The newest
    // event is always kept, so ids continue from it (after a restart too) and are never reused.
    // Pins are untouched. Returns how many events were removed: call again until 0. Not synced:
    // a removal a crash undoes is made again by the next call.
    [[nodiscard]] virtual result<std::size_t> forget_before(std::int64_t cutoff_ms,
                                                            std::size_t limit) = 0;

    // Several replicas over one store: whether this one runs the background checks of `key`
    // (each pin is checked by one replica). Never blocks.
    [[nodiscard]] virtual bool checks_here(const pin_key&) const { return true; }
    // Why the store is degraded ("etcd unreachable since ..."), or nullopt. Never blocks.
    [[nodiscard]] virtual std::optional<std::string> degraded() const { return std::nullopt; }
};

}  // namespace regpin::storage
