#pragma once
// The pull-through registry: routes a request to its upstream, answers from pins and the
// cache, fetches and verifies what is missing, and pins tags on first sight.
// Thread-safe: handle() runs concurrently on the network threads.

#include <boost/asio/awaitable.hpp>

#include "config/config.hpp"
#include "proxy/cache/blob_fetcher.hpp"
#include "proxy/cache/manifest_fetcher.hpp"
#include "proxy/cache/single_flight.hpp"
#include "proxy/http/message.hpp"
#include "proxy/oci/route.hpp"
#include "proxy/pins/checker.hpp"
#include "proxy/pins/classes.hpp"
#include "proxy/pins/scheduler.hpp"
#include "proxy/pins/writer.hpp"
#include "proxy/registry/router.hpp"
#include "proxy/store/facade.hpp"
#include "proxy/upstream/upstreams.hpp"

namespace regpin::proxy::registry {

class service {
public:
    service(boost::asio::any_io_executor ex, const config::settings& settings,
            upstream::upstreams& upstreams, store::facade& stores,
            cache::manifest_fetcher& manifests, cache::blob_fetcher& fetcher, pins::writer& writer,
            pins::scheduler& scheduler, pins::checker& checker);

    // Answers one pull API request. Never throws for bad input: errors are OCI replies.
    [[nodiscard]] boost::asio::awaitable<http::reply> handle(http::incoming req);

    // What a tag resolves to for the pipeline (GET /api/v1/resolve, the admission webhook): the
    // pin that containerd's pulls get, the tag pinned on first sight exactly as such a pull
    // would (one flight with the pulls asking meanwhile, policies, events, the upstream's answer
    // verified and stored), recorded in the pull audit as client "resolve:<who>". `actor` is
    // the first sight's actor in the history; without `may_pin` (a dry run) a tag never seen is
    // MANIFEST_UNKNOWN instead of pinned. Errors: NAME_UNKNOWN for a registry with no
    // upstream, DENIED for a rejected tag (the pin's JSON in the detail), the upstream's error
    // for a tag never seen that it cannot answer.
    struct resolved {
        storage::pin pin;
        std::optional<storage::manifest> manifest;  // nullopt: neither stored nor fetchable now
    };
    [[nodiscard]] boost::asio::awaitable<oci::result<resolved>> resolve(
        std::string registry, std::string repository, std::string tag, std::string who,
        std::string actor, bool may_pin = true);

    // A request routed to its upstream.
    struct target {
        oci::route route;
        routed where;
        upstream::registry_client* client = nullptr;
    };

private:
    // What the first sight of a tag settled: the pin that answers it, and the manifest the
    // upstream sent when that pin serves it.
    struct first_sight {
        storage::pin pin;
        std::optional<upstream::fetched_manifest> fetched;
    };

    boost::asio::awaitable<http::reply> manifest(const target& t, bool head, std::string accept);
    // settle_first_sight in the single flight of its (upstream, repository, tag, Accept): a pull
    // and a resolve asking at once share one upstream fetch and one pin.
    boost::asio::awaitable<oci::result<first_sight>> first_sight_flight(
        const target& t, std::string accept, std::optional<pins::class_answer> others, bool head,
        std::string actor);
    // Fetches a never-pinned tag and pins it; run once per (upstream, repository, tag, accept
    // class) for every request that asks meanwhile (first_sights_). `others`: the tag's pins of
    // other classes (pins/classes.hpp). `actor`: who the history names for the pin
    // ("first-pull" for a pull).
    boost::asio::awaitable<oci::result<first_sight>> settle_first_sight(
        target t, std::string accept, std::optional<pins::class_answer> others, bool head,
        std::string actor);
    // A pin's answer without suspending (rejected, or its manifest in memory: the warm path);
    // nullopt when it needs pinned_reply.
    std::optional<http::reply> quick_pinned_reply(const target& t, const storage::pin& p,
                                                  bool head);
    // A pin's answer: 403 when rejected, else its manifest.
    boost::asio::awaitable<http::reply> pinned_reply(const target& t, const storage::pin& p,
                                                     bool head, const std::string& accept);
    // A manifest by digest: the store, else the upstream (verified, then stored). Callers on
    // the warm path try content::peek_manifest first, without a coroutine.
    boost::asio::awaitable<http::reply> fetched_reply(const target& t, const storage::digest& d,
                                                      bool head, const std::string& accept,
                                                      bool pinned);
    boost::asio::awaitable<http::reply> blob(const target& t, bool head, std::string range);
    boost::asio::awaitable<http::reply> tags(const target& t);
    boost::asio::awaitable<http::reply> referrers(const target& t, std::string accept);
    // The referrers of an upstream without the API (404): the index under the fallback tag
    // (distribution-spec, "Referrers Tag Schema"), or an empty index when there is none; kept
    // like the API's answer. nullopt with `failure` set when the upstream cannot answer.
    boost::asio::awaitable<std::optional<std::string>> referrers_from_fallback_tag(
        const target& t, const storage::digest& subject, std::optional<oci::error>& failure);

    const config::settings& settings_;
    upstream::upstreams& upstreams_;
    store::content& content_;
    store::pin_records& pins_;
    store::pull_audit& audit_;
    cache::manifest_fetcher& manifests_;
    cache::blob_fetcher& fetcher_;
    pins::writer& writer_;
    pins::scheduler& scheduler_;
    pins::checker& checker_;
    cache::single_flight<first_sight> first_sights_;
};

}  // namespace regpin::proxy::registry
