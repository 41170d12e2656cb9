#include "proxy/cli/http_call.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/url/parse.hpp>

namespace regpin::proxy::cli {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

// Resolves, connects (5 s) and sends `req`; false with out.error set on failure.
template <class Request>
asio::awaitable<bool> connect_and_send(beast::tcp_stream& stream, const std::string& host,
                                       const std::string& port, Request& req,
                                       std::chrono::seconds timeout, http_result& out) {
    tcp::resolver resolver(stream.get_executor());
    auto [rec, endpoints] = co_await resolver.async_resolve(host, port, use_tuple);
    if (rec) {
        out.error = "cannot resolve " + host + ": " + rec.message();
        co_return false;
    }
    stream.expires_after(std::chrono::seconds(5));
    auto [cec, ep] = co_await stream.async_connect(endpoints, use_tuple);
    if (cec) {
        out.error = cec.message();
        co_return false;
    }
    stream.expires_after(timeout);
    auto [wec, wn] = co_await http::async_write(stream, req, use_tuple);
    if (wec) {
        out.error = wec.message();
        co_return false;
    }
    co_return true;
}

asio::awaitable<void> exchange(std::string host, std::string port,
                               http::request<http::string_body> req, std::chrono::seconds timeout,
                               http_result& out) {
    beast::tcp_stream stream(co_await asio::this_coro::executor);
    if (!co_await connect_and_send(stream, host, port, req, timeout, out)) co_return;
    beast::flat_buffer buffer;
    http::response_parser<http::string_body> parser;
    parser.body_limit(64 * 1024 * 1024);
    auto [rec2, rn] = co_await http::async_read(stream, buffer, parser, use_tuple);
    if (rec2) {
        out.error = rec2.message();
        co_return;
    }
    out.status = parser.get().result_int();
    out.body = std::move(parser.get().body());
}

asio::awaitable<void> stream_exchange(
    std::string host, std::string port, http::request<http::empty_body> req,
    const std::function<void(unsigned, std::string_view)>* on_data, std::chrono::seconds timeout,
    http_result& out) {
    beast::tcp_stream stream(co_await asio::this_coro::executor);
    if (!co_await connect_and_send(stream, host, port, req, timeout, out)) co_return;
    beast::flat_buffer buffer;
    http::response_parser<http::buffer_body> parser;
    parser.body_limit(boost::none);
    stream.expires_after(timeout);
    auto [hec, hn] = co_await http::async_read_header(stream, buffer, parser, use_tuple);
    if (hec) {
        out.error = hec.message();
        co_return;
    }
    out.status = parser.get().result_int();
    std::vector<char> buf(256 * 1024);
    while (!parser.is_done()) {
        parser.get().body().data = buf.data();
        parser.get().body().size = buf.size();
        stream.expires_after(timeout);
        auto [bec, bn] = co_await http::async_read(stream, buffer, parser, use_tuple);
        if (bec == http::error::need_buffer) bec = {};
        if (bec) {
            out.error = bec.message();
            co_return;
        }
        auto got = buf.size() - parser.get().body().size;
        if (got > 0) (*on_data)(out.status, std::string_view(buf.data(), got));
    }
}

}  // namespace

http_result http_get_stream(const std::string& base, const std::string& target,
                            const std::vector<std::pair<std::string, std::string>>& headers,
                            const std::function<void(unsigned, std::string_view)>& on_data,
                            std::chrono::seconds timeout) {
    http_result out;
    auto u = boost::urls::parse_uri(base);
    if (!u || u->scheme() != "http" || u->host().empty()) {
        out.error = "the URL must look like http://HOST:PORT, got '" + base + "'";
        return out;
    }
    http::request<http::empty_body> req{http::verb::get, target, 11};
    req.set(http::field::host, std::string(u->encoded_host_and_port()));
    req.set(http::field::user_agent, "regpin-prefetch");
    for (const auto& [k, v] : headers) req.set(k, v);
    asio::io_context ioc;
    asio::co_spawn(ioc,
                   stream_exchange(std::string(u->host_address()),
                                   u->has_port() ? std::string(u->port()) : "80", std::move(req),
                                   &on_data, timeout, out),
                   asio::detached);
    ioc.run();
    return out;
}

http_result http_call(const std::string& base, const std::string& method, const std::string& target,
                      const std::string& body, const std::string& token,
                      std::chrono::seconds timeout) {
    http_result out;
    auto u = boost::urls::parse_uri(base);
    if (!u || u->scheme() != "http" || u->host().empty()) {
        out.error = "the admin URL must look like http://HOST:PORT, got '" + base + "'";
        return out;
    }
    std::string host = u->host_address();
    std::string port = u->has_port() ? std::string(u->port()) : "80";
    http::request<http::string_body> req{http::string_to_verb(method), target, 11};
    req.set(http::field::host, std::string(u->encoded_host_and_port()));
    req.set(http::field::user_agent, "regpin-cli");
    if (!token.empty()) req.set(http::field::authorization, "Bearer " + token);
    if (!body.empty()) {
        req.set(http::field::content_type, "application/json");
        req.body() = body;
    }
    req.prepare_payload();
    asio::io_context ioc;
    asio::co_spawn(ioc, exchange(host, port, std::move(req), timeout, out), asio::detached);
    ioc.run();
    return out;
}

}  // namespace regpin::proxy::cli
