#pragma once
// What a listener hands to its handler (`incoming`) and what the handler answers (`reply`).
// Small bodies travel in `reply::body`; large ones in a `body_stream` the listener pulls from
// until it ends or fails. Nothing here knows what the requests mean.

#include <cctype>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/system/result.hpp>

namespace regpin::proxy::http {

// One part of a body: bytes, or a range of an open file the listener sends with sendfile(2).
// Valid until the following call. Neither (empty bytes, no file) is the end.
struct body_part {
    std::string_view bytes;
    int file = -1;
    std::uint64_t offset = 0;
    std::uint64_t size = 0;
};

// A body produced part by part. next() returns the next part, the end, or an error: then the
// body is wrong or incomplete and the listener aborts the connection rather than end the
// response normally. `files`: the listener can send file ranges (a plain TCP connection without
// chunked framing); otherwise every part is bytes.
class body_stream {
public:
    virtual ~body_stream() = default;
    [[nodiscard]] virtual boost::asio::awaitable<boost::system::result<body_part>> next(
        bool files) = 0;
};

// Whether `v` can be a node name (a Kubernetes node name is a DNS subdomain): 1 to 253 letters,
// digits, '.', '-' and '_'. X-Regpin-Node is taken only then, so no other byte of it reaches a
// log line or the audit; `regpin hosts-toml --node-name` checks the same.
inline bool plausible_node_name(std::string_view v) {
    if (v.empty() || v.size() > 253) return false;
    for (char c : v)
        if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-' && c != '_')
            return false;
    return true;
}

// A request as the listener hands it to a handler.
struct incoming {
    std::string method;  // "GET", "HEAD", "POST", ...
    bool head = false;
    std::string target;         // origin form, as received
    std::string accept;         // every Accept line, merged with ", "
    std::string range;          // Range header or empty
    std::string authorization;  // Authorization header or empty
    std::string body;           // only on listeners that take bodies
    std::string peer;           // the client's IP address
    // X-Regpin-Node: the node name the client claims (a claim, not an identity), when it is
    // plausible_node_name; else empty.
    std::string node;
    std::string cookie;        // every Cookie line, merged with "; "
    std::string csrf_token;    // X-CSRF-Token header or empty
    std::string origin;        // Origin header or empty
    std::string content_type;  // Content-Type header or empty
};

struct reply {
    unsigned status = 200;
    std::vector<std::pair<std::string, std::string>> headers;
    std::string body;
    std::shared_ptr<body_stream> stream;
    // Content-Length: body.size() when no stream; for a stream, its length if known (else the
    // listener uses chunked encoding).
    std::optional<std::uint64_t> content_length;
    // What kind of request this was, for metrics ("manifest", "admin", ...).
    std::string route = "-";
    // Fields the application adds to the request's log line ("cache" = "hit"), in order.
    std::vector<std::pair<std::string, std::string>> log_fields;

    void header(std::string name, std::string value) {
        headers.emplace_back(std::move(name), std::move(value));
    }
    void log_field(std::string name, std::string value) {
        for (auto& [k, v] : log_fields)
            if (k == name) {
                v = std::move(value);
                return;
            }
        log_fields.emplace_back(std::move(name), std::move(value));
    }
    // The value of a log field, or "-".
    std::string_view log_field(std::string_view name) const {
        for (const auto& [k, v] : log_fields)
            if (k == name) return v;
        return "-";
    }
};

}  // namespace regpin::proxy::http
