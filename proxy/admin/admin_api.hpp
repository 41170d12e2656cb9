#pragma once
#include <atomic>
// The admin API, on its own listener (default 127.0.0.1:5001):
//   GET  /healthz, /readyz, /metrics                      open
//   GET  /api/v1/pins?registry=&repository_prefix=&state=&limit=
//   GET  /api/v1/pin?registry=&repository=&tag=           the tag's pins and history
//   POST /api/v1/pin/approve  {registry, repository, tag, digest?}
//   POST /api/v1/pin/unpin    {registry, repository, tag}
//   POST /api/v1/pin/set      {registry, repository, tag, digest}
//   POST /api/v1/pin/check    {registry, repository, tag}
//   GET  /api/v1/events?after=ID&since=TIME&limit=N&wait_s=S
//   GET  /api/v1/cache                                    size, limit, classes, evictions
//   POST /api/v1/backup       {dir}                       a consistent copy of the data folder
//   POST /api/v1/verify                                   re-hash everything stored, now
//   GET  /api/v1/verify                                   that walk's progress, quarantines
// Everything under /api/ needs `Authorization: Bearer <token>` (admin.tokens; compared in
// constant time); the token's name is the actor in the pin history. JSON in and out; errors
// use the OCI error body.

#include <functional>
#include <string>

#include <boost/asio/awaitable.hpp>

#include "config/config.hpp"
#include "proxy/admin/metrics.hpp"
#include "proxy/cache/evictor.hpp"
#include "proxy/cache/scrubber.hpp"
#include "proxy/http/message.hpp"
#include "proxy/pins/actions.hpp"
#include "proxy/pins/closure.hpp"
#include "proxy/pins/scheduler.hpp"
#include "proxy/store/pin_records.hpp"
#include "proxy/upstream/upstreams.hpp"

namespace regpin::proxy::admin {

class admin_api {
public:
    admin_api(const config::settings& settings, store::pin_records& pins, pins::actions& actions,
              pins::scheduler& scheduler, const upstream::upstreams& upstreams,
              const pins::closure_keeper& closure, metrics& m);

    [[nodiscard]] boost::asio::awaitable<http::reply> handle(http::incoming in);

    // A shutdown began: /readyz answers 503 "draining" from now on, so load balancers stop
    // sending new pulls while those in progress finish.
    void set_draining() { draining_ = true; }
    // The size cap's keeper: /readyz says when it is over the limit, /api/v1/cache shows it.
    void set_evictor(const cache::evictor* e) { evictor_ = e; }
    // The content store, for backups (POST /api/v1/backup).
    void set_content(store::content* c) { content_ = c; }
    // Re-hashing on demand (POST /api/v1/verify) and its progress (GET /api/v1/verify).
    void set_scrubber(cache::scrubber* s) { scrubber_ = s; }

    // The name of the configured token equal to `presented`, or empty. Constant time in the
    // token's contents.
    std::string token_name(std::string_view presented) const;

private:
    boost::asio::awaitable<http::reply> api(const http::incoming& in, std::string actor);

    const config::settings& settings_;
    store::pin_records& pins_;
    pins::actions& actions_;
    pins::scheduler& scheduler_;
    const upstream::upstreams& upstreams_;
    const pins::closure_keeper& closure_;
    metrics& metrics_;
    std::atomic<bool> draining_{false};
    const cache::evictor* evictor_ = nullptr;
    store::content* content_ = nullptr;
    cache::scrubber* scrubber_ = nullptr;
};

}  // namespace regpin::proxy::admin
