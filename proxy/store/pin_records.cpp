#include "proxy/store/pin_records.hpp"

#include "proxy/store/pool.hpp"

namespace regpin::proxy::store {

namespace {

using storage::pin_store;
using storage::result;

// Named functions for on_pool: the overloaded member, and list_tag.
result<std::vector<storage::pin_event>> apply_all(pin_store* s,
                                                  std::vector<storage::pin_change> changes) {
    return s->apply(changes);
}

result<std::vector<storage::pin>> pins_of_tag(const pin_store* s, std::string registry,
                                              std::string repository, std::string tag) {
    return s->list_tag(registry, repository, tag);
}

}  // namespace

pin_records::pin_records(pin_store& store, boost::asio::thread_pool& pool)
    : store_(store), pool_(pool) {}

storage::result<std::optional<storage::pin>> pin_records::peek(const storage::pin_key& key) const {
    return store_.find(key, storage::read_mode::memory_only);
}

pin_records::awaitable<std::optional<storage::pin>> pin_records::find(storage::pin_key key) const {
    const auto* s = &store_;
    co_return co_await memory_first<&pin_store::find>(pool_, s, key);
}

pin_records::awaitable<std::vector<storage::pin>> pin_records::list(
    storage::pin_filter filter) const {
    const auto* s = &store_;
    co_return co_await on_pool<&pin_store::list>(pool_, s, filter);
}

pin_records::awaitable<std::vector<storage::pin>> pin_records::list_repository(
    std::string registry, std::string repository) const {
    const auto* s = &store_;
    co_return co_await on_pool<&pin_store::list_repository>(pool_, s, registry, repository);
}

pin_records::awaitable<std::vector<storage::pin>> pin_records::list_tag(std::string registry,
                                                                        std::string repository,
                                                                        std::string tag) const {
    const auto* s = &store_;
    co_return co_await on_pool<&pins_of_tag>(pool_, s, registry, repository, tag);
}

pin_records::awaitable<std::vector<storage::pin_event>> pin_records::history(
    storage::pin_key key) const {
    const auto* s = &store_;
    co_return co_await on_pool<&pin_store::history>(pool_, s, key);
}

pin_records::awaitable<std::vector<storage::pin_event>> pin_records::events(
    std::uint64_t after_id, std::int64_t since_ms, std::size_t limit) const {
    const auto* s = &store_;
    co_return co_await on_pool<&pin_store::events>(pool_, s, after_id, since_ms, limit);
}

pin_records::awaitable<std::optional<storage::pin_event>> pin_records::event(
    std::uint64_t id) const {
    const auto* s = &store_;
    co_return co_await on_pool<&pin_store::event>(pool_, s, id);
}

pin_records::awaitable<void> pin_records::touch_verified(storage::pin_key key,
                                                         std::int64_t when_ms) {
    auto* s = &store_;
    co_return co_await on_pool<&pin_store::touch_verified>(pool_, s, key, when_ms);
}

pin_records::awaitable<std::vector<storage::outbox_entry>> pin_records::due_deliveries(
    std::int64_t now_ms, std::size_t limit) const {
    const auto* s = &store_;
    co_return co_await on_pool<&pin_store::due_deliveries>(pool_, s, now_ms, limit);
}

pin_records::awaitable<void> pin_records::delivered(std::uint64_t outbox_id) {
    auto* s = &store_;
    co_return co_await on_pool<&pin_store::delivered>(pool_, s, outbox_id);
}

pin_records::awaitable<void> pin_records::reschedule(storage::outbox_entry entry) {
    auto* s = &store_;
    co_return co_await on_pool<&pin_store::reschedule>(pool_, s, entry);
}

pin_records::awaitable<std::size_t> pin_records::forget_before(std::int64_t cutoff_ms,
                                                               std::size_t limit) {
    auto* s = &store_;
    co_return co_await on_pool<&pin_store::forget_before>(pool_, s, cutoff_ms, limit);
}

std::size_t pin_records::count() const {
    auto n = store_.count();
    return n ? *n : 0;
}

std::size_t pin_records::count_awaiting() const {
    auto n = store_.count_awaiting();
    return n ? *n : 0;
}

std::size_t pin_records::pending_deliveries() const {
    auto n = store_.pending_deliveries();
    return n ? *n : 0;
}

pin_records::awaitable<storage::pin> pin_records::create_if_absent(write_access,
                                                                   storage::pin candidate,
                                                                   storage::pin_event event) {
    auto* s = &store_;
    co_return co_await on_pool<&pin_store::create_if_absent>(pool_, s, candidate, event);
}

pin_records::awaitable<std::vector<storage::pin_event>> pin_records::apply(
    write_access, std::vector<storage::pin_change> changes) {
    auto* s = &store_;
    co_return co_await on_pool<&apply_all>(pool_, s, changes);
}

}  // namespace regpin::proxy::store
