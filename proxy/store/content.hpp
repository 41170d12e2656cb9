#pragma once
// The cache's content (manifests and blobs) for coroutines on network threads. Every call that
// may block (a write, a read that may reach the disk) runs on the blocking pool; a lookup that
// RocksDB answers from memory (storage::read_mode::memory_only) runs inline, so a warm manifest
// or blob record costs no thread hop. No RocksDB call that may block ever runs on the calling
// thread (storage/threads.hpp checks it in builds with assertions).
// Thread-safe. The arguments are copied: nothing needs to outlive the call but `out` and the
// bytes of put_chunk.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/thread_pool.hpp>

#include "proxy/store/shared_chunks.hpp"
#include "storage/blob_store.hpp"
#include "storage/cache_index.hpp"
#include "storage/digest.hpp"
#include "storage/manifest_store.hpp"
#include "storage/referrers_store.hpp"

namespace regpin::proxy::store {

template <class T>
using result = storage::result<T>;
template <class T>
using awaitable = boost::asio::awaitable<T>;

class content {
public:
    content(std::shared_ptr<storage::database> db, boost::asio::thread_pool& pool);

    // A consistent copy of the whole data folder in `dir` (storage::checkpoint), on the pool:
    // its size on disk, or why not.
    struct backup_result {
        std::string error;  // empty when done
        std::uint64_t bytes = 0;
    };
    [[nodiscard]] awaitable<backup_result> backup(std::string dir);

    // Blobs by last read, for the size cap (storage/cache_index.hpp): a blob found complete
    // here (peek_blob, find_blob) counts as read, a committed one as read when committed.
    storage::cache_index& index() { return *index_; }
    const storage::cache_index& index() const { return *index_; }

    // Lookups answered from RocksDB's memory without suspending (the hot path: no coroutine
    // frame, no thread hop); errc::would_block when the answer needs the disk: then co_await
    // find_manifest / find_blob.
    [[nodiscard]] result<std::optional<storage::manifest>> peek_manifest(
        const storage::digest& d) const;
    [[nodiscard]] result<std::optional<storage::blob_record>> peek_blob(
        const storage::digest& d) const;

    // Manifests by digest (storage/manifest_store.hpp).
    [[nodiscard]] awaitable<result<std::optional<storage::manifest>>> find_manifest(
        storage::digest d) const;
    [[nodiscard]] awaitable<result<void>> put_manifest(storage::digest d, storage::manifest m);

    // Blobs (storage/blob_store.hpp).
    [[nodiscard]] awaitable<result<std::optional<storage::blob_record>>> find_blob(
        storage::digest d) const;
    [[nodiscard]] awaitable<result<void>> begin_blob(storage::digest d, std::uint32_t chunk_size);
    // `bytes` must stay valid until the call returns.
    [[nodiscard]] awaitable<result<void>> put_chunk(storage::digest d, std::uint64_t index,
                                                    std::string_view bytes,
                                                    storage::blob_store::durability mode);
    [[nodiscard]] awaitable<result<void>> commit_blob(storage::digest d, std::uint64_t size,
                                                      storage::blob_store::durability mode);
    [[nodiscard]] awaitable<result<void>> discard_blob(storage::digest d);
    // Consecutive chunks first, first + 1, ... located in RocksDB's blob files (for sendfile),
    // at most `count` of them, in one trip to the pool. The run stops early at a chunk that is
    // not in a blob file (in the memtable, or locating is off): its bytes come with the run,
    // shared with other readers of that chunk (shared_chunks.hpp). A chunk some reader holds a
    // copy of is not located again: the run is then that copy alone.
    struct located_chunks {
        std::vector<storage::blob_store::file_span> spans;
        shared_chunks::chunk_ptr bytes;  // chunk first + spans.size(), when not located
    };
    [[nodiscard]] awaitable<result<located_chunks>> locate_chunks(storage::digest d,
                                                                  std::uint64_t first,
                                                                  std::uint64_t count) const;
    // The bytes of chunk `index`, shared with other readers of it.
    [[nodiscard]] awaitable<result<shared_chunks::chunk_ptr>> read_chunk(storage::digest d,
                                                                         std::uint64_t index) const;
    // A whole small blob (an image config): nullopt when it is not stored complete, or larger
    // than `limit` bytes.
    [[nodiscard]] awaitable<result<std::optional<std::string>>> read_small_blob(
        storage::digest d, std::uint64_t limit) const;

    // A subject's referrers index as last fetched (storage/referrers_store.hpp).
    [[nodiscard]] awaitable<result<std::optional<storage::referrers_record>>> find_referrers(
        std::string registry, std::string repository, storage::digest subject) const;
    [[nodiscard]] awaitable<result<void>> put_referrers(std::string registry,
                                                        std::string repository,
                                                        storage::digest subject,
                                                        storage::referrers_record r);

private:
    boost::asio::thread_pool& pool_;
    std::shared_ptr<storage::database> db_;
    storage::blob_store blobs_;
    storage::manifest_store manifests_;
    storage::referrers_store referrers_;
    std::unique_ptr<storage::cache_index> index_;
    mutable shared_chunks copies_;
};

}  // namespace regpin::proxy::store
