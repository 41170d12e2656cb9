#pragma once
// Single-flight blob downloads. However many clients ask for one uncached digest at once, one
// upstream download runs; it writes chunks to the blob store as they arrive, and every client
// streams from it (from RocksDB for written chunks, from the in-memory tail for the rest), so
// memory per download is one chunk whatever the blob size. The blob becomes visible in the
// store only after its sha256 verified; on a mismatch it is discarded and every client's
// stream fails, so the server aborts instead of ending a wrong body.
//
// Downloads are bounded (config::download_limits): at most max_concurrent run, at most
// max_per_upstream per upstream; more wait in a FIFO queue of max_queued, and past it the client
// gets 503 with Retry-After. A download nobody waits for any more (no client stream, no
// wait_complete caller such as a pin-content fetch) for abandon_after is cancelled and discarded.

#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include "config/config.hpp"
#include "proxy/cache/single_flight.hpp"
#include "proxy/http/message.hpp"
#include "proxy/oci/errors.hpp"
#include "proxy/store/content.hpp"
#include "proxy/upstream/registry_client.hpp"
#include "storage/digest.hpp"

namespace regpin::proxy::cache {

class blob_download;

struct download_started {
    std::optional<std::uint64_t> size;          // Content-Length from the upstream, when sent
    std::shared_ptr<http::body_stream> stream;  // the whole blob, from byte 0
    bool already_stored = false;                // finished before we joined: read the store instead
};

class blob_fetcher {
public:
    // Told when a download is refused ("queue_full") or cancelled ("abandoned"); must not block.
    using observer = std::function<void(std::string_view reason)>;

    blob_fetcher(boost::asio::any_io_executor ex, store::content& content,
                 config::download_limits limits = {}, observer on_drop = nullptr);

    // Joins (or starts) the download of `d` from `client` and waits until the upstream
    // answered. The error is what the client should get when the upstream fails first.
    [[nodiscard]] boost::asio::awaitable<oci::result<download_started>> fetch(
        storage::digest d, upstream::registry_client& client, std::string repository);

    // Joins (or starts) the download of `d` and waits for it to finish: the blob is stored
    // when this returns without an error.
    [[nodiscard]] boost::asio::awaitable<oci::result<void>> wait_complete(
        storage::digest d, upstream::registry_client& client, std::string repository);

    // The size the upstream states for uncached blob `d` (a client's HEAD: nothing is
    // downloaded). One upstream HEAD however many ask at once, and its answer remembered for
    // a minute (a digest names the same bytes forever). Errors are what the client should get.
    [[nodiscard]] boost::asio::awaitable<oci::result<std::uint64_t>> head(
        storage::digest d, upstream::registry_client& client, std::string repository);

    // Downloads in flight (running or queued), for tests and metrics.
    std::size_t in_flight() const;
    // Downloads running now, and waiting for a slot.
    std::size_t running() const;
    std::size_t queued() const;

    store::content& content() { return content_; }

    // Asked as each download is asked for (cache/evictor.hpp; must not block; unset: keep):
    // keep it; stream it to its clients without keeping it (the cache is over its limit with
    // only protected content); or refuse it (the data folder's disk is full: a 503 before any
    // byte, rather than a body cut short when a write fails).
    enum class admission { keep, transient, refuse };
    void set_admission(std::function<admission()> admit) { admit_ = std::move(admit); }
    admission admits() const { return admit_ ? admit_() : admission::keep; }
    bool admitting() const { return admits() == admission::keep; }

private:
    friend class blob_download;
    // The download of `d`, joined or started; nullptr when the blob is stored.
    boost::asio::awaitable<oci::result<std::shared_ptr<blob_download>>> join(
        const storage::digest& d, upstream::registry_client& client, const std::string& repository);
    // A running download ended (any way): frees its slot and starts what the queue holds.
    void finished(const storage::digest& d, const std::string& registry);
    // Whether a download from `registry` may start now, and counting one that does. Under
    // mutex_.
    bool may_start_locked(const std::string& registry) const;
    void claim_slot_locked(const std::string& registry);
    void dropped(std::string_view reason) const;

    std::optional<std::uint64_t> known_size(const std::string& key);
    boost::asio::awaitable<oci::result<std::uint64_t>> head_upstream(
        storage::digest d, upstream::registry_client& client, std::string repository,
        std::string key);

    struct waiting {
        std::shared_ptr<blob_download> download;
        upstream::registry_client* client = nullptr;
        std::string repository;
    };

    boost::asio::any_io_executor ex_;
    store::content& content_;
    const config::download_limits limits_;
    observer on_drop_;
    std::function<admission()> admit_;
    mutable std::mutex mutex_;
    std::unordered_map<storage::digest, std::shared_ptr<blob_download>> downloads_;
    std::size_t running_ = 0;
    std::unordered_map<std::string, std::size_t> running_per_upstream_;
    std::deque<waiting> queue_;

    single_flight<std::uint64_t> heads_;
    std::mutex sizes_mutex_;
    // By "registry repository digest": the size an upstream HEAD stated, and until when.
    std::unordered_map<std::string, std::pair<std::uint64_t, std::chrono::steady_clock::time_point>>
        sizes_;
    // Downloads that ended, ever: join() tells from it that one finished between its look at
    // the store and its look at downloads_ (the blob may be stored now).
    std::uint64_t ended_ = 0;
};

}  // namespace regpin::proxy::cache
