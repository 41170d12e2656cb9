#pragma once
// Internal to http/: the Asio and Beast names the listener and the client both use.

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

namespace regpin::proxy::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;  // not `http`: that is this module's namespace
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using boost::system::error_code;

// Completion token of every network operation: errors are values, never exceptions.
inline constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

}  // namespace regpin::proxy::http
