#include "proxy/cache/blob_fetcher.hpp"

#include <random>
#include <vector>

#include <spdlog/spdlog.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/concurrent_channel.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "proxy/cache/chunk_source.hpp"
#include "proxy/cache/fetch_through.hpp"
#include "proxy/upstream/fetch.hpp"

namespace regpin::proxy::cache {

namespace asio = boost::asio;
using boost::system::error_code;
using waker = asio::experimental::concurrent_channel<void(error_code)>;

namespace {

constexpr std::size_t read_size = 256 * 1024;

// Blobs this large skip RocksDB's write-ahead log (storage::blob_store::durability): the
// bytes are written once instead of twice, for one flush at commit.
constexpr std::uint64_t unlogged_from = 8ull * storage::blob_store::default_chunk_size;

oci::error download_failure(const std::string& registry, const std::string& what) {
    return {oci::error_code::unavailable, "upstream " + registry + ": " + what};
}

// Where a download that is not kept writes its chunks: a random name of a digest's shape,
// never committed (open_database removes it after a crash), so that no later download of the
// same digest shares its keys.
storage::digest transient_key() {
    static thread_local std::mt19937_64 rng{std::random_device{}()};
    static constexpr char hex[] = "0123456789abcdef";
    std::string s = "sha256:";
    for (int i = 0; i < 64; ++i) s.push_back(hex[rng() & 15]);
    return *storage::digest::parse(s);
}

asio::awaitable<void> discard_transient(store::content& content, storage::digest key) {
    if (auto r = co_await content.discard_blob(key); !r)
        spdlog::warn("blob chunks {} (not kept) could not be removed: {}", key.str(),
                     r.error().message());
}

}  // namespace

class blob_download : public std::enable_shared_from_this<blob_download> {
public:
    enum class phase { connecting, streaming, complete, failed };

    blob_download(blob_fetcher& owner, storage::digest d, std::string registry)
        : owner_(owner), digest_(std::move(d)), key_(digest_), registry_(std::move(registry)) {}
    // A download not kept (the cache is over its limit) removes its chunks once the last
    // reader is done with them.
    ~blob_download() {
        if (transient_written_)
            asio::co_spawn(owner_.ex_, discard_transient(owner_.content_, key_), asio::detached);
    }

    // Downloads, verifies and commits; on any failure discards and fails every client.
    asio::awaitable<void> run(upstream::registry_client& client, std::string repository);

    // Registers `w` to be woken on every state change; returns nothing, wakes once at once so
    // the caller re-reads state without a lost-wakeup window.
    void subscribe(const std::shared_ptr<waker>& w) {
        std::lock_guard lock(mutex_);
        wakers_.push_back(w);
    }
    void unsubscribe(const std::shared_ptr<waker>& w) {
        std::lock_guard lock(mutex_);
        std::erase(wakers_, w);
    }
    // A waiter that joined (hold) and subscribed is done with the download.
    void leave(const std::shared_ptr<waker>& w) {
        unsubscribe(w);
        release();
    }

    // Someone waits for this download (a client's stream, a wait_complete caller): held from
    // join() until they are done. With no holder for the fetcher's abandon_after, it stops.
    void hold() {
        std::lock_guard lock(mutex_);
        ++holders_;
    }
    void release() {
        std::lock_guard lock(mutex_);
        if (--holders_ == 0) unwanted_since_ = std::chrono::steady_clock::now();
    }
    bool wanted() const {
        std::lock_guard lock(mutex_);
        return holders_ > 0;
    }
    bool abandoned(std::chrono::steady_clock::duration grace) const {
        std::lock_guard lock(mutex_);
        return holders_ == 0 && std::chrono::steady_clock::now() - unwanted_since_ >= grace;
    }
    // Ends a download that never started (dropped from the queue: nobody waits for it).
    void cancel_queued() {
        fail({oci::error_code::unavailable, "download of " + digest_.str() + " cancelled"});
    }

    struct view {
        phase state;
        std::optional<std::uint64_t> size;
        std::uint64_t flushed;
        std::uint64_t available;
        oci::error failure;
    };
    view snapshot() const {
        std::lock_guard lock(mutex_);
        return {phase_, size_, flushed_, flushed_ + tail_.size(), failure_};
    }

    // Copies bytes [offset, offset + max) of the in-memory tail into `out`, stopping at
    // `limit`. Returns false when that range is no longer in memory (already flushed).
    bool copy_tail(std::uint64_t offset, std::uint64_t limit, std::string& out) const {
        std::lock_guard lock(mutex_);
        if (offset < flushed_) return false;
        auto end = std::min<std::uint64_t>(limit, flushed_ + tail_.size());
        if (offset >= end) {
            out.clear();
            return true;
        }
        out.assign(tail_, offset - flushed_, end - offset);
        return true;
    }

    const storage::digest& digest() const { return digest_; }
    // Where its chunks are stored: the digest, or a transient key when it is not kept.
    const storage::digest& store_key() const { return key_; }
    std::uint32_t chunk_size() const { return chunk_size_; }
    store::content& content() const { return owner_.content_; }

private:
    void fail(oci::error e) {
        {
            std::lock_guard lock(mutex_);
            phase_ = phase::failed;
            failure_ = std::move(e);
        }
        wake();
    }
    void wake() {
        std::vector<std::shared_ptr<waker>> ws;
        {
            std::lock_guard lock(mutex_);
            ws = wakers_;
        }
        for (auto& w : ws) w->try_send(error_code{});
    }
    asio::awaitable<bool> flush_chunk(std::uint64_t index, std::string_view bytes);
    asio::awaitable<void> download(upstream::registry_client& client, std::string repository);

    blob_fetcher& owner_;
    storage::digest digest_;
    storage::digest key_;  // written once, before the first chunk; read by streams after
    bool transient_written_ = false;
    std::shared_ptr<void> held_;  // a kept blob: no eviction while this download's readers read
    std::string registry_;
    std::uint32_t chunk_size_ = storage::blob_store::default_chunk_size;
    storage::blob_store::durability durability_ = storage::blob_store::durability::logged;

    mutable std::mutex mutex_;
    phase phase_ = phase::connecting;
    std::optional<std::uint64_t> size_;
    std::uint64_t flushed_ = 0;  // bytes stored as chunks
    std::string tail_;           // bytes after flushed_, not yet a full chunk
    oci::error failure_;
    std::vector<std::shared_ptr<waker>> wakers_;
    std::size_t holders_ = 0;
    std::chrono::steady_clock::time_point unwanted_since_ = std::chrono::steady_clock::now();
};

// `bytes` stays valid: the download changes its tail only after the write returned.
asio::awaitable<bool> blob_download::flush_chunk(std::uint64_t index, std::string_view bytes) {
    auto written = co_await owner_.content_.put_chunk(key_, index, bytes, durability_);
    co_return static_cast<bool>(written);
}

asio::awaitable<void> blob_download::run(upstream::registry_client& client,
                                         std::string repository) {
    auto self = shared_from_this();
    bool failed = false;
    try {
        co_await download(client, std::move(repository));
    } catch (const std::exception& e) {
        // Nothing may leave a download half-registered: clients would wait forever.
        spdlog::error("blob {}: download failed: {}", digest_.str(), e.what());
        failed = true;
    }
    if (failed) {
        (void)co_await owner_.content_.discard_blob(key_);
        owner_.finished(digest_, registry_);
        fail({oci::error_code::unavailable, "download of " + digest_.str() + " failed"});
    }
}

asio::awaitable<void> blob_download::download(upstream::registry_client& client,
                                              std::string repository) {
    upstream::request req;
    req.target = "/v2/" + repository + "/blobs/" + digest_.str();
    req.scope = upstream::pull_scope(repository);
    auto resp = co_await client.send(req);
    if (!resp) {
        spdlog::warn("blob {}: upstream {} failed: {}", digest_.str(), registry_,
                     resp.error().message());
        fail(upstream::transport_error(registry_, resp.error()));
        owner_.finished(digest_, registry_);
        co_return;
    }
    if (resp->status() != 200) {
        auto status = resp->status();
        (void)co_await resp->read_all(64 * 1024);
        resp = make_error_code(boost::system::errc::operation_canceled);  // back to the pool
        fail(upstream::upstream_error(registry_, status, oci::error_code::blob_unknown));
        owner_.finished(digest_, registry_);
        co_return;
    }
    bool keep = owner_.admits() == blob_fetcher::admission::keep;
    if (!keep) {
        key_ = transient_key();
        spdlog::info("blob {} from {}: served without being kept: the cache is over its limit",
                     digest_.str(), registry_);
    }
    if (auto began = co_await owner_.content_.begin_blob(key_, chunk_size_); !began) {
        if (began.error() == storage::errc::no_space)
            fail(storage_error("starting a blob download", began.error()));
        else
            fail({oci::error_code::unknown, "cannot write to the cache"});
        owner_.finished(digest_, registry_);
        co_return;
    }
    {
        std::lock_guard lock(mutex_);
        size_ = resp->content_length();
        phase_ = phase::streaming;
        if (size_ && *size_ >= unlogged_from)
            durability_ = storage::blob_store::durability::unlogged;
    }
    wake();

    storage::hasher h(digest_.algorithm());
    std::vector<char> buf(read_size);
    std::uint64_t total = 0;
    std::uint64_t index = 0;
    std::string failure;
    // Low-speed limit (as curl's): an upstream that drips bytes never trips the read timeout,
    // so a window of read_timeout must bring at least low_speed_limit bytes per second.
    const auto& cfg = client.settings();
    auto window_start = std::chrono::steady_clock::now();
    std::uint64_t window_bytes = 0;
    bool cancelled = false;
    while (true) {
        auto n = co_await resp->read_some(buf);
        if (!n) {
            failure = n.error().message();
            break;
        }
        if (*n == 0) break;
        if (abandoned(owner_.limits_.abandon_after)) {
            failure = "nobody waits for it any more (downloads.abandon_after_s)";
            cancelled = true;
            break;
        }
        window_bytes += *n;
        if (cfg.low_speed_limit > 0) {
            auto elapsed = std::chrono::steady_clock::now() - window_start;
            if (elapsed >= cfg.read_timeout) {
                auto seconds = std::chrono::duration<double>(elapsed).count();
                if (window_bytes < cfg.low_speed_limit * seconds) {
                    failure = "upstream too slow: " + std::to_string(window_bytes) + " bytes in " +
                              std::to_string(static_cast<int>(seconds)) + " s (low_speed_limit)";
                    break;
                }
                window_start = std::chrono::steady_clock::now();
                window_bytes = 0;
            }
        }
        h.update(std::span<const char>(buf.data(), *n));
        total += *n;
        {
            std::lock_guard lock(mutex_);
            tail_.append(buf.data(), *n);
        }
        // tail_ changes only here, so reading it unlocked while flushing is safe.
        if (tail_.size() >= chunk_size_) {
            if (!co_await flush_chunk(index, std::string_view(tail_).substr(0, chunk_size_))) {
                failure = "cache write failed";
                break;
            }
            std::lock_guard lock(mutex_);
            tail_.erase(0, chunk_size_);
            flushed_ += chunk_size_;
            ++index;
        }
        wake();
    }
    // The upstream connection goes back to the pool (or closes, for a body cut short) before
    // this download gives up its slot: a queued download may take the slot at once.
    resp = make_error_code(boost::system::errc::operation_canceled);
    if (failure.empty() && !tail_.empty()) {
        if (!co_await flush_chunk(index, tail_)) failure = "cache write failed";
    }
    if (failure.empty() && size_ && total != *size_)
        failure = "body has " + std::to_string(total) + " bytes, Content-Length said " +
                  std::to_string(*size_);
    if (failure.empty()) {
        auto got = h.finish();
        if (!(got == digest_)) failure = "content does not match digest (got " + got.str() + ")";
    }
    if (failure.empty() && keep) {
        auto committed = co_await owner_.content_.commit_blob(digest_, total, durability_);
        if (!committed)
            failure = "cache commit failed";
        else
            held_ = owner_.content_.index().hold(digest_);
    }

    if (!failure.empty()) {
        if (cancelled) {
            spdlog::info("blob {} from {}: download cancelled after {} bytes: {}", digest_.str(),
                         registry_, total, failure);
            owner_.dropped("abandoned");
        } else {
            spdlog::error("blob {} from {}: {}; discarded", digest_.str(), registry_, failure);
        }
        (void)co_await owner_.content_.discard_blob(key_);
        owner_.finished(digest_, registry_);
        fail(download_failure(registry_, failure));
        co_return;
    }
    {
        std::lock_guard lock(mutex_);
        flushed_ = total;
        tail_.clear();
        tail_.shrink_to_fit();
        size_ = total;
        phase_ = phase::complete;
        transient_written_ = !keep;
    }
    spdlog::debug("blob {} stored ({} bytes)", digest_.str(), total);
    owner_.finished(digest_, registry_);
    wake();
}

namespace {

// One client's view of a download: the whole blob from byte 0. Holds back the last byte
// until the digest verified, so a wrong body never looks complete.
class download_stream final : public http::body_stream {
public:
    download_stream(std::shared_ptr<blob_download> dl, std::shared_ptr<waker> w)
        : dl_(std::move(dl)), waker_(std::move(w)), source_(dl_->content()) {}
    ~download_stream() override { dl_->leave(waker_); }

    asio::awaitable<boost::system::result<http::body_part>> next(bool files) override {
        using phase = blob_download::phase;
        while (true) {
            auto v = dl_->snapshot();
            if (v.state == phase::failed) co_return make_error_code(boost::system::errc::io_error);
            bool complete = v.state == phase::complete;
            std::uint64_t deliverable =
                complete ? v.available : (v.available > 0 ? v.available - 1 : 0);
            if (offset_ < v.flushed && offset_ < deliverable) {
                // A stored chunk: full-size, but for the last one of a complete blob.
                auto cs = dl_->chunk_size();
                auto index = offset_ / cs;
                auto chunk_start = index * cs;
                auto chunk_bytes = complete ? std::min<std::uint64_t>(cs, v.available - chunk_start)
                                            : std::uint64_t{cs};
                auto stop = std::min<std::uint64_t>(chunk_bytes, deliverable - chunk_start);
                // Stored: every flushed chunk (all of them once complete, the last one short).
                auto stored = (v.flushed + cs - 1) / cs - index;
                auto part = co_await source_.part(dl_->store_key(), index, chunk_bytes,
                                                  offset_ - chunk_start, stop, files, stored);
                if (part) offset_ = chunk_start + stop;
                co_return part;
            }
            if (offset_ < deliverable) {
                // At most one read's worth per copy: a herd of clients each holding a whole
                // chunk's copy would cost a chunk of memory per client.
                auto limit = std::min<std::uint64_t>(deliverable, offset_ + read_size);
                if (dl_->copy_tail(offset_, limit, buf_) && !buf_.empty()) {
                    offset_ += buf_.size();
                    co_return http::body_part{std::string_view(buf_)};
                }
                continue;  // flushed meanwhile: read it from the store
            }
            if (complete) co_return http::body_part{};
            auto [ec] = co_await waker_->async_receive(asio::as_tuple(asio::use_awaitable));
            if (ec) co_return make_error_code(boost::system::errc::operation_canceled);
        }
    }

private:
    std::shared_ptr<blob_download> dl_;
    std::shared_ptr<waker> waker_;
    std::uint64_t offset_ = 0;
    chunk_source source_;  // chunks already stored
    std::string buf_;      // bytes not yet a stored chunk
};

}  // namespace

blob_fetcher::blob_fetcher(asio::any_io_executor ex, store::content& content,
                           config::download_limits limits, observer on_drop)
    : ex_(ex), content_(content), limits_(limits), on_drop_(std::move(on_drop)), heads_(ex) {}

std::optional<std::uint64_t> blob_fetcher::known_size(const std::string& key) {
    std::lock_guard lock(sizes_mutex_);
    auto it = sizes_.find(key);
    if (it == sizes_.end() || std::chrono::steady_clock::now() >= it->second.second)
        return std::nullopt;
    return it->second.first;
}

asio::awaitable<oci::result<std::uint64_t>> blob_fetcher::head(storage::digest d,
                                                               upstream::registry_client& client,
                                                               std::string repository) {
    auto key = client.settings().registry + " " + repository + " " + d.str();
    if (auto size = known_size(key)) co_return *size;
    auto* self = this;
    auto* upstream = &client;
    single_flight<std::uint64_t>::work_type work = [self, upstream, repository, d, key] {
        return self->head_upstream(d, *upstream, repository, key);
    };
    co_return co_await heads_.run(key, work);
}

asio::awaitable<oci::result<std::uint64_t>> blob_fetcher::head_upstream(
    storage::digest d, upstream::registry_client& client, std::string repository, std::string key) {
    // Known meanwhile, from a HEAD that ended between the caller's look and this one's start.
    if (auto size = known_size(key)) co_return *size;
    auto size = co_await upstream::head_blob(client, repository, d);
    if (size) {
        std::lock_guard lock(sizes_mutex_);
        if (sizes_.size() >= 4096) sizes_.clear();  // bounded
        sizes_[key] = {*size, std::chrono::steady_clock::now() + std::chrono::minutes(1)};
    }
    co_return size;
}

std::size_t blob_fetcher::in_flight() const {
    std::lock_guard lock(mutex_);
    return downloads_.size();
}

std::size_t blob_fetcher::running() const {
    std::lock_guard lock(mutex_);
    return running_;
}

std::size_t blob_fetcher::queued() const {
    std::lock_guard lock(mutex_);
    return queue_.size();
}

void blob_fetcher::dropped(std::string_view reason) const {
    if (on_drop_) on_drop_(reason);
}

void blob_fetcher::claim_slot_locked(const std::string& registry) {
    ++running_;
    ++running_per_upstream_[registry];
}

bool blob_fetcher::may_start_locked(const std::string& registry) const {
    if (running_ >= static_cast<std::size_t>(limits_.max_concurrent)) return false;
    auto it = running_per_upstream_.find(registry);
    return it == running_per_upstream_.end() ||
           it->second < static_cast<std::size_t>(limits_.max_per_upstream);
}

void blob_fetcher::finished(const storage::digest& d, const std::string& registry) {
    std::vector<waiting> start, drop;
    {
        std::lock_guard lock(mutex_);
        downloads_.erase(d);
        ++ended_;
        --running_;
        if (auto it = running_per_upstream_.find(registry); it != running_per_upstream_.end())
            if (--it->second == 0) running_per_upstream_.erase(it);
        // The queue in order; one whose upstream is at its cap waits for that upstream.
        for (auto it = queue_.begin(); it != queue_.end();) {
            if (!it->download->wanted()) {
                downloads_.erase(it->download->digest());
                ++ended_;
                drop.push_back(std::move(*it));
                it = queue_.erase(it);
                continue;
            }
            const auto& from = it->client->settings().registry;
            if (!may_start_locked(from)) {
                if (running_ >= static_cast<std::size_t>(limits_.max_concurrent)) break;
                ++it;
                continue;
            }
            claim_slot_locked(from);
            start.push_back(std::move(*it));
            it = queue_.erase(it);
        }
    }
    for (auto& w : drop) {
        w.download->cancel_queued();
        dropped("abandoned");
    }
    for (auto& w : start)
        asio::co_spawn(asio::make_strand(ex_), w.download->run(*w.client, w.repository),
                       asio::detached);
}

asio::awaitable<oci::result<std::shared_ptr<blob_download>>> blob_fetcher::join(
    const storage::digest& d, upstream::registry_client& client, const std::string& repository) {
    const auto& registry = client.settings().registry;
    std::shared_ptr<blob_download> dl;
    bool start_now = false;
    while (!dl) {
        std::uint64_t ended = 0;
        {
            std::lock_guard lock(mutex_);
            if (auto it = downloads_.find(d); it != downloads_.end()) {
                it->second->hold();
                co_return it->second;
            }
            ended = ended_;
        }
        // The store is read without the lock (it may take a thread hop); a download that ended
        // meanwhile shows in ended_, and then the store is read again.
        auto rec = co_await content_.find_blob(d);
        if (!rec) co_return oci::error{oci::error_code::unknown, "cannot read the cache"};
        if (*rec) co_return std::shared_ptr<blob_download>{};
        if (admits() == admission::refuse)
            co_return storage_error("fetching a new blob", storage::errc::no_space);
        std::size_t queued = 0;
        {
            std::lock_guard lock(mutex_);
            if (auto it = downloads_.find(d); it != downloads_.end()) {
                it->second->hold();
                co_return it->second;
            }
            if (ended_ != ended) continue;
            queued = queue_.size();
            if (may_start_locked(registry)) {
                start_now = true;
                claim_slot_locked(registry);
            }
            if (start_now || queued < static_cast<std::size_t>(limits_.max_queued)) {
                dl = std::make_shared<blob_download>(*this, d, registry);
                dl->hold();
                downloads_.emplace(d, dl);
                if (!start_now) queue_.push_back({dl, &client, repository});
            }
        }
        if (!dl) {
            dropped("queue_full");
            static std::atomic<std::int64_t> last_log{0};
            auto now = std::chrono::steady_clock::now().time_since_epoch().count();
            if (now - last_log.load() > std::int64_t{1000000000}) {
                last_log = now;
                spdlog::warn(
                    "blob {}: refused: {} downloads queued, the most downloads.max_queued "
                    "allows",
                    d.str(), queued);
            }
            oci::error e{oci::error_code::unavailable,
                         "regpin is busy: " + std::to_string(queued) +
                             " blob downloads wait for a slot (downloads.max_queued); retry later"};
            e.retry_after_s = 5;
            co_return e;
        }
    }
    // Started outside the lock: co_spawn may run the download inline, and a download that
    // fails at once (offline, an immediate error) calls finished(), which takes the lock.
    // The download belongs to no client: it finishes (and fills the cache) while anyone
    // waits for it, and for downloads.abandon_after after the last one left.
    if (start_now)
        asio::co_spawn(asio::make_strand(ex_), dl->run(client, repository), asio::detached);
    co_return dl;
}

asio::awaitable<oci::result<download_started>> blob_fetcher::fetch(
    storage::digest d, upstream::registry_client& client, std::string repository) {
    auto joined = co_await join(d, client, repository);
    if (!joined) co_return joined.error();
    auto dl = *joined;
    if (!dl) {
        download_started cached;
        cached.already_stored = true;
        co_return cached;
    }
    auto w = std::make_shared<waker>(co_await asio::this_coro::executor, 1);
    dl->subscribe(w);
    while (true) {
        auto v = dl->snapshot();
        if (v.state == blob_download::phase::failed) {
            dl->leave(w);
            co_return v.failure;
        }
        if (v.state != blob_download::phase::connecting) {
            download_started s;
            s.size = v.size;
            s.stream = std::make_shared<download_stream>(dl, w);
            co_return s;
        }
        auto [ec] = co_await w->async_receive(asio::as_tuple(asio::use_awaitable));
        if (ec) {
            dl->leave(w);
            co_return oci::error{oci::error_code::unavailable, "cancelled"};
        }
    }
}

asio::awaitable<oci::result<void>> blob_fetcher::wait_complete(storage::digest d,
                                                               upstream::registry_client& client,
                                                               std::string repository) {
    auto joined = co_await join(d, client, repository);
    if (!joined) co_return joined.error();
    auto dl = *joined;
    if (!dl) co_return oci::result<void>{};
    auto w = std::make_shared<waker>(co_await asio::this_coro::executor, 1);
    dl->subscribe(w);
    oci::result<void> out;
    while (true) {
        auto v = dl->snapshot();
        if (v.state == blob_download::phase::complete) break;
        if (v.state == blob_download::phase::failed) {
            out = v.failure;
            break;
        }
        auto [ec] = co_await w->async_receive(asio::as_tuple(asio::use_awaitable));
        if (ec) {
            out = oci::error{oci::error_code::unavailable, "cancelled"};
            break;
        }
    }
    dl->leave(w);
    co_return out;
}

}  // namespace regpin::proxy::cache
