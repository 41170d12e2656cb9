#pragma once
// What the pull-through logic answers; the server turns it into HTTP. Small bodies travel in
// `body`; blobs in a `body_stream` the server pulls from until it ends or fails.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/system/result.hpp>

#include "proxy/oci/errors.hpp"

namespace regpin::proxy::registry {

// One part of a body: bytes, or a range of an open file the server sends with sendfile(2).
// Valid until the following call. Neither (empty bytes, no file) is the end.
struct body_part {
    std::string_view bytes;
    int file = -1;
    std::uint64_t offset = 0;
    std::uint64_t size = 0;
};

// A body produced part by part. next() returns the next part, the end, or an error: then the
// body is wrong or incomplete and the server must abort the connection rather than end the
// response normally. `files`: the server can send file ranges (a plain TCP connection without
// chunked framing); otherwise every part is bytes.
class body_stream {
public:
    virtual ~body_stream() = default;
    [[nodiscard]] virtual boost::asio::awaitable<boost::system::result<body_part>> next(
        bool files) = 0;
};

// A request as the server hands it to a handler.
struct incoming {
    std::string method;  // "GET", "HEAD", "POST", ...
    bool head = false;
    std::string target;         // origin form, as received
    std::string accept;         // every Accept line, merged with ", "
    std::string range;          // Range header or empty
    std::string authorization;  // Authorization header or empty (admin API only)
    std::string body;           // only on listeners that take bodies
};

struct reply {
    unsigned status = 200;
    std::vector<std::pair<std::string, std::string>> headers;
    std::string body;
    std::shared_ptr<body_stream> stream;
    // Content-Length: body.size() when no stream; for a stream, its length if known (else the
    // server uses chunked encoding).
    std::optional<std::uint64_t> content_length;
    // For the request log line.
    std::string cache = "-";     // hit, miss, pin, -
    std::string upstream = "-";  // registry name
    std::string route = "-";     // manifest, blob, tags, referrers, base, ... (metrics label)

    void header(std::string name, std::string value) {
        headers.emplace_back(std::move(name), std::move(value));
    }
};

reply error_reply(const oci::error& e);
// 500 UNKNOWN for regpin's own storage failing (logged); never for a client's mistake.
reply storage_failure(const char* what);

}  // namespace regpin::proxy::registry
