#pragma once
// The pin store (storage/pin_store.hpp) for coroutines on network threads: every call that may
// block runs on the blocking pool; a pin lookup answered from memory runs inline. The counts
// are O(1) and may be read anywhere (metrics).
//
// Writing pins is reserved: create_if_absent and apply take a write_access, which only
// pins::writer can make, so every pin change passes through that one place (with its events).
// Thread-safe.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/thread_pool.hpp>

#include "storage/pin_store.hpp"

namespace regpin::proxy::pins {
class writer;
}

namespace regpin::proxy::store {

// Proof of being pins::writer.
class write_access {
    friend class pins::writer;
    write_access() = default;
};

class pin_records {
public:
    template <class T>
    using awaitable = boost::asio::awaitable<storage::result<T>>;

    pin_records(storage::pin_store& store, boost::asio::thread_pool& pool);

    // The pin answered from RocksDB's memory without suspending (the request path);
    // storage::errc::would_block when it needs the disk: then co_await find().
    [[nodiscard]] storage::result<std::optional<storage::pin>> peek(
        const storage::pin_key& key) const;
    [[nodiscard]] awaitable<std::optional<storage::pin>> find(storage::pin_key key) const;
    [[nodiscard]] awaitable<std::vector<storage::pin>> list(storage::pin_filter filter) const;
    [[nodiscard]] awaitable<std::vector<storage::pin>> list_repository(
        std::string registry, std::string repository) const;
    // The pins of one tag: every accept class, in key order.
    [[nodiscard]] awaitable<std::vector<storage::pin>> list_tag(std::string registry,
                                                                std::string repository,
                                                                std::string tag) const;
    [[nodiscard]] awaitable<std::vector<storage::pin_event>> history(storage::pin_key key) const;
    [[nodiscard]] awaitable<std::vector<storage::pin_event>> events(std::uint64_t after_id,
                                                                    std::int64_t since_ms,
                                                                    std::size_t limit) const;
    [[nodiscard]] awaitable<std::optional<storage::pin_event>> event(std::uint64_t id) const;

    // Not a change of what a pin serves: no event (an early re-check at worst if lost).
    [[nodiscard]] awaitable<void> touch_verified(storage::pin_key key, std::int64_t when_ms);

    // The outbox (webhooks).
    [[nodiscard]] awaitable<std::vector<storage::outbox_entry>> due_deliveries(
        std::int64_t now_ms, std::size_t limit) const;
    [[nodiscard]] awaitable<void> delivered(std::uint64_t outbox_id);
    [[nodiscard]] awaitable<void> reschedule(storage::outbox_entry entry);

    // Retention (storage::pin_store::forget_before): removes up to `limit` events older than
    // `cutoff_ms` with their history and alerts; returns how many. Call again until 0.
    [[nodiscard]] awaitable<std::size_t> forget_before(std::int64_t cutoff_ms, std::size_t limit);

    std::size_t count() const;
    std::size_t count_awaiting() const;
    std::size_t pending_deliveries() const;
    // Never block (storage::pin_store::checks_here, degraded).
    bool checks_here(const storage::pin_key& key) const { return store_.checks_here(key); }
    std::optional<std::string> degraded() const { return store_.degraded(); }

    // pins::writer only.
    [[nodiscard]] awaitable<storage::pin> create_if_absent(write_access, storage::pin candidate,
                                                           storage::pin_event event);
    [[nodiscard]] awaitable<std::vector<storage::pin_event>> apply(
        write_access, std::vector<storage::pin_change> changes);

private:
    storage::pin_store& store_;
    boost::asio::thread_pool& pool_;
};

}  // namespace regpin::proxy::store
