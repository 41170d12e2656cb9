#pragma once
// The cache's blobs by last access, for the size cap (issue 15): which complete blobs are
// stored, how large, and when each was last read. Reads are recorded in memory (touch: a
// map update, no write) and written in batches (flush), so a request never costs a write;
// a crash loses at most the reads since the last flush, which only makes those blobs look
// older. Eviction removes a blob's record, chunks and access time; reclaim() then makes
// RocksDB drop the chunks, and it deletes every blob file left with no live chunk. Blob
// garbage collection stays off (database.cpp): no live chunk is ever copied to make room.
// Thread-safe. load(), flush(), evict() and reclaim() may block; touch(), added() and the
// readers do not.

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "storage/digest.hpp"
#include "storage/errors.hpp"

namespace regpin::storage {

class database;

struct cached_blob {
    digest d;
    std::uint64_t size = 0;
    std::int64_t last_access_ms = 0;
};

// The data folder's bytes on disk (allocated blocks, as du(1) counts them) and its file
// system's size and free space (for an unprivileged writer, as df(1) shows it).
struct disk_usage {
    std::uint64_t folder_bytes = 0;
    std::uint64_t fs_bytes = 0;
    std::uint64_t fs_free_bytes = 0;
};
[[nodiscard]] result<disk_usage> measure_disk_usage(const std::string& dir);

// RocksDB's blob files in the chunk column family: how many, their bytes, and the bytes of
// chunks evicted but not yet reclaimed (garbage counted by compactions).
struct blob_file_stats {
    std::size_t files = 0;
    std::uint64_t bytes = 0;
    std::uint64_t garbage_bytes = 0;
};

class cache_index {
public:
    explicit cache_index(std::shared_ptr<database> db);

    // Reads every complete blob's record and stored last access: one pass, at start. Reads
    // recorded before it completes are kept.
    [[nodiscard]] result<void> load();
    bool loaded() const;

    // Blob `d` was read now. Memory only; the next flush() writes it.
    void touch(const digest& d);
    // Keeps blob `d` from eviction while the handle lives (a reader is sending it), and counts
    // as a read. nullptr when `d` is being evicted. A blob not indexed (not committed yet, or
    // evicted since the reader found it) is held too: the caller then reads its record again,
    // and once that shows the blob complete, no eviction removes it until the handle goes.
    [[nodiscard]] std::shared_ptr<void> hold(const digest& d);
    // Blob `d` was committed (`size` bytes): it counts from now, as just read.
    void added(const digest& d, std::uint64_t size);

    // Writes the last access of blobs read since the last flush, in one unsynced batch.
    // Returns how many.
    [[nodiscard]] result<std::size_t> flush();

    // Every blob, least recently read first.
    [[nodiscard]] std::vector<cached_blob> by_last_access() const;
    std::size_t count() const;
    std::uint64_t bytes() const;
    // The size of `d` when indexed, else 0.
    std::uint64_t size_of(const digest& d) const;

    // Removes blob `d` (record first: once it is gone no reader finds the blob, then its chunks
    // and last access). Returns the bytes it held, 0 when it was not stored or is held.
    [[nodiscard]] result<std::uint64_t> evict(const digest& d);

    // Compacts the chunk column family's keys (a few bytes per 1 MiB chunk: no chunk is
    // rewritten), so RocksDB counts evicted chunks as garbage and deletes each blob file that
    // holds no live chunk any more.
    [[nodiscard]] result<void> reclaim();
    [[nodiscard]] blob_file_stats blob_files() const;
    // Manifests stored (RocksDB's estimate: no scan). Manifests are never evicted.
    std::uint64_t manifest_count() const;

    // Called after added() with the indexed bytes (outside the index's lock; must not block):
    // how the evictor hears that the cache grew.
    void on_growth(std::function<void(std::uint64_t bytes)> listener);

private:
    struct entry {
        std::uint64_t size = 0;
        std::int64_t last_access_ms = 0;
        bool dirty = false;
        bool known = false;  // size read from the record (or added); false: touched before load
        std::uint32_t readers = 0;  // hold() handles alive
        bool evicting = false;      // evict() is deleting it
    };
    void release(const digest& d);
    std::shared_ptr<database> db_;
    mutable std::mutex mutex_;
    std::unordered_map<digest, entry> entries_;
    std::uint64_t bytes_ = 0;  // of known entries
    std::size_t known_ = 0;
    bool loaded_ = false;
    std::function<void(std::uint64_t)> growth_;
};

}  // namespace regpin::storage
