#pragma once
// The one RocksDB database behind regpin's stores. Opening it recovers from a crash: chunks of
// blobs that never completed are removed before any store can see them.

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

// Opens the database in `dir`. Fails with errc::locked when another process holds the folder
// (read_write), errc::io_error / errc::corruption otherwise; `report` says why. A read-write
// open also checks that chunks can be located in blob files (open_report::locate_verified).
[[nodiscard]] result<std::shared_ptr<database>> open_database(
    const std::string& dir, open_report& report, open_mode mode = open_mode::read_write,
    const open_hooks& hooks = {});

}  // namespace regpin::storage
