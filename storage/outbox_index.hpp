#pragma once
// The alert outbox in memory, by due time: what the pin stores answer due_deliveries() from,
// so the webhook sender's look every second costs the entries it gets, never a pass over the
// outbox. Each store fills it when it opens and keeps it in step with every write it makes (and,
// for etcd, with every change its watch reports).
//
// Not thread-safe: the store that owns one locks around every call.

#include <cstdint>
#include <map>
#include <set>
#include <utility>
#include <vector>

#include "storage/pin.hpp"

namespace regpin::storage {

class outbox_index {
public:
    // Adds `entry`, or replaces the one with its id. O(log n).
    void put(outbox_entry entry);
    // Removes the entry with this id; false when there is none. O(log n).
    bool erase(std::uint64_t id);
    [[nodiscard]] bool contains(std::uint64_t id) const;

    // The entries due at `now_ms` (next_attempt_ms <= now_ms), soonest due first (equal times:
    // lower id first), at most `limit`. O(k log n) for the k returned.
    [[nodiscard]] std::vector<outbox_entry> due(std::int64_t now_ms, std::size_t limit) const;
    // The ids of the entries alerting an event with an id up to `event_id`, in the order of
    // their events (retention: the alerts of forgotten events). O(k log n) for the k returned.
    [[nodiscard]] std::vector<std::uint64_t> alerting_through(std::uint64_t event_id) const;

    [[nodiscard]] std::size_t size() const { return by_id_.size(); }
    void clear();

private:
    std::map<std::uint64_t, outbox_entry> by_id_;
    std::set<std::pair<std::int64_t, std::uint64_t>> by_due_;     // (next attempt, id)
    std::set<std::pair<std::uint64_t, std::uint64_t>> by_event_;  // (event id, id)
};

}  // namespace regpin::storage
