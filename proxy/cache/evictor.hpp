#pragma once
// The size cap (issue 15; config::cache_settings). The data folder may hold at most
// cache.max_bytes, and must leave the larger of cache.min_free_bytes and
// cache.min_free_percent of its file system free. Past that, the evictor removes the blobs read
// least recently, down to 95% of what is allowed, skipping what a pin needs (cache.protect
// "pinned": every config and layer reachable from a pin's served or pending digest that the
// cache holds). Manifests are never evicted (a few KiB each; a pin's bytes).
//
// Space comes back as whole blob files: eviction deletes a blob's record and chunks, then
// compacts the chunk column family's keys (tiny: no chunk is copied), and RocksDB deletes each
// blob file left with no live chunk. Blob garbage collection stays off (storage/database.cpp):
// it copied live blobs by file age. A file still holding a live chunk keeps its space until
// those chunks go too; the folder's size on disk, not the blobs' sizes, decides when to stop.
//
// When what is left is all protected and the folder is still over, the evictor says so
// (status().over_limit, a metric, /readyz detail, a warning log) and `admitting()` turns false:
// new blobs are then streamed to clients without being kept (cache/blob_fetcher.hpp).
//
// It works on a thread of its own (every call it makes may block): one pass when started,
// then every `interval`, and soon after the cache grew by a sixteenth of max_bytes.

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_set>

#include <nlohmann/json_fwd.hpp>

#include "config/config.hpp"
#include "storage/cache_index.hpp"
#include "storage/digest.hpp"
#include "storage/pin_store.hpp"

namespace regpin::storage {
class database;
}

namespace regpin::proxy::cache {

struct cache_status {
    bool loaded = false;  // the index is read (at start, in the background)
    storage::disk_usage usage;
    std::uint64_t limit_bytes = 0;  // what the folder may hold now (max_bytes, min_free)
    std::uint64_t blobs = 0, blob_bytes = 0;
    std::uint64_t manifests = 0;  // estimate
    // As of the last pass that looked at the pins (every pass that evicts, and once a minute).
    std::uint64_t protected_blobs = 0, protected_bytes = 0;
    std::uint64_t evictions = 0, evicted_bytes = 0;  // since start
    std::uint64_t reclaimed_bytes = 0;  // folder bytes freed by the compactions after them
    storage::blob_file_stats files;
    // Protected content alone exceeds the limit: nothing more can be evicted, new blobs are
    // not kept.
    bool over_limit = false;
    // A write failed for want of space, and the database was not resumed since.
    bool disk_full = false;
    std::string detail;  // why, for /readyz and `regpin cache`
    std::int64_t last_pass_ms = 0;
    std::uint64_t passes = 0;
    double pass_seconds = 0;  // spent in passes since start (the evictor's thread)
};

// The cache limits checked against the data folder's file system (its nearest existing
// parent when the folder does not exist yet): `error` names the key that cannot hold there
// (min_free as large as the file system, max_bytes beyond what it can give), else `summary`
// says what holds. `regpin serve` refuses to start on an error; --check-config prints both.
struct limits_check {
    std::string summary;
    std::string error;
};
limits_check check_limits(const config::settings& settings);

// The status as the admin API (GET /api/v1/cache) and `regpin cache` show it.
nlohmann::json cache_json(const cache_status& s, const config::cache_settings& settings);

class evictor {
public:
    // Told after every pass, with what it evicted (the closure keeper then forgets what it
    // found complete; metrics count it). Runs on the evictor's thread.
    struct pass_report {
        std::uint64_t evictions = 0, evicted_bytes = 0, reclaimed_bytes = 0;
    };
    using pass_fn = std::function<void(const cache_status&, const pass_report&)>;

    evictor(const config::settings& settings, storage::cache_index& index,
            const storage::pin_store& pins, std::shared_ptr<storage::database> db,
            pass_fn on_pass = nullptr,
            std::chrono::milliseconds interval = std::chrono::seconds(10));
    ~evictor();
    evictor(const evictor&) = delete;
    evictor& operator=(const evictor&) = delete;

    void start();
    // Waits for a pass under way to end.
    void stop();
    // Asks for a pass now (and waits for it when `wait`): the admin API's "regpin cache".
    void run_pass(bool wait);

    cache_status status() const;
    const config::cache_settings& settings() const { return settings_; }
    // False while protected content alone exceeds the limit.
    bool admitting() const;
    // True from a write refused for want of space (storage::last_no_space_ms) until a pass
    // found room again and resumed the database (storage::resume).
    bool disk_full() const;

private:
    void loop();
    void pass();
    std::uint64_t allowed(const storage::disk_usage& u) const;
    // Digests of blobs a pin needs; false when the pins could not be read, or the evictor
    // stops while they are (evict nothing).
    bool protected_blobs(std::unordered_set<storage::digest>& out);
    void protect_closure(const storage::digest& d, std::unordered_set<storage::digest>& out,
                         std::unordered_set<std::string>& visited);
    void grew(std::uint64_t bytes);

    const config::cache_settings settings_;
    const std::string dir_;
    storage::cache_index& index_;
    const storage::pin_store& pins_;
    std::shared_ptr<storage::database> db_;
    pass_fn on_pass_;
    const std::chrono::milliseconds interval_;
    const std::uint64_t kick_bytes_;

    mutable std::mutex mutex_;
    std::condition_variable wake_;
    std::condition_variable passed_;
    bool stopping_ = false;
    bool requested_ = false;
    bool failed_ = false;  // the index could not be loaded: no passes
    std::uint64_t bytes_at_pass_ = 0;
    cache_status status_;
    std::chrono::steady_clock::time_point protected_at_{};
    // What the last refresh of the protected set saw: the newest pin event (every change of
    // what a pin serves has one) and the manifests' count; nullopt: unknown.
    std::optional<std::uint64_t> refreshed_event_;
    std::uint64_t refreshed_manifests_ = 0;
    // The id of the newest pin event (0: none), nullopt when the events cannot be read.
    std::optional<std::uint64_t> newest_event() const;
    std::int64_t no_space_seen_ = 0;  // storage::last_no_space_ms() as of the last pass
    std::thread thread_;
};

}  // namespace regpin::proxy::cache
