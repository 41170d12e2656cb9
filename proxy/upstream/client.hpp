#pragma once
// HTTP(S) client for one configured upstream registry: keep-alive connection reuse, connect and
// read timeouts, anonymous and credentialed Bearer token flow (tokens cached per scope until
// they expire), Basic auth, redirects (Authorization dropped when the host changes).
//
// It never sends a client's credentials: requests carry only what this upstream's
// configuration provides. Thread-safe: send() may be called from any thread concurrently.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/beast/http/fields.hpp>
#include <boost/beast/http/verb.hpp>
#include <boost/system/result.hpp>

#include "config/config.hpp"

namespace regpin::proxy::upstream {

enum class errc {
    ok = 0,
    resolve_failed = 1,
    connect_failed,
    tls_failed,
    timeout,
    connection_lost,  // reset or closed mid-response
    protocol_error,   // not HTTP, malformed headers, header too large
    too_many_redirects,
    bad_redirect,    // Location missing, not http(s), or unparsable
    body_too_large,  // read_all() limit exceeded
    auth_failed,     // token server unreachable or answered without a token
    offline,         // regpin runs offline: nothing is sent
};

const boost::system::error_category& upstream_category() noexcept;
inline boost::system::error_code make_error_code(errc e) noexcept {
    return {static_cast<int>(e), upstream_category()};
}

template <class T>
using result = boost::system::result<T>;

struct request {
    boost::beast::http::verb method = boost::beast::http::verb::get;
    std::string target;        // origin form on the upstream: "/v2/library/nginx/manifests/1.27"
    std::string accept;        // one merged Accept value; empty sends none
    std::string range;         // a Range value; empty sends none
    std::string scope;         // token scope, "repository:library/nginx:pull"; empty for none
    std::string body;          // request body (POST); empty sends none
    std::string content_type;  // of the body
    std::vector<std::pair<std::string, std::string>> headers;  // extra headers, sent as they are
};

// Told about every send(): the final status (0 on a transport error), the error, and the time
// to the response header. For metrics; must not block.
using observer = std::function<void(const std::string& registry, unsigned status,
                                    const boost::system::error_code& error, double seconds)>;

class response_state;

// An upstream answer whose body may still be unread. Dropping it before the end of the body
// closes its connection; reading to the end returns the connection to the pool.
class response {
public:
    explicit response(std::unique_ptr<response_state> state);
    ~response();
    response(response&&) noexcept;

    unsigned status() const;
    const boost::beast::http::fields& headers() const;
    std::optional<std::uint64_t> content_length() const;
    // "https://host/path" after redirects, without query (for logs).
    const std::string& final_url() const;

    // Reads up to `buf.size()` body bytes; 0 means the body is complete.
    [[nodiscard]] boost::asio::awaitable<result<std::size_t>> read_some(std::span<char> buf);
    // Reads the whole body; errc::body_too_large past `limit` bytes.
    // With a deadline, errc::timeout once it passes (an upstream dripping a body).
    [[nodiscard]] boost::asio::awaitable<result<std::string>> read_all(
        std::size_t limit,
        std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max());

private:
    std::unique_ptr<response_state> state_;
};

class client_impl;

class client {
public:
    client(boost::asio::any_io_executor ex, const config::upstream& cfg, observer obs = nullptr);
    ~client();

    // Sends `req`, answering auth challenges and following up to 8 redirects. Returns the
    // final response (any status) or a transport error.
    [[nodiscard]] boost::asio::awaitable<result<response>> send(request req);

    const config::upstream& settings() const;

private:
    std::shared_ptr<client_impl> impl_;
};

// Parses a WWW-Authenticate value: scheme and its parameters (realm, service, scope, error).
struct challenge {
    std::string scheme;  // lower-cased: "bearer", "basic"
    std::string realm, service, scope, error;
};
std::optional<challenge> parse_challenge(std::string_view header);

}  // namespace regpin::proxy::upstream

template <>
struct boost::system::is_error_code_enum<regpin::proxy::upstream::errc> : std::true_type {};
