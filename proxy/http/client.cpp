#include "proxy/http/client.hpp"

#include <atomic>
#include <mutex>
#include <stdexcept>
#include <unordered_map>
#include <variant>
#include <vector>

#include <spdlog/spdlog.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/url.hpp>

#include "proxy/http/beast.hpp"

namespace regpin::proxy::http {

namespace {
constexpr std::size_t header_limit = 64 * 1024;
constexpr std::size_t drain_limit = 64 * 1024;

class category final : public boost::system::error_category {
public:
    const char* name() const noexcept override { return "regpin.http"; }
    std::string message(int ev) const override {
        static constexpr const char* messages[] = {
            "ok",
            "cannot resolve host",
            "cannot connect",
            "TLS handshake failed",
            "timed out",
            "connection lost",
            "malformed HTTP response",
            "too many redirects",
            "unusable redirect",
            "body too large",
            "not an http(s) URL",
            "destination refused (a redirect or realm regpin must not follow)",
        };
        if (ev >= 0 && ev < static_cast<int>(std::size(messages))) return messages[ev];
        return "http error";
    }
};

std::optional<origin> origin_of(const boost::urls::url_view& u) {
    origin o;
    if (u.scheme_id() == boost::urls::scheme::https)
        o.tls = true;
    else if (u.scheme_id() != boost::urls::scheme::http)
        return std::nullopt;
    if (!u.has_authority() || u.host().empty()) return std::nullopt;
    o.host = u.host_address();
    if (u.host_type() == boost::urls::host_type::ipv6) o.host = u.encoded_host_address();
    o.port = u.has_port() ? std::string(u.port()) : (o.tls ? "443" : "80");
    return o;
}

errc classify(const error_code& ec, errc fallback) {
    if (ec == beast::error::timeout || ec == asio::error::timed_out) return errc::timeout;
    if (ec == bhttp::error::end_of_stream || ec == asio::error::eof ||
        ec == asio::error::connection_reset || ec == bhttp::error::partial_message ||
        ec == asio::error::broken_pipe || ec == ssl::error::stream_truncated)
        return errc::connection_lost;
    if (ec == bhttp::error::header_limit ||
        ec.category() == make_error_code(bhttp::error::bad_target).category())
        return errc::protocol_error;
    return fallback;
}

bool is_redirect(unsigned status) {
    return status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
}

// One HTTP or HTTPS connection to an origin.
class connection {
public:
    using plain = beast::tcp_stream;
    using secure = beast::ssl_stream<beast::tcp_stream>;

    connection(asio::any_io_executor ex, ssl::context& ctx, origin o,
               std::shared_ptr<std::atomic<std::size_t>> open)
        : origin_(std::move(o)), open_(std::move(open)) {
        if (origin_.tls)
            stream_.emplace<secure>(ex, ctx);
        else
            stream_.emplace<plain>(ex);
        ++*open_;
    }
    ~connection() { --*open_; }
    connection(const connection&) = delete;
    connection& operator=(const connection&) = delete;

    const origin& where() const { return origin_; }
    const tcp::endpoint& connected() const { return connected_; }
    beast::tcp_stream& lowest() {
        if (auto* s = std::get_if<secure>(&stream_)) return beast::get_lowest_layer(*s);
        return std::get<plain>(stream_);
    }

    // Unread bytes: buffered beyond the last response, or waiting in the socket.
    bool has_pending_bytes() {
        if (buffer_.size() > 0) return true;
        error_code ec;
        auto n = lowest().socket().available(ec);
        return ec || n > 0;
    }

    // Calls f with the plain or TLS stream; both branches yield the same awaitable type.
    template <class F>
    auto with_stream(F&& f) {
        if (auto* s = std::get_if<secure>(&stream_)) return f(*s);
        return f(std::get<plain>(stream_));
    }

    // Resolves and connects. With `check` (a destination named by another server), only to
    // addresses it finds no reason to refuse.
    asio::awaitable<error_code> open(const client_options& o,
                                     std::function<std::string(const tcp::endpoint&)> check) {
        tcp::resolver resolver(co_await asio::this_coro::executor);
        using namespace asio::experimental::awaitable_operators;
        asio::steady_timer timer(co_await asio::this_coro::executor);
        timer.expires_after(o.connect_timeout);
        auto outcome = co_await (resolver.async_resolve(origin_.host, origin_.port, use_tuple) ||
                                 timer.async_wait(use_tuple));
        if (outcome.index() == 1) co_return make_error_code(errc::timeout);
        auto [rec, resolved] = std::get<0>(outcome);
        if (rec) co_return make_error_code(errc::resolve_failed);
        std::vector<tcp::endpoint> endpoints;
        std::string why;
        for (const auto& entry : resolved) {
            auto reason = check ? check(entry.endpoint()) : std::string();
            if (reason.empty())
                endpoints.push_back(entry.endpoint());
            else if (why.empty())
                why = reason;
        }
        if (endpoints.empty()) {
            spdlog::warn("{}: not connecting to {}: {}", o.name, origin_.key(), why);
            co_return make_error_code(errc::refused_destination);
        }
        lowest().expires_after(o.connect_timeout);
        auto [cec, ep] = co_await lowest().async_connect(endpoints, use_tuple);
        connected_ = ep;
        if (cec)
            co_return make_error_code(cec == beast::error::timeout ? errc::timeout
                                                                   : errc::connect_failed);
        lowest().socket().set_option(tcp::no_delay(true));
        if (auto* s = std::get_if<secure>(&stream_)) {
            if (!SSL_set_tlsext_host_name(s->native_handle(), origin_.host.c_str()))
                co_return make_error_code(errc::tls_failed);
            if (o.tls_verify) s->set_verify_callback(ssl::host_name_verification(origin_.host));
            auto [hec] = co_await s->async_handshake(ssl::stream_base::client, use_tuple);
            if (hec) {
                spdlog::warn("{} {}: TLS handshake failed: {}", o.name, origin_.key(),
                             hec.message());
                co_return make_error_code(hec == beast::error::timeout ? errc::timeout
                                                                       : errc::tls_failed);
            }
        }
        co_return error_code{};
    }

    template <class Message>
    asio::awaitable<error_code> write(Message& m, std::chrono::milliseconds timeout) {
        lowest().expires_after(timeout);
        auto [ec, n] =
            co_await with_stream([&](auto& s) { return bhttp::async_write(s, m, use_tuple); });
        co_return ec;
    }

    template <class Parser>
    asio::awaitable<error_code> read_header(Parser& p, std::chrono::milliseconds timeout) {
        lowest().expires_after(timeout);
        auto [ec, n] = co_await with_stream(
            [&](auto& s) { return bhttp::async_read_header(s, buffer_, p, use_tuple); });
        co_return ec;
    }

    template <class Parser>
    asio::awaitable<error_code> read_some(Parser& p, std::chrono::milliseconds timeout) {
        lowest().expires_after(timeout);
        auto [ec, n] = co_await with_stream(
            [&](auto& s) { return bhttp::async_read_some(s, buffer_, p, use_tuple); });
        co_return ec;
    }

    // Body bytes without the parser, for a body of known length: what the header read left
    // in the buffer first, then straight off the socket into `out`. The parser would copy
    // every byte and read at most what its buffer has room for (a few KiB per read).
    asio::awaitable<std::pair<error_code, std::size_t>> read_raw(
        std::span<char> out, std::chrono::milliseconds timeout) {
        if (buffer_.size() > 0) {
            auto n = asio::buffer_copy(asio::buffer(out.data(), out.size()), buffer_.data());
            buffer_.consume(n);
            co_return std::pair{error_code{}, n};
        }
        lowest().expires_after(timeout);
        auto [ec, n] = co_await with_stream([&](auto& s) {
            return s.async_read_some(asio::buffer(out.data(), out.size()), use_tuple);
        });
        co_return std::pair{ec, n};
    }

private:
    origin origin_;
    std::variant<std::monostate, plain, secure> stream_;
    std::shared_ptr<std::atomic<std::size_t>> open_;  // the client's count of its connections
    tcp::endpoint connected_;
    beast::flat_buffer buffer_;
};

}  // namespace

const boost::system::error_category& http_category() noexcept {
    static const category c;
    return c;
}

std::string origin::key() const { return (tls ? "https://" : "http://") + host + ":" + port; }

std::string origin::host_header() const {
    bool default_port = (tls && port == "443") || (!tls && port == "80");
    return default_port ? host : host + ":" + port;
}

std::optional<std::pair<origin, std::string>> split_url(std::string_view url) {
    auto u = boost::urls::parse_uri(url);
    if (!u) return std::nullopt;
    auto o = origin_of(*u);
    if (!o) return std::nullopt;
    std::string target(u->encoded_resource());
    if (target.empty()) target = "/";
    return std::pair{std::move(*o), std::move(target)};
}

// Shared by the client and every response it hands out (a response may outlive the call).
class client_impl : public std::enable_shared_from_this<client_impl> {
public:
    client_impl(asio::any_io_executor ex, client_options o)
        : ex_(std::move(ex)), options_(std::move(o)), tls_(ssl::context::tls_client) {
        tls_.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                         ssl::context::no_sslv3 | ssl::context::no_tlsv1 |
                         ssl::context::no_tlsv1_1);
        tls_.set_default_verify_paths();
        if (!options_.ca_file.empty()) {
            error_code ec;
            tls_.load_verify_file(options_.ca_file, ec);
            if (ec)
                throw std::runtime_error(options_.name + ": cannot load CA file " +
                                         options_.ca_file + ": " + ec.message());
        }
        if (!options_.cert_file.empty() || !options_.key_file.empty()) {
            error_code ec;
            tls_.use_certificate_chain_file(options_.cert_file, ec);
            if (!ec) tls_.use_private_key_file(options_.key_file, ssl::context::pem, ec);
            if (ec)
                throw std::runtime_error(options_.name + ": cannot load the client certificate " +
                                         options_.cert_file + " / " + options_.key_file + ": " +
                                         ec.message());
        }
        tls_.set_verify_mode(options_.tls_verify ? ssl::verify_peer : ssl::verify_none);
    }

    asio::any_io_executor ex_;
    client_options options_;
    ssl::context tls_;
    // Connections open (in use or idle in the pool); shared with each connection, which may
    // outlive the client in a response.
    std::shared_ptr<std::atomic<std::size_t>> open_ = std::make_shared<std::atomic<std::size_t>>(0);

    std::mutex mutex_;
    std::unordered_map<std::string, std::vector<std::unique_ptr<connection>>> idle_;
    // By origin key: the classes of the addresses trusted (first-hop) connections went to.
    std::unordered_map<std::string, std::uint8_t> trusted_classes_;

    void trusted_connection(const origin& o, const tcp::endpoint& ep) {
        std::lock_guard lock(mutex_);
        trusted_classes_[o.key()] |= static_cast<std::uint8_t>(classify(ep.address()));
    }
    // The check for a hop to `to` on the word of `from` (trusted): its own host may be on any
    // class of address but never regpin's own listeners.
    std::function<std::string(const tcp::endpoint&)> checker(const origin& from, const origin& to) {
        std::uint8_t trusted = 0;
        if (to.host == from.host) {
            trusted = 0xFF;
        } else {
            std::lock_guard lock(mutex_);
            if (auto it = trusted_classes_.find(from.key()); it != trusted_classes_.end())
                trusted = it->second;
        }
        auto policy = options_.destinations;
        auto host = to.host;
        return [policy, host, trusted](const tcp::endpoint& ep) {
            return destination_refusal(policy, host, ep, trusted);
        };
    }

    std::unique_ptr<connection> take_idle(const origin& o) {
        std::lock_guard lock(mutex_);
        auto it = idle_.find(o.key());
        while (it != idle_.end() && !it->second.empty()) {
            auto c = std::move(it->second.back());
            it->second.pop_back();
            // Bytes that arrived on an idle connection belong to no request: a broken or
            // hostile server would have them taken for the next answer. Drop it.
            if (!c->has_pending_bytes()) return c;
        }
        return nullptr;
    }

    void give_back(std::unique_ptr<connection> c) {
        std::lock_guard lock(mutex_);
        auto& v = idle_[c->where().key()];
        if (static_cast<int>(v.size()) < options_.max_idle_per_origin) v.push_back(std::move(c));
    }

    asio::awaitable<result<response>> send(request req);
    // `check`: empty for a trusted hop, else what a new connection must pass.
    asio::awaitable<result<response>> send_once(
        const origin& o, bhttp::request<bhttp::string_body>& m, bool head,
        std::function<std::string(const tcp::endpoint&)> check);
};

// The body side of a response: the connection, its parser, and the pool to return to.
class response_state {
public:
    std::shared_ptr<client_impl> owner;
    std::unique_ptr<connection> conn;
    bhttp::response_parser<bhttp::buffer_body> parser;
    origin where;
    origin sent_to;  // the request's own origin, before redirects
    std::string url;
    bool done = false;
    // Body bytes still to come when the body is read raw (Content-Length, not chunked).
    std::optional<std::uint64_t> raw_left;

    void finish() {
        done = true;
        // Reused only when nothing follows the body (a body longer than its Content-Length
        // must not become the next response).
        if (conn && parser.keep_alive() && !conn->has_pending_bytes())
            owner->give_back(std::move(conn));
        conn.reset();
    }
};

response::response(std::unique_ptr<response_state> state) : state_(std::move(state)) {}
response::~response() = default;
response::response(response&&) noexcept = default;
response& response::operator=(response&&) noexcept = default;

unsigned response::status() const { return state_->parser.get().result_int(); }
const bhttp::fields& response::headers() const { return state_->parser.get().base(); }
std::optional<std::uint64_t> response::content_length() const {
    auto n = state_->parser.content_length();
    if (!n) return std::nullopt;
    return *n;
}
const origin& response::final_origin() const { return state_->where; }
const origin& response::sent_to() const { return state_->sent_to; }
const std::string& response::final_url() const { return state_->url; }

asio::awaitable<result<std::size_t>> response::read_some(std::span<char> buf) {
    auto& st = *state_;
    if (st.done || st.parser.is_done()) {
        if (!st.done) st.finish();
        co_return std::size_t{0};
    }
    if (!st.conn) co_return make_error_code(errc::connection_lost);
    auto timeout = st.owner->options_.read_timeout;
    if (!st.raw_left && !st.parser.chunked() && st.parser.content_length())
        st.raw_left = *st.parser.content_length();
    if (st.raw_left) {
        if (*st.raw_left == 0) {
            st.finish();
            co_return std::size_t{0};
        }
        auto want = static_cast<std::size_t>(std::min<std::uint64_t>(buf.size(), *st.raw_left));
        auto [ec, n] = co_await st.conn->read_raw(buf.first(want), timeout);
        if (ec) {
            st.conn.reset();
            // The connection ending before Content-Length is a short body, never a clean end.
            co_return make_error_code(classify(ec, errc::connection_lost));
        }
        *st.raw_left -= n;
        if (*st.raw_left == 0) st.finish();
        co_return n;
    }
    while (true) {
        auto& body = st.parser.get().body();
        body.data = buf.data();
        body.size = buf.size();
        auto ec = co_await st.conn->read_some(st.parser, timeout);
        std::size_t got = buf.size() - st.parser.get().body().size;
        if (ec == bhttp::error::need_buffer) ec = {};
        if (ec) {
            st.conn.reset();
            co_return make_error_code(classify(ec, errc::connection_lost));
        }
        if (st.parser.is_done()) st.finish();
        if (got > 0 || st.done) co_return got;
    }
}

asio::awaitable<result<std::string>> response::read_all(
    std::size_t limit, std::chrono::steady_clock::time_point deadline) {
    std::string out;
    if (auto n = content_length(); n && *n > limit) co_return make_error_code(errc::body_too_large);
    std::vector<char> buf(64 * 1024);
    while (true) {
        auto r = co_await read_some(buf);
        if (!r) co_return r.error();
        if (*r == 0) break;
        if (std::chrono::steady_clock::now() > deadline) {
            state_->conn.reset();
            co_return make_error_code(errc::timeout);
        }
        if (out.size() + *r > limit) {
            state_->conn.reset();
            co_return make_error_code(errc::body_too_large);
        }
        out.append(buf.data(), *r);
    }
    co_return out;
}

asio::awaitable<result<response>> client_impl::send_once(
    const origin& o, bhttp::request<bhttp::string_body>& m, bool head,
    std::function<std::string(const tcp::endpoint&)> check) {
    // A pooled connection may have been closed by the server while idle; then retry once on a
    // fresh connection (nothing was received, so the request is safe to repeat).
    for (int attempt = 0; attempt < 2; ++attempt) {
        auto conn = attempt == 0 ? take_idle(o) : nullptr;
        bool reused = conn != nullptr;
        if (!conn) {
            conn = std::make_unique<connection>(ex_, tls_, o, open_);
            auto ec = co_await conn->open(options_, check);
            if (ec) co_return ec;
            if (!check) trusted_connection(o, conn->connected());
        }
        auto state = std::make_unique<response_state>();
        state->owner = shared_from_this();
        state->parser.header_limit(header_limit);
        state->parser.body_limit(boost::none);
        if (head) state->parser.skip(true);
        auto ec = co_await conn->write(m, options_.read_timeout);
        if (!ec) ec = co_await conn->read_header(state->parser, options_.read_timeout);
        if (ec) {
            if (reused && attempt == 0 && ec != beast::error::timeout) continue;
            co_return make_error_code(classify(ec, errc::protocol_error));
        }
        state->conn = std::move(conn);
        state->where = o;
        state->url = o.key() + std::string(m.target().substr(0, m.target().find('?')));
        if (state->parser.is_done()) state->finish();
        co_return response(std::move(state));
    }
    co_return make_error_code(errc::connection_lost);
}

asio::awaitable<result<response>> client_impl::send(request req) {
    const auto policy = req.redirects.value_or(options_.redirects);
    const auto first = req.origin;
    // Whose word a hop is taken on: the configured origin's, or the server that named it.
    const auto trusted = req.vouched_by.value_or(req.origin);
    origin where = req.origin;
    std::string target = req.target.empty() ? "/" : req.target;
    bool head = req.method == bhttp::verb::head;
    for (int hop = 0;; ++hop) {
        bhttp::request<bhttp::string_body> m{req.method, target, 11};
        m.set(bhttp::field::host, where.host_header());
        m.set(bhttp::field::user_agent, "regpin");
        // Credentials belong to the request's own host: a redirect elsewhere goes without.
        bool same_host = where.host == first.host && where.port == first.port;
        for (const auto& [name, value] : req.headers) {
            if (!same_host && beast::iequals(name, "Authorization")) continue;
            m.set(name, value);
        }
        if (!req.body.empty() || req.method == bhttp::verb::post) {
            m.body() = req.body;
            if (!req.content_type.empty()) m.set(bhttp::field::content_type, req.content_type);
            m.prepare_payload();
        }
        std::function<std::string(const tcp::endpoint&)> check;
        if (hop > 0 || req.vouched_by) check = checker(trusted, where);
        auto r = co_await send_once(where, m, head, check);
        if (!r) co_return r.error();
        r->state_->sent_to = first;
        auto status = r->status();
        if (!is_redirect(status) || policy.max_hops == 0) co_return r;
        if (hop >= policy.max_hops) co_return make_error_code(errc::too_many_redirects);

        auto location = std::string(r->headers()[bhttp::field::location]);
        (void)co_await r->read_all(drain_limit);
        if (location.empty()) co_return make_error_code(errc::bad_redirect);
        // parse_uri returns a view: the string it parses must outlive it.
        const std::string current = where.key() + target;
        auto base_url = boost::urls::parse_uri(current);
        auto ref = boost::urls::parse_uri_reference(location);
        if (!base_url || !ref) co_return make_error_code(errc::bad_redirect);
        boost::urls::url next;
        if (!boost::urls::resolve(*base_url, *ref, next))
            co_return make_error_code(errc::bad_redirect);
        auto o = origin_of(next);
        if (!o) co_return make_error_code(errc::bad_redirect);
        if (where.tls && !o->tls) {
            spdlog::warn("{}: refusing a redirect from {} to plain HTTP {}", options_.name,
                         where.key(), o->key());
            co_return make_error_code(errc::refused_destination);
        }
        if (o->host != where.host)
            spdlog::debug("{}: redirect to {} (credentials not sent)", options_.name, o->key());
        where = *o;
        target = std::string(next.encoded_resource());
        if (target.empty()) target = "/";
        if (status == 303) head = false, req.method = bhttp::verb::get, req.body.clear();
    }
}

client::client(asio::any_io_executor ex, client_options options)
    : impl_(std::make_shared<client_impl>(std::move(ex), std::move(options))) {}
client::~client() = default;

asio::awaitable<result<response>> client::send(request req) {
    auto impl = impl_;  // keep alive across suspension
    co_return co_await impl->send(std::move(req));
}

const client_options& client::options() const { return impl_->options_; }

std::size_t client::open_connections() const { return impl_->open_->load(); }

namespace {

asio::awaitable<void> blocking_exchange(
    client* c, request req, const std::function<void(unsigned, std::string_view)>* on_data,
    std::size_t body_limit, blocking_result* out) {
    auto r = co_await c->send(std::move(req));
    if (!r) {
        out->error = r.error().message();
        co_return;
    }
    out->status = r->status();
    if (!*on_data) {
        auto body = co_await r->read_all(body_limit);
        if (!body) {
            out->error = body.error().message();
            co_return;
        }
        out->body = std::move(*body);
        co_return;
    }
    std::vector<char> buf(256 * 1024);
    while (true) {
        auto n = co_await r->read_some(buf);
        if (!n) {
            out->error = n.error().message();
            co_return;
        }
        if (*n == 0) co_return;
        (*on_data)(out->status, std::string_view(buf.data(), *n));
    }
}

}  // namespace

blocking_result send_blocking(const client_options& options, request req,
                              const std::function<void(unsigned, std::string_view)>& on_data,
                              std::size_t body_limit) {
    blocking_result out;
    asio::io_context ioc;
    try {
        client c(ioc.get_executor(), options);
        asio::co_spawn(ioc, blocking_exchange(&c, std::move(req), &on_data, body_limit, &out),
                       asio::detached);
        ioc.run();
    } catch (const std::exception& e) {
        out.error = e.what();
    }
    return out;
}

}  // namespace regpin::proxy::http
