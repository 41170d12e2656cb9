#pragma once
#include <atomic>
// The admin API, on its own listener (default 127.0.0.1:5001):
//   GET  /healthz, /readyz, /metrics                      open
//   GET  /api/v1/pins?registry=&repository_prefix=&state=&q=&policy=&limit=&after=
//                                         a page of pins in key order; `next` is the next
//                                         page's `after`; `total` counts every pin
//   GET  /api/v1/pin?registry=&repository=&tag=           the tag's pins and history
//   POST /api/v1/pin/approve  {registry, repository, tag, digest?}
//   POST /api/v1/pin/unpin    {registry, repository, tag}
//   POST /api/v1/pin/set      {registry, repository, tag, digest}
//   POST /api/v1/pin/check    {registry, repository, tag}
//   GET  /api/v1/events?after=ID&since=TIME&limit=N&wait_s=S, or ?last=N (the newest N)
//   GET  /api/v1/cache                                    size, limit, classes, evictions
//   POST /api/v1/backup       {dir}                       a consistent copy of the data folder
//   POST /api/v1/verify                                   re-hash everything stored, now
//   GET  /api/v1/verify                                   that walk's progress, quarantines
//   GET  /api/v1/audit?digest=&ref=&node=&since=&limit=   who pulled which manifest digest
//   GET  /api/v1/resolve?ref=REGISTRY/REPO:TAG&platform=OS/ARCH
//                                         the digest nodes get for a tag (pins it on first
//                                         sight, as a pull would); 403 for a rejected tag
//   GET  /ui/                                             the console (proxy/console)
//   POST /ui/login {token}, GET /ui/session, POST /ui/logout   its sessions
// Everything under /api/ needs `Authorization: Bearer <token>` (admin.tokens; compared in
// constant time), or the console's session cookie (and X-CSRF-Token for a change); the
// token's name is the actor in the pin history. A token's scope (admin.tokens[].scope) limits
// what it may call: needed_scope. JSON in and out; errors use the OCI error body.

#include <functional>
#include <string>

#include <boost/asio/awaitable.hpp>

#include "config/config.hpp"
#include "proxy/admin/metrics.hpp"
#include "proxy/cache/evictor.hpp"
#include "proxy/cache/scrubber.hpp"
#include "proxy/console/console.hpp"
#include "proxy/http/message.hpp"
#include "proxy/pins/actions.hpp"
#include "proxy/pins/closure.hpp"
#include "proxy/pins/policy.hpp"
#include "proxy/pins/scheduler.hpp"
#include "proxy/registry/service.hpp"
#include "proxy/store/pin_records.hpp"
#include "proxy/store/pull_audit.hpp"
#include "proxy/upstream/upstreams.hpp"

namespace regpin::proxy::admin {

// The scope a request to the admin API needs: resolve for GET /api/v1/resolve, read for every
// other GET or HEAD, admin for every change (POST).
config::token_scope needed_scope(std::string_view method, std::string_view path);
// Whether a token of scope `have` may make a request that needs `need`.
bool scope_allows(config::token_scope have, config::token_scope need);

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
    // The pull audit (GET /api/v1/audit).
    void set_audit(store::pull_audit* a) { audit_ = a; }

    // Resolving tags (GET /api/v1/resolve): the registry service's first-sight path.
    void set_registry(registry::service* s) { registry_ = s; }

    // The configured token equal to `presented`, or nullptr. Constant time in the token's
    // contents.
    const config::admin_token* token_for(std::string_view presented) const;
    // The configured token called `name` (a console session's), or nullptr.
    const config::admin_token* token_named(std::string_view name) const;

private:
    boost::asio::awaitable<http::reply> api(const http::incoming& in, std::string actor);
    // The console's files, login, session and logout (/ui/NAME).
    http::reply ui(const http::incoming& in, const std::string& name);

    const config::settings& settings_;
    store::pin_records& pins_;
    pins::actions& actions_;
    pins::scheduler& scheduler_;
    const upstream::upstreams& upstreams_;
    const pins::closure_keeper& closure_;
    metrics& metrics_;
    pins::policy_table policies_;
    std::atomic<bool> draining_{false};
    console::sessions sessions_;
    const cache::evictor* evictor_ = nullptr;
    store::content* content_ = nullptr;
    cache::scrubber* scrubber_ = nullptr;
    store::pull_audit* audit_ = nullptr;
    registry::service* registry_ = nullptr;
};

}  // namespace regpin::proxy::admin
