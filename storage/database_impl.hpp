#pragma once
// Internal to storage/: the RocksDB handles. Other modules see only `database` as opaque.

#include <memory>
#include <string>
#include <vector>

#include <rocksdb/db.h>

#include "storage/database.hpp"

namespace regpin::storage {

class database {
public:
    ~database();

    rocksdb::DB* db() const { return db_.get(); }
    rocksdb::ColumnFamilyHandle* chunks() const { return cfs_[1]; }
    rocksdb::ColumnFamilyHandle* blob_records() const { return cfs_[2]; }
    rocksdb::ColumnFamilyHandle* manifests() const { return cfs_[3]; }
    rocksdb::ColumnFamilyHandle* pins() const { return cfs_[4]; }
    rocksdb::ColumnFamilyHandle* events() const { return cfs_[5]; }
    rocksdb::ColumnFamilyHandle* outbox() const { return cfs_[6]; }

    // Maps a RocksDB status to our errc, logging the message once.
    static boost::system::error_code to_error(const rocksdb::Status& s, const char* what);

private:
    friend result<std::shared_ptr<database>> open_database(const std::string&, open_report&,
                                                           open_mode);
    database() = default;
    std::unique_ptr<rocksdb::Env> env_;  // outlives db_ (storage/blob_files.hpp)
    std::unique_ptr<rocksdb::DB> db_;
    std::vector<rocksdb::ColumnFamilyHandle*> cfs_;
};

}  // namespace regpin::storage
