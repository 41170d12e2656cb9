// The request loop (listener_serve.hpp) for TLS connections, in its own translation unit.
#include "proxy/http/listener_serve.hpp"

namespace regpin::proxy::http {

template asio::awaitable<void> detail::serve<beast::ssl_stream<beast::tcp_stream>>(
    beast::ssl_stream<beast::tcp_stream>&, std::shared_ptr<listener::shared>,
    std::shared_ptr<detail::connection_slot>, std::string);

}  // namespace regpin::proxy::http
