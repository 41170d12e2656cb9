#include "proxy/http/listener.hpp"

#include <sys/sendfile.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <iterator>
#include <sstream>
#include <type_traits>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include "config/config.hpp"
#include "proxy/http/beast.hpp"

#include "proxy/http/listener_serve.hpp"

namespace regpin::proxy::http {

// Instantiated in listener_plain.cpp and listener_tls.cpp.
extern template asio::awaitable<void> detail::serve<beast::tcp_stream>(
    beast::tcp_stream&, std::shared_ptr<listener::shared>, std::shared_ptr<detail::connection_slot>,
    std::string);
extern template asio::awaitable<void> detail::serve<beast::ssl_stream<beast::tcp_stream>>(
    beast::ssl_stream<beast::tcp_stream>&, std::shared_ptr<listener::shared>,
    std::shared_ptr<detail::connection_slot>, std::string);

namespace {

using detail::connection_slot;
using detail::refuse_request;
using detail::serve;

asio::awaitable<void> session(tcp::socket socket, std::shared_ptr<listener::shared> sh) {
    auto slot = std::make_shared<connection_slot>();
    slot->strand = co_await asio::this_coro::executor;
    slot->fd = socket.native_handle();
    std::uint64_t id = 0;
    {
        std::lock_guard lock(sh->mutex);
        id = ++sh->next_id;
        sh->slots.emplace(id, slot);
    }
    // Leaves the listener's books however the session ends; the slot's `cancel` (which
    // refers to this frame's stream) never runs after.
    // Before the socket closes (its descriptor may be reused at once).
    auto end_slot = [&slot] {
        std::lock_guard lock(slot->mutex);
        slot->ended = true;
        slot->cancel = nullptr;
        slot->fd = -1;
    };
    struct counted {
        std::shared_ptr<listener::shared> sh;
        std::shared_ptr<connection_slot> slot;
        std::uint64_t id;
        ~counted() {
            {
                std::lock_guard lock(slot->mutex);
                slot->ended = true;
                slot->cancel = nullptr;
                slot->fd = -1;
            }
            {
                std::lock_guard lock(sh->mutex);
                sh->slots.erase(id);
            }
            --sh->open;
        }
    } guard{sh, slot, id};
    std::string peer;
    {
        error_code ec;
        auto ep = socket.remote_endpoint(ec);
        if (!ec) peer = ep.address().to_string() + ":" + std::to_string(ep.port());
    }
    beast::tcp_stream plain(std::move(socket));
    if (sh->options.tls) {
        beast::ssl_stream<beast::tcp_stream> tls(std::move(plain), *sh->options.tls);
        {
            std::lock_guard lock(slot->mutex);
            slot->cancel = [&tls] { beast::get_lowest_layer(tls).cancel(); };
        }
        beast::get_lowest_layer(tls).expires_after(sh->options.header_timeout);
        auto [hec] = co_await tls.async_handshake(ssl::stream_base::server, use_tuple);
        if (hec) {
            spdlog::debug("{} {}: TLS handshake failed: {}", sh->options.name, peer, hec.message());
        } else {
            co_await serve(tls, sh, slot, peer);
            end_slot();
            beast::get_lowest_layer(tls).expires_after(std::chrono::seconds(2));
            (void)co_await tls.async_shutdown(use_tuple);
        }
        end_slot();
        error_code ignored;
        beast::get_lowest_layer(tls).socket().shutdown(tcp::socket::shutdown_both, ignored);
        co_return;
    }
    {
        std::lock_guard lock(slot->mutex);
        slot->cancel = [&plain] { plain.cancel(); };
    }
    co_await serve(plain, sh, slot, peer);
    end_slot();
    error_code ignored;
    plain.socket().shutdown(tcp::socket::shutdown_both, ignored);
}

// Over the connection cap: a short 503 written without waiting, then close. Nothing else is
// read from or sent to this client, and the established connections are untouched.
void refuse(tcp::socket socket, const listener::shared& sh) {
    const auto& o = sh.options;
    static std::atomic<std::int64_t> last_log{0};
    auto now = std::chrono::steady_clock::now().time_since_epoch().count();
    if (now - last_log.load() > std::int64_t{1000000000}) {
        last_log = now;
        spdlog::warn("{}: {} connections open: refusing new ones (max_connections)", o.name,
                     o.max_connections);
    }
    error_code ignored;
    socket.non_blocking(true, ignored);
    socket.write_some(asio::buffer(sh.over_capacity), ignored);
    socket.shutdown(tcp::socket::shutdown_both, ignored);
    socket.close(ignored);
}

// On `slot`'s strand: closes its connection if it still waits for a request and nothing of
// one has arrived; whether that made room (a session that ended meanwhile, by its idle timeout
// or its client, made room too). The accept loop waits for the answer, so a connection that
// looked idle but is receiving a request is never closed, and another is tried instead.
asio::awaitable<bool> close_now_if_idle(std::shared_ptr<detail::connection_slot> slot) {
    std::lock_guard lock(slot->mutex);
    if (slot->ended) co_return true;
    if (!slot->idle || slot->closing || !slot->cancel || slot->has_input_locked()) co_return false;
    slot->closing = true;  // ending: not picked again
    slot->cancel();
    co_return true;
}

}  // namespace

listener::listener(asio::io_context& ioc, listener_options options, handler h, observer o)
    : ioc_(ioc), shared_(std::make_shared<shared>()), acceptor_(ioc) {
    shared_->options = std::move(options);
    shared_->handle = std::move(h);
    shared_->observe = std::move(o);
    {
        auto r = refuse_request(shared_->options, 503, "too many connections");
        bhttp::response<bhttp::string_body> m{bhttp::status::service_unavailable, 11};
        for (const auto& [k, v] : r.headers) m.set(k, v);
        m.set(bhttp::field::retry_after, "1");
        m.keep_alive(false);
        m.body() = std::move(r.body);
        m.prepare_payload();
        std::ostringstream text;
        text << m;
        shared_->over_capacity = text.str();
    }
    const auto& listen = shared_->options.listen;
    auto [host, port] = config::parse_host_port(listen, "listen");
    error_code ec;
    auto address = asio::ip::make_address(host, ec);
    if (ec) {
        tcp::resolver resolver(ioc);
        auto results = resolver.resolve(host, std::to_string(port), ec);
        if (ec || results.empty())
            throw std::system_error(ec, "cannot resolve listen address '" + listen + "'");
        address = results.begin()->endpoint().address();
    }
    tcp::endpoint ep(address, port);
    acceptor_.open(ep.protocol());
    acceptor_.set_option(asio::socket_base::reuse_address(true));
    acceptor_.bind(ep, ec);
    if (ec) throw std::system_error(ec, "cannot listen on " + listen);
    acceptor_.listen(asio::socket_base::max_listen_connections);
}

tcp::endpoint listener::local_endpoint() const { return acceptor_.local_endpoint(); }

void listener::start() {
    asio::co_spawn(
        acceptor_.get_executor(),
        [this]() -> asio::awaitable<void> {
            while (acceptor_.is_open()) {
                auto [ec, socket] =
                    co_await acceptor_.async_accept(asio::make_strand(ioc_), use_tuple);
                if (ec) {
                    if (ec == asio::error::operation_aborted) co_return;
                    spdlog::warn("{}: accept failed: {}", shared_->options.name, ec.message());
                    continue;
                }
                if (shared_->open.load() >= shared_->options.max_connections) {
                    // The connection idle longest makes room (a health probe gets through
                    // silent sockets); when every one is busy with a request, 503. Whether the
                    // one that looked idle still is, its own strand decides (the bytes of a
                    // request may arrive between the look and the close).
                    bool made_room = false;
                    for (int tries = 0; tries < 4 && !made_room; ++tries) {
                        auto victim = shared_->oldest_idle();
                        if (!victim) break;
                        auto strand = victim->strand;
                        auto closing = close_now_if_idle(std::move(victim));
                        made_room = co_await asio::co_spawn(strand, std::move(closing),
                                                            asio::use_awaitable);
                    }
                    if (!made_room && shared_->open.load() < shared_->options.max_connections)
                        made_room = true;  // a connection ended meanwhile
                    if (!made_room) {
                        refuse(std::move(socket), *shared_);
                        continue;
                    }
                }
                ++shared_->open;
                // Replies go out as whole writes; Nagle would hold a reply's last segment
                // until the client's delayed ACK (40 ms per small GET).
                error_code nodelay_ec;
                socket.set_option(tcp::no_delay(true), nodelay_ec);
                auto ex = socket.get_executor();
                asio::co_spawn(ex, session(std::move(socket), shared_), asio::detached);
            }
        },
        asio::detached);
}

void listener::stop() {
    error_code ignored;
    acceptor_.close(ignored);
}

void listener::drain() {
    stop();
    shared_->draining = true;
    // Each on its own strand: a connection whose request began meanwhile is served.
    for (auto& slot : shared_->all_slots())
        asio::co_spawn(slot->strand, close_now_if_idle(slot), asio::detached);
}

std::size_t listener::open_connections() const { return shared_->open.load(); }

}  // namespace regpin::proxy::http
