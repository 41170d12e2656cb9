#pragma once
// One running regpin: the database, the registry service and its listener, the admin API and
// its listener, the webhook sender, and the metrics that tie them together.

#include <memory>

#include <boost/asio/io_context.hpp>

#include "config/config.hpp"
#include "storage/database.hpp"

namespace regpin::proxy {

class app {
public:
    // Opens nothing yet.
    app(boost::asio::io_context& ioc, config::settings settings);
    ~app();

    // Binds both listeners and starts background work. Throws std::system_error when a
    // listener cannot bind.
    void start(std::shared_ptr<storage::database> db);
    void stop();

private:
    struct parts;
    std::unique_ptr<parts> parts_;
};

}  // namespace regpin::proxy
