#pragma once
// Parts of stored blob chunks for the body streams: a range of one of RocksDB's blob files
// when the chunk sits in one and the listener can send files (sendfile: the bytes never pass
// through user space), else the chunk's bytes in RocksDB's pinned memory (no copy either).
// Looking a chunk up runs on the blocking pool (store::content).

#include <cstdint>
#include <string>

#include <boost/asio/awaitable.hpp>
#include <boost/system/result.hpp>

#include "proxy/http/message.hpp"
#include "proxy/store/content.hpp"
#include "storage/blob_store.hpp"

namespace regpin::proxy::cache {

class chunk_source {
public:
    explicit chunk_source(store::content& content) : content_(content) {}
    ~chunk_source();
    chunk_source(const chunk_source&) = delete;
    chunk_source& operator=(const chunk_source&) = delete;

    // Bytes [start, stop) of chunk `index` of `d`, a chunk of `chunk_bytes` bytes. The part is
    // valid until the next call. An error means the store lost or mangled the chunk.
    [[nodiscard]] boost::asio::awaitable<boost::system::result<http::body_part>> part(
        storage::digest d, std::uint64_t index, std::uint64_t chunk_bytes, std::uint64_t start,
        std::uint64_t stop, bool files);

private:
    bool open_file(const std::string& path);
    void close_file();

    store::content& content_;
    storage::chunk chunk_;
    int fd_ = -1;       // the blob file consecutive chunks come from, kept open between them
    std::string path_;  // its path
};

}  // namespace regpin::proxy::cache
