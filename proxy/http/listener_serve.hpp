#pragma once
// Internal to http/: the request loop of one connection (detail::serve), plain or TLS, and the
// helpers it shares with listener.cpp. The loop is instantiated once per stream type in its own
// translation unit (listener_plain.cpp, listener_tls.cpp), so the two compile side by side.

#include <sys/ioctl.h>
#include <sys/sendfile.h>
#include "proxy/http/listener.hpp"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <iterator>
#include <sstream>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include "config/config.hpp"
#include "proxy/http/beast.hpp"
#include "proxy/http/log_json.hpp"

namespace regpin::proxy::http {

namespace detail {

inline std::string merged(const bhttp::fields& f, bhttp::field name,
                          std::string_view separator = ", ") {
    std::string out;
    auto range = f.equal_range(name);
    for (auto it = range.first; it != range.second; ++it) {
        if (!out.empty()) out += separator;
        out += std::string(it->value());
    }
    return out;
}

// Sends [offset, offset + size) of `file` with sendfile(2): the bytes go from the page cache to
// the socket without passing through user space. Waits for the socket between calls, each wait
// bounded by `timeout` (as every other write).
inline asio::awaitable<error_code> send_file(beast::tcp_stream& stream, int file,
                                             std::uint64_t offset, std::uint64_t size,
                                             std::chrono::milliseconds timeout) {
    using namespace asio::experimental::awaitable_operators;
    auto& socket = stream.socket();
    error_code ec;
    socket.native_non_blocking(true, ec);
    if (ec) co_return ec;
    auto position = static_cast<off_t>(offset);
    while (size > 0) {
        auto n = ::sendfile(socket.native_handle(), file, &position,
                            static_cast<std::size_t>(std::min<std::uint64_t>(size, 1u << 30)));
        if (n > 0) {
            size -= static_cast<std::uint64_t>(n);
            continue;
        }
        if (n == 0) co_return make_error_code(boost::system::errc::io_error);  // file too short
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            co_return error_code(errno, boost::system::system_category());
        asio::steady_timer timer(socket.get_executor());
        timer.expires_after(timeout);
        auto waited = co_await (socket.async_wait(tcp::socket::wait_write, use_tuple) ||
                                timer.async_wait(use_tuple));
        if (waited.index() == 1) co_return make_error_code(beast::error::timeout);
        if (auto [wec] = std::get<0>(waited); wec) co_return wec;
    }
    co_return error_code{};
}

// Writes `r` to the socket. Returns bytes of body written and whether the connection may be
// kept; a failing body stream aborts the connection (never a complete-looking wrong body).
struct write_outcome {
    std::uint64_t body_bytes = 0;
    bool keep = true;
};

template <class Stream>
asio::awaitable<write_outcome> write_reply(Stream& stream, reply& r, bool head, unsigned version,
                                           bool keep_alive, const listener_options& opts) {
    const auto timeout = opts.idle_timeout;
    write_outcome out;
    bhttp::response<bhttp::empty_body> h{static_cast<bhttp::status>(r.status), version};
    h.set(bhttp::field::server, "regpin");
    for (const auto& [k, v] : opts.headers) h.set(k, v);
    for (auto& [k, v] : r.headers) h.insert(k, v);
    bool chunked = false;
    if (r.stream) {
        if (r.content_length)
            h.content_length(*r.content_length);
        else if (version >= 11 && !head)
            chunked = true, h.chunked(true);
        else
            keep_alive = false;  // HTTP/1.0 without length: the close ends the body
    } else {
        h.content_length(r.content_length.value_or(r.body.size()));
    }
    h.keep_alive(keep_alive);
    out.keep = keep_alive;

    auto& lowest = beast::get_lowest_layer(stream);
    if (!r.stream && !head) {
        // Header and body in one gathered write.
        auto size = r.body.size();
        bhttp::response<bhttp::string_body> whole{std::move(h.base()), std::move(r.body)};
        lowest.expires_after(timeout);
        auto [wec, wn] = co_await bhttp::async_write(stream, whole, use_tuple);
        if (wec) co_return write_outcome{0, false};
        out.body_bytes = size;
        co_return out;
    }
    bhttp::response_serializer<bhttp::empty_body> sr{h};
    lowest.expires_after(timeout);
    auto [ec, n] = co_await bhttp::async_write_header(stream, sr, use_tuple);
    if (ec) co_return write_outcome{0, false};
    if (head) co_return out;

    // sendfile needs the socket itself: plain TCP, and no chunk framing around the bytes.
    constexpr bool plain = std::is_same_v<Stream, beast::tcp_stream>;
    while (true) {
        auto part = co_await r.stream->next(plain && !chunked);
        if (!part) {
            // Abort: the client sees a truncated body or connection reset, never a clean end.
            beast::error_code ignored;
            auto& socket = beast::get_lowest_layer(stream).socket();
            socket.set_option(asio::socket_base::linger(true, 0), ignored);
            socket.close(ignored);
            out.keep = false;
            co_return out;
        }
        lowest.expires_after(timeout);
        if constexpr (plain) {
            if (part->file >= 0) {
                auto fec =
                    co_await send_file(stream, part->file, part->offset, part->size, timeout);
                if (fec) {
                    out.keep = false;
                    co_return out;
                }
                out.body_bytes += part->size;
                continue;
            }
        }
        const auto& bytes = part->bytes;
        if (bytes.empty()) {
            if (chunked) {
                auto [cec, cn] =
                    co_await asio::async_write(stream, bhttp::make_chunk_last(), use_tuple);
                if (cec) out.keep = false;
            }
            co_return out;
        }
        error_code wec;
        if (chunked) {
            std::tie(wec, std::ignore) = co_await asio::async_write(
                stream, bhttp::make_chunk(asio::buffer(bytes)), use_tuple);
        } else {
            std::tie(wec, std::ignore) =
                co_await asio::async_write(stream, asio::buffer(bytes), use_tuple);
        }
        if (wec) {
            out.keep = false;
            co_return out;
        }
        out.body_bytes += bytes.size();
    }
}

// The request line's fields, in order: the listener's ("-" when the reply has none), then the
// reply's others.
inline std::vector<std::pair<std::string_view, std::string_view>> line_fields(
    const listener_options& o, const reply& r) {
    std::vector<std::pair<std::string_view, std::string_view>> out;
    for (const auto& name : o.log_fields) out.emplace_back(name, r.log_field(name));
    for (const auto& [k, v] : r.log_fields)
        if (std::find(o.log_fields.begin(), o.log_fields.end(), k) == o.log_fields.end())
            out.emplace_back(k, v);
    return out;
}

// " cache=hit upstream=docker.io": the fields as the text request line shows them.
inline std::string log_fields(const listener_options& o, const reply& r) {
    fmt::memory_buffer out;
    for (const auto& [k, v] : line_fields(o, r))
        fmt::format_to(std::back_inserter(out), " {}={}", k, v);
    return fmt::to_string(out);
}

// The address of "ADDRESS:PORT".
inline std::string address_of(const std::string& peer) {
    auto colon = peer.rfind(':');
    return colon == std::string::npos ? peer : peer.substr(0, colon);
}

inline bool allowed(const listener_options& o, std::string_view method) {
    for (const auto& m : o.methods)
        if (m == method) return true;
    return false;
}

inline std::string allowed_list(const listener_options& o) {
    std::string out;
    for (const auto& m : o.methods) out += (out.empty() ? "" : ", ") + m;
    return out;
}

inline reply refuse_request(const listener_options& o, unsigned status, const std::string& why) {
    if (o.refusal) return o.refusal(status, why);
    reply r;
    r.status = status;
    r.body = why + "\n";
    r.header("Content-Type", "text/plain");
    return r;
}

// One open connection as the listener sees it: whether it waits for a request, and how to
// close it then. Its fields are guarded by `mutex`; `cancel` runs only on the connection's
// strand (close_if_idle posts it there), where the request loop runs too.
struct connection_slot {
    std::mutex mutex;
    bool idle = true;      // waiting for a request's first byte (or the TLS handshake)
    bool closing = false;  // closed to make room or by a drain (close_now_if_idle)
    bool ended = false;    // the session is over: `cancel` must not run
    std::chrono::steady_clock::time_point idle_since = std::chrono::steady_clock::now();
    asio::any_io_executor strand;
    std::function<void()> cancel;  // cancels the connection's I/O; set by the session
    int fd = -1;                   // the socket, while the session holds it open

    // Bytes arrived that the request loop has not read yet: a request (or TLS handshake)
    // under way, however the loop's state reads. Under `mutex`.
    bool has_input_locked() const {
        int n = 0;
        return fd >= 0 && ::ioctl(fd, FIONREAD, &n) == 0 && n > 0;
    }

    void set_idle(bool now_idle) {
        std::lock_guard lock(mutex);
        idle = now_idle;
        if (now_idle) idle_since = std::chrono::steady_clock::now();
    }
};

}  // namespace detail

struct listener::shared {
    listener_options options;
    handler handle;
    observer observe;
    std::atomic<std::size_t> open{0};
    // Set by drain(): every reply says Connection: close, and no connection waits for another
    // request.
    std::atomic<bool> draining{false};
    // The whole response to a connection over max_connections, written without waiting.
    std::string over_capacity;

    std::mutex mutex;
    std::uint64_t next_id = 0;
    std::unordered_map<std::uint64_t, std::shared_ptr<detail::connection_slot>> slots;

    // The connection idle longest that is not being closed yet, or nullptr.
    std::shared_ptr<detail::connection_slot> oldest_idle() {
        std::lock_guard lock(mutex);
        std::shared_ptr<detail::connection_slot> best;
        auto best_since = std::chrono::steady_clock::time_point::max();
        for (auto& [id, s] : slots) {
            std::lock_guard slock(s->mutex);
            if (s->idle && !s->closing && !s->ended && s->idle_since < best_since &&
                !s->has_input_locked()) {
                best = s;
                best_since = s->idle_since;
            }
        }
        return best;
    }
    std::vector<std::shared_ptr<detail::connection_slot>> all_slots() {
        std::lock_guard lock(mutex);
        std::vector<std::shared_ptr<detail::connection_slot>> out;
        for (auto& [id, s] : slots) out.push_back(s);
        return out;
    }
};

namespace detail {

// The request loop of one connection, plain or TLS.
template <class Stream>
asio::awaitable<void> serve(Stream& stream, std::shared_ptr<listener::shared> sh,
                            std::shared_ptr<connection_slot> slot, std::string peer) {
    const auto& opts = sh->options;
    auto& lowest = beast::get_lowest_layer(stream);
    beast::flat_buffer buffer;
    try {
        while (true) {
            bhttp::request_parser<bhttp::string_body> parser;
            parser.header_limit(static_cast<std::uint32_t>(opts.max_header_bytes));
            // No body limit while reading the header: a push with a body must reach the method
            // check (405), not fail as a malformed request. Bodies are limited below.
            parser.body_limit(boost::none);
            if (buffer.size() == 0) {
                // Idle until the client starts a request (pipelined bytes skip the wait); the
                // listener may close an idle connection (close_now_if_idle).
                if (sh->draining.load()) co_return;
                slot->set_idle(true);
                lowest.expires_after(opts.idle_timeout);
                auto [wec, wn] = co_await stream.async_read_some(buffer.prepare(4096), use_tuple);
                slot->set_idle(false);
                if (wec) co_return;
                buffer.commit(wn);
            }
            slot->set_idle(false);
            lowest.expires_after(opts.header_timeout);
            auto [ec, n] = co_await bhttp::async_read_header(stream, buffer, parser, use_tuple);
            if (ec == bhttp::error::end_of_stream || ec == asio::error::eof ||
                ec == beast::error::timeout || ec == asio::error::connection_reset)
                co_return;
            auto started = std::chrono::steady_clock::now();
            auto& req = parser.get();
            incoming in;
            in.peer = address_of(peer);
            reply r;
            bool keep = false;
            if (ec) {
                r = refuse_request(opts, ec == bhttp::error::header_limit ? 431 : 400,
                                   "malformed request: " + ec.message());
                in.method = "-";
                in.target = "-";
            } else {
                in.method = std::string(req.method_string());
                in.target = std::string(req.target());
                in.head = req.method() == bhttp::verb::head;
                if (auto node = req["X-Regpin-Node"]; plausible_node_name(node))
                    in.node = std::string(node);
                keep = req.keep_alive();
                bool has_body = parser.content_length().value_or(0) > 0 || parser.chunked();
                if (!allowed(opts, in.method)) {
                    r = refuse_request(
                        opts, 405,
                        "method " + in.method +
                            " is not supported here (allowed: " + allowed_list(opts) + ")" +
                            (opts.read_only_note.empty() ? "" : "; " + opts.read_only_note));
                    r.header("Allow", allowed_list(opts));
                    keep = false;  // its body (a push) is never read
                } else if (has_body && opts.max_body_bytes == 0) {
                    r = refuse_request(opts, 405, in.method + " takes no body here");
                    keep = false;
                } else {
                    bool body_ok = true;
                    if (has_body && parser.content_length().value_or(0) > opts.max_body_bytes) {
                        r = refuse_request(opts, 413,
                                           "request body larger than " +
                                               std::to_string(opts.max_body_bytes) + " bytes");
                        keep = false;
                        body_ok = false;
                    } else if (has_body) {
                        parser.body_limit(opts.max_body_bytes);
                        lowest.expires_after(opts.header_timeout);
                        auto [bec, bn] =
                            co_await bhttp::async_read(stream, buffer, parser, use_tuple);
                        if (bec) {
                            r = refuse_request(opts, bec == bhttp::error::body_limit ? 413 : 400,
                                               "request body: " + bec.message());
                            keep = false;
                            body_ok = false;
                        }
                    }
                    if (body_ok) {
                        in.accept = merged(req.base(), bhttp::field::accept);
                        in.range = std::string(req[bhttp::field::range]);
                        in.authorization = std::string(req[bhttp::field::authorization]);
                        in.cookie = merged(req.base(), bhttp::field::cookie, "; ");
                        in.csrf_token = std::string(req["X-CSRF-Token"]);
                        in.origin = std::string(req[bhttp::field::origin]);
                        in.content_type = std::string(req[bhttp::field::content_type]);
                        in.body = std::move(req.body());
                        r = co_await sh->handle(in);
                    }
                }
            }
            // Draining (a shutdown): this answer is the connection's last.
            if (sh->draining.load()) keep = false;
            auto outcome = co_await write_reply(stream, r, in.head, ec ? 11 : req.version(),
                                                keep && !ec, opts);
            auto seconds =
                std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
            auto level = opts.log_requests ? spdlog::level::info : spdlog::level::debug;
            if (spdlog::should_log(level)) {
                if (opts.log_json)
                    spdlog::log(level, "{}",
                                request_fields(request_line{
                                    opts.name, peer, in.node, in.method, in.target, r.status,
                                    outcome.body_bytes, seconds * 1000.0, line_fields(opts, r)}));
                else
                    spdlog::log(level, "{} {} {} {} bytes={} ms={:.1f}{}{}", peer, in.method,
                                in.target, r.status, outcome.body_bytes, seconds * 1000.0,
                                log_fields(opts, r),
                                in.node.empty() ? std::string() : " node=" + in.node);
            }
            if (sh->observe) sh->observe(in, r, outcome.body_bytes, seconds);
            if (!outcome.keep) break;
        }
    } catch (const std::exception& e) {
        spdlog::error("{} connection {}: internal error: {}", opts.name, peer, e.what());
    }
}

}  // namespace detail

}  // namespace regpin::proxy::http
