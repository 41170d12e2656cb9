#pragma once
// Re-hashing what the cache holds (issue 15, point 5; storage/verify.hpp): in the background at
// cache.scrub_mib_per_s (a walk over everything, then the next an hour after the last began;
// 0: never), and on demand at full speed (POST /api/v1/verify, `regpin verify`). A blob or
// manifest that no longer matches its digest is quarantined: removed, counted, logged, and
// fetched again (verified) the next time a client asks for it. One walk at a time, on a thread
// of its own.

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "config/config.hpp"
#include "storage/cache_index.hpp"
#include "storage/verify.hpp"

namespace regpin::storage {
class database;
}

namespace regpin::proxy::cache {

struct scrub_status {
    bool running = false;
    bool on_demand = false;   // the walk under way was asked for
    std::uint64_t walks = 0;  // finished since start
    // The walk under way (or the last one): what it checked so far.
    std::uint64_t blobs = 0, bytes = 0, manifests = 0;
    std::int64_t started_ms = 0, finished_ms = 0;
    storage::verify_report last;                                     // the last finished walk
    std::uint64_t quarantined_blobs = 0, quarantined_manifests = 0;  // since start
    std::uint64_t bytes_total = 0;                                   // re-hashed since start
    std::string error;                                               // the last walk's, if any
};

nlohmann::json scrub_json(const scrub_status& s);

class scrubber {
public:
    // Told what a walk did: "bytes" re-hashed (after every chunk), "blob" or "manifest"
    // quarantined (after the walk). Must not block.
    using quarantine_fn = std::function<void(const std::string& kind, std::uint64_t count)>;

    scrubber(const config::settings& settings, std::shared_ptr<storage::database> db,
             storage::cache_index& index, quarantine_fn on_quarantine = nullptr);
    ~scrubber();
    scrubber(const scrubber&) = delete;
    scrubber& operator=(const scrubber&) = delete;

    void start();
    void stop();
    // A walk now, at full speed. False when one is under way already (its status says how far).
    bool request();
    scrub_status status() const;

private:
    void loop();
    void walk(bool on_demand);

    const std::uint64_t bytes_per_second_;  // 0: background walks off
    std::shared_ptr<storage::database> db_;
    storage::cache_index& index_;
    quarantine_fn on_quarantine_;

    mutable std::mutex mutex_;
    std::condition_variable wake_;
    bool stopping_ = false;
    bool requested_ = false;
    scrub_status status_;
    std::thread thread_;
};

}  // namespace regpin::proxy::cache
