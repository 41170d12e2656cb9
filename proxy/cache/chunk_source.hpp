#pragma once
// Parts of stored blob chunks for the body streams: a range of one of RocksDB's blob files
// when the chunk sits in one and the listener can send files (sendfile: the bytes never pass
// through user space), else the chunk's bytes, copied out of RocksDB once for all the readers
// sending that chunk at the same time (store/shared_chunks.hpp).
// Looking chunks up runs on the blocking pool (store::content), several consecutive chunks per
// trip: a warm 1 GiB blob would otherwise wait for 1024 thread hops.

#include <cstdint>
#include <string>
#include <vector>

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
    // valid until the next call. `stored`: how many chunks from `index` on are known to be
    // stored (at least this one), so that many may be located at once. An error means the
    // store lost or mangled the chunk.
    [[nodiscard]] boost::asio::awaitable<boost::system::result<http::body_part>> part(
        storage::digest d, std::uint64_t index, std::uint64_t chunk_bytes, std::uint64_t start,
        std::uint64_t stop, bool files, std::uint64_t stored);

private:
    bool open_file(const std::string& path);
    void close_file();

    static constexpr std::uint64_t no_chunk = static_cast<std::uint64_t>(-1);
    // Chunks located per trip to the pool (64 MiB of 1 MiB chunks). Each trip costs the
    // connection a thread hop's wait (~0.1-0.2 ms here); with 16 a single client's warm 1 GiB
    // GET came ~5% under locating inline, with 64 it is within the noise (bench --before).
    static constexpr std::uint64_t batch = 64;

    store::content& content_;
    // Located chunks spans_first_, spans_first_ + 1, ... of the blob being served.
    std::uint64_t spans_first_ = 0;
    std::vector<storage::blob_store::file_span> spans_;
    store::shared_chunks::chunk_ptr bytes_;  // a chunk's bytes when it is not sent from a file
    std::uint64_t bytes_index_ = no_chunk;   // which chunk
    int fd_ = -1;       // the blob file consecutive chunks come from, kept open between them
    std::string path_;  // its path
};

}  // namespace regpin::proxy::cache
