#include "proxy/cache/chunk_source.hpp"

#include <fcntl.h>
#include <unistd.h>

namespace regpin::proxy::cache {

chunk_source::~chunk_source() { close_file(); }

boost::asio::awaitable<boost::system::result<http::body_part>> chunk_source::part(
    storage::digest d, std::uint64_t index, std::uint64_t chunk_bytes, std::uint64_t start,
    std::uint64_t stop, bool files) {
    auto lost = make_error_code(boost::system::errc::io_error);
    if (start >= stop || stop > chunk_bytes) co_return lost;
    bool have_bytes = false;
    if (files) {
        auto span = co_await content_.locate_chunk(d, index, &chunk_);
        if (!span) co_return lost;
        if (*span && (*span)->size == chunk_bytes && open_file((*span)->path))
            co_return http::body_part{{}, fd_, (*span)->offset + start, stop - start};
        have_bytes = !*span;  // in the memtable: read as bytes, no file
    }
    // Not located, or its file just went away (RocksDB deleted it): the bytes.
    if (!have_bytes) {
        auto read = co_await content_.read_chunk(d, index, &chunk_);
        if (!read) co_return lost;
    }
    auto bytes = chunk_.bytes();
    if (bytes.size() != chunk_bytes) co_return lost;
    co_return http::body_part{bytes.substr(start, stop - start)};
}

bool chunk_source::open_file(const std::string& path) {
    if (fd_ >= 0 && path == path_) return true;
    close_file();
    fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) return false;
    path_ = path;
    return true;
}

void chunk_source::close_file() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    path_.clear();
}

}  // namespace regpin::proxy::cache
