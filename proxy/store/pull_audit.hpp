#pragma once
// The pull audit as the proxy uses it (storage/audit_store.hpp holds the records): a pull is
// recorded in memory (record(), a map update: nothing is written on the request path) and
// written in batches by a thread of its own every two seconds, which also removes records past
// the retention once an hour. Queries write what is recorded first, so an answer includes
// every pull made before it.
//
// Memory is bounded: at most max_pending distinct (registry, repository, digest, client)
// records wait for a write; past that, pulls of new ones are counted as dropped (and logged
// once a minute) until the next write empties the map.

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/thread_pool.hpp>

#include "config/config.hpp"
#include "storage/audit_store.hpp"

namespace regpin::proxy::store {

class pull_audit {
public:
    static constexpr std::size_t max_pending = 100000;

    pull_audit(std::unique_ptr<storage::audit_store> store, boost::asio::thread_pool& pool,
               config::audit_settings settings);
    ~pull_audit();

    // `address` (with the node name it claims, possibly empty) was sent manifest `digest` of
    // registry/repository, asked for by `tag` (empty when asked by digest). Memory only.
    void record(const std::string& registry, const std::string& repository, const std::string& tag,
                const std::string& digest, const std::string& address, const std::string& node);

    // Writes what record() gathered; how many records. Blocks.
    [[nodiscard]] storage::result<std::size_t> flush();
    // flush(), then the matching records. Blocks.
    [[nodiscard]] storage::result<std::vector<storage::pull_record>> query_now(
        const storage::audit_query& q);
    // query_now() on the blocking pool.
    [[nodiscard]] boost::asio::awaitable<storage::result<std::vector<storage::pull_record>>> query(
        storage::audit_query q);

    // Starts the writing thread (flush every two seconds, retention every hour); stop() ends
    // it after a last flush. Without start(), only queries write.
    void start();
    void stop();

    // Called on each pull not recorded (for a metric); set before the first record().
    void on_dropped(std::function<void()> fn) { on_dropped_ = std::move(fn); }

    std::size_t records() const { return store_->count(); }
    const config::audit_settings& settings() const { return settings_; }

private:
    using key = std::tuple<std::string, std::string, std::string, std::string, std::string>;
    void run();
    // A pull not recorded: counted, and logged once a minute. Under pending_mutex_.
    void drop(std::int64_t now_ms);
    // flush(), logging a failure other than a full disk (which the database logs itself).
    void flush_logged();

    std::unique_ptr<storage::audit_store> store_;
    boost::asio::thread_pool& pool_;
    config::audit_settings settings_;

    std::mutex pending_mutex_;
    std::map<key, storage::pull_record> pending_;
    std::int64_t last_drop_log_ms_ = 0;
    std::uint64_t dropped_ = 0;  // guarded by pending_mutex_
    std::function<void()> on_dropped_;

    std::mutex flush_mutex_;  // one writer at a time: a query's flush and the thread's

    std::mutex run_mutex_;
    std::condition_variable wake_;
    bool stopping_ = false;
    std::thread thread_;
};

}  // namespace regpin::proxy::store
