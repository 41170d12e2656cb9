#include "proxy/cache/scrubber.hpp"

#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include "storage/clock.hpp"

namespace regpin::proxy::cache {

namespace {

// Background walks start at most this often (a walk longer than that starts the next at once).
constexpr auto walk_every = std::chrono::hours(1);

}  // namespace

nlohmann::json scrub_json(const scrub_status& s) {
    return {{"running", s.running},
            {"on_demand", s.on_demand},
            {"walks", s.walks},
            {"blobs", s.blobs},
            {"bytes", s.bytes},
            {"manifests", s.manifests},
            {"started_ms", s.started_ms},
            {"finished_ms", s.finished_ms},
            {"last",
             {{"blobs", s.last.blobs},
              {"bytes", s.last.blob_bytes},
              {"manifests", s.last.manifests},
              {"bad_blobs", s.last.bad_blobs},
              {"bad_manifests", s.last.bad_manifests},
              {"skipped", s.last.skipped}}},
            {"quarantined_blobs", s.quarantined_blobs},
            {"quarantined_manifests", s.quarantined_manifests},
            {"bytes_total", s.bytes_total},
            {"error", s.error}};
}

scrubber::scrubber(const config::settings& settings, std::shared_ptr<storage::database> db,
                   storage::cache_index& index, quarantine_fn on_quarantine)
    : bytes_per_second_(static_cast<std::uint64_t>(settings.cache.scrub_mib_per_s) << 20),
      db_(std::move(db)),
      index_(index),
      on_quarantine_(std::move(on_quarantine)) {}

scrubber::~scrubber() { stop(); }

void scrubber::start() {
    thread_ = std::thread([this] { loop(); });
}

void scrubber::stop() {
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
    }
    wake_.notify_all();
    if (thread_.joinable()) thread_.join();
}

bool scrubber::request() {
    std::lock_guard lock(mutex_);
    if (status_.running || requested_) return false;
    requested_ = true;
    wake_.notify_all();
    return true;
}

scrub_status scrubber::status() const {
    std::lock_guard lock(mutex_);
    return status_;
}

void scrubber::loop() {
    auto next = std::chrono::steady_clock::now() + std::chrono::seconds(10);  // not at start
    std::unique_lock lock(mutex_);
    while (!stopping_) {
        if (bytes_per_second_ == 0)
            wake_.wait(lock, [&] { return stopping_ || requested_; });
        else
            wake_.wait_until(lock, next, [&] { return stopping_ || requested_; });
        if (stopping_) return;
        bool on_demand = requested_;
        requested_ = false;
        if (!on_demand && std::chrono::steady_clock::now() < next) continue;
        next = std::chrono::steady_clock::now() + walk_every;
        lock.unlock();
        walk(on_demand);
        lock.lock();
    }
}

void scrubber::walk(bool on_demand) {
    {
        std::lock_guard lock(mutex_);
        status_.running = true;
        status_.on_demand = on_demand;
        status_.blobs = status_.bytes = status_.manifests = 0;
        status_.started_ms = storage::now_ms();
    }
    auto began = std::chrono::steady_clock::now();
    std::uint64_t walked = 0;
    storage::verify_options o;
    o.pace = [&](std::uint64_t bytes) {
        walked += bytes;
        if (on_quarantine_) on_quarantine_("bytes", bytes);
        std::unique_lock lock(mutex_);
        status_.bytes = walked;
        status_.bytes_total += bytes;
        if (stopping_) return false;
        if (on_demand || bytes_per_second_ == 0) return true;
        // A rate limit, not a synchronisation: hold back until the bytes read fit the rate.
        auto due =
            began + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                        std::chrono::duration<double>(static_cast<double>(walked) /
                                                      static_cast<double>(bytes_per_second_)));
        wake_.wait_until(lock, due, [&] { return stopping_; });
        return !stopping_;
    };
    auto report = storage::verify_content(db_, &index_, o);
    std::lock_guard lock(mutex_);
    status_.running = false;
    status_.finished_ms = storage::now_ms();
    if (!report) {
        status_.error = report.error().message();
        spdlog::warn("verify: the walk stopped: {}", status_.error);
        return;
    }
    status_.error.clear();
    ++status_.walks;
    status_.last = *report;
    status_.blobs = report->blobs;
    status_.manifests = report->manifests;
    status_.quarantined_blobs += report->bad_blobs.size();
    status_.quarantined_manifests += report->bad_manifests.size();
    spdlog::log(report->bad_blobs.empty() && report->bad_manifests.empty() ? spdlog::level::info
                                                                           : spdlog::level::warn,
                "verify: {} blob(s) ({} MiB) and {} manifest(s) re-hashed, {} s; {} blob(s) and "
                "{} manifest(s) did not match and were quarantined",
                report->blobs, report->blob_bytes >> 20, report->manifests,
                (status_.finished_ms - status_.started_ms) / 1000, report->bad_blobs.size(),
                report->bad_manifests.size());
    if (on_quarantine_) {
        if (!report->bad_blobs.empty()) on_quarantine_("blob", report->bad_blobs.size());
        if (!report->bad_manifests.empty())
            on_quarantine_("manifest", report->bad_manifests.size());
    }
}

}  // namespace regpin::proxy::cache
