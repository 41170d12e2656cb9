#pragma once
// The pull-through registry: routes a request to its upstream, answers from pins and the
// cache, fetches and verifies what is missing, and pins tags on first sight.
// Thread-safe: handle() runs concurrently on the network threads.

#include <memory>
#include <string>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/thread_pool.hpp>

#include "config/config.hpp"
#include "proxy/registry/blob_fetcher.hpp"
#include "proxy/registry/pin_manager.hpp"
#include "proxy/registry/replies.hpp"
#include "proxy/registry/router.hpp"
#include "proxy/upstream/registry_client.hpp"
#include "storage/blob_store.hpp"
#include "storage/database.hpp"
#include "storage/manifest_store.hpp"
#include "storage/pin_store.hpp"

namespace regpin::proxy::registry {

class service {
public:
    service(boost::asio::any_io_executor ex, const config::settings& settings,
            std::shared_ptr<storage::database> db, pin_hooks hooks = {},
            upstream::observer upstream_observer = nullptr);
    ~service();

    // Answers one pull API request. Never throws for bad input: errors are OCI replies.
    [[nodiscard]] boost::asio::awaitable<reply> handle(incoming req);

    const config::settings& settings() const { return settings_; }
    storage::pin_store& pins() { return *pins_; }
    pin_manager& manager() { return *manager_; }
    // Starts background work (the pin sweep).
    void start();
    void stop();

    // A request routed to its upstream.
    struct target {
        oci::route route;
        routed where;
        upstream::registry_client* client = nullptr;
    };

private:
    boost::asio::awaitable<reply> manifest(const target& t, bool head, const std::string& accept);
    boost::asio::awaitable<reply> blob(const target& t, bool head, const std::string& range);
    boost::asio::awaitable<reply> tags(const target& t);
    boost::asio::awaitable<reply> referrers(const target& t, const std::string& accept);

    config::settings settings_;
    std::shared_ptr<storage::database> db_;
    storage::blob_store blobs_;
    storage::manifest_store manifests_;
    std::unique_ptr<storage::pin_store> pins_;
    std::vector<std::unique_ptr<upstream::registry_client>> clients_;
    // Synced pin writes and blob chunk writes block: they run here, never on the network
    // threads.
    boost::asio::thread_pool blocking_{2};
    blob_fetcher fetcher_;
    std::unique_ptr<pin_manager> manager_;
};

}  // namespace regpin::proxy::registry
