#pragma once
// The one outbound HTTP(S) client: every request regpin sends (to upstream registries, their
// token servers and CDNs, to webhooks, and the CLI's to an admin API) goes through it.
//
//   http::client c(ex, {.name = "webhook hooks.example", .read_timeout = 5s});
//   auto r = co_await c.send({.method = verb::post, .url = ..., .body = json});
//
// It keeps a pool of idle keep-alive connections per origin, bounds connecting and every read
// and write by a timeout, verifies TLS certificates (system CAs plus an optional CA file) unless
// told not to, and follows redirects as its redirect_policy says. It adds no credentials of its
// own; an Authorization header given in a request goes only to the request's own origin, never
// across a redirect to another one. Thread-safe: send() may be called concurrently.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/beast/http/fields.hpp>
#include <boost/beast/http/verb.hpp>
#include <boost/system/result.hpp>

#include "proxy/http/destinations.hpp"

namespace regpin::proxy::http {

enum class errc {
    ok = 0,
    resolve_failed = 1,
    connect_failed,
    tls_failed,
    timeout,
    connection_lost,  // reset or closed mid-response
    protocol_error,   // not HTTP, malformed headers, header too large
    too_many_redirects,
    bad_redirect,         // Location missing, not http(s), or unparsable
    body_too_large,       // read_all() limit exceeded
    bad_url,              // a request URL that is not http(s)://host[:port]/...
    refused_destination,  // a redirect or realm regpin must not follow (destinations.hpp)
};

const boost::system::error_category& http_category() noexcept;
inline boost::system::error_code make_error_code(errc e) noexcept {
    return {static_cast<int>(e), http_category()};
}

template <class T>
using result = boost::system::result<T>;

// Where a request goes: scheme, host and port.
struct origin {
    bool tls = false;
    std::string host;  // without brackets for IPv6
    std::string port;  // "443" when the URL names none
    // "https://host:443": the pool's key, and what logs show.
    std::string key() const;
    // The Host header: the port only when it is not the scheme's default.
    std::string host_header() const;
    friend bool operator==(const origin&, const origin&) = default;
};

// Splits an absolute http(s) URL into its origin and origin-form target ("/" when empty);
// nullopt for anything else.
std::optional<std::pair<origin, std::string>> split_url(std::string_view url);

// Which redirects send() follows. 301, 302, 303, 307 and 308 with a usable Location are
// followed up to max_hops times (303 turns the request into a GET without a body); with
// max_hops 0 the redirect is the answer. Authorization goes only to hops on the request's own
// host and port. A redirect from https to http is refused, and every hop after the first must
// pass the client's destination_policy (errc::refused_destination).
struct redirect_policy {
    int max_hops = 8;
    static redirect_policy none() { return {0}; }
};

struct client_options {
    std::string name = "http";  // for log lines: "upstream docker.io", "webhook example.com"
    std::chrono::milliseconds connect_timeout{5000};
    // Any single read or write; a response header must arrive within it.
    std::chrono::milliseconds read_timeout{30000};
    // Idle keep-alive connections kept per origin.
    int max_idle_per_origin = 16;
    std::string ca_file;  // PEM, trusted in addition to the system CAs
    // A client certificate (PEM chain and key) presented to servers that ask for one (etcd with
    // --client-cert-auth); both or neither.
    std::string cert_file;
    std::string key_file;
    bool tls_verify = true;
    http::redirect_policy redirects;
    http::destination_policy destinations;
};

struct request {
    boost::beast::http::verb method = boost::beast::http::verb::get;
    http::origin origin;
    std::string target = "/";  // origin form: "/v2/library/nginx/manifests/1.27"
    std::vector<std::pair<std::string, std::string>> headers;  // sent as they are
    std::string body;                                          // sent when not empty, or POST
    std::string content_type;                                  // of the body
    // This request's redirects, instead of the client's.
    std::optional<redirect_policy> redirects;
    // Set when `origin` was named by another server (a token realm named by an upstream): the
    // first hop is then checked against the destination policy as a redirect from `vouched_by`
    // would be.
    std::optional<http::origin> vouched_by;

    void header(std::string name, std::string value) {
        headers.emplace_back(std::move(name), std::move(value));
    }
};

class response_state;

// An answer whose body may still be unread. Dropping it before the end of the body closes its
// connection; reading to the end returns the connection to the pool.
class response {
public:
    explicit response(std::unique_ptr<response_state> state);
    ~response();
    response(response&&) noexcept;
    response& operator=(response&&) noexcept;

    unsigned status() const;
    const boost::beast::http::fields& headers() const;
    std::optional<std::uint64_t> content_length() const;
    // Where the answer came from, after redirects.
    const http::origin& final_origin() const;
    // Where the request was sent: final_origin() unless it was redirected.
    const http::origin& sent_to() const;
    // "https://host:443/path" after redirects, without the query (for logs).
    const std::string& final_url() const;

    // Reads up to `buf.size()` body bytes; 0 means the body is complete.
    [[nodiscard]] boost::asio::awaitable<result<std::size_t>> read_some(std::span<char> buf);
    // Reads the whole body; errc::body_too_large past `limit` bytes. With a deadline,
    // errc::timeout once it passes (a server dripping a body never trips the read timeout).
    [[nodiscard]] boost::asio::awaitable<result<std::string>> read_all(
        std::size_t limit, std::chrono::steady_clock::time_point deadline =
                               std::chrono::steady_clock::time_point::max());

private:
    friend class client_impl;
    std::unique_ptr<response_state> state_;
};

class client_impl;

class client {
public:
    // Throws std::runtime_error when ca_file cannot be loaded.
    client(boost::asio::any_io_executor ex, client_options options);
    ~client();

    // Sends `req` and follows redirects as the policy says. The final response (any status),
    // or a transport error (errc, or a redirect the policy refused).
    [[nodiscard]] boost::asio::awaitable<result<response>> send(request req);

    const client_options& options() const;

    // Connections open now, in use or idle in the pool.
    std::size_t open_connections() const;

private:
    std::shared_ptr<client_impl> impl_;
};

// For programs without an event loop (the CLI): runs one send() on a private io_context on the
// calling thread. The body goes to `on_data` (with the status) piece by piece when given
// (nothing accumulated), else into `body` (at most `body_limit` bytes).
struct blocking_result {
    unsigned status = 0;
    std::string body;
    std::string error;  // non-empty when no complete response arrived
};
blocking_result send_blocking(
    const client_options& options, request req,
    const std::function<void(unsigned status, std::string_view)>& on_data = nullptr,
    std::size_t body_limit = 64 * 1024 * 1024);

}  // namespace regpin::proxy::http

template <>
struct boost::system::is_error_code_enum<regpin::proxy::http::errc> : std::true_type {};
