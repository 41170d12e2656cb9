#pragma once
// Blobs stored as fixed-size chunks (integrated BlobDB) plus one record per digest.
// Invariant: a blob is visible (find() returns it complete) only after commit(), which callers
// make only after the bytes hashed to the digest. Thread-safe. Every method may block (see
// storage/threads.hpp) but find() with read_mode::memory_only.

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "storage/digest.hpp"
#include "storage/errors.hpp"

namespace rocksdb {
class PinnableSlice;
}

namespace regpin::storage {

class database;

struct blob_record {
    std::uint64_t size = 0;
    std::uint32_t chunk_size = 0;
    bool complete = false;
    std::int64_t created_ms = 0;  // unix time, milliseconds
};

// One chunk as read from the store, not copied out of RocksDB: its bytes stay valid until the
// chunk is read into again or destroyed.
class chunk {
public:
    chunk();
    ~chunk();
    chunk(chunk&&) noexcept;
    chunk& operator=(chunk&&) noexcept;
    [[nodiscard]] std::string_view bytes() const;

private:
    friend class blob_store;
    std::unique_ptr<rocksdb::PinnableSlice> slice_;
};

class blob_store {
public:
    static constexpr std::uint32_t default_chunk_size = 1024 * 1024;

    explicit blob_store(std::shared_ptr<database> db);

    // The complete blob's record, or nullopt when absent or still being written.
    [[nodiscard]] result<std::optional<blob_record>> find(
        const digest& d, read_mode mode = read_mode::may_block) const;

    // Reads chunk `index` into `out` (replacing its contents). A missing chunk is
    // errc::corruption: callers only read chunks they know exist.
    [[nodiscard]] result<void> read_chunk(const digest& d, std::uint64_t index,
                                          std::string& out) const;
    // The same without a copy: for serving.
    [[nodiscard]] result<void> read_chunk(const digest& d, std::uint64_t index, chunk& out) const;

    // Calls `sink` with every chunk of the complete blob `rec` describes, in order (the bytes
    // are valid during the call). errc::corruption when a chunk is missing.
    [[nodiscard]] result<void> read_blob(const digest& d, const blob_record& rec,
                                         const std::function<void(std::string_view)>& sink) const;

    // Where chunk `index` sits in one of RocksDB's immutable blob files, for sendfile(2); or
    // nullopt when it is not in one yet (in the memtable), or when the database's start-up
    // probe found locating unsafe (open_report::locate_verified): then its bytes are in `out`.
    // RocksDB may delete the file (once nothing refers to it) any time after the call:
    // open it and fall back to read_chunk() when that fails.
    struct file_span {
        std::string path;
        std::uint64_t offset = 0;
        std::uint64_t size = 0;
    };
    [[nodiscard]] result<std::optional<file_span>> locate_chunk(const digest& d,
                                                                std::uint64_t index,
                                                                chunk& out) const;

    // Starts writing: records the blob as incomplete so a crash leaves chunks that
    // open_database() removes.
    [[nodiscard]] result<void> begin(const digest& d, std::uint32_t chunk_size);
    // `unlogged` skips RocksDB's write-ahead log (half the bytes written for a large blob);
    // such chunks reach disk only with a memtable flush, which commit() then waits for.
    enum class durability { logged, unlogged };
    [[nodiscard]] result<void> put_chunk(const digest& d, std::uint64_t index,
                                         std::string_view bytes,
                                         durability mode = durability::logged);
    // Marks the blob complete with its final size. Call only after the digest verified. Pass
    // the mode the chunks were written with: unlogged chunks are flushed to disk first, so a
    // committed blob never loses chunks in a crash.
    [[nodiscard]] result<void> commit(const digest& d, std::uint64_t size,
                                      durability mode = durability::logged);
    // Removes every chunk and the record (a failed or mismatching download).
    [[nodiscard]] result<void> discard(const digest& d);

private:
    std::shared_ptr<database> db_;
};

// Key helpers, shared with recovery.
std::string chunk_key(const digest& d, std::uint64_t index);
std::string chunk_prefix_end(const digest& d);

}  // namespace regpin::storage
