#pragma once
// The one RocksDB database behind regpin's stores. Opening it recovers from a crash: chunks of
// blobs that never completed are removed before any store can see them.

#include <cstdint>
#include <memory>
#include <string>

#include "storage/errors.hpp"

namespace rocksdb {
class FileSystem;
}

namespace regpin::storage {

class database;

struct open_report {
    std::string path;  // absolute data folder
    std::size_t incomplete_blobs_removed = 0;
    std::string error_detail;  // RocksDB's message when open fails
    // Whether stored chunks are located in RocksDB's blob files for sendfile(2): a probe value
    // written at open was found there byte for byte. When false, blob_store::locate_chunk
    // never locates (chunks are served from RocksDB's memory) and `locate_detail` says why.
    bool locate_verified = false;
    std::string locate_detail;
};

enum class open_mode {
    read_write,  // creates when missing; one process at a time (errc::locked otherwise)
    read_only,   // an existing database, even while a regpin process holds it; no writes
};

// For tests only.
struct open_hooks {
    // The start-up probe of blob file locations sees offsets this far off.
    std::uint64_t locate_offset_skew = 0;
    // The file system under the database (a power-loss simulation); nullptr: the real one.
    std::shared_ptr<rocksdb::FileSystem> file_system;
};

// Free space on the data folder's disk below which regpin writes nothing more (check_room in
// database_impl.hpp): RocksDB keeps room to flush what is in memory (48 MiB of memtables).
inline constexpr std::uint64_t write_reserve_bytes = 64ull << 20;

// The time (steady clock, ms) of the last write refused because the data folder's disk was
// full (errc::no_space), or 0: how the evictor learns that it must resume the database.
std::int64_t last_no_space_ms();

// After a write failed for want of space, RocksDB refuses every write until resumed. Resumes
// (flushing what is in memory); errc::no_space while the disk is still full. Nothing to do
// when no write failed.
[[nodiscard]] result<void> resume(database& d);

// A consistent copy of the whole database (blobs, manifests, pins, history, outbox) in `dir`,
// a new folder whose parent exists: what is in memory is flushed first, then every live file
// is hard-linked (on the same file system) or copied. The folder is a data folder: start a
// regpin on it to restore. `detail` says why when it fails.
[[nodiscard]] result<void> checkpoint(database& d, const std::string& dir, std::string& detail);

// Opens the database in `dir`. Fails with errc::locked when another process holds the folder
// (read_write), errc::io_error / errc::corruption otherwise; `report` says why. A read-write
// open also checks that chunks can be located in blob files (open_report::locate_verified).
[[nodiscard]] result<std::shared_ptr<database>> open_database(
    const std::string& dir, open_report& report, open_mode mode = open_mode::read_write,
    const open_hooks& hooks = {});

}  // namespace regpin::storage
