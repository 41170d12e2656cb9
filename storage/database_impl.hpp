#pragma once
// Internal to storage/: the RocksDB handles. Other modules see only `database` as opaque.

#include <memory>
#include <string>
#include <vector>

#include <rocksdb/db.h>

#include "storage/chunk_locations.hpp"
#include "storage/database.hpp"

namespace regpin::storage {

class database {
public:
    ~database();

    rocksdb::DB* db() const { return db_.get(); }
    // The default column family: the stores' own small records (the pin store's counts and
    // its index of pins awaiting an operator; the audit's count), never content.
    rocksdb::ColumnFamilyHandle* meta() const { return cfs_[0]; }
    rocksdb::ColumnFamilyHandle* chunks() const { return cfs_[1]; }
    rocksdb::ColumnFamilyHandle* blob_records() const { return cfs_[2]; }
    rocksdb::ColumnFamilyHandle* manifests() const { return cfs_[3]; }
    rocksdb::ColumnFamilyHandle* pins() const { return cfs_[4]; }
    rocksdb::ColumnFamilyHandle* events() const { return cfs_[5]; }
    rocksdb::ColumnFamilyHandle* outbox() const { return cfs_[6]; }
    // Null in a read-only open of a folder written before it existed.
    rocksdb::ColumnFamilyHandle* referrers() const { return cfs_[7]; }
    // Blobs' last access (storage/cache_index.hpp); null like referrers().
    rocksdb::ColumnFamilyHandle* blob_access() const { return cfs_[8]; }
    // The pull audit (storage/audit_store.hpp); null like referrers().
    rocksdb::ColumnFamilyHandle* audit() const { return cfs_[9]; }

    // Before a write that adds data: errc::no_space (logged once a second, and noted for
    // last_no_space_ms) when less than write_reserve_bytes is free on the data folder's file
    // system. RocksDB never sees the disk run out from regpin's own writes then: it keeps room
    // to flush what is in memory, and a write that fails inside it is not recoverable on every
    // build (Debian's, built with assertions, aborts on the next write to that file).
    // Deletions need no room and are not checked.
    [[nodiscard]] boost::system::error_code check_room(const char* what) const;

    // Whether chunks may be located in blob files (open_report::locate_verified).
    bool locate_verified() const { return locate_verified_; }
    // Opened with open_mode::read_only: every write fails.
    bool read_only() const { return read_only_; }
    // Where the chunks of blobs served lately sit (storage/chunk_locations.hpp).
    chunk_locations& locations() const { return locations_; }

    // Read options for a point read in `mode`: memory_only reads memtables and the block cache
    // only (never the disk); may_block checks that the caller is no network thread, naming
    // the call `what`.
    static rocksdb::ReadOptions point_read(read_mode mode, const char* what);

    // Maps a RocksDB status to our errc, logging the message once. Incomplete (a memory_only
    // read that would need the disk) is errc::would_block, and not logged. No space left on the
    // device is errc::no_space (RocksDB then refuses every write until resume()).
    static boost::system::error_code to_error(const rocksdb::Status& s, const char* what);

private:
    friend result<std::shared_ptr<database>> open_database(const std::string&, open_report&,
                                                           open_mode, const open_hooks&);
    database() = default;
    std::unique_ptr<rocksdb::Env> env_;  // outlives db_ (storage/blob_files.hpp)
    std::unique_ptr<rocksdb::DB> db_;
    std::vector<rocksdb::ColumnFamilyHandle*> cfs_;
    bool locate_verified_ = false;
    bool read_only_ = false;
    std::string dir_;
    // 32,768 chunks: 32 GiB of hot blobs at 1 MiB a chunk, about 3 MiB of memory.
    mutable chunk_locations locations_{32768};
};

}  // namespace regpin::storage
