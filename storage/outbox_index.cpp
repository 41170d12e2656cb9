#include "storage/outbox_index.hpp"

namespace regpin::storage {

void outbox_index::put(outbox_entry entry) {
    erase(entry.id);
    by_due_.emplace(entry.next_attempt_ms, entry.id);
    by_event_.emplace(entry.event_id, entry.id);
    auto id = entry.id;
    by_id_.emplace(id, std::move(entry));
}

bool outbox_index::erase(std::uint64_t id) {
    auto it = by_id_.find(id);
    if (it == by_id_.end()) return false;
    by_due_.erase(std::pair{it->second.next_attempt_ms, id});
    by_event_.erase(std::pair{it->second.event_id, id});
    by_id_.erase(it);
    return true;
}

bool outbox_index::contains(std::uint64_t id) const { return by_id_.contains(id); }

std::vector<outbox_entry> outbox_index::due(std::int64_t now_ms, std::size_t limit) const {
    std::vector<outbox_entry> out;
    for (auto it = by_due_.begin(); it != by_due_.end() && out.size() < limit; ++it) {
        if (it->first > now_ms) break;
        out.push_back(by_id_.at(it->second));
    }
    return out;
}

std::vector<std::uint64_t> outbox_index::alerting_through(std::uint64_t event_id) const {
    std::vector<std::uint64_t> out;
    for (auto it = by_event_.begin(); it != by_event_.end() && it->first <= event_id; ++it)
        out.push_back(it->second);
    return out;
}

void outbox_index::clear() {
    by_id_.clear();
    by_due_.clear();
    by_event_.clear();
}

}  // namespace regpin::storage
