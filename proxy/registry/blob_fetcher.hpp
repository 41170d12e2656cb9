#pragma once
// Single-flight blob downloads. However many clients ask for one uncached digest at once, one
// upstream download runs; it writes chunks to the blob store as they arrive, and every client
// streams from it (from RocksDB for written chunks, from the in-memory tail for the rest), so
// memory per download is one chunk whatever the blob size. The blob becomes visible in the
// store only after its sha256 verified; on a mismatch it is discarded and every client's
// stream fails, so the server aborts instead of ending a wrong body.

#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <variant>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/thread_pool.hpp>

#include "proxy/oci/errors.hpp"
#include "proxy/registry/replies.hpp"
#include "proxy/upstream/registry_client.hpp"
#include "storage/blob_store.hpp"
#include "storage/digest.hpp"

namespace regpin::proxy::registry {

class blob_download;

struct download_started {
    std::optional<std::uint64_t> size;    // Content-Length from the upstream, when sent
    std::shared_ptr<body_stream> stream;  // the whole blob, from byte 0
    bool already_stored = false;          // finished before we joined: read the store instead
};

class blob_fetcher {
public:
    // Storage writes of downloads run on `blocking`.
    blob_fetcher(boost::asio::any_io_executor ex, storage::blob_store& blobs,
                 boost::asio::thread_pool& blocking);

    // Joins (or starts) the download of `d` from `client` and waits until the upstream
    // answered. The error is what the client should get when the upstream fails first.
    [[nodiscard]] boost::asio::awaitable<std::variant<download_started, oci::error>> fetch(
        const storage::digest& d, upstream::registry_client& client, const std::string& repository);

    // Waits for the download of `d` (if any) to finish. True when the blob is now stored.
    [[nodiscard]] boost::asio::awaitable<bool> wait_complete(const storage::digest& d,
                                                             upstream::registry_client& client,
                                                             const std::string& repository,
                                                             oci::error& failure);

    // Downloads in flight, for tests and metrics.
    std::size_t in_flight() const;

private:
    friend class blob_download;
    std::shared_ptr<blob_download> join(const storage::digest& d, upstream::registry_client& client,
                                        const std::string& repository);
    void finished(const storage::digest& d);

    boost::asio::any_io_executor ex_;
    storage::blob_store& blobs_;
    boost::asio::thread_pool& blocking_;
    mutable std::mutex mutex_;
    std::unordered_map<storage::digest, std::shared_ptr<blob_download>> downloads_;
};

}  // namespace regpin::proxy::registry
