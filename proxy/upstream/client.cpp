#include "proxy/upstream/client.hpp"

#include <map>
#include <mutex>
#include <unordered_map>
#include <variant>
#include <vector>

#include <spdlog/spdlog.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/core/detail/base64.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/url.hpp>
#include <nlohmann/json.hpp>

namespace regpin::proxy::upstream {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using boost::system::error_code;
using namespace std::chrono_literals;

namespace {

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);
constexpr int max_hops = 8;
constexpr std::size_t header_limit = 64 * 1024;
constexpr std::size_t drain_limit = 64 * 1024;
constexpr std::size_t token_body_limit = 1024 * 1024;

class category final : public boost::system::error_category {
public:
    const char* name() const noexcept override { return "regpin.upstream"; }
    std::string message(int ev) const override {
        switch (static_cast<errc>(ev)) {
            case errc::ok:
                return "ok";
            case errc::resolve_failed:
                return "cannot resolve upstream host";
            case errc::connect_failed:
                return "cannot connect to upstream";
            case errc::tls_failed:
                return "TLS handshake with upstream failed";
            case errc::timeout:
                return "upstream timed out";
            case errc::connection_lost:
                return "upstream connection lost";
            case errc::protocol_error:
                return "upstream sent a malformed HTTP response";
            case errc::too_many_redirects:
                return "too many redirects";
            case errc::bad_redirect:
                return "upstream sent an unusable redirect";
            case errc::body_too_large:
                return "upstream body too large";
            case errc::offline:
                return "regpin is offline: upstreams are never contacted";
            case errc::auth_failed:
                return "upstream token request failed";
        }
        return "upstream error";
    }
};

// Where a request goes: scheme, host and port. Equality decides whether credentials may go.
struct origin {
    bool tls = false;
    std::string host;
    std::string port;
    std::string key() const { return (tls ? "https://" : "http://") + host + ":" + port; }
    std::string host_header() const {
        bool default_port = (tls && port == "443") || (!tls && port == "80");
        return default_port ? host : host + ":" + port;
    }
    friend bool operator==(const origin&, const origin&) = default;
};

std::optional<origin> origin_of(const boost::urls::url_view& u) {
    origin o;
    if (u.scheme_id() == boost::urls::scheme::https)
        o.tls = true;
    else if (u.scheme_id() != boost::urls::scheme::http)
        return std::nullopt;
    if (!u.has_authority() || u.host().empty()) return std::nullopt;
    o.host = u.host_address();
    if (u.host_type() == boost::urls::host_type::ipv6) {
        o.host = u.encoded_host_address();  // without brackets
    }
    o.port = u.has_port() ? std::string(u.port()) : (o.tls ? "443" : "80");
    return o;
}

errc classify(const error_code& ec, errc fallback) {
    if (ec == beast::error::timeout || ec == asio::error::timed_out) return errc::timeout;
    if (ec == http::error::end_of_stream || ec == asio::error::eof ||
        ec == asio::error::connection_reset || ec == http::error::partial_message ||
        ec == asio::error::broken_pipe || ec == ssl::error::stream_truncated)
        return errc::connection_lost;
    if (ec == http::error::header_limit ||
        ec.category() == make_error_code(http::error::bad_target).category())
        return errc::protocol_error;
    return fallback;
}

std::string base64(std::string_view in) {
    std::string out(beast::detail::base64::encoded_size(in.size()), '\0');
    out.resize(beast::detail::base64::encode(out.data(), in.data(), in.size()));
    return out;
}

// One HTTP or HTTPS connection to an origin.
class connection {
public:
    using plain = beast::tcp_stream;
    using secure = beast::ssl_stream<beast::tcp_stream>;

    connection(asio::any_io_executor ex, ssl::context& ctx, origin o) : origin_(std::move(o)) {
        if (origin_.tls)
            stream_.emplace<secure>(ex, ctx);
        else
            stream_.emplace<plain>(ex);
    }

    const origin& where() const { return origin_; }
    beast::tcp_stream& lowest() {
        if (auto* s = std::get_if<secure>(&stream_)) return beast::get_lowest_layer(*s);
        return std::get<plain>(stream_);
    }
    beast::flat_buffer& buffer() { return buffer_; }

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

    asio::awaitable<error_code> open(std::chrono::milliseconds connect_timeout, bool verify) {
        tcp::resolver resolver(co_await asio::this_coro::executor);
        using namespace asio::experimental::awaitable_operators;
        asio::steady_timer timer(co_await asio::this_coro::executor);
        timer.expires_after(connect_timeout);
        auto outcome = co_await (resolver.async_resolve(origin_.host, origin_.port, use_tuple) ||
                                 timer.async_wait(use_tuple));
        if (outcome.index() == 1) co_return make_error_code(errc::timeout);
        auto [rec, endpoints] = std::get<0>(outcome);
        if (rec) co_return make_error_code(errc::resolve_failed);
        lowest().expires_after(connect_timeout);
        auto [cec, ep] = co_await lowest().async_connect(endpoints, use_tuple);
        if (cec)
            co_return make_error_code(cec == beast::error::timeout ? errc::timeout
                                                                   : errc::connect_failed);
        lowest().socket().set_option(tcp::no_delay(true));
        if (auto* s = std::get_if<secure>(&stream_)) {
            if (!SSL_set_tlsext_host_name(s->native_handle(), origin_.host.c_str()))
                co_return make_error_code(errc::tls_failed);
            if (verify) s->set_verify_callback(ssl::host_name_verification(origin_.host));
            auto [hec] = co_await s->async_handshake(ssl::stream_base::client, use_tuple);
            if (hec) {
                spdlog::warn("upstream {}: TLS handshake failed: {}", origin_.key(), hec.message());
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
            co_await with_stream([&](auto& s) { return http::async_write(s, m, use_tuple); });
        co_return ec;
    }

    template <class Parser>
    asio::awaitable<error_code> read_header(Parser& p, std::chrono::milliseconds timeout) {
        lowest().expires_after(timeout);
        auto [ec, n] = co_await with_stream(
            [&](auto& s) { return http::async_read_header(s, buffer_, p, use_tuple); });
        co_return ec;
    }

    template <class Parser>
    asio::awaitable<error_code> read_some(Parser& p, std::chrono::milliseconds timeout) {
        lowest().expires_after(timeout);
        auto [ec, n] = co_await with_stream(
            [&](auto& s) { return http::async_read_some(s, buffer_, p, use_tuple); });
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
    beast::flat_buffer buffer_;
};

struct cached_token {
    std::string value;
    std::chrono::steady_clock::time_point expires;
};

}  // namespace

const boost::system::error_category& upstream_category() noexcept {
    static const category c;
    return c;
}

// Shared by the client and every response it hands out (a response may outlive the call).
class client_impl : public std::enable_shared_from_this<client_impl> {
public:
    client_impl(asio::any_io_executor ex, const config::upstream& cfg, observer obs)
        : ex_(std::move(ex)), cfg_(cfg), tls_(ssl::context::tls_client), observe_(std::move(obs)) {
        auto u = boost::urls::parse_uri(cfg_.url);
        if (!u || !origin_of(*u)) throw std::invalid_argument("bad upstream url " + cfg_.url);
        base_ = *origin_of(*u);
        tls_.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                         ssl::context::no_sslv3 | ssl::context::no_tlsv1 |
                         ssl::context::no_tlsv1_1);
        tls_.set_default_verify_paths();
        if (!cfg_.ca_file.empty()) tls_.load_verify_file(cfg_.ca_file);
        tls_.set_verify_mode(cfg_.tls_verify ? ssl::verify_peer : ssl::verify_none);
    }

    asio::any_io_executor ex_;
    config::upstream cfg_;
    ssl::context tls_;
    origin base_;
    observer observe_;

    std::mutex mutex_;
    std::unordered_map<std::string, std::vector<std::unique_ptr<connection>>> idle_;
    std::map<std::string, cached_token> tokens_;  // by scope
    bool basic_challenged_ = false;

    std::unique_ptr<connection> take_idle(const origin& o) {
        std::lock_guard lock(mutex_);
        auto it = idle_.find(o.key());
        while (it != idle_.end() && !it->second.empty()) {
            auto c = std::move(it->second.back());
            it->second.pop_back();
            // Bytes that arrived on an idle connection belong to no request: a broken or
            // hostile upstream would have them taken for the next answer. Drop it.
            if (!c->has_pending_bytes()) return c;
        }
        return nullptr;
    }

    void give_back(std::unique_ptr<connection> c) {
        std::lock_guard lock(mutex_);
        auto& v = idle_[c->where().key()];
        if (static_cast<int>(v.size()) < cfg_.max_idle_connections) v.push_back(std::move(c));
    }

    std::optional<std::string> authorization_for(const std::string& scope) {
        std::lock_guard lock(mutex_);
        auto it = tokens_.find(scope);
        if (it != tokens_.end()) {
            if (std::chrono::steady_clock::now() < it->second.expires)
                return "Bearer " + it->second.value;
            tokens_.erase(it);
        }
        if (basic_challenged_ && !cfg_.username.empty())
            return "Basic " + base64(cfg_.username + ":" + cfg_.password);
        return std::nullopt;
    }

    asio::awaitable<result<response>> send(request req);
    asio::awaitable<result<response>> send_once(const origin& o,
                                                http::request<http::string_body>& m, bool head);
    asio::awaitable<result<void>> fetch_token(const challenge& ch, const std::string& scope);
};

// The body side of a response: the connection, its parser, and the pool to return to.
class response_state {
public:
    std::shared_ptr<client_impl> owner;
    std::unique_ptr<connection> conn;
    http::response_parser<http::buffer_body> parser;
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

unsigned response::status() const { return state_->parser.get().result_int(); }
const http::fields& response::headers() const { return state_->parser.get().base(); }
std::optional<std::uint64_t> response::content_length() const {
    auto n = state_->parser.content_length();
    if (!n) return std::nullopt;
    return *n;
}
const std::string& response::final_url() const { return state_->url; }

asio::awaitable<result<std::size_t>> response::read_some(std::span<char> buf) {
    auto& st = *state_;
    if (st.done || st.parser.is_done()) {
        if (!st.done) st.finish();
        co_return std::size_t{0};
    }
    if (!st.conn) co_return make_error_code(errc::connection_lost);
    auto timeout = st.owner->cfg_.read_timeout;
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
        if (ec == http::error::need_buffer) ec = {};
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

asio::awaitable<result<response>> client_impl::send_once(const origin& o,
                                                         http::request<http::string_body>& m,
                                                         bool head) {
    // A pooled connection may have been closed by the server while idle; then retry once on a
    // fresh connection (nothing was received, so the request is safe to repeat).
    for (int attempt = 0; attempt < 2; ++attempt) {
        auto conn = attempt == 0 ? take_idle(o) : nullptr;
        bool reused = conn != nullptr;
        if (!conn) {
            conn = std::make_unique<connection>(ex_, tls_, o);
            auto ec = co_await conn->open(cfg_.connect_timeout, cfg_.tls_verify);
            if (ec) co_return ec;
        }
        auto state = std::make_unique<response_state>();
        state->owner = shared_from_this();
        state->parser.header_limit(header_limit);
        state->parser.body_limit(boost::none);
        if (head) state->parser.skip(true);
        auto ec = co_await conn->write(m, cfg_.read_timeout);
        if (!ec) ec = co_await conn->read_header(state->parser, cfg_.read_timeout);
        if (ec) {
            if (reused && attempt == 0 && ec != beast::error::timeout) continue;
            co_return make_error_code(classify(ec, errc::protocol_error));
        }
        state->conn = std::move(conn);
        state->url = o.key() + std::string(m.target().substr(0, m.target().find('?')));
        if (state->parser.is_done()) state->finish();
        co_return response(std::move(state));
    }
    co_return make_error_code(errc::connection_lost);
}

asio::awaitable<result<void>> client_impl::fetch_token(const challenge& ch,
                                                       const std::string& scope) {
    auto realm = boost::urls::parse_uri(ch.realm);
    if (!realm || !origin_of(*realm)) co_return make_error_code(errc::auth_failed);
    auto o = *origin_of(*realm);
    boost::urls::url u(*realm);
    if (!ch.service.empty()) u.params().append({"service", ch.service});
    auto want = ch.scope.empty() ? scope : ch.scope;
    if (!want.empty()) u.params().append({"scope", want});

    http::request<http::string_body> m{http::verb::get, u.encoded_resource(), 11};
    m.set(http::field::host, o.host_header());
    m.set(http::field::user_agent, "regpin");
    // Credentials go to the token server only over TLS or to the upstream's own host.
    if (!cfg_.username.empty() && (o.tls || o.host == base_.host))
        m.set(http::field::authorization, "Basic " + base64(cfg_.username + ":" + cfg_.password));
    auto r = co_await send_once(o, m, false);
    if (!r) co_return r.error();
    auto body = co_await r->read_all(token_body_limit);
    if (!body || r->status() != 200) {
        spdlog::warn("upstream {}: token request to {} answered {}", cfg_.registry, o.key(),
                     r->status());
        co_return make_error_code(errc::auth_failed);
    }
    auto j = nlohmann::json::parse(*body, nullptr, false);
    if (!j.is_object()) co_return make_error_code(errc::auth_failed);
    std::string token;
    if (j.contains("token") && j["token"].is_string())
        token = j["token"].get<std::string>();
    else if (j.contains("access_token") && j["access_token"].is_string())
        token = j["access_token"].get<std::string>();
    if (token.empty()) co_return make_error_code(errc::auth_failed);
    std::int64_t expires_in = 60;
    if (j.contains("expires_in") && j["expires_in"].is_number_integer())
        expires_in = std::max<std::int64_t>(j["expires_in"].get<std::int64_t>(), 1);
    // Renew a little early so a token never expires between the check and the request.
    auto margin = std::min<std::int64_t>(10, expires_in / 4);
    std::lock_guard lock(mutex_);
    tokens_[scope] = {token,
                      std::chrono::steady_clock::now() + std::chrono::seconds(expires_in - margin)};
    co_return result<void>{};
}

asio::awaitable<result<response>> client_impl::send(request req) {
    // The one choke point every upstream request passes: offline means no socket at all.
    if (cfg_.offline) co_return make_error_code(errc::offline);
    origin where = base_;
    std::string target = req.target;
    if (cfg_.send_ns)
        target += (target.find('?') == std::string::npos ? "?ns=" : "&ns=") + cfg_.registry;
    bool auth_tried = false;
    bool head = req.method == http::verb::head;
    for (int hop = 0; hop < max_hops; ++hop) {
        http::request<http::string_body> m{req.method, target, 11};
        m.set(http::field::host, where.host_header());
        m.set(http::field::user_agent, "regpin");
        if (!req.accept.empty()) m.set(http::field::accept, req.accept);
        if (!req.range.empty()) m.set(http::field::range, req.range);
        for (const auto& [name, value] : req.headers) m.set(name, value);
        if (!req.body.empty() || req.method == http::verb::post) {
            m.body() = req.body;
            if (!req.content_type.empty()) m.set(http::field::content_type, req.content_type);
            m.prepare_payload();
        }
        bool same_host = where.host == base_.host && where.port == base_.port;
        if (same_host) {
            if (auto a = authorization_for(req.scope)) m.set(http::field::authorization, *a);
        }
        auto r = co_await send_once(where, m, head);
        if (!r) co_return r.error();
        unsigned status = r->status();

        if (status == 401 && same_host && !auth_tried) {
            auto ch = parse_challenge(r->headers()[http::field::www_authenticate]);
            bool bearer = ch && ch->scheme == "bearer" && !ch->realm.empty();
            bool basic = ch && ch->scheme == "basic" && !cfg_.username.empty();
            // Without a challenge regpin can answer, the 401 goes to the caller as it is.
            if (!bearer && !basic) co_return r;
            (void)co_await r->read_all(drain_limit);
            auth_tried = true;
            if (bearer) {
                auto t = co_await fetch_token(*ch, req.scope);
                if (!t) co_return t.error();
            } else {
                std::lock_guard lock(mutex_);
                basic_challenged_ = true;
            }
            --hop;
            continue;
        }

        bool redirect =
            status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
        if (!redirect) co_return r;
        auto location = std::string(r->headers()[http::field::location]);
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
        if (o->host != where.host)
            spdlog::debug("upstream {}: redirect to {} (credentials not sent)", cfg_.registry,
                          o->key());
        where = *o;
        target = std::string(next.encoded_resource());
        if (target.empty()) target = "/";
        if (status == 303) head = false, req.method = http::verb::get, req.body.clear();
    }
    co_return make_error_code(errc::too_many_redirects);
}

client::client(asio::any_io_executor ex, const config::upstream& cfg, observer obs)
    : impl_(std::make_shared<client_impl>(std::move(ex), cfg, std::move(obs))) {}
client::~client() = default;

asio::awaitable<result<response>> client::send(request req) {
    auto impl = impl_;  // keep alive across suspension
    auto started = std::chrono::steady_clock::now();
    auto r = co_await impl->send(std::move(req));
    if (impl->observe_) {
        auto seconds =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
        impl->observe_(impl->cfg_.registry, r ? r->status() : 0u, r ? error_code{} : r.error(),
                       seconds);
    }
    co_return r;
}

const config::upstream& client::settings() const { return impl_->cfg_; }

}  // namespace regpin::proxy::upstream
