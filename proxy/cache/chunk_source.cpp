#include "proxy/cache/chunk_source.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>

namespace regpin::proxy::cache {

chunk_source::~chunk_source() { close_file(); }

boost::asio::awaitable<boost::system::result<http::body_part>> chunk_source::part(
    storage::digest d, std::uint64_t index, std::uint64_t chunk_bytes, std::uint64_t start,
    std::uint64_t stop, bool files, std::uint64_t stored) {
    auto lost = make_error_code(boost::system::errc::io_error);
    if (start >= stop || stop > chunk_bytes) co_return lost;
    if (files) {
        bool located = index >= spans_first_ && index - spans_first_ < spans_.size();
        if (!located && bytes_index_ != index) {
            auto count = std::min(batch, std::max<std::uint64_t>(stored, 1));
            auto run = co_await content_.locate_chunks(d, index, count);
            if (!run) co_return lost;
            spans_first_ = index;
            spans_ = std::move(run->spans);
            // A copy no longer needed goes now: it may be the last reference to a shared one.
            bytes_ = std::move(run->bytes);
            bytes_index_ = bytes_ ? index + spans_.size() : no_chunk;
            located = !spans_.empty();
        }
        if (located) {
            const auto& span = spans_[index - spans_first_];
            if (span.size == chunk_bytes && open_file(span.path))
                co_return http::body_part{{}, fd_, span.offset + start, stop - start};
        }
    }
    // Not located (in the memtable, or locating is off), or its file just went away (RocksDB
    // deleted it): the bytes, shared with the chunk's other readers.
    if (bytes_index_ != index) {
        bytes_.reset();
        bytes_index_ = no_chunk;
        auto read = co_await content_.read_chunk(d, index);
        if (!read) co_return lost;
        bytes_ = std::move(*read);
        bytes_index_ = index;
    }
    auto bytes = bytes_->bytes();
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
