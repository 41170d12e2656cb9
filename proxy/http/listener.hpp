#pragma once
// An HTTP/1.1 listener: one coroutine per connection on its own strand, keep-alive, header
// size and idle limits, one log line per request. What a request means is the handler's
// business (the registry API, the admin API); so is the body of an error the listener sends
// itself (`listener_options::refusal`).

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>

#include "proxy/http/message.hpp"

namespace regpin::proxy::http {

using handler = std::function<boost::asio::awaitable<reply>(incoming)>;

// Called after every request with its reply and the body bytes written (for metrics).
using observer =
    std::function<void(const incoming&, const reply&, std::uint64_t body_bytes, double seconds)>;

// The reply for a request the listener refuses itself: malformed (400), header too large
// (431), method not allowed (405), body not taken (405) or too large (413), too many
// connections (503). The application decides the body's format.
using refusal = std::function<reply(unsigned status, const std::string& message)>;

struct listener_options {
    std::string name = "http";  // for log lines: "registry", "admin"
    std::string listen;         // HOST:PORT; port 0 picks one
    std::size_t max_header_bytes = 16 * 1024;
    // Waiting for the next request on a kept-alive connection, and any single write.
    std::chrono::milliseconds idle_timeout{60000};
    // From a request's first byte to the end of its header (and body): a client dripping a
    // header one byte at a time is cut off after this, however steady the drip.
    std::chrono::milliseconds header_timeout{10000};
    // Open connections at most. One more closes the connection idle longest (waiting for a
    // request) to make room; when none is idle it is answered 503 and closed at once, without
    // disturbing the others.
    std::size_t max_connections = 1024;
    // TLS (certificate and key loaded) or nullptr for plain HTTP.
    std::shared_ptr<boost::asio::ssl::context> tls;
    // Methods the handler accepts; others get 405 UNSUPPORTED without reaching it.
    std::vector<std::string> methods = {"GET", "HEAD"};
    // Largest request body read for the handler; 0 refuses bodies.
    std::size_t max_body_bytes = 0;
    // Log one line per request at info level; else at debug.
    bool log_requests = true;
    // Request lines as JSON objects (log_format "json"; see log_json.hpp) instead of text.
    bool log_json = false;
    // Log fields printed on every request line, "-" when the reply has none.
    std::vector<std::string> log_fields;
    // Headers sent with every reply.
    std::vector<std::pair<std::string, std::string>> headers;
    // Added to the 405 message when the listener takes no bodies ("a read-only cache").
    std::string read_only_note;
    // Builds refusals; without it they carry a plain-text body.
    http::refusal refusal;
};

class listener {
public:
    // Binds (throws std::system_error with a clear message on failure).
    listener(boost::asio::io_context& ioc, listener_options options, handler h,
             observer o = nullptr);

    // The bound address (port 0 in the config becomes the real port).
    boost::asio::ip::tcp::endpoint local_endpoint() const;

    // Starts accepting; returns at once.
    void start();
    // Stops accepting; open connections carry on.
    void stop();
    // Stops accepting and lets open connections finish what they are doing: a connection
    // waiting for a request is closed, one in a request closes after its answer. Returns at
    // once; open_connections() falls to 0 as they end.
    void drain();
    std::size_t open_connections() const;

    struct shared;  // options and callbacks, shared with every connection

private:
    boost::asio::io_context& ioc_;
    std::shared_ptr<shared> shared_;
    boost::asio::ip::tcp::acceptor acceptor_;
};

}  // namespace regpin::proxy::http
