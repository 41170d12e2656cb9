#pragma once
// storage::pin_store on etcd: the pins, their history and the alert outbox shared by every
// replica (issue 13). Blobs and manifests stay in each replica's own RocksDB.
//
// Keys under the prefix P ("/regpin/"):
//   P pins/<registry>\0<repository>\0<tag>\0<class>   the pin (record_codec JSON)
//   P events/<id, 16 hex digits>                        one history event
//   P history/<registry>\0<repository>\0<tag>\0<id>     index of a tag's events (empty value)
//   P outbox/<id>                                       a webhook delivery not yet acknowledged
//   P seq                                               the last event and outbox ids
//   P leader                                            the replica delivering webhooks (leased)
//   P members/<replica>                                 live replicas (leased): check shards
//
// Every change is one transaction that compares the mod revision of each pin it changes (0:
// absent) and of P seq, and writes the pins, their events, history, outbox entries and the
// next ids together: first sight is create-if-absent, every move a compare-and-swap, and
// event ids increase in commit order across the cluster.
//
// Reads of pins never wait for etcd: every pin is held in memory, loaded at start and kept
// current by a watch of P from the loaded revision (resumed after a disconnect, relisted after
// a compaction). So is the outbox, by due time (storage::outbox_index): the webhook leader's
// look for due alerts reads no etcd. History reads go to etcd.

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <shared_mutex>
#include <string>

#include <boost/asio/awaitable.hpp>

#include "proxy/etcd/client.hpp"
#include "storage/outbox_index.hpp"
#include "storage/pin_store.hpp"

namespace regpin::proxy::etcd {

struct store_options {
    std::string prefix = "/regpin/";
    // This replica's name, unique among live replicas (members, leader): the pod name.
    std::string replica;
    // How long a dead replica keeps its lease (its check shard and webhook leadership).
    std::chrono::seconds lease_ttl{10};
    // A serving replica joins the members (check shards) and may lead webhook deliveries;
    // a tool (regpin pins migrate) only reads and writes pins.
    bool serving = true;
};

class etcd_pin_store final : public storage::pin_store {
public:
    // Loads every pin (waits for it). When etcd cannot be read yet, starts degraded and keeps
    // trying in the background; until loaded, reads of pins answer errc::unavailable.
    etcd_pin_store(options client_options, store_options store);
    ~etcd_pin_store() override;

    // Waits up to `timeout` for the first complete load.
    bool wait_loaded(std::chrono::milliseconds timeout) const;

    storage::result<std::optional<storage::pin>> find(
        const storage::pin_key& key,
        storage::read_mode mode = storage::read_mode::may_block) const override;
    using pin_store::apply;
    storage::result<std::vector<storage::pin_event>> apply(
        const std::vector<storage::pin_change>& changes) override;
    storage::result<void> touch_verified(const storage::pin_key& key,
                                         std::int64_t when_ms) override;
    storage::result<std::vector<storage::pin>> list(
        const storage::pin_filter& filter) const override;
    storage::result<std::vector<storage::pin>> list_repository(
        const std::string& registry, const std::string& repository) const override;
    storage::result<std::vector<storage::pin>> list_tag(const std::string& registry,
                                                        const std::string& repository,
                                                        const std::string& tag) const override;
    storage::result<std::size_t> count() const override;
    storage::result<std::size_t> count_awaiting() const override;
    storage::result<std::vector<storage::pin_event>> history(
        const storage::pin_key& key) const override;
    storage::result<std::uint64_t> newest_event_id() const override;
    storage::result<std::vector<storage::pin_event>> events(std::uint64_t after_id,
                                                            std::int64_t since_ms,
                                                            std::size_t limit) const override;
    storage::result<std::optional<storage::pin_event>> event(std::uint64_t id) const override;
    // Only the leader (P leader, held by lease) delivers: elsewhere nothing is due. From memory,
    // and only while etcd answers (a delivery it could not remove would be sent again and again).
    storage::result<std::vector<storage::outbox_entry>> due_deliveries(
        std::int64_t now_ms, std::size_t limit) const override;
    storage::result<std::size_t> pending_deliveries() const override;
    storage::result<void> delivered(std::uint64_t outbox_id) override;
    storage::result<void> reschedule(const storage::outbox_entry& entry) override;
    // In transactions of at most 100 operations (etcd's default limit is 128): the alerts
    // first, then the history index, then the events, so an interrupted call leaves nothing the
    // next one does not find again.
    storage::result<std::size_t> forget_before(std::int64_t cutoff_ms, std::size_t limit) override;

    // The live replicas share the pins by a hash of the pin key.
    bool checks_here(const storage::pin_key& key) const override;
    std::optional<std::string> degraded() const override;

    // For metrics and tests.
    bool reachable() const { return reachable_; }
    bool leading() const { return leading_; }
    std::size_t members() const;
    std::int64_t revision() const { return revision_; }
    const std::string& replica() const { return store_.replica; }
    // The store's etcd client (thread-safe), for what else this replica keeps in etcd (the
    // pull audit): one client, one event loop, one set of connections and credentials.
    client& etcd_client() const { return *client_; }

private:
    // Every pin whose encoded key starts with `prefix`, in key order (memory only).
    storage::result<std::vector<storage::pin>> list_prefix(const std::string& prefix) const;
    struct cached {
        std::optional<storage::pin> value;  // nullopt: absent as of mod_revision
        std::int64_t mod_revision = 0;
    };
    struct sequence {
        std::int64_t seen_at = 0;       // the revision this picture of the key is from
        std::int64_t mod_revision = 0;  // the key's own; 0 while it does not exist
        std::string raw;
        std::uint64_t last_event = 0;
        std::uint64_t last_outbox = 0;
    };

    std::string pin_key_of(const std::string& encoded) const;
    // Takes a key's state as etcd reported it at `revision` (newer than what memory holds).
    void absorb(const key_value& kv, bool deleted, std::int64_t revision);
    void absorb_locked(const key_value& kv, bool deleted, std::int64_t revision);
    void set_pin_locked(const std::string& encoded, std::optional<storage::pin> value,
                        std::int64_t revision);
    // The outbox entry as etcd holds it at `revision`, unless memory holds a newer picture.
    // `here`: this replica's own write, which the watch reports later (or has already).
    void put_outbox_locked(storage::outbox_entry entry, std::int64_t revision, bool here);
    void erase_outbox_locked(std::uint64_t id, std::int64_t revision, bool here);
    // Reads the pins named (encoded keys) and P seq afresh into memory.
    storage::result<void> refresh(const std::vector<std::string>& encoded);
    // Takes a transaction's ranges of those pins, then of P seq, into memory.
    void absorb_read_back_locked(const std::vector<std::string>& encoded, const txn_result& t);
    void mark(bool reachable);

    boost::asio::awaitable<bool> relist();
    boost::asio::awaitable<void> follow();
    boost::asio::awaitable<void> keep_lease();

    store_options store_;
    std::unique_ptr<client> client_;

    mutable std::shared_mutex mutex_;
    std::map<std::string, cached> pins_;  // by encoded key (rocksdb_pin_store::encode_key)
    std::size_t pin_count_ = 0;
    std::size_t awaiting_count_ = 0;
    storage::outbox_index outbox_;
    // Per outbox id in outbox_, the revision of the picture held; and the ids this replica
    // deleted at a revision the watch has not reported yet. A late watch event of an older
    // put (a retry time, the entry itself) must not undo a newer local change.
    std::map<std::uint64_t, std::int64_t> outbox_revision_;
    std::map<std::uint64_t, std::int64_t> outbox_deleted_here_;
    std::map<std::string, std::int64_t> members_;  // replica -> lease
    std::string leader_;
    std::int64_t leader_lease_ = 0;
    sequence seq_;

    std::atomic<bool> loaded_{false};
    std::atomic<bool> relist_needed_{false};
    std::atomic<bool> reachable_{true};
    std::atomic<std::int64_t> unreachable_since_ms_{0};
    std::atomic<bool> leading_{false};
    std::atomic<std::int64_t> lease_{0};
    std::atomic<std::int64_t> revision_{0};
    std::atomic<std::uint64_t> txn_counter_{0};
    std::atomic<bool> stopping_{false};
};

}  // namespace regpin::proxy::etcd
