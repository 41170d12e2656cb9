#pragma once

#include <atomic>
#include <memory>
#include <mutex>

#include "storage/outbox_index.hpp"
#include "storage/pin_store.hpp"

namespace regpin::storage {

class database;

// Pins in the `pins` column family (one JSON value per key), history in `events`
// ("e" + id -> event, "h" + pin key + id -> index), deliveries in `outbox` (id -> entry),
// the counts and the index of pins awaiting an operator in `meta` ("pins/..."). Every change
// is one synced WriteBatch, its counts and index entries in it. The outbox is also held in
// memory by due time (outbox_index): due_deliveries and pending_deliveries never read RocksDB.
class rocksdb_pin_store final : public pin_store {
public:
    // Reads the highest event and outbox ids and the kept counts, and loads the outbox into
    // memory (one pass over it); the pins are not read, however many there are. A folder
    // from before the counts were kept is counted once (one pass over the pins), and the
    // counts and index are written then, unless it is opened read-only. Throws
    // std::runtime_error if the store is unreadable. An outbox entry that does not decode is
    // logged and left out (it could never be delivered).
    explicit rocksdb_pin_store(std::shared_ptr<database> db);

    result<std::optional<pin>> find(const pin_key& key,
                                    read_mode mode = read_mode::may_block) const override;
    using pin_store::apply;
    result<std::vector<pin_event>> apply(const std::vector<pin_change>& changes) override;
    result<void> touch_verified(const pin_key& key, std::int64_t when_ms) override;
    result<std::vector<pin>> list(const pin_filter& filter) const override;
    result<std::vector<pin>> list_repository(const std::string& registry,
                                             const std::string& repository) const override;
    result<std::size_t> count() const override;
    result<std::size_t> count_awaiting() const override;
    result<std::vector<pin>> list_tag(const std::string& registry, const std::string& repository,
                                      const std::string& tag) const override;
    result<std::vector<pin_event>> history(const pin_key& key) const override;
    result<std::vector<pin_event>> events(std::uint64_t after_id, std::int64_t since_ms,
                                          std::size_t limit) const override;
    result<std::optional<pin_event>> event(std::uint64_t id) const override;
    result<std::uint64_t> newest_event_id() const override;
    result<std::vector<outbox_entry>> due_deliveries(std::int64_t now_ms,
                                                     std::size_t limit) const override;
    result<std::size_t> pending_deliveries() const override;
    result<void> delivered(std::uint64_t outbox_id) override;
    result<void> reschedule(const outbox_entry& entry) override;
    result<std::size_t> forget_before(std::int64_t cutoff_ms, std::size_t limit) override;

    // registry \0 repository \0 tag \0 class: keys sort by registry, repository, tag, class.
    // Also the etcd backend's key suffix (proxy/etcd), so both list pins in one order.
    static std::string encode_key(const pin_key& key);
    static std::optional<pin_key> decode_key(std::string_view k);
    // registry \0 repository \0 tag \0: the prefix of every class of one tag.
    static std::string tag_prefix(const pin_key& key);
    // The encoded keys a listing covers: those starting with `prefix`, from `start` on
    // (`start` itself excluded when it is the filter's cursor).
    struct key_range {
        std::string prefix;
        std::string start;
        bool after_cursor = false;
    };
    static key_range list_range(const pin_filter& filter);

private:
    std::shared_ptr<database> db_;
    std::mutex write_mutex_;                       // makes read-check-write atomic among writers
    std::atomic<std::uint64_t> next_event_id_{1};  // written under write_mutex_
    std::uint64_t next_outbox_id_ = 1;
    // Kept in step with the pins column family by apply() (the only writer that adds, removes
    // or changes the state of a pin), in memory and in `meta` in the same batch, under
    // write_mutex_; read without it.
    std::atomic<std::size_t> pin_count_{0};
    std::atomic<std::size_t> awaiting_count_{0};
    // Whether `meta` holds the index of pins awaiting an operator (what list() reads for a
    // state filter of pending or rejected, instead of every pin). False only in a read-only
    // open of a folder from before it was kept.
    bool indexed_ = false;
    void load_counts();
    // The pins under `prefix` (encoded keys), in key order.
    result<std::vector<pin>> scan(const std::string& prefix) const;
    // The outbox column family, in memory. Changed only after the write to RocksDB succeeded
    // (apply() adds, delivered() and forget_before() remove, reschedule() moves), by writers
    // holding write_mutex_; read by due_deliveries and pending_deliveries without it.
    mutable std::mutex outbox_mutex_;  // taken after write_mutex_, never before
    outbox_index outbox_;
};

}  // namespace regpin::storage
