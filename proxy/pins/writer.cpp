#include "proxy/pins/writer.hpp"

namespace regpin::proxy::pins {

std::string_view to_string(check_outcome o) {
    // In the enum's order.
    static constexpr std::string_view names[] = {"unchanged", "repointed", "already_recorded",
                                                 "error", "no_pin"};
    auto i = static_cast<std::size_t>(o);
    return i < std::size(names) ? names[i] : "error";
}

writer::writer(store::pin_records& records, pins::hooks hooks)
    : records_(records), hooks_(std::move(hooks)) {}

boost::asio::awaitable<storage::result<storage::pin>> writer::first_sight(storage::pin candidate,
                                                                          std::string actor,
                                                                          std::string source) {
    storage::pin_event e;
    e.time_ms = candidate.first_seen_ms;
    e.type = storage::event_type::pinned;
    e.key = candidate.key;
    e.new_digest = candidate.manifest_digest.str();
    e.actor = std::move(actor);
    e.source = std::move(source);
    auto held = co_await records_.create_if_absent(store::write_access{}, candidate, e);
    if (held && hooks_.holds) hooks_.holds(held->key, held->manifest_digest.str());
    co_return held;
}

boost::asio::awaitable<storage::result<std::vector<storage::pin_event>>> writer::commit(
    std::vector<storage::pin_change> changes) {
    auto stored = co_await records_.apply(store::write_access{}, std::move(changes));
    if (stored) announce(*stored);
    co_return stored;
}

void writer::announce(const std::vector<storage::pin_event>& events) const {
    for (const auto& e : events) {
        if (hooks_.holds && !e.new_digest.empty() && e.type != storage::event_type::unpinned)
            hooks_.holds(e.key, e.new_digest);
        if (e.type == storage::event_type::repointed) {
            if (hooks_.repointed) hooks_.repointed(e);
        } else if (hooks_.changed) {
            hooks_.changed(e);
        }
    }
}

storage::result<std::vector<storage::pin_event>> commit_offline(
    storage::pin_store& store, const std::vector<storage::pin_change>& changes) {
    return store.apply(changes);
}

}  // namespace regpin::proxy::pins
