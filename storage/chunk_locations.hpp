#pragma once
// Internal to storage/: where the chunks of blobs served lately sit in RocksDB's blob files.
// A warm GET locates each chunk here instead of through RocksDB, whose read copies the located
// value into its own buffer though nobody reads it (a 1 MiB memmove per chunk, 11% of the
// warm profile, bench/RESULTS.md).
//
// Sound because blob files are immutable and their numbers are never reused: a location, once
// found, holds for as long as the chunk is stored. The two ways chunks are deleted
// (blob_store::discard, cache_index::evict) forget the blob's locations after the deletion,
// and a location found by a read that began before a forget is not kept (forget() moves the
// epoch; put() takes the epoch its read began in). A file RocksDB deleted meanwhile fails to
// open and the reader falls back to reading the chunk, as with any located chunk.

#include <cstdint>
#include <list>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "storage/blob_store.hpp"
#include "storage/digest.hpp"

namespace regpin::storage {

using chunk_span = blob_store::file_span;

// An LRU of blobs, each with the locations of its chunks found so far, bounded by the number
// of chunk slots held (a blob holds one for each chunk up to the last one located; about 100
// bytes each when filled, 56 when not). Thread-safe.
class chunk_locations {
public:
    explicit chunk_locations(std::size_t max_chunks);

    std::optional<chunk_span> find(const digest& d, std::uint64_t index);
    // The epoch to pass to put() for a read that begins now.
    std::uint64_t epoch() const;
    // Keeps a location found by a read that began in `epoch`, unless a forget() came since.
    void put(const digest& d, std::uint64_t index, chunk_span span, std::uint64_t epoch);
    // After the blob's chunks were deleted.
    void forget(const digest& d);
    std::size_t chunks() const;

private:
    struct blob {
        digest d;
        // By chunk index; every slot counts toward the bound, filled or not (a range read near
        // the end of a large blob holds the slots before it too).
        std::vector<std::optional<chunk_span>> spans;
    };
    void drop_oldest();

    const std::size_t max_chunks_;
    mutable std::mutex mutex_;
    std::list<blob> lru_;  // most recently used first
    std::unordered_map<digest, std::list<blob>::iterator> by_digest_;
    std::size_t held_ = 0;  // the spans' slots over all blobs
    std::uint64_t epoch_ = 0;
};

}  // namespace regpin::storage
