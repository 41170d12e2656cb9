#pragma once
// One running regpin: the database, the registry service and its listener, the admin API and
// its listener, the webhook sender, and the metrics that tie them together.

#include <memory>
#include <string>

#include <boost/asio/io_context.hpp>

#include "config/config.hpp"
#include "storage/database.hpp"

namespace regpin::proxy {

// The cache limits (cache.*) checked against the data folder's file system: an error naming
// the key that cannot hold there, or empty; `summary` says what holds (cache/evictor.hpp).
std::string check_cache_limits(const config::settings& settings, std::string& summary);
// Sets the default logger's line format from `log_format` ("json": http/log_json.hpp).
void use_log_format(const config::settings& settings);

class app {
public:
    // Opens nothing yet.
    app(boost::asio::io_context& ioc, config::settings settings);
    ~app();

    // Binds both listeners and starts background work. Throws std::system_error when a
    // listener cannot bind.
    void start(std::shared_ptr<storage::database> db);
    // The first step of a graceful stop: /readyz turns 503, background work stops, the registry
    // listener stops accepting and closes connections waiting for a request; pulls in progress
    // go on. Then stop() once in_flight() is 0 or the grace period ran out.
    void drain();
    // Registry connections still open.
    std::size_t in_flight() const;
    void stop();

private:
    struct parts;
    std::unique_ptr<parts> parts_;
};

}  // namespace regpin::proxy
