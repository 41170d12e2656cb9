#pragma once
// The HTTP/1.1 listener for the pull API: one coroutine per connection on its own strand,
// keep-alive, header size and idle limits, one log line per request.

#include <memory>
#include <string>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include "config/config.hpp"
#include "proxy/registry/service.hpp"

namespace regpin::proxy::server {

class listener {
public:
    // Binds `settings.listen` (throws std::system_error with a clear message on failure).
    listener(boost::asio::io_context& ioc, const config::settings& settings,
             registry::service& service);

    // The bound address (port 0 in the config becomes the real port).
    boost::asio::ip::tcp::endpoint local_endpoint() const;

    // Starts accepting; returns at once.
    void start();
    void stop();

private:
    boost::asio::io_context& ioc_;
    const config::settings& settings_;
    registry::service& service_;
    boost::asio::ip::tcp::acceptor acceptor_;
};

}  // namespace regpin::proxy::server
