#pragma once
// The storage module's error codes. A cache miss is never an error: it is std::optional.

#include <boost/system/error_code.hpp>
#include <boost/system/result.hpp>

namespace regpin::storage {

enum class errc {
    ok = 0,
    io_error = 1,     // RocksDB reported an I/O failure (disk full, permissions, ...)
    corruption,       // a stored record does not parse, or RocksDB reports corruption
    locked,           // another process holds the data folder
    digest_mismatch,  // written bytes do not hash to the expected digest
    size_mismatch,    // written bytes are fewer or more than announced
    invalid_argument,
    conflict,     // a compare-and-set found the record changed
    would_block,  // read_mode::memory_only: the answer is not in memory
    unavailable,  // a networked store (etcd) cannot be reached: nothing was decided
    no_space,     // the data folder's file system is full: nothing more can be written
};

// How a read may get its answer. memory_only never waits for the disk (RocksDB's memtables
// and block cache only) and may be called on a network thread; errc::would_block when the
// answer is not there.
enum class read_mode { may_block, memory_only };

const boost::system::error_category& storage_category() noexcept;

inline boost::system::error_code make_error_code(errc e) noexcept {
    return {static_cast<int>(e), storage_category()};
}

template <class T>
using result = boost::system::result<T>;

}  // namespace regpin::storage

template <>
struct boost::system::is_error_code_enum<regpin::storage::errc> : std::true_type {};
