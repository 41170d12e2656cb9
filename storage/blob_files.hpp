#pragma once
// Internal to storage/: where a chunk's bytes sit in RocksDB's blob files, so a server can send
// them with sendfile(2) instead of copying them through user space.
//
// Chunks live in integrated BlobDB files, which RocksDB never modifies once written (it only
// writes new files and deletes ones nothing refers to). A read with verify_checksums off reads
// exactly the value's bytes: one Read(offset, size) on the blob file. The file system wrapper
// below sees that read; when the calling thread asked to *locate* rather than read, it records
// (file, offset, size) and skips the read. Reads by RocksDB itself (headers, footers,
// compaction) and reads on other threads are never affected.

#include <cstdint>
#include <memory>
#include <string>

#include <rocksdb/env.h>
#include <rocksdb/file_system.h>

namespace regpin::storage {

// What one locating read found, on this thread.
struct located_read {
    bool found = false;
    std::string path;
    std::uint64_t offset = 0;
    std::uint64_t size = 0;
};

// While alive, large reads of blob files on this thread are recorded into `out`, not performed
// (the caller gets unspecified bytes and must use only the location).
class locate_scope {
public:
    explicit locate_scope(located_read& out);
    ~locate_scope();
    locate_scope(const locate_scope&) = delete;
    locate_scope& operator=(const locate_scope&) = delete;

private:
    located_read* previous_;
};

// An Env whose file system wraps blob files (*.blob) for locate_scope. `offset_skew` is for
// tests only: locations come out that many bytes off, as they would if RocksDB laid out blob
// values differently (the start-up probe must then turn locating off).
// `base`: the file system underneath (nullptr: the default one).
std::unique_ptr<rocksdb::Env> make_locating_env(
    std::uint64_t offset_skew = 0, std::shared_ptr<rocksdb::FileSystem> base = nullptr);

}  // namespace regpin::storage
