#pragma once
// Chunk bytes that are served from memory, one copy per chunk however many clients send it.
//
// A chunk in one of RocksDB's blob files goes to a plain connection by sendfile and costs no
// memory. One still in the memtable (a blob being downloaded: its chunks reach a blob file only
// with the commit's flush), or sent over TLS, or read when locating is off, is copied out of
// RocksDB: 1 MiB per chunk. Each reader holding its own copy made a herd of 128 readers of one
// downloading layer cost 128 MiB. Here readers of the same chunk at the same time share one
// copy, and concurrent reads of a chunk not yet copied wait for the first one instead of each
// reading it. A copy lives as long as some reader holds it: nothing is cached past that, so
// the memory is one chunk per distinct chunk being sent.
//
// Blocking: get() may read RocksDB and wait for another thread's read; call it on the storage
// pool (store::content does). Thread-safe.

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <unordered_map>

#include "storage/blob_store.hpp"
#include "storage/digest.hpp"

namespace regpin::proxy::store {

class shared_chunks {
public:
    using chunk_ptr = std::shared_ptr<const storage::chunk>;

    shared_chunks();
    shared_chunks(const shared_chunks&) = delete;
    shared_chunks& operator=(const shared_chunks&) = delete;

    // The copy of chunk `index` of `d` some reader holds, or nullptr.
    [[nodiscard]] chunk_ptr find(const storage::digest& d, std::uint64_t index) const;
    // The shared copy of the chunk, read from `blobs` when nobody holds one.
    [[nodiscard]] storage::result<chunk_ptr> get(const storage::blob_store& blobs,
                                                 const storage::digest& d, std::uint64_t index);
    // Shares bytes already read (blob_store::locate_chunk reads a chunk it cannot locate);
    // when another copy is held, that one is returned and `read` dropped.
    [[nodiscard]] chunk_ptr adopt(const storage::digest& d, std::uint64_t index,
                                  storage::chunk read);

    // Chunks with a copy held or being read (for tests).
    [[nodiscard]] std::size_t size() const;

private:
    struct key {
        storage::digest digest;
        std::uint64_t index = 0;
        bool operator==(const key&) const = default;
    };
    struct key_hash {
        std::size_t operator()(const key& k) const {
            return std::hash<storage::digest>{}(k.digest) ^ (k.index * 0x9e3779b97f4a7c15ull);
        }
    };
    struct entry {
        std::weak_ptr<const storage::chunk> copy;
        bool reading = false;  // a thread is reading it; others wait on `read_done`
    };
    struct state {
        mutable std::mutex mutex;
        std::condition_variable read_done;
        std::unordered_map<key, entry, key_hash> entries;
        // The last copy of `k` went: forget it unless a newer one or a read took its place.
        void released(const key& k);
    };

    // Under state_->mutex: `read` shared, with a deleter that forgets the entry.
    chunk_ptr share_locked(entry& e, const key& k, storage::chunk read);

    std::shared_ptr<state> state_;  // the copies' deleters hold it weakly
};

}  // namespace regpin::proxy::store
