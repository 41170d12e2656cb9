#include "proxy/store/pull_audit.hpp"

#include <algorithm>

#include <spdlog/spdlog.h>

#include "proxy/store/pool.hpp"
#include "storage/clock.hpp"

namespace regpin::proxy::store {

pull_audit::pull_audit(std::unique_ptr<storage::audit_store> store, boost::asio::thread_pool& pool,
                       config::audit_settings settings)
    : store_(std::move(store)), pool_(pool), settings_(settings) {}

pull_audit::~pull_audit() { stop(); }

void pull_audit::record(const std::string& registry, const std::string& repository,
                        const std::string& tag, const std::string& digest,
                        const std::string& address, const std::string& node) {
    auto now = storage::now_ms();
    auto k = key{registry, repository, digest, address, node};
    std::lock_guard lock(pending_mutex_);
    if (auto it = pending_.find(k); it != pending_.end()) {
        // The common case (a node pulling again within two seconds): no record is built.
        auto& r = it->second;
        r.last_ms = now;
        ++r.count;
        if (!tag.empty()) r.tag = tag;
        return;
    }
    if (pending_.size() >= max_pending) return drop(now);
    pending_.emplace(std::move(k), storage::pull_record{registry, repository, digest, address, node,
                                                        tag, now, now, 1});
}

void pull_audit::drop(std::int64_t now_ms) {
    ++dropped_;
    if (on_dropped_) on_dropped_();
    if (now_ms - last_drop_log_ms_ >= 60000) {
        last_drop_log_ms_ = now_ms;
        spdlog::warn(
            "pull audit: {} records wait to be written; pulls of new ones are not recorded "
            "until they are ({} dropped so far)",
            pending_.size(), dropped_);
    }
}

void pull_audit::flush_logged() {
    if (auto f = flush(); !f && f.error() != storage::errc::no_space)
        spdlog::warn("pull audit: writing recorded pulls failed: {}", f.error().message());
}

storage::result<std::size_t> pull_audit::flush() {
    std::lock_guard writer(flush_mutex_);
    std::map<key, storage::pull_record> batch;
    {
        std::lock_guard lock(pending_mutex_);
        batch.swap(pending_);
    }
    if (batch.empty()) return std::size_t{0};
    std::vector<storage::pull_record> records;
    records.reserve(batch.size());
    for (auto& [k, r] : batch) records.push_back(r);
    auto merged = store_->merge(records);
    if (!merged) {
        // Kept for the next write (the disk may be full for a while), within the bound.
        std::lock_guard lock(pending_mutex_);
        for (auto& [k, r] : batch) {
            auto it = pending_.find(k);
            if (it != pending_.end())
                storage::fold_pull(it->second, r);
            else if (pending_.size() < max_pending)
                pending_.emplace(k, std::move(r));
            else
                drop(storage::now_ms());
        }
        return merged.error();
    }
    return records.size();
}

storage::result<std::vector<storage::pull_record>> pull_audit::query_now(
    const storage::audit_query& q) {
    flush_logged();
    return store_->query(q);
}

namespace {

storage::result<std::vector<storage::pull_record>> query_on(pull_audit* audit,
                                                            storage::audit_query q) {
    return audit->query_now(q);
}

}  // namespace

boost::asio::awaitable<storage::result<std::vector<storage::pull_record>>> pull_audit::query(
    storage::audit_query q) {
    co_return co_await on_pool<&query_on>(pool_, this, q);
}

void pull_audit::start() {
    std::lock_guard lock(run_mutex_);
    if (thread_.joinable()) return;
    stopping_ = false;
    thread_ = std::thread([this] { run(); });
}

void pull_audit::stop() {
    {
        std::lock_guard lock(run_mutex_);
        if (!thread_.joinable()) return;
        stopping_ = true;
    }
    wake_.notify_all();
    thread_.join();
}

void pull_audit::run() {
    std::int64_t next_retention = 0;
    while (true) {
        bool last;
        {
            std::unique_lock lock(run_mutex_);
            wake_.wait_for(lock, std::chrono::seconds(2), [this] { return stopping_; });
            last = stopping_;
        }
        flush_logged();
        if (last) return;
        auto now = storage::now_ms();
        if (settings_.retention.count() > 0 && now >= next_retention) {
            next_retention = now + 3600 * 1000;
            auto cutoff =
                now -
                std::chrono::duration_cast<std::chrono::milliseconds>(settings_.retention).count();
            auto gone = store_->forget_before(cutoff);
            if (!gone)
                spdlog::warn("pull audit: retention failed: {}", gone.error().message());
            else if (*gone > 0)
                spdlog::info("pull audit: {} records not pulled for {} days removed", *gone,
                             settings_.retention.count() / 24);
        }
    }
}

}  // namespace regpin::proxy::store
