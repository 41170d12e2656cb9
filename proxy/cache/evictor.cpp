#include "proxy/cache/evictor.hpp"

#include <sys/statvfs.h>

#include <algorithm>
#include <filesystem>

#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include "proxy/oci/manifest.hpp"
#include "storage/clock.hpp"
#include "storage/database.hpp"
#include "storage/manifest_store.hpp"

namespace regpin::proxy::cache {

namespace {

// When no eviction is needed, the protected set and the byte counts by class (metrics only)
// are refreshed this often if a pin changed (a new pin event) or the manifests did, and at
// least every protected_backstop: a refresh reads every pin, 3.5 s of CPU for a million.
constexpr auto protected_refresh = std::chrono::minutes(1);
constexpr auto protected_backstop = std::chrono::minutes(10);
// Eviction goes down to this share of the limit, so that it does not run for every new blob.
constexpr double low_water = 0.95;
// Free bytes below which a pass writes nothing (no eviction, no compaction, no last reads).
constexpr std::uint64_t min_write_room = 16ull << 20;
// Evict-and-reclaim rounds per pass: a blob file shared with blobs still live frees nothing
// until they go too, so a round that left the folder over evicts further.
constexpr int max_rounds = 4;

std::string mib(std::uint64_t bytes) { return std::to_string((bytes + (1u << 19)) >> 20) + " MiB"; }

}  // namespace

nlohmann::json cache_json(const cache_status& s, const config::cache_settings& settings) {
    nlohmann::json j;
    j["loaded"] = s.loaded;
    j["data_folder_bytes"] = s.usage.folder_bytes;
    j["filesystem_bytes"] = s.usage.fs_bytes;
    j["filesystem_free_bytes"] = s.usage.fs_free_bytes;
    j["limit_bytes"] = s.limit_bytes;
    j["settings"] = {{"max_bytes", settings.max_bytes ? nlohmann::json(*settings.max_bytes)
                                                      : nlohmann::json(nullptr)},
                     {"min_free_bytes", settings.min_free_bytes},
                     {"min_free_percent", settings.min_free_percent},
                     {"protect", settings.protect}};
    j["blobs"] = s.blobs;
    j["blob_bytes"] = s.blob_bytes;
    j["manifests"] = s.manifests;
    j["protected_blobs"] = s.protected_blobs;
    j["protected_bytes"] = s.protected_bytes;
    j["evictable_bytes"] = s.blob_bytes - std::min(s.blob_bytes, s.protected_bytes);
    j["evictions"] = s.evictions;
    j["evicted_bytes"] = s.evicted_bytes;
    j["reclaimed_bytes"] = s.reclaimed_bytes;
    j["blob_files"] = {{"count", s.files.files},
                       {"bytes", s.files.bytes},
                       {"garbage_bytes", s.files.garbage_bytes}};
    j["over_limit"] = s.over_limit;
    j["admitting"] = !s.over_limit;
    j["disk_full"] = s.disk_full;
    if (!s.detail.empty()) j["detail"] = s.detail;
    j["last_pass_ms"] = s.last_pass_ms;
    j["passes"] = s.passes;
    j["pass_seconds"] = s.pass_seconds;
    return j;
}

limits_check check_limits(const config::settings& settings) {
    const auto& c = settings.cache;
    limits_check out;
    // The folder may not exist yet: its nearest existing parent is on the same file system.
    std::filesystem::path dir = std::filesystem::absolute(settings.data_dir);
    std::error_code ec;
    while (!std::filesystem::exists(dir, ec) && dir.has_parent_path() && dir != dir.parent_path())
        dir = dir.parent_path();
    struct statvfs fs {};
    if (::statvfs(dir.c_str(), &fs) != 0) {
        out.error = "data_dir: cannot read the file system of " + dir.string();
        return out;
    }
    std::uint64_t total = static_cast<std::uint64_t>(fs.f_blocks) * fs.f_frsize;
    std::uint64_t min_free = std::max<std::uint64_t>(
        {c.min_free_bytes, total / 100 * static_cast<std::uint64_t>(c.min_free_percent),
         2 * storage::write_reserve_bytes});
    if (min_free >= total) {
        out.error = "cache.min_free_bytes: " + mib(min_free) +
                    " kept free (the larger of "
                    "cache.min_free_bytes, cache.min_free_percent and regpin's own " +
                    mib(2 * storage::write_reserve_bytes) + ") is not less than the " + mib(total) +
                    " file system of " + dir.string() + ": nothing could be cached";
        return out;
    }
    if (c.max_bytes && *c.max_bytes > total - min_free) {
        out.error = "cache.max_bytes: " + mib(*c.max_bytes) + " does not fit the " + mib(total) +
                    " file system of " + dir.string() + " with " + mib(min_free) +
                    " kept free (cache.min_free_*); at most " + mib(total - min_free);
        return out;
    }
    out.summary = "cache: " + (c.max_bytes ? "at most " + mib(*c.max_bytes) : "no size cap") +
                  ", keeping " + mib(min_free) + " free of the " + mib(total) + " file system (" +
                  mib(static_cast<std::uint64_t>(fs.f_bavail) * fs.f_frsize) +
                  " free now), protect " + c.protect;
    return out;
}

evictor::evictor(const config::settings& settings, storage::cache_index& index,
                 const storage::pin_store& pins, std::shared_ptr<storage::database> db,
                 pass_fn on_pass, std::chrono::milliseconds interval)
    : settings_(settings.cache),
      dir_(settings.data_dir),
      index_(index),
      pins_(pins),
      db_(std::move(db)),
      on_pass_(std::move(on_pass)),
      interval_(interval),
      kick_bytes_(settings.cache.max_bytes
                      ? std::max<std::uint64_t>(16ull << 20, *settings.cache.max_bytes / 16)
                      : 256ull << 20) {}

evictor::~evictor() { stop(); }

void evictor::start() {
    index_.on_growth([this](std::uint64_t bytes) { grew(bytes); });
    thread_ = std::thread([this] { loop(); });
}

void evictor::stop() {
    {
        std::lock_guard lock(mutex_);
        if (stopping_ && !thread_.joinable()) return;
        stopping_ = true;
    }
    index_.on_growth(nullptr);
    wake_.notify_all();
    passed_.notify_all();
    if (thread_.joinable()) thread_.join();
}

void evictor::run_pass(bool wait) {
    std::unique_lock lock(mutex_);
    auto seen = status_.passes;
    requested_ = true;
    wake_.notify_all();
    if (wait)
        passed_.wait(lock, [&] {
            return stopping_ || failed_ || status_.passes > seen + 1 ||
                   (status_.passes > seen && !requested_);
        });
}

cache_status evictor::status() const {
    std::lock_guard lock(mutex_);
    auto s = status_;
    s.blobs = index_.count();
    s.blob_bytes = index_.bytes();
    return s;
}

bool evictor::admitting() const {
    std::lock_guard lock(mutex_);
    return !status_.over_limit;
}

bool evictor::disk_full() const {
    std::lock_guard lock(mutex_);
    return status_.disk_full;
}

void evictor::grew(std::uint64_t bytes) {
    bool kick = false;
    {
        std::lock_guard lock(mutex_);
        if (bytes >= bytes_at_pass_ + kick_bytes_ && !requested_) kick = requested_ = true;
    }
    if (kick) wake_.notify_all();
}

void evictor::loop() {
    if (auto loaded = index_.load(); !loaded) {
        spdlog::error("cache: the blob index could not be read ({}): nothing is evicted",
                      loaded.error().message());
        std::lock_guard lock(mutex_);
        status_.detail = "the blob index could not be read: nothing is evicted";
        failed_ = true;
        passed_.notify_all();
        return;
    }
    {
        std::lock_guard lock(mutex_);
        status_.loaded = true;
    }
    std::unique_lock lock(mutex_);
    while (!stopping_) {
        requested_ = false;
        lock.unlock();
        auto began = std::chrono::steady_clock::now();
        try {
            pass();
        } catch (const std::exception& e) {
            // Eviction must never take regpin down: the next pass tries again.
            spdlog::error("cache: eviction pass failed: {}", e.what());
        }
        lock.lock();
        auto ended = std::chrono::steady_clock::now();
        status_.pass_seconds += std::chrono::duration<double>(ended - began).count();
        ++status_.passes;
        passed_.notify_all();
        // Every interval, when asked, and within a second of a write refused for want of
        // space; while the disk is full, every two seconds (to resume once there is room).
        while (!stopping_ && !requested_) {
            wake_.wait_for(lock, std::chrono::seconds(1), [&] { return stopping_ || requested_; });
            auto since = std::chrono::steady_clock::now() - ended;
            if (since >= interval_ || storage::last_no_space_ms() != no_space_seen_ ||
                (status_.disk_full && since >= std::chrono::seconds(2)))
                break;
        }
    }
}

std::uint64_t evictor::allowed(const storage::disk_usage& u) const {
    std::uint64_t limit = settings_.max_bytes.value_or(UINT64_MAX);
    // Whatever the settings, twice what storage keeps for RocksDB: eviction makes room before
    // writes are refused for want of it.
    std::uint64_t min_free = std::max<std::uint64_t>(
        {settings_.min_free_bytes,
         u.fs_bytes / 100 * static_cast<std::uint64_t>(settings_.min_free_percent),
         2 * storage::write_reserve_bytes});
    // The folder may grow by what is free beyond min_free, or must shrink by the shortfall.
    std::uint64_t by_free =
        u.fs_free_bytes >= min_free
            ? u.folder_bytes + (u.fs_free_bytes - min_free)
            : u.folder_bytes - std::min(u.folder_bytes, min_free - u.fs_free_bytes);
    return std::min(limit, by_free);
}

bool evictor::protected_blobs(std::unordered_set<storage::digest>& out) {
    if (settings_.protect == "none") return true;
    std::unordered_set<std::string> visited;
    storage::pin_filter f;
    f.limit = 1000;
    while (true) {
        auto page = pins_.list(f);
        if (!page) {
            spdlog::warn("cache: the pins could not be read ({}): nothing is evicted this time",
                         page.error().message());
            return false;
        }
        for (const auto& p : *page) {
            protect_closure(p.manifest_digest, out, visited);
            if (p.pending_digest) protect_closure(*p.pending_digest, out, visited);
        }
        if (page->size() < f.limit) return true;
        f.after = page->back().key;
        // A million pins take seconds to read: a stop (SIGTERM) does not wait for them.
        std::lock_guard lock(mutex_);
        if (stopping_) return false;
    }
}

std::optional<std::uint64_t> evictor::newest_event() const {
    auto id = pins_.newest_event_id();
    if (!id) return std::nullopt;
    return *id;
}

void evictor::protect_closure(const storage::digest& d, std::unordered_set<storage::digest>& out,
                              std::unordered_set<std::string>& visited) {
    if (!visited.insert(d.str()).second) return;
    storage::manifest_store manifests(db_);
    auto m = manifests.find(d);
    if (!m || !*m) return;  // not cached: nothing of it to keep
    auto refs = oci::read_manifest((*m)->media_type, (*m)->bytes);
    if (!refs) return;
    for (const auto& child : refs->children)
        if (auto cd = storage::digest::parse(child.digest)) protect_closure(*cd, out, visited);
    if (refs->config)
        if (auto cd = storage::digest::parse(refs->config->digest)) out.insert(*cd);
    for (const auto& layer : refs->layers)
        if (auto ld = storage::digest::parse(layer.digest)) out.insert(*ld);
}

void evictor::pass() {
    bool full = false;
    {
        std::lock_guard lock(mutex_);
        if (auto seen = storage::last_no_space_ms(); seen != no_space_seen_) {
            no_space_seen_ = seen;
            if (!status_.disk_full)
                spdlog::warn(
                    "cache: the data folder's disk is full: cached content is served, "
                    "new tags and blobs get 503 until space comes back");
            status_.disk_full = true;
        }
        full = status_.disk_full;
    }
    if (full) {
        // RocksDB refuses every write after one failed for want of space, until resumed.
        auto free = storage::measure_disk_usage(dir_);
        if (free && free->fs_free_bytes >= storage::write_reserve_bytes) {
            if (auto r = storage::resume(*db_); r) {
                std::lock_guard lock(mutex_);
                // A write that failed while resuming leaves the disk marked full.
                if (storage::last_no_space_ms() == no_space_seen_) {
                    status_.disk_full = false;
                    spdlog::info(
                        "cache: space came back on the data folder's disk ({} free): "
                        "storing again",
                        mib(free->fs_free_bytes));
                }
            }
        }
    }
    auto usage = storage::measure_disk_usage(dir_);
    if (!usage) {
        spdlog::warn("cache: cannot measure the data folder {}: {}", dir_, usage.error().message());
        return;
    }
    // With almost nothing free, RocksDB must not write at all, deletions and compactions
    // included: a write it cannot finish is not recoverable on every build (database.hpp,
    // write_reserve_bytes). Eviction runs well before (min_free is at least twice the reserve).
    const bool may_write = usage->fs_free_bytes >= min_write_room;
    if (may_write)
        if (auto flushed = index_.flush(); !flushed && flushed.error() != storage::errc::no_space)
            spdlog::warn("cache: last access times not written: {}", flushed.error().message());
    auto limit = allowed(*usage);
    bool over = usage->folder_bytes > limit && may_write;
    auto now = std::chrono::steady_clock::now();
    bool refresh = over || now - protected_at_ >= protected_backstop;
    std::optional<std::uint64_t> newest;  // read before the pins: a later change shows
    auto manifests = index_.manifest_count();
    if (!refresh && now - protected_at_ >= protected_refresh) {
        newest = newest_event();
        refresh = !newest || newest != refreshed_event_ || manifests != refreshed_manifests_;
    }

    std::unordered_set<storage::digest> guarded;
    bool pins_read = true;
    if (refresh) {
        if (!newest) newest = newest_event();
        pins_read = protected_blobs(guarded);
        if (pins_read) {
            protected_at_ = now;
            refreshed_event_ = newest;
            refreshed_manifests_ = manifests;
        }
    }

    std::uint64_t evictions = 0, evicted = 0, reclaimed = 0;
    // Compacts away what was evicted (or streamed without being kept) and measures again;
    // false when the folder cannot be measured.
    auto reclaim = [&] {
        auto before = usage->folder_bytes;
        if (auto r = index_.reclaim(); !r)
            spdlog::warn("cache: reclaiming evicted space failed: {}", r.error().message());
        auto after = storage::measure_disk_usage(dir_);
        if (!after) return false;
        usage = after;
        limit = allowed(*usage);
        if (before > usage->folder_bytes) reclaimed += before - usage->folder_bytes;
        return true;
    };
    bool exhausted = false;  // nothing left to evict but what pins need or readers hold
    if (over && pins_read) {
        for (int round = 0; round < max_rounds && usage->folder_bytes > limit; ++round) {
            auto target = static_cast<std::uint64_t>(static_cast<double>(limit) * low_water);
            std::uint64_t need = usage->folder_bytes - std::min(usage->folder_bytes, target);
            std::uint64_t freed = 0;
            for (const auto& b : index_.by_last_access()) {
                if (freed >= need) break;
                if (guarded.count(b.d)) continue;
                auto r = index_.evict(b.d);
                if (!r) {
                    spdlog::warn("cache: evicting {} failed: {}", b.d.str(), r.error().message());
                    break;
                }
                if (*r == 0) continue;  // being read, or gone meanwhile
                freed += *r;
                evicted += *r;
                ++evictions;
                spdlog::debug("cache: evicted {} ({} bytes, last read {})", b.d.str(), *r,
                              b.last_access_ms);
            }
            exhausted = freed < need;
            if (freed == 0 || !reclaim()) break;
        }
    }
    // Nothing evicted, but blobs streamed without being kept may have left garbage.
    if (over && evictions == 0) (void)reclaim();
    bool still_over = usage->folder_bytes > limit;
    if (evictions > 0) {
        spdlog::info("cache: evicted {} blob(s), {}; the data folder holds {} of {} allowed",
                     evictions, mib(evicted), mib(usage->folder_bytes), mib(limit));
    }

    // What pins reach and the cache holds (a pin's layers nobody pulled are not stored).
    std::uint64_t protected_bytes = 0, protected_stored = 0;
    for (const auto& d : guarded)
        if (auto n = index_.size_of(d); n > 0) protected_bytes += n, ++protected_stored;
    std::unique_lock lock(mutex_);
    bool was_over = status_.over_limit;
    status_.usage = *usage;
    status_.limit_bytes = limit;
    status_.manifests = index_.manifest_count();
    status_.files = index_.blob_files();
    status_.evictions += evictions;
    status_.evicted_bytes += evicted;
    status_.reclaimed_bytes += reclaimed;
    status_.last_pass_ms = storage::now_ms();
    if (refresh && pins_read) {
        status_.protected_blobs = protected_stored;
        status_.protected_bytes = protected_bytes;
    }
    bytes_at_pass_ = index_.bytes();
    // Over the limit with nothing left to evict: what pins need (or downloads under way) fills it.
    status_.over_limit = still_over && pins_read && exhausted;
    if (status_.disk_full) {
        // The more urgent of the two, and what /readyz says.
        status_.detail =
            "the data folder's disk is full (no space left): cached content is served, new "
            "tags and blobs get 503 until space comes back";
    } else if (status_.over_limit) {
        status_.detail = "the data folder holds " + mib(usage->folder_bytes) + ", over the " +
                         mib(limit) + " allowed (cache.max_bytes, cache.min_free_*), and what is " +
                         "left is protected (" + mib(status_.protected_bytes) +
                         " that pins need): new blobs are served without being kept";
        if (!was_over) spdlog::warn("cache: {}", status_.detail);
    } else {
        if (was_over)
            spdlog::info(
                "cache: the data folder fits again ({} of {} allowed): new blobs are "
                "kept again",
                mib(usage->folder_bytes), mib(limit));
        status_.detail.clear();
    }
    auto now_status = status_;
    lock.unlock();
    now_status.blobs = index_.count();
    now_status.blob_bytes = index_.bytes();
    if (on_pass_) on_pass_(now_status, pass_report{evictions, evicted, reclaimed});
}

}  // namespace regpin::proxy::cache
